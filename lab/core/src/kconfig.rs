//! Kconfig fragments and `.config` files.
//!
//! A lab kernel is configured by merging fragments (`atomic.config`,
//! `debug.config`) onto a base with `merge_config.sh` and letting
//! `make olddefconfig` settle the result. Kconfig is silent when it
//! discards a request: an option whose dependencies are not met simply
//! vanishes from the final `.config`, and the kernel boots without the
//! feature the testcase was about. So fragments are parsed strictly here
//! (a typo is an error naming the line, not an option that is quietly
//! never set), and [`check_survived`] compares what was asked for with
//! what the final `.config` holds. Pure: the caller reads the files.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// A value as a `.config` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KValue {
    /// `y`
    Yes,
    /// `m`
    Module,
    /// `n`, or `# CONFIG_FOO is not set`
    No,
    /// A string option, unescaped (`CONFIG_LOCALVERSION="-lab"` holds `-lab`).
    Str(String),
    /// An int or hex option as written (`123`, `-1`, `0x1f`).
    Num(String),
}

impl fmt::Display for KValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KValue::Yes => f.write_str("y"),
            KValue::Module => f.write_str("m"),
            KValue::No => f.write_str("n"),
            KValue::Str(s) => {
                // As Kconfig writes strings: `"` and `\` escaped.
                f.write_str("\"")?;
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str("\"")
            }
            KValue::Num(n) => f.write_str(n),
        }
    }
}

impl KValue {
    /// Whether `got` (from a final config; `None` for absent) honours a
    /// request for `self`. An `n` is honoured by absence; numbers compare
    /// by value, so `0x1F` is honoured by the `0x1f` Kconfig writes back.
    pub fn honoured_by(&self, got: Option<&KValue>) -> bool {
        match (self, got) {
            (KValue::No, None | Some(KValue::No)) => true,
            (KValue::Num(a), Some(KValue::Num(b))) => match (num_value(a), num_value(b)) {
                (Some(x), Some(y)) => x == y,
                _ => a == b,
            },
            (want, Some(got)) => want == got,
            (_, None) => false,
        }
    }
}

/// The value of a decimal or `0x` hex number, when it fits.
fn num_value(s: &str) -> Option<i128> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        i128::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

/// One option of a fragment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KOption {
    /// Without the `CONFIG_` prefix.
    pub name: String,
    pub value: KValue,
    /// 1-based line in its fragment.
    pub line: usize,
}

impl fmt::Display for KOption {
    /// The line a `.config` would hold: `CONFIG_FOO=y`, or
    /// `# CONFIG_FOO is not set` for `n`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value {
            KValue::No => write!(f, "# CONFIG_{} is not set", self.name),
            ref v => write!(f, "CONFIG_{}={v}", self.name),
        }
    }
}

/// Options as fragment text, one line each.
pub fn render_fragment(options: &[KOption]) -> String {
    options.iter().map(|o| format!("{o}\n")).collect()
}

/// Why a fragment could not be read: the fragment, the line, and what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}: {message}")]
pub struct FragmentError {
    pub origin: String,
    pub line: usize,
    pub message: String,
}

/// What one line holds.
enum Line {
    Nothing,
    Opt(String, KValue),
}

/// Upper-case letters, digits and `_`: Kconfig symbols as the kernel
/// spells them.
fn check_name(name: &str, line: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!(
            "expected CONFIG_NAME=value: no name after CONFIG_ in `{line}`"
        ));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(format!(
            "expected CONFIG_NAME=value: no spaces allowed in the name or around `=` in `{line}`"
        ));
    }
    if name.chars().any(|c| c.is_ascii_lowercase()) {
        return Err(format!(
            "`CONFIG_{name}`: option names are upper case (A-Z, 0-9 and _)"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(format!(
            "`CONFIG_{name}`: `{c}` is not allowed in an option name (A-Z, 0-9 and _)"
        ));
    }
    Ok(())
}

/// A value after `=`.
fn parse_value(v: &str) -> Result<KValue, String> {
    match v {
        "y" => return Ok(KValue::Yes),
        "m" => return Ok(KValue::Module),
        "n" => return Ok(KValue::No),
        "" => return Err("no value after `=` (expected y, m, n, a \"string\" or a number)".into()),
        _ => {}
    }
    if let Some(body) = v.strip_prefix('"') {
        let mut s = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) => s.push(e),
                    None => break,
                },
                '"' => {
                    let rest = &body[i + 1..];
                    if !rest.is_empty() {
                        return Err(format!("text after the closing quote: `{rest}`"));
                    }
                    return Ok(KValue::Str(s));
                }
                c => s.push(c),
            }
        }
        return Err(format!("unterminated string: `{v}` has no closing quote"));
    }
    let digits = v.strip_prefix('-').unwrap_or(v);
    let is_dec = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    let is_hex = v
        .strip_prefix("0x")
        .or_else(|| v.strip_prefix("0X"))
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if is_dec || is_hex {
        return Ok(KValue::Num(v.to_string()));
    }
    Err(format!(
        "bad value `{v}`: expected y, m, n, a \"quoted string\" or a number (123, 0x1f)"
    ))
}

/// One line of a fragment or `.config`. Trailing whitespace (and a CR)
/// is ignored; leading whitespace on an option is an error because
/// `conf` ignores indented lines.
fn parse_line(raw: &str) -> Result<Line, String> {
    let l = raw.trim_end();
    if l.is_empty() {
        return Ok(Line::Nothing);
    }
    let unindented = l.trim_start();
    if let Some(comment) = unindented.strip_prefix('#') {
        if unindented.len() == l.len() {
            if let Some(name) = comment
                .strip_prefix(" CONFIG_")
                .and_then(|r| r.strip_suffix(" is not set"))
            {
                check_name(name, l)?;
                return Ok(Line::Opt(name.to_string(), KValue::No));
            }
        }
        return Ok(Line::Nothing);
    }
    if unindented.len() != l.len() {
        return Err(format!(
            "leading whitespace before `{unindented}` (conf ignores indented lines)"
        ));
    }
    let Some((lhs, rhs)) = l.split_once('=') else {
        return Err(format!("expected CONFIG_NAME=value, found `{l}` (no `=`)"));
    };
    let Some(name) = lhs.strip_prefix("CONFIG_") else {
        return Err(format!(
            "expected CONFIG_NAME=value: `{lhs}` lacks the CONFIG_ prefix"
        ));
    };
    check_name(name, l)?;
    if rhs.starts_with(char::is_whitespace) {
        return Err(format!(
            "expected CONFIG_NAME=value: no spaces allowed around `=` in `{l}`"
        ));
    }
    let value = parse_value(rhs).map_err(|m| format!("CONFIG_{name}: {m}"))?;
    Ok(Line::Opt(name.to_string(), value))
}

/// A fragment, strictly: every line is blank, a comment, `CONFIG_FOO=...`
/// or `# CONFIG_FOO is not set`, and no option is set twice (the second
/// would silently win). `origin` names the fragment in errors.
pub fn parse_fragment(origin: &str, text: &str) -> Result<Vec<KOption>, FragmentError> {
    let mut out: Vec<KOption> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| FragmentError {
            origin: origin.to_string(),
            line,
            message,
        };
        match parse_line(raw).map_err(err)? {
            Line::Nothing => {}
            Line::Opt(name, value) => {
                if let Some(first) = out.iter().find(|o| o.name == name) {
                    return Err(err(format!(
                        "CONFIG_{name} is set twice: on line {} and on line {line}",
                        first.line
                    )));
                }
                out.push(KOption { name, value, line });
            }
        }
    }
    Ok(out)
}

/// A whole `.config`, leniently: lines it does not understand are
/// skipped, and a later line for an option replaces an earlier one (as
/// `conf` reads it).
pub fn parse_config(text: &str) -> BTreeMap<String, KValue> {
    text.lines()
        .filter_map(|l| match parse_line(l) {
            Ok(Line::Opt(name, value)) => Some((name, value)),
            _ => None,
        })
        .collect()
}

/// A requested option the final config does not honour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dropped {
    pub name: String,
    pub wanted: KValue,
    /// What the final config has; `None`: not in it at all (typically its
    /// dependencies are not met, or the symbol does not exist in this tree).
    pub got: Option<KValue>,
    /// The fragment and line of the request that counted.
    pub origin: String,
    pub line: usize,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Both sides as `CONFIG_X=v`, `n` included: a sentence reads
        // better without the `# ... is not set` comment form.
        write!(
            f,
            "{}:{}: CONFIG_{}={} did not survive: ",
            self.origin, self.line, self.name, self.wanted
        )?;
        match &self.got {
            None => write!(f, "CONFIG_{} is not in the final config", self.name),
            Some(v) => write!(f, "the final config has CONFIG_{}={v}", self.name),
        }
    }
}

/// The requests the final config does not honour. `requested` holds
/// fragments in merge order; when several set an option only the last
/// counts (later fragments override, as with `merge_config.sh`). A
/// requested `n` is honoured by absence. Dropped options come in the
/// order of the requests that counted.
pub fn check_survived(
    requested: &[(String, Vec<KOption>)],
    final_config: &BTreeMap<String, KValue>,
) -> Vec<Dropped> {
    // name -> (position of the counting request, origin, option)
    let mut last: BTreeMap<&str, (usize, &str, &KOption)> = BTreeMap::new();
    let mut seq = 0;
    for (origin, options) in requested {
        for o in options {
            last.insert(o.name.as_str(), (seq, origin.as_str(), o));
            seq += 1;
        }
    }
    let mut counting: Vec<(usize, &str, &KOption)> = last.into_values().collect();
    counting.sort_by_key(|(s, _, _)| *s);
    counting
        .into_iter()
        .filter_map(|(_, origin, o)| {
            let got = final_config.get(&o.name);
            (!o.value.honoured_by(got)).then(|| Dropped {
                name: o.name.clone(),
                wanted: o.value.clone(),
                got: got.cloned(),
                origin: origin.to_string(),
                line: o.line,
            })
        })
        .collect()
}

/// What became of a base `.config` (a distribution's, under `--kconfig
/// distro`) once the fragments were merged onto it and `olddefconfig` ran.
/// Only options the base enables (`y` or `m`) are followed: the base's
/// `n`s are the distribution's choices to leave things out, and an option
/// it never mentions is one its tree did not have.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct BaseChanges {
    /// Options the base enables.
    pub enabled: usize,
    /// Of those, enabled with the same value in the final config.
    pub kept: usize,
    /// Enabled in the base, changed by a fragment's request (`y` to `m`
    /// counts, as does `n`): (name, base value, final value or `None`).
    pub overridden: Vec<(String, KValue, Option<KValue>)>,
    /// Enabled in the base, no fragment asked for a change, still enabled
    /// but with another value: an `m` a requested `y` selected into `y`.
    pub followed: Vec<(String, KValue, Option<KValue>)>,
    /// Enabled in the base, no fragment asked for a change, yet not
    /// enabled in the final config: Kconfig dropped them, for a dependency
    /// this toolchain or tree lacks (Rust without rustc, a newer
    /// compiler's feature). Toolchain probes (`CC_HAS_*`...) come last.
    pub lost: Vec<(String, KValue, Option<KValue>)>,
    /// Of the final config's options, how many are `m`: configured, but a
    /// `bzImage` build does not compile them.
    pub modules: usize,
}

/// Compares a base config with the final one, knowing what the fragments
/// requested (in merge order, as for [`check_survived`]).
pub fn base_changes(
    base: &BTreeMap<String, KValue>,
    requested: &[(String, Vec<KOption>)],
    final_config: &BTreeMap<String, KValue>,
) -> BaseChanges {
    let asked: std::collections::BTreeSet<&str> = requested
        .iter()
        .flat_map(|(_, opts)| opts.iter().map(|o| o.name.as_str()))
        .collect();
    let mut out = BaseChanges {
        modules: final_config
            .values()
            .filter(|v| **v == KValue::Module)
            .count(),
        ..BaseChanges::default()
    };
    for (name, was) in base {
        if !matches!(was, KValue::Yes | KValue::Module) {
            continue;
        }
        out.enabled += 1;
        let now = final_config.get(name);
        if now == Some(was) {
            out.kept += 1;
        } else if asked.contains(name.as_str()) {
            out.overridden
                .push((name.clone(), was.clone(), now.cloned()));
        } else if matches!(now, Some(KValue::Yes | KValue::Module)) {
            out.followed.push((name.clone(), was.clone(), now.cloned()));
        } else {
            out.lost.push((name.clone(), was.clone(), now.cloned()));
        }
    }
    out.lost.sort_by_key(|(n, _, _)| is_toolchain_probe(n));
    out
}

/// Whether an option only records what the compiler, assembler, linker or
/// other build tools can do (`CC_HAS_ASM_GOTO_OUTPUT`, `RUST_IS_AVAILABLE`):
/// Kconfig recomputes these from the toolchain at hand, so they differ from
/// a distribution's whenever its compiler does. Not a feature choice.
pub fn is_toolchain_probe(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "CC_HAS_",
        "CC_IS_",
        "CC_CAN_",
        "AS_HAS_",
        "AS_IS_",
        "LD_HAS_",
        "LD_IS_",
        "LD_CAN_",
        "PAHOLE_HAS_",
        "RUSTC_",
        "TOOLS_SUPPORT_",
        "OPENSSL_SUPPORTS_",
        "GCC_ASM_",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || name.ends_with("_IS_AVAILABLE")
}

impl BaseChanges {
    /// The dropped options that are features, not toolchain probes.
    pub fn lost_features(&self) -> impl Iterator<Item = &str> {
        self.lost
            .iter()
            .map(|(n, _, _)| n.as_str())
            .filter(|n| !is_toolchain_probe(n))
    }
}

impl BaseChanges {
    /// The report a build keeps beside its config (`base-changes.txt`).
    pub fn render(&self, base_origin: &str) -> String {
        let mut s = format!(
            "base: {base_origin}\n{} options enabled in the base, {} kept as they were\n\
             {} modules (=m) configured; a bzImage build compiles none of them\n",
            self.enabled, self.kept, self.modules
        );
        for (title, list) in [
            ("changed by the lab's fragments", &self.overridden),
            (
                "changed by Kconfig to follow those (selected as built in)",
                &self.followed,
            ),
            (
                "dropped by olddefconfig (a dependency this tree or toolchain lacks; toolchain probes last)",
                &self.lost,
            ),
        ] {
            s.push_str(&format!("\n{} {title}:\n", list.len()));
            for (name, was, now) in list {
                let now = now.as_ref().map_or("not set".to_string(), |v| v.to_string());
                s.push_str(&format!("  CONFIG_{name}: {was} -> {now}\n"));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opt(name: &str, value: KValue, line: usize) -> KOption {
        KOption {
            name: name.into(),
            value,
            line,
        }
    }

    fn err(text: &str) -> FragmentError {
        parse_fragment("atomic.config", text).unwrap_err()
    }

    #[test]
    fn a_realistic_fragment() {
        let text = "\
# Atomic writes on NVMe and XFS
CONFIG_BLK_DEV_NVME=y
CONFIG_XFS_FS=m

# debugging
CONFIG_LOCALVERSION=\"-atomic\"
CONFIG_LOG_BUF_SHIFT=18
CONFIG_PHYSICAL_START=0x1000000
CONFIG_FRAME_WARN=-1
# CONFIG_MODVERSIONS is not set
CONFIG_DEBUG_INFO_BTF=n
CONFIG_CMDLINE=\"console=ttyS0 \\\"quoted\\\" \\\\\"
";
        let opts = parse_fragment("atomic.config", text).unwrap();
        assert_eq!(
            opts,
            vec![
                opt("BLK_DEV_NVME", KValue::Yes, 2),
                opt("XFS_FS", KValue::Module, 3),
                opt("LOCALVERSION", KValue::Str("-atomic".into()), 6),
                opt("LOG_BUF_SHIFT", KValue::Num("18".into()), 7),
                opt("PHYSICAL_START", KValue::Num("0x1000000".into()), 8),
                opt("FRAME_WARN", KValue::Num("-1".into()), 9),
                opt("MODVERSIONS", KValue::No, 10),
                opt("DEBUG_INFO_BTF", KValue::No, 11),
                opt(
                    "CMDLINE",
                    KValue::Str("console=ttyS0 \"quoted\" \\".into()),
                    12
                ),
            ]
        );
        assert_eq!(
            opts[8].to_string(),
            "CONFIG_CMDLINE=\"console=ttyS0 \\\"quoted\\\" \\\\\""
        );
        assert_eq!(opts[6].to_string(), "# CONFIG_MODVERSIONS is not set");
        assert_eq!(opts[1].to_string(), "CONFIG_XFS_FS=m");
    }

    #[test]
    fn crlf_and_trailing_spaces_are_tolerated() {
        let opts = parse_fragment("f", "CONFIG_A=y \r\n# CONFIG_B is not set\r\n").unwrap();
        assert_eq!(
            opts,
            vec![opt("A", KValue::Yes, 1), opt("B", KValue::No, 2)]
        );
    }

    #[test]
    fn ordinary_comments_are_comments() {
        let opts = parse_fragment(
            "f",
            "#CONFIG_A=y\n# CONFIG_B=y\n# CONFIG_C is needed by D\n  # indented\n",
        )
        .unwrap();
        assert!(opts.is_empty(), "{opts:?}");
    }

    #[test]
    fn malformed_lines_are_named() {
        let e = err("CONFIG_A=y\nBLK_DEV_NVME=y\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("expected CONFIG_NAME=value"), "{e}");
        assert!(e.message.contains("CONFIG_ prefix"), "{e}");
        assert!(e.to_string().starts_with("atomic.config:2: "), "{e}");

        let e = err("\n\nCONFIG_A y\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("expected CONFIG_NAME=value"), "{e}");
        assert!(e.message.contains("no `=`"), "{e}");

        let e = err("CONFIG_A=yes\n");
        assert!(e.message.contains("bad value `yes`"), "{e}");
        let e = err("CONFIG_A=Y\n");
        assert!(e.message.contains("bad value `Y`"), "{e}");
        let e = err("CONFIG_A=1f\n");
        assert!(e.message.contains("bad value `1f`"), "{e}");
        let e = err("CONFIG_A=0x\n");
        assert!(e.message.contains("bad value"), "{e}");
        let e = err("CONFIG_A=y # keep\n");
        assert!(e.message.contains("bad value"), "{e}");
        let e = err("CONFIG_A=\n");
        assert!(e.message.contains("no value"), "{e}");

        let e = err("CONFIG_blk_dev=y\n");
        assert!(e.message.contains("upper case"), "{e}");
        let e = err("# CONFIG_blk_dev is not set\n");
        assert!(e.message.contains("upper case"), "{e}");
        let e = err("CONFIG_A-B=y\n");
        assert!(e.message.contains("`-` is not allowed"), "{e}");
        let e = err("CONFIG_=y\n");
        assert!(e.message.contains("no name"), "{e}");
        let e = err("CONFIG_A = y\n");
        assert!(e.message.contains("no spaces"), "{e}");
        let e = err("CONFIG_A= y\n");
        assert!(e.message.contains("no spaces"), "{e}");

        let e = err("CONFIG_S=\"abc\"def\n");
        assert!(
            e.message.contains("text after the closing quote: `def`"),
            "{e}"
        );
        let e = err("CONFIG_S=\"abc\" \"x\"\n");
        assert!(e.message.contains("after the closing quote"), "{e}");
        let e = err("CONFIG_S=\"abc\n");
        assert!(e.message.contains("unterminated string"), "{e}");
        let e = err("CONFIG_S=\"abc\\\"\n");
        assert!(e.message.contains("unterminated string"), "{e}");

        let e = err("  CONFIG_A=y\n");
        assert!(e.message.contains("leading whitespace"), "{e}");
    }

    #[test]
    fn an_option_set_twice_names_both_lines() {
        let e = err("CONFIG_A=y\nCONFIG_B=y\n\n# CONFIG_A is not set\n");
        assert_eq!(e.line, 4);
        assert_eq!(
            e.to_string(),
            "atomic.config:4: CONFIG_A is set twice: on line 1 and on line 4"
        );
    }

    #[test]
    fn a_whole_config_is_read_leniently() {
        let text = "\
#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.18.0 Kernel Configuration
#
CONFIG_CC_VERSION_TEXT=\"gcc (Debian 14.2.0-19) 14.2.0\"
CONFIG_CC_IS_GCC=y
CONFIG_GCC_VERSION=140200
CONFIG_BLK_DEV_NVME=m
# CONFIG_NVME_MULTIPATH is not set
this line is junk
CONFIG_lower=y
CONFIG_NR_CPUS=64
CONFIG_NR_CPUS=8
";
        let c = parse_config(text);
        assert_eq!(c.len(), 6, "{c:?}");
        assert_eq!(c["BLK_DEV_NVME"], KValue::Module);
        assert_eq!(c["NVME_MULTIPATH"], KValue::No);
        assert_eq!(c["NR_CPUS"], KValue::Num("8".into()));
        assert_eq!(
            c["CC_VERSION_TEXT"],
            KValue::Str("gcc (Debian 14.2.0-19) 14.2.0".into())
        );
        assert!(parse_config("").is_empty());
    }

    fn frag(origin: &str, text: &str) -> (String, Vec<KOption>) {
        (origin.to_string(), parse_fragment(origin, text).unwrap())
    }

    #[test]
    fn dropped_options_are_reported_in_request_order() {
        let requested = vec![
            frag(
                "base.config",
                "CONFIG_BLK_DEV_NVME=y\nCONFIG_XFS_FS=y\nCONFIG_EXT4_FS=y\n",
            ),
            frag(
                "atomic.config",
                "CONFIG_XFS_FS=m\nCONFIG_NVME_MULTIPATH=n\nCONFIG_FOO_GONE=y\nCONFIG_LOG_BUF_SHIFT=0x12\n",
            ),
            frag("debug.config", "CONFIG_EXT4_FS=n\nCONFIG_KASAN=y\n"),
        ];
        let fin = parse_config(
            "CONFIG_BLK_DEV_NVME=y\nCONFIG_XFS_FS=y\nCONFIG_EXT4_FS=y\nCONFIG_LOG_BUF_SHIFT=18\n# CONFIG_KASAN is not set\n",
        );
        let d = check_survived(&requested, &fin);
        let names: Vec<&str> = d.iter().map(|d| d.name.as_str()).collect();
        // XFS_FS: the later `m` counts and the final has `y`; EXT4_FS: the
        // later `n` counts; 0x12 == 18 survives; NVME_MULTIPATH absent is `n`.
        assert_eq!(names, ["XFS_FS", "FOO_GONE", "EXT4_FS", "KASAN"]);
        assert_eq!(d[0].origin, "atomic.config");
        assert_eq!(d[0].line, 1);
        assert_eq!(d[0].got, Some(KValue::Yes));
        assert_eq!(d[1].got, None);
        assert_eq!(
            d[0].to_string(),
            "atomic.config:1: CONFIG_XFS_FS=m did not survive: the final config has CONFIG_XFS_FS=y"
        );
        assert_eq!(
            d[1].to_string(),
            "atomic.config:3: CONFIG_FOO_GONE=y did not survive: CONFIG_FOO_GONE is not in the final config"
        );
        assert_eq!(
            d[2].to_string(),
            "debug.config:1: CONFIG_EXT4_FS=n did not survive: the final config has CONFIG_EXT4_FS=y"
        );
        assert_eq!(d[3].got, Some(KValue::No));
        assert_eq!(
            d[3].to_string(),
            "debug.config:2: CONFIG_KASAN=y did not survive: the final config has CONFIG_KASAN=n"
        );
    }

    #[test]
    fn honouring() {
        use KValue::*;
        assert!(No.honoured_by(None));
        assert!(No.honoured_by(Some(&No)));
        assert!(!No.honoured_by(Some(&Module)));
        assert!(!Yes.honoured_by(Some(&Module)));
        assert!(!Module.honoured_by(Some(&Yes)));
        assert!(!Yes.honoured_by(None));
        assert!(Num("0x1F".into()).honoured_by(Some(&Num("0x1f".into()))));
        assert!(!Num("16".into()).honoured_by(Some(&Num("17".into()))));
        assert!(!Num("1".into()).honoured_by(Some(&Str("1".into()))));
        assert!(Str("".into()).honoured_by(Some(&Str("".into()))));
        assert!(!Str("".into()).honoured_by(None));
    }

    fn value() -> impl Strategy<Value = KValue> {
        prop_oneof![
            Just(KValue::Yes),
            Just(KValue::Module),
            Just(KValue::No),
            "[^\r\n]{0,12}".prop_map(KValue::Str),
            any::<i64>().prop_map(|n| KValue::Num(n.to_string())),
            any::<u32>().prop_map(|n| KValue::Num(format!("0x{n:x}"))),
        ]
    }

    /// Fragments over a small pool of names so that later fragments
    /// override earlier ones; each fragment sets a name at most once.
    fn fragments() -> impl Strategy<Value = Vec<(String, Vec<KOption>)>> {
        prop::collection::vec(prop::collection::vec(((0u8..12), value()), 0..8), 1..4).prop_map(
            |frags| {
                frags
                    .into_iter()
                    .enumerate()
                    .map(|(f, opts)| {
                        let mut seen = Vec::new();
                        let opts = opts
                            .into_iter()
                            .filter(|(n, _)| {
                                let new = !seen.contains(n);
                                seen.push(*n);
                                new
                            })
                            .enumerate()
                            .map(|(i, (n, value))| KOption {
                                name: format!("OPT_{n}"),
                                value,
                                line: i + 1,
                            })
                            .collect();
                        (format!("frag{f}.config"), opts)
                    })
                    .collect()
            },
        )
    }

    /// The final config exactly as requested (later requests win); an `n`
    /// is written as `not set` or left out.
    fn honest_config(
        requested: &[(String, Vec<KOption>)],
        leave_out_n: bool,
    ) -> BTreeMap<String, KValue> {
        let mut c = BTreeMap::new();
        for (_, opts) in requested {
            for o in opts {
                if o.value == KValue::No && leave_out_n {
                    c.remove(&o.name);
                } else {
                    c.insert(o.name.clone(), o.value.clone());
                }
            }
        }
        c
    }

    /// A value that does not honour `v`; `None` (leave it out of the
    /// config) when `remove` and `v` is not `n`.
    fn flipped(v: &KValue, remove: bool) -> Option<KValue> {
        if remove && *v != KValue::No {
            return None;
        }
        Some(match v {
            KValue::Yes => KValue::Module,
            KValue::Module | KValue::No => KValue::Yes,
            KValue::Str(s) => KValue::Str(format!("{s}x")),
            KValue::Num(n) => KValue::Num(match n.strip_prefix("0x") {
                Some(h) => format!("0x{:x}", u64::from_str_radix(h, 16).unwrap() + 1),
                None => (n.parse::<i128>().unwrap() + 1).to_string(),
            }),
        })
    }

    proptest! {
        #[test]
        fn display_reparses(vals in prop::collection::vec(value(), 0..12)) {
            let opts: Vec<KOption> = vals
                .into_iter()
                .enumerate()
                .map(|(i, value)| KOption { name: format!("OPT_{i}"), value, line: i + 1 })
                .collect();
            let text = render_fragment(&opts);
            let back = parse_fragment("p", &text).unwrap();
            prop_assert_eq!(&back, &opts);
            prop_assert_eq!(render_fragment(&back), text);
        }

        #[test]
        fn an_honest_config_drops_nothing(req in fragments(), leave_out_n in any::<bool>()) {
            let fin = honest_config(&req, leave_out_n);
            prop_assert_eq!(check_survived(&req, &fin), vec![]);
            // ... and a .config written from it reads back the same.
            let text: String = fin
                .iter()
                .map(|(k, v)| format!("{}\n", KOption { name: k.clone(), value: v.clone(), line: 0 }))
                .collect();
            prop_assert_eq!(parse_config(&text), fin);
        }

        #[test]
        fn one_flipped_option_is_the_one_reported(
            req in fragments(),
            pick in any::<prop::sample::Index>(),
            remove in any::<bool>(),
        ) {
            let fin = honest_config(&req, false);
            prop_assume!(!fin.is_empty());
            let names: Vec<&String> = fin.keys().collect();
            let name = names[pick.index(names.len())].clone();
            let wanted = fin[&name].clone();
            let mut bad = fin.clone();
            match flipped(&wanted, remove) {
                Some(v) => { bad.insert(name.clone(), v); }
                None => { bad.remove(&name); }
            }
            let d = check_survived(&req, &bad);
            prop_assert_eq!(d.len(), 1, "{:?}", d);
            prop_assert_eq!(&d[0].name, &name);
            prop_assert_eq!(&d[0].wanted, &wanted);
            prop_assert_eq!(d[0].got.as_ref(), bad.get(&name));
            // The request that counted is the last one for the name.
            let (origin, line) = req
                .iter()
                .flat_map(|(o, opts)| opts.iter().map(move |k| (o, k)))
                .filter(|(_, k)| k.name == name)
                .map(|(o, k)| (o.clone(), k.line))
                .next_back()
                .unwrap();
            prop_assert_eq!((&d[0].origin, d[0].line), (&origin, line));
        }
    }

    fn config(pairs: &[(&str, KValue)]) -> BTreeMap<String, KValue> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn base_changes_sort_kept_overridden_and_lost() {
        let base = config(&[
            ("XFS_FS", KValue::Module),
            ("RUST", KValue::Yes),
            ("IMA", KValue::Yes),
            ("DEBUG_INFO", KValue::Yes),
            ("KASAN", KValue::No),
            ("NR_CPUS", KValue::Num("64".into())),
            ("CC_HAS_ASSUME", KValue::Yes),
            ("FAILOVER", KValue::Module),
        ]);
        let requested = vec![
            (
                "lab.config".to_string(),
                vec![opt("XFS_FS", KValue::Yes, 1)],
            ),
            (
                "distro.config".to_string(),
                vec![opt("DEBUG_INFO", KValue::No, 3)],
            ),
        ];
        let fin = config(&[
            ("XFS_FS", KValue::Yes),
            ("IMA", KValue::Yes),
            ("VIRTIO_NET", KValue::Module),
            ("NR_CPUS", KValue::Num("64".into())),
            ("FAILOVER", KValue::Yes),
        ]);
        let c = base_changes(&base, &requested, &fin);
        assert_eq!(c.enabled, 6, "y and m only: {c:?}");
        assert_eq!(c.kept, 1);
        assert_eq!(
            c.overridden,
            vec![
                ("DEBUG_INFO".into(), KValue::Yes, None),
                ("XFS_FS".into(), KValue::Module, Some(KValue::Yes)),
            ]
        );
        assert_eq!(
            c.followed,
            vec![("FAILOVER".into(), KValue::Module, Some(KValue::Yes))]
        );
        // Features first, the toolchain's probes last.
        assert_eq!(
            c.lost,
            vec![
                ("RUST".into(), KValue::Yes, None),
                ("CC_HAS_ASSUME".into(), KValue::Yes, None)
            ]
        );
        assert_eq!(c.lost_features().collect::<Vec<_>>(), vec!["RUST"]);
        assert_eq!(c.modules, 1);
        let text = c.render("Debian cloud");
        assert!(text.contains("  CONFIG_RUST: y -> not set\n"), "{text}");
        assert!(text.contains("2 dropped by olddefconfig"), "{text}");
    }

    fn kvalue() -> impl Strategy<Value = KValue> {
        prop_oneof![Just(KValue::Yes), Just(KValue::Module), Just(KValue::No)]
    }

    proptest! {
        /// Every option the base enables is counted exactly once, as kept,
        /// overridden or lost; only requested options are "overridden",
        /// never "lost".
        #[test]
        fn base_changes_partition_the_enabled_options(
            base in proptest::collection::btree_map("[A-E]", kvalue(), 0..5),
            fin in proptest::collection::btree_map("[A-E]", kvalue(), 0..5),
            asked in proptest::collection::vec(("[A-E]", kvalue()), 0..4),
        ) {
            let requested = vec![("f".to_string(), asked.iter().enumerate()
                .map(|(i, (n, v))| opt(n, v.clone(), i + 1)).collect::<Vec<_>>())];
            let c = base_changes(&base, &requested, &fin);
            let enabled = base.values().filter(|v| matches!(v, KValue::Yes | KValue::Module)).count();
            prop_assert_eq!(c.enabled, enabled);
            prop_assert_eq!(c.kept + c.overridden.len() + c.followed.len() + c.lost.len(), enabled);
            for (_, _, now) in &c.lost {
                prop_assert!(!matches!(now, Some(KValue::Yes | KValue::Module)));
            }
            for (n, _, _) in &c.lost {
                prop_assert!(!asked.iter().any(|(a, _)| a == n));
            }
            for (n, _, _) in &c.overridden {
                prop_assert!(asked.iter().any(|(a, _)| a == n));
            }
        }
    }
}
