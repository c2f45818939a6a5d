//! The testcase language: YAML files in `testcases/`, parsed strictly and
//! validated before any VM starts. Every error names the file, the line and
//! column, the field, and where it can, a hint.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::device::DeviceParams;
use crate::generate::GenParams;
use crate::powercut::{CutPolicy, PowerCut, SweepEvery};
use crate::repeat::{self, At, Made, Origin, StepItem};
use crate::steps::{Expect, Step, ERRNOS};

/// One testcase, as written in YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Testcase {
    /// Unique name; `lab run NAME` selects it.
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub device: DeviceParams,
    /// Filesystem made on the namespace (absent: raw device only).
    #[serde(default)]
    pub mkfs: Option<Mkfs>,
    #[serde(default)]
    pub mount: Mount,
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    pub workload: Workload,
    /// Optional guest tools this testcase needs (vm-images/guest.yaml
    /// `optional_tools`: fio, xfs_io from a newer Debian suite).
    #[serde(default)]
    pub guest_tools: Vec<String>,
    #[serde(default = "one")]
    pub repeat: u32,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Run the workload on the crash disk and cut the power (see
    /// `powercut::PowerCut`).
    #[serde(default)]
    pub power_cut: Option<PowerCut>,
    /// Whether `lab run -j N` may run this testcase in a VM booted for an
    /// earlier one (after a clean slate), or boots one for it alone.
    #[serde(default)]
    pub isolation: Isolation,
}

/// `isolation:` of a testcase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A VM of the same class (device, guest tools, boot bound) may be
    /// reused, wiped between testcases (the default).
    #[default]
    Reuse,
    /// A VM booted for this testcase alone.
    Boot,
}

impl Testcase {
    /// The class of VMs this testcase may share (`None`: it boots its own,
    /// because it cuts the power or asks for `isolation: boot`). Testcases
    /// of one class would boot the same VM but for the NVMe device: the
    /// same guest tools and boot bound. A reused VM whose device differs
    /// has its NVMe controller replaced (hot-plug) when its kernel can;
    /// [`Testcase::device_key`] tells the devices apart.
    pub fn vm_class(&self) -> Option<String> {
        if self.power_cut.is_some() || self.isolation == Isolation::Boot {
            return None;
        }
        let mut tools = self.guest_tools.clone();
        tools.sort();
        Some(serde_json::to_string(&(tools, self.timeouts.boot_s)).expect("plain data serialises"))
    }

    /// The NVMe device's parameters as one string: equal exactly when the
    /// devices are.
    pub fn device_key(&self) -> String {
        serde_json::to_string(&self.device).expect("plain data serialises")
    }
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mkfs {
    /// XFS block size in bytes (v5 XFS: 1024..=65536, a power of two).
    pub block_size: u32,
    /// `-m reflink=`; reflink enables XFS's software (CoW) atomic writes.
    #[serde(default)]
    pub reflink: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Extra mount options, comma-separated, as `mount -o` takes them.
    #[serde(default)]
    pub options: String,
}

/// What the guest does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Read atomic-write limits from sysfs and statx on the raw device and on
    /// a file of the fresh filesystem; compare with the device rules.
    Limits,
    /// Explicit operations, each with its expected result. `repeat` items
    /// are expanded as the testcase is read (`crate::repeat`), so this
    /// holds plain steps only, and serialises as them.
    #[serde(deserialize_with = "crate::repeat::deserialize_expanded")]
    Steps(Vec<Step>),
    /// A seeded random mix of atomic and non-atomic writes and syncs from N
    /// writer threads on one file, sized from the limits the guest reports.
    Generate(GenParams),
    /// A shell command in the guest (a third-party client such as fio or
    /// xfs_io), judged by its exit status and optionally its output.
    Command(CommandSpec),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// Run by /bin/sh in the guest, with the filesystem (if any) on /mnt.
    pub run: String,
    #[serde(default)]
    pub expect_exit: i32,
    /// A regex the combined stdout+stderr must match.
    #[serde(default)]
    pub expect_output: Option<String>,
    /// A regex that, when it matches the output, makes the case skipped
    /// (the feature is not there), quoting the matching line.
    #[serde(default)]
    pub skip_if_output: Option<String>,
}

impl Workload {
    pub fn label(&self) -> &'static str {
        match self {
            Workload::Limits => "limits",
            Workload::Steps(_) => "steps",
            Workload::Generate(_) => "generate",
            Workload::Command(_) => "command",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// From QEMU start to SSH ready.
    #[serde(default = "boot_s")]
    pub boot_s: u64,
    /// For each command run in the guest.
    #[serde(default = "command_s")]
    pub command_s: u64,
}

fn boot_s() -> u64 {
    120
}
fn command_s() -> u64 {
    120
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            boot_s: boot_s(),
            command_s: command_s(),
        }
    }
}

/// A testcase file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestcaseError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field, when known (`mkfs.block_size`).
    pub field: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for TestcaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TestcaseError {}

/// Parse and validate one testcase file's text.
pub fn parse(file: &str, text: &str) -> Result<Testcase, TestcaseError> {
    // The steps as written, where they parse: a repeat that cannot be
    // expanded is named inside it, and a later mistake in an expanded step
    // is pointed at the step in the file that made it.
    let origins = match written_steps(text).as_deref().map(repeat::expand) {
        Some(Err(e)) => {
            let (line, column) = locate_repeat(text, e.item, e.at).unwrap_or((1, 1));
            return Err(TestcaseError {
                file: file.to_string(),
                line,
                column,
                field: Some(e.field()),
                message: e.message,
                hint: e.hint,
            });
        }
        Some(Ok(x)) => x.origins,
        None => vec![],
    };
    let tc: Testcase = serde_yaml::from_str(text).map_err(|e| from_yaml_error(file, text, &e))?;
    if let Workload::Steps(steps) = &tc.workload {
        debug_assert!(origins.is_empty() || origins.len() == steps.len());
    }
    validate(&tc).map_err(|(path, item, mut message, hint)| {
        let origin = item.and_then(|i| origins.get(i));
        if let Some(Origin {
            copy: Some(made), ..
        }) = origin
        {
            message.push_str(&format!(
                " (made by the repeat here: copy {} of {})",
                made.index + 1,
                made.count
            ));
        }
        let (line, column) = match (origin, item) {
            (Some(o), _) => locate_origin(text, o),
            (None, Some(i)) => locate_list_item(text, &path, i),
            (None, None) => None,
        }
        .or_else(|| locate(text, &path))
        .unwrap_or((1, 1));
        TestcaseError {
            file: file.to_string(),
            line,
            column,
            field: Some(path.join(".")),
            message,
            hint,
        }
    })?;
    Ok(tc)
}

const STEPS_PATH: [&str; 2] = ["workload", "steps"];

/// `workload.steps` as written (repeats not expanded), when the text has
/// such a list that parses; None otherwise (the full parse then reports
/// what is wrong, with serde_yaml's location).
fn written_steps(text: &str) -> Option<Vec<StepItem>> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    let steps = doc.get("workload")?.get("steps")?.clone();
    serde_yaml::with::singleton_map_recursive::deserialize(steps).ok()
}

/// Line and column of the part of a repeat item a mistake is in.
fn locate_repeat(text: &str, item: usize, at: At) -> Option<(usize, usize)> {
    let (line, column) = locate_list_item(text, &STEPS_PATH, item)?;
    let key = |k| locate_key_in_item(text, line, column, k);
    match at {
        At::Step | At::Item => None,
        At::Key(k) => key(k),
        At::Inner(i) => {
            key("steps").and_then(|(l, c)| nth_list_item(text, l, c, i).or(Some((l, c))))
        }
    }
    .or(Some((line, column)))
}

/// Line and column of the step in the file an expanded step came from: the
/// item, or inside the repeat that made it, its `step:` or its group's step.
fn locate_origin(text: &str, o: &Origin) -> Option<(usize, usize)> {
    let at = match o.copy {
        None => At::Step,
        Some(Made { inner: None, .. }) => At::Key("step"),
        Some(Made { inner: Some(i), .. }) => At::Inner(i),
    };
    locate_repeat(text, o.item, at)
}

/// A rule broken: the key path, which list item under it (if any), the
/// message and a hint.
type Invalid = (Vec<&'static str>, Option<usize>, String, Option<String>);

/// Rules across fields that serde cannot express.
fn validate(tc: &Testcase) -> Result<(), Invalid> {
    let bad = |path: Vec<&'static str>, msg: String, hint: Option<&str>| {
        Err((path, None, msg, hint.map(str::to_string)))
    };
    if tc.name.is_empty()
        || !tc
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return bad(
            vec!["name"],
            format!("{:?} is not a valid testcase name", tc.name),
            Some("use letters, digits, '-' and '_' (it becomes a directory name)"),
        );
    }
    if let Err(e) = tc.device.validate() {
        return bad(vec!["device", e.field], e.message, None);
    }
    if let Some(m) = &tc.mkfs {
        if !m.block_size.is_power_of_two() || !(1024..=65536).contains(&m.block_size) {
            return bad(
                vec!["mkfs", "block_size"],
                format!("{} is not a valid XFS block size", m.block_size),
                Some("XFS v5 block sizes are powers of two from 1024 to 65536"),
            );
        }
        // xfsprogs refuses smaller data devices ("Filesystem must be larger
        // than 300MB").
        if tc.device.size_mib < 300 {
            return bad(
                vec!["device", "size_mib"],
                format!("{} MiB is too small for XFS", tc.device.size_mib),
                Some("mkfs.xfs needs at least 300 MiB; the default is 512"),
            );
        }
        if m.block_size < tc.device.lba_size {
            return bad(
                vec!["mkfs", "block_size"],
                format!(
                    "block size {} is below the device's LBA size {}",
                    m.block_size, tc.device.lba_size
                ),
                Some("a filesystem block cannot be smaller than a logical block of the device"),
            );
        }
    }
    if tc.workload == Workload::Limits && tc.mkfs.is_none() {
        return bad(
            vec!["mkfs"],
            "the limits workload checks a file on XFS and needs `mkfs:`".into(),
            Some("add e.g. `mkfs: { block_size: 4096 }`"),
        );
    }
    if let Workload::Steps(steps) = &tc.workload {
        validate_steps(tc, steps)?;
    }
    if let Workload::Generate(g) = &tc.workload {
        if let Err(msg) = g.validate() {
            return bad(vec!["workload", "generate"], msg, None);
        }
        if tc.mkfs.is_none() {
            return bad(
                vec!["workload", "generate"],
                "a generator writes a file and needs `mkfs:`".into(),
                Some("add e.g. `mkfs: { block_size: 4096 }`"),
            );
        }
    }
    if let Workload::Command(c) = &tc.workload {
        for (field, re) in [
            ("expect_output", &c.expect_output),
            ("skip_if_output", &c.skip_if_output),
        ] {
            if let Some(re) = re {
                if let Err(e) = regex::Regex::new(re) {
                    return Err((
                        vec!["workload", "command", field],
                        None,
                        format!("not a valid regex: {e}"),
                        None,
                    ));
                }
            }
        }
    }
    if let Some(pc) = &tc.power_cut {
        validate_power_cut(tc, pc)?;
    }
    if tc.repeat == 0 {
        return bad(vec!["repeat"], "repeat must be at least 1".into(), None);
    }
    if tc.timeouts.boot_s == 0 || tc.timeouts.command_s == 0 {
        return bad(vec!["timeouts"], "timeouts must be above 0 s".into(), None);
    }
    Ok(())
}

fn validate_power_cut(tc: &Testcase, pc: &PowerCut) -> Result<(), Invalid> {
    let bad = |path: Vec<&'static str>, msg: String, hint: Option<&str>| {
        Err((path, None, msg, hint.map(str::to_string)))
    };
    let steps: &[Step] = match &tc.workload {
        Workload::Steps(steps) => steps,
        Workload::Generate(_) => &[],
        _ => {
            return bad(
                vec!["power_cut"],
                format!(
                    "power cuts run `steps` and `generate` workloads; this one is `{}`",
                    tc.workload.label()
                ),
                Some("write the workload as steps (with `mark` steps where the cut may fall)"),
            )
        }
    };
    if let Some(i) = steps.iter().position(|s| matches!(s, Step::Clone(_))) {
        return Err((
            vec!["workload", "steps"],
            Some(i),
            format!("step {}: clone (FICLONE) is not modelled under power cuts", i + 1),
            Some("the reference model follows writes, syncs and truncates; drop the clone or the power cut".into()),
        ));
    }
    if tc.mkfs.is_some()
        && steps
            .iter()
            .any(|s| matches!(s, Step::Open(o) if o.file.starts_with('/')))
    {
        return bad(
            vec!["power_cut"],
            "with a filesystem, a power-cut workload writes files on it, not the device".into(),
            Some("open relative paths (files under /mnt)"),
        );
    }
    if tc.repeat != 1 {
        return bad(
            vec!["repeat"],
            "a power-cut testcase runs once per cut".into(),
            None,
        );
    }
    match &pc.at {
        None if pc.sweep.is_none() => return bad(
            vec!["power_cut"],
            "a power cut needs `at` (where to cut), `sweep` (cut everywhere, virtually) or both"
                .into(),
            Some("e.g. `at: { write: 20 }` or `sweep: { every: write }`"),
        ),
        Some(CutPolicy::Mark(name)) => {
            let known = steps
                .iter()
                .any(|s| matches!(s, Step::Mark(m) if &m.name == name));
            if !known {
                return bad(
                    vec!["power_cut", "at", "mark"],
                    format!("no `mark` step is called {name:?}"),
                    Some("add `- mark: { name: ... }` to the steps"),
                );
            }
        }
        Some(CutPolicy::Lba { first, last }) => {
            let lbas = tc.device.size_bytes() / u64::from(tc.device.lba_size);
            if first > last || *last >= lbas {
                return bad(
                    vec!["power_cut", "at", "lba"],
                    format!("LBAs {first}-{last} are not within the device's {lbas} LBAs"),
                    None,
                );
            }
        }
        Some(CutPolicy::Write(0)) => {
            return bad(
                vec!["power_cut", "at", "write"],
                "writes count from 1".into(),
                None,
            )
        }
        Some(CutPolicy::Random { mean: 0, .. }) => {
            return bad(
                vec!["power_cut", "at", "random", "mean"],
                "mean must be at least 1".into(),
                None,
            )
        }
        _ => {}
    }
    if let Some(sw) = &pc.sweep {
        if sw.max_points == 0 {
            return bad(
                vec!["power_cut", "sweep", "max_points"],
                "a sweep needs at least one cut point".into(),
                None,
            );
        }
        let has_marks = steps.iter().any(|s| matches!(s, Step::Mark(_)));
        if sw.every == SweepEvery::Mark && !has_marks {
            return bad(
                vec!["power_cut", "sweep", "every"],
                "`every: mark` sweeps the marks, and the steps set none".into(),
                Some("add `- mark: { name: ... }` steps, or sweep `every: write` or `every: sync`"),
            );
        }
    }
    if pc.hold.window > 0 && pc.hold.ms == 0 {
        return bad(
            vec!["power_cut", "hold", "ms"],
            "a window with no time limit stalls a workload that waits for each write".into(),
            Some("give `ms`, e.g. `hold: { window: 8, ms: 20 }`, or `window: 0` to hold nothing"),
        );
    }
    if pc.states.all_subsets_up_to > 16 {
        return bad(
            vec!["power_cut", "states", "all_subsets_up_to"],
            format!(
                "2^{} states per cut is too many",
                pc.states.all_subsets_up_to
            ),
            Some("at most 16; larger windows use seeded random subsets"),
        );
    }
    Ok(())
}

fn validate_steps(tc: &Testcase, steps: &[Step]) -> Result<(), Invalid> {
    let bad_at = |item: Option<usize>, msg: String, hint: Option<&str>| {
        Err((
            vec!["workload", "steps"],
            item,
            msg,
            hint.map(str::to_string),
        ))
    };
    let bad = |msg: String, hint: Option<&str>| bad_at(None, msg, hint);
    if steps.is_empty() {
        return bad("a steps workload needs at least one step".into(), None);
    }
    let mut opened = false;
    let mut sizes = SizeBounds::default();
    let mut marks = std::collections::HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        if let Expect::Errno(e) = step.expect() {
            if !ERRNOS.iter().any(|(name, _)| name == e) {
                let known: Vec<&str> = ERRNOS.iter().map(|(n, _)| *n).collect();
                return bad_at(
                    Some(i),
                    format!("step {n} ({}): unknown expectation {e:?}", step.name()),
                    Some(&format!(
                        "use ok, supported_or_skip or an errno: {}",
                        known.join(", ")
                    )),
                );
            }
        }
        match step {
            Step::Open(o) => {
                opened = true;
                if !o.file.starts_with('/') && tc.mkfs.is_none() {
                    return bad_at(
                        Some(i),
                        format!(
                            "step {n}: relative file {:?} but the testcase makes no filesystem",
                            o.file
                        ),
                        Some("add `mkfs:` or open the device, e.g. /dev/nvme0n1"),
                    );
                }
            }
            Step::Mark(m) if m.name.is_empty() || m.name.contains(char::is_whitespace) => {
                return bad_at(
                    Some(i),
                    format!("step {n}: mark name {:?} must be one word", m.name),
                    None,
                );
            }
            // A mark may come before any open.
            Step::Mark(m) => {
                if let Some(first) = marks.insert(m.name.as_str(), n) {
                    return bad_at(
                        Some(i),
                        format!("step {n}: mark {:?} is step {first}'s name already", m.name),
                        Some("a mark names one point of the workload (`power_cut.at.mark`, a sweep's cut points, a crash state's recipe): give each its own name"),
                    );
                }
            }
            // Steps on the whole machine may come before any open.
            Step::Sync(_) | Step::Sysctl(_) | Step::Sleep(_) | Step::MemoryPressure(_)
                if !opened =>
            {
                validate_global(n, step).or_else(|(m, h)| bad_at(Some(i), m, Some(h.as_str())))?;
            }
            _ if !opened => {
                return bad_at(
                    Some(i),
                    format!("step {n} ({}) comes before any `open`", step.name()),
                    Some("open a file first; later steps use the file opened last"),
                );
            }
            Step::Pwrite(p) => {
                if p.len == 0 || p.iovecs == 0 || u64::from(p.iovecs) > p.len {
                    return bad_at(
                        Some(i),
                        format!("step {n}: pwrite needs len >= iovecs >= 1"),
                        None,
                    );
                }
                if p.buffer == crate::steps::BufferPlacement::PageFault && p.expect == Expect::Ok {
                    return bad_at(
                        Some(i),
                        format!("step {n}: a write whose buffer faults cannot succeed"),
                        Some("expect `refused_or_skip` (any error, nothing written) or an errno such as EFAULT"),
                    );
                }
                if p.atomic && !p.len.is_power_of_two() && p.expect == Expect::Ok {
                    return bad_at(
                    Some(i),
                        format!("step {n}: an atomic write of {} bytes (not a power of two) cannot succeed", p.len),
                        Some("to test that the kernel refuses it, add `expect: EINVAL`"),
                    );
                }
            }
            Step::MmapWrite(m) => {
                let Some(end) = m.offset.checked_add(m.len).filter(|_| m.len > 0) else {
                    return bad_at(
                        Some(i),
                        format!("step {n}: mmap_write needs len >= 1 and offset + len within 2^64"),
                        None,
                    );
                };
                let file = m.file.as_deref().or(sizes.last.as_deref()).unwrap_or("");
                if let Some(longest) = sizes.longest(file).filter(|l| *l < end) {
                    return bad_at(
                        Some(i),
                        format!(
                            "step {n}: mmap_write stores to bytes {}-{end} of {file}, but no earlier step makes {file} longer than {longest} bytes",
                            m.offset
                        ),
                        Some("a store past the end of a mapped file faults (SIGBUS): make the file long enough first, with `pwrite`, `fallocate` or `ftruncate: { len: N }`"),
                    );
                }
            }
            Step::PunchHole(r) | Step::ZeroRange(r) => {
                let sector = crate::stamp::SECTOR as u64;
                if r.len == 0
                    || r.offset.checked_add(r.len).is_none()
                    || r.offset % sector != 0
                    || r.len % sector != 0
                {
                    return bad_at(
                        Some(i),
                        format!(
                            "step {n}: {} zeroes whole 512-byte sectors: offset {} and len {} must be multiples of {sector}, len at least {sector}",
                            step.name(),
                            r.offset,
                            r.len
                        ),
                        Some("the reference model judges crash states sector by sector; for example `offset: 4096, len: 8192`"),
                    );
                }
            }
            Step::Sync(_) | Step::Sysctl(_) | Step::Sleep(_) | Step::MemoryPressure(_) => {
                validate_global(n, step).or_else(|(m, h)| bad_at(Some(i), m, Some(h.as_str())))?;
            }
            Step::Folios(f) => {
                let page = crate::folio::PAGE;
                if f.offset % page != 0 || f.len.is_some_and(|l| l == 0 || l % page != 0) {
                    return bad_at(
                        Some(i),
                        format!(
                            "step {n}: folios counts whole pages: offset {} and len {} must be multiples of {page}",
                            f.offset,
                            f.len.map_or("(to the end)".to_string(), |l| l.to_string())
                        ),
                        Some("for example `folios: { offset: 0, len: 2097152 }`"),
                    );
                }
            }
            _ => {}
        }
        sizes.after(step);
    }
    Ok(())
}

/// Longest `sleep` step: background writeback wakes every few seconds; a
/// minute is a mistake.
pub const MAX_SLEEP_MS: u64 = 60_000;
/// Most a `memory_pressure` step may ask for: the guest has 1 GiB, part of
/// it the initramfs; the agent also stops short of what is available.
pub const MAX_PRESSURE_MB: u64 = 768;

/// The steps that act on the whole machine: a sysctl under `vm.` only
/// (the clean slate of a reused VM restores those, lab-guest's slate.rs),
/// a bounded sleep, a bounded memory pressure. Err: message and hint.
fn validate_global(n: usize, step: &Step) -> Result<(), (String, String)> {
    match step {
        Step::Sysctl(s) => {
            let rest = s.name.strip_prefix("vm.").unwrap_or("");
            let word = |w: &str| {
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            };
            if !rest.split('.').all(word) {
                return Err((
                    format!("step {n}: sysctl {:?} is not a `vm.*` sysctl", s.name),
                    "only vm.* (writeback and reclaim) may be set: a reused VM's clean slate restores exactly those; e.g. `name: vm.dirty_expire_centisecs`".into(),
                ));
            }
            if s.value.trim().is_empty() || s.value.contains('\n') {
                return Err((
                    format!("step {n}: sysctl {} needs a one-line value", s.name),
                    "e.g. `value: 100`".into(),
                ));
            }
        }
        Step::Sleep(s) if s.ms == 0 || s.ms > MAX_SLEEP_MS => {
            return Err((
                format!("step {n}: sleep of {} ms is not within 1..={MAX_SLEEP_MS}", s.ms),
                "background writeback with `vm.dirty_expire_centisecs: 100` runs within a few seconds".into(),
            ));
        }
        Step::MemoryPressure(m) if m.mb == 0 || m.mb > MAX_PRESSURE_MB => {
            return Err((
                format!(
                    "step {n}: memory_pressure of {} MiB is not within 1..={MAX_PRESSURE_MB}",
                    m.mb
                ),
                "the guest has 1 GiB; the agent touches at most what is available less a margin anyway".into(),
            ));
        }
        _ => {}
    }
    Ok(())
}

/// How long each file of a steps workload can at most be when a step runs,
/// for the checks that need the file long enough (`mmap_write`). A
/// relative file starts empty (the filesystem is fresh); a device, or a
/// file a clone wrote, has a length the plan does not know.
#[derive(Default)]
struct SizeBounds {
    /// File name as the steps give it -> the most its length can be (None:
    /// unknown).
    bound: std::collections::HashMap<String, Option<u64>>,
    /// The file opened last (what a step without `file:` uses).
    last: Option<String>,
}

impl SizeBounds {
    fn longest(&self, file: &str) -> Option<u64> {
        self.bound.get(file).copied().flatten()
    }

    fn after(&mut self, step: &Step) {
        let file = |f: &Option<String>| f.clone().or_else(|| self.last.clone()).unwrap_or_default();
        let (name, end) = match step {
            Step::Open(o) => {
                let known = (!o.file.starts_with('/')).then_some(0);
                self.bound.entry(o.file.clone()).or_insert(known);
                self.last = Some(o.file.clone());
                return;
            }
            Step::Clone(c) => {
                self.bound.insert(file(&c.file), None);
                return;
            }
            Step::Pwrite(p) => (file(&p.file), p.offset.saturating_add(p.len)),
            Step::Fallocate(r) | Step::ZeroRange(r) => {
                (file(&r.file), r.offset.saturating_add(r.len))
            }
            Step::Ftruncate(t) => (file(&t.file), t.len),
            _ => return,
        };
        if let Some(Some(b)) = self.bound.get_mut(&name) {
            *b = (*b).max(end);
        }
    }
}

fn from_yaml_error(file: &str, text: &str, e: &serde_yaml::Error) -> TestcaseError {
    let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
    let raw = e.to_string();
    // serde_yaml appends " at line N column M"; we print the location first.
    let message = match raw.find(" at line ") {
        Some(i) => raw[..i].to_string(),
        None => raw.clone(),
    };
    let (field, hint) = unknown_field_hint(&message);
    let field = field.or_else(|| field_path_at(text, line));
    // serde_yaml prefixes the parent path ("device: unknown field ...",
    // "workload.steps[1].repeat: ..."); the field path says where, so drop
    // the repetition, keeping the more exact of the two paths.
    let (field, message) = match (field, message.split_once(": ")) {
        (Some(f), Some((prefix, rest))) => {
            let prefix = without_indices(prefix);
            if f.starts_with(&format!("{prefix}.")) {
                (Some(f), rest.to_string())
            } else if prefix == f || prefix.starts_with(&format!("{f}.")) {
                (Some(prefix), rest.to_string())
            } else {
                (Some(f), message)
            }
        }
        (field, _) => (field, message),
    };
    TestcaseError {
        file: file.to_string(),
        line,
        column,
        field,
        message,
        hint,
    }
}

/// `workload.steps[1].repeat` -> `workload.steps.repeat` (field paths name
/// keys; the line says which item).
fn without_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// For "unknown field `x`, expected one of `a`, `b`" (or "unknown variant
/// `x`, ..."): a "did you mean" hint.
fn unknown_field_hint(message: &str) -> (Option<String>, Option<String>) {
    let Some(rest) = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|p| message.find(p).map(|start| &message[start + p.len()..]))
    else {
        return (None, None);
    };
    let Some(end) = rest.find('`') else {
        return (None, None);
    };
    let unknown = &rest[..end];
    let expected: Vec<&str> = rest[end..].split('`').skip(2).step_by(2).collect();
    let best = expected
        .iter()
        .map(|c| (edit_distance(unknown, c), *c))
        .min()
        .filter(|(d, _)| *d <= 3);
    let hint = match best {
        Some((_, c)) => Some(format!("did you mean `{c}`?")),
        None if !expected.is_empty() => Some(format!("known fields: {}", expected.join(", "))),
        None => None,
    };
    (None, hint)
}

/// Optimal string alignment distance: edits, with a swap of two neighbours
/// counting as one (the commonest typo: `awpuf` for `awupf`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

fn indent_and_key(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') || trimmed.is_empty() {
        return None;
    }
    let indent = line.len() - trimmed.len();
    let key = trimmed.split(':').next()?.trim().trim_start_matches("- ");
    if key.contains(' ') || !trimmed.contains(':') {
        return None;
    }
    Some((indent, key))
}

/// The dotted key path of the mapping entry at `line` (1-based), from indentation.
fn field_path_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let (mut indent, key) = indent_and_key(lines.get(line.checked_sub(1)?)?)?;
    let mut path = vec![key];
    for l in lines[..line - 1].iter().rev() {
        if let Some((i, k)) = indent_and_key(l) {
            if i < indent {
                path.push(k);
                indent = i;
            }
        }
    }
    path.reverse();
    Some(path.join("."))
}

/// Line and column (1-based) of a key path such as ["mkfs", "block_size"],
/// found by following indentation. Good enough for block-style YAML, which is
/// what testcases use; flow-style maps fall back to their parent's line.
pub fn locate(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let mut found = None;
    let mut min_indent = 0usize;
    let mut depth = 0;
    for (n, line) in text.lines().enumerate() {
        if depth == path.len() {
            break;
        }
        let Some((indent, key)) = indent_and_key(line) else {
            // flow style: `mkfs: { block_size: 512 }`
            if depth > 0 {
                if let Some(col) = find_flow_key(line, path[depth]) {
                    return Some((n + 1, col + 1));
                }
            }
            continue;
        };
        if depth > 0 && indent < min_indent {
            break;
        }
        if key == path[depth] && indent >= min_indent {
            found = Some((n + 1, indent + 1));
            depth += 1;
            min_indent = indent + 1;
            // flow style on the same line: `mkfs: { block_size: 512 }`
            if depth < path.len() && line.contains('{') {
                if let Some(col) = find_flow_key(line, path[depth]) {
                    return Some((n + 1, col + 1));
                }
            }
        } else if depth > 0 {
            if let Some(col) = find_flow_key(line, path[depth]) {
                if line[..col].contains('{') {
                    return Some((n + 1, col + 1));
                }
            }
        }
    }
    found
}

/// Column (0-based) of `key:` in a flow mapping line, as a whole key: in
/// `{ nawupf: 3, awupf: 1 }` the key `awupf` is the second one.
fn find_flow_key(line: &str, key: &str) -> Option<usize> {
    let pat = format!("{key}:");
    line.match_indices(&pat).map(|(i, _)| i).find(|&i| {
        line[..i]
            .chars()
            .next_back()
            .is_none_or(|c| c == '{' || c == ',' || c.is_whitespace())
    })
}

/// Line and column of the `index`-th item (0-based) of the block list under
/// the key path (`- ` entries at the list's own indentation).
pub fn locate_list_item(text: &str, path: &[&str], index: usize) -> Option<(usize, usize)> {
    let (key_line, key_col) = locate(text, path)?;
    nth_list_item(text, key_line, key_col, index)
}

/// Line and column of `key:` inside the list item at (`line`, `column`)
/// (its `- `): on the item's line or the lines indented under it, block or
/// flow style, the first whole key of that name.
fn locate_key_in_item(text: &str, line: usize, column: usize, key: &str) -> Option<(usize, usize)> {
    for (n, l) in text.lines().enumerate().skip(line - 1) {
        let trimmed = l.trim_start();
        if n + 1 > line {
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if l.len() - trimmed.len() < column {
                return None;
            }
        }
        // Not inside a comment.
        let code = l.split(" #").next().unwrap_or(l);
        if let Some(c) = find_flow_key(code, key) {
            return Some((n + 1, c + 1));
        }
    }
    None
}

/// Line and column of the `index`-th item (0-based) of the block list under
/// the key at (`key_line`, `key_col`).
fn nth_list_item(
    text: &str,
    key_line: usize,
    key_col: usize,
    index: usize,
) -> Option<(usize, usize)> {
    let mut item_indent = None;
    let mut count = 0;
    for (n, line) in text.lines().enumerate().skip(key_line) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if indent < key_col {
            break;
        }
        if trimmed.starts_with("- ") && item_indent.is_none_or(|i| i == indent) {
            item_indent = Some(indent);
            if count == index {
                return Some((n + 1, indent + 1));
            }
            count += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
name: limits-4k
description: limits on 4 KiB LBAs
device:
  lba_size: 4096
mkfs:
  block_size: 4096
workload: limits
";

    const CUT: &str = "\
name: cut
device: { lba_size: 4096 }
power_cut:
  at: { mark: synced }
workload:
  steps:
    - open: { file: /dev/nvme0n1, direct: true }
    - pwrite: { offset: 0, len: 16384 }
    - mark: { name: synced }
";

    #[test]
    fn vm_classes_join_what_would_boot_the_same_vm() {
        let a = parse("a.yaml", GOOD).unwrap();
        let b = parse("b.yaml", &GOOD.replace("limits-4k", "other")).unwrap();
        assert!(a.vm_class().is_some());
        assert_eq!(a.vm_class(), b.vm_class());
        // Another device is the same class (its controller is swapped in),
        // told apart by its device key.
        let other_device = parse("c.yaml", &GOOD.replace("4096\nmkfs", "512\nmkfs")).unwrap();
        assert_eq!(a.vm_class(), other_device.vm_class());
        assert_eq!(a.device_key(), b.device_key());
        assert_ne!(a.device_key(), other_device.device_key());
        let tools = parse("d.yaml", &format!("{GOOD}guest_tools: [fio]\n")).unwrap();
        assert_ne!(a.vm_class(), tools.vm_class());
        let own = parse("e.yaml", &format!("{GOOD}isolation: boot\n")).unwrap();
        assert_eq!(own.isolation, Isolation::Boot);
        assert_eq!(own.vm_class(), None);
        assert_eq!(parse("f.yaml", CUT).unwrap().vm_class(), None);
        let e = parse("g.yaml", &format!("{GOOD}isolation: shared\n")).unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (8, Some("isolation")), "{e}");
    }

    #[test]
    fn power_cut_testcases_parse_and_their_mistakes_are_named() {
        let tc = parse("c.yaml", CUT).unwrap();
        let pc = tc.power_cut.unwrap();
        assert_eq!(pc.at, Some(CutPolicy::Mark("synced".into())));
        assert_eq!(pc.hold, crate::powercut::HoldPolicy::default());

        // A sweep alone is a power cut; neither is a mistake named at the section.
        let sweep = CUT.replace("at: { mark: synced }", "sweep: { every: mark }");
        let tc = parse("c.yaml", &sweep).unwrap();
        assert_eq!(tc.power_cut.unwrap().at, None);
        let e = parse(
            "c.yaml",
            &CUT.replace("at: { mark: synced }", "hold: { window: 0 }"),
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("power_cut"), "{e}");
        assert!(e.message.contains("`at`"), "{e}");
        let e = parse(
            "c.yaml",
            &sweep.replace("    - mark: { name: synced }\n", ""),
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("power_cut.sweep.every"), "{e}");
        let e = parse(
            "c.yaml",
            &CUT.replace(
                "at: { mark: synced }",
                "sweep: { every: write, max_pionts: 3 }",
            ),
        )
        .unwrap_err();
        assert_eq!(e.hint.as_deref(), Some("did you mean `max_points`?"), "{e}");

        let e = parse(
            "c.yaml",
            &CUT.replace("at: { mark: synced }", "at: { mark: synced2 }"),
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("power_cut.at.mark"), "{e}");
        assert!(
            e.message.contains("no `mark` step is called \"synced2\""),
            "{e}"
        );
        assert_eq!(e.line, 4, "{e}");

        let e = parse(
            "c.yaml",
            &CUT.replace("at: { mark: synced }", "at: { wirte: 3 }"),
        )
        .unwrap_err();
        assert!(e.message.contains("wirte"), "{e}");
        assert_eq!(e.line, 4, "{e}");

        let with_fs = CUT.replace("power_cut:", "mkfs: { block_size: 4096 }\npower_cut:");
        let e = parse("c.yaml", &with_fs).unwrap_err();
        assert!(e.message.contains("writes files on it"), "{e}");
        let fs_ok = with_fs.replace("/dev/nvme0n1", "data");
        parse("c.yaml", &fs_ok).unwrap();

        let no_time = CUT.replace(
            "  at: { mark: synced }",
            "  at: { mark: synced }\n  hold: { window: 4, ms: 0 }",
        );
        let e = parse("c.yaml", &no_time).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("power_cut.hold.ms"), "{e}");
    }

    #[test]
    fn parses_good_testcase_with_defaults() {
        let tc = parse("t.yaml", GOOD).unwrap();
        assert_eq!(tc.device.lba_size, 4096);
        assert_eq!(tc.device.size_mib, 512);
        assert_eq!(tc.repeat, 1);
        assert_eq!(tc.workload, Workload::Limits);
        assert_eq!(tc.timeouts.boot_s, 120);
    }

    #[test]
    fn unknown_field_names_line_column_and_suggests() {
        let text = GOOD.replace("  lba_size: 4096", "  lba_sise: 4096");
        let e = parse("testcases/t.yaml", &text).unwrap_err();
        assert_eq!((e.line, e.column), (4, 3));
        assert!(
            e.message.contains("unknown field `lba_sise`"),
            "{}",
            e.message
        );
        assert_eq!(e.hint.as_deref(), Some("did you mean `lba_size`?"));
        let shown = e.to_string();
        assert!(shown.starts_with("testcases/t.yaml:4:3: "), "{shown}");
        assert_eq!(e.field.as_deref(), Some("device.lba_sise"));
    }

    #[test]
    fn swapped_letters_suggest_the_right_field() {
        let text = GOOD.replace("  lba_size: 4096\n", "  lba_size: 4096\n  awpuf: 1\n");
        let e = parse("t.yaml", &text).unwrap_err();
        assert_eq!(e.hint.as_deref(), Some("did you mean `awupf`?"));
        assert_eq!(e.field.as_deref(), Some("device.awpuf"));
        assert!(
            e.message.starts_with("unknown field `awpuf`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_folios_step_counts_whole_pages() {
        let text = "name: f\nmkfs: { block_size: 4096 }\nworkload:\n  steps:\n    - open: { file: f }\n    - pwrite: { offset: 0, len: 2097152 }\n    - folios: { offset: 512, expect: supported_or_skip }\n";
        let e = parse("t.yaml", text).unwrap_err();
        assert_eq!(e.line, 7, "{e}");
        assert!(e.message.contains("multiples of 4096"), "{}", e.message);
        assert!(e.hint.is_some());
        let ok = text.replace("offset: 512", "offset: 4096, len: 8192");
        let tc = parse("t.yaml", &ok).unwrap();
        let Workload::Steps(steps) = &tc.workload else {
            panic!("steps")
        };
        assert_eq!(steps[2].describe(), "folios(off=4096 len=8192)");
        assert!(parse("t.yaml", &text.replace("offset: 512", "len: 0")).is_err());
    }

    #[test]
    fn wrong_type_names_location() {
        let text = GOOD.replace("lba_size: 4096", "lba_size: big");
        let e = parse("t.yaml", &text).unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.message.contains("invalid type"), "{}", e.message);
    }

    #[test]
    fn block_below_lba_is_rejected_at_the_field() {
        let text = GOOD.replace("  block_size: 4096", "  block_size: 1024");
        let e = parse("t.yaml", &text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("mkfs.block_size"));
        assert_eq!((e.line, e.column), (6, 3));
        assert!(
            e.message.contains("below the device's LBA size 4096"),
            "{}",
            e.message
        );
        assert!(e.hint.is_some());
    }

    #[test]
    fn bad_block_size_in_flow_style_is_located() {
        let text = GOOD.replace(
            "mkfs:\n  block_size: 4096\n",
            "mkfs: { block_size: 3000 }\n",
        );
        let e = parse("t.yaml", &text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("mkfs.block_size"));
        assert_eq!(e.line, 5);
        assert_eq!(e.column, 9);
    }

    #[test]
    fn device_rule_violation_names_field() {
        let text = GOOD.replace(
            "  lba_size: 4096\n",
            "  lba_size: 4096\n  awun: 1\n  awupf: 2\n",
        );
        let e = parse("t.yaml", &text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("device.awupf"));
        assert_eq!(e.line, 6);
    }

    #[test]
    fn namespace_atomic_rule_violation_names_line_and_field() {
        let text = GOOD.replace(
            "  lba_size: 4096\n",
            "  lba_size: 4096\n  nawupf: 15\n  nabspf: 7\n",
        );
        let e = parse("t.yaml", &text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("device.nabspf"));
        assert_eq!(e.line, 6);
        assert!(e
            .message
            .contains("NABSPF (7) must be at least NAWUPF (15)"));
        assert!(e.to_string().starts_with("t.yaml:6:3: device.nabspf: "));
    }

    #[test]
    fn flow_style_key_is_found_whole_not_inside_a_longer_key() {
        let text = "name: x\ndevice: { lba_size: 4096, nawupf: 3, awun: 1, awupf: 2 }\nworkload: limits\nmkfs: { block_size: 4096 }\n";
        let e = parse("t.yaml", text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("device.awupf"));
        assert_eq!((e.line, e.column), (2, 47));
    }

    #[test]
    fn unknown_workload_lists_variants() {
        let text = GOOD.replace("workload: limits", "workload: limitz");
        let e = parse("t.yaml", &text).unwrap_err();
        assert_eq!(e.line, 7);
        assert!(
            e.message.contains("unknown variant `limitz`"),
            "{}",
            e.message
        );
        assert_eq!(e.hint.as_deref(), Some("did you mean `limits`?"));
    }

    #[test]
    fn limits_needs_mkfs() {
        let text = GOOD.replace("mkfs:\n  block_size: 4096\n", "");
        let e = parse("t.yaml", &text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("mkfs"));
    }

    const STEPS: &str = "\
name: direct-atomic
device: { lba_size: 4096 }
mkfs: { block_size: 4096 }
workload:
  steps:
    - open: { file: f, direct: true }
    - pwrite: { offset: 0, len: 4096, atomic: true }
    - pwrite: { offset: 0, len: 3000, atomic: true, expect: EINVAL }
    - fsync: {}
    - verify: {}
";

    #[test]
    fn steps_workload_parses() {
        let tc = parse("t.yaml", STEPS).unwrap();
        match &tc.workload {
            Workload::Steps(s) => {
                assert_eq!(s.len(), 5);
                assert_eq!(s[2].expect(), &Expect::Errno("EINVAL".into()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn atomic_non_power_of_two_expected_ok_is_rejected_with_hint() {
        let text = STEPS.replace(", expect: EINVAL", "");
        let e = parse("t.yaml", &text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("workload.steps"));
        assert_eq!((e.line, e.column), (8, 5), "points at the step itself");
        assert!(
            e.message.contains("3000 bytes (not a power of two)"),
            "{}",
            e.message
        );
        assert_eq!(
            e.hint.as_deref(),
            Some("to test that the kernel refuses it, add `expect: EINVAL`")
        );
    }

    const MMAP: &str = "\
name: mmap
device: { lba_size: 512 }
mkfs: { block_size: 4096 }
workload:
  steps:
    - open: { file: f }
    - pwrite: { offset: 0, len: 8192 }
    - mmap_write: { offset: 4096, len: 4096 }
    - mmap_write: { offset: 512, len: 1024, msync: false }
    - fsync: {}
";

    #[test]
    fn mmap_write_parses_and_needs_a_long_enough_file() {
        let tc = parse("t.yaml", MMAP).unwrap();
        let Workload::Steps(s) = &tc.workload else {
            panic!("{:?}", tc.workload)
        };
        assert!(matches!(&s[2], Step::MmapWrite(m) if m.msync && m.len == 4096));
        assert!(matches!(&s[3], Step::MmapWrite(m) if !m.msync));
        // Past what the plan wrote: named with the step, the range and a hint.
        let e = parse(
            "t.yaml",
            &MMAP.replace("offset: 4096, len: 4096", "offset: 4096, len: 8192"),
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("workload.steps"));
        assert_eq!((e.line, e.column), (8, 5), "points at the step itself");
        assert_eq!(
            e.message,
            "step 3: mmap_write stores to bytes 4096-12288 of f, but no earlier step makes f longer than 8192 bytes"
        );
        assert!(e.hint.as_deref().unwrap().contains("SIGBUS"), "{e}");
        // A truncate, an allocation or a write before it makes room.
        for room in [
            "    - ftruncate: { len: 12288 }\n",
            "    - fallocate: { offset: 8192, len: 4096 }\n",
            "    - pwrite: { offset: 8192, len: 4096 }\n",
        ] {
            let text = MMAP
                .replace("offset: 4096, len: 4096", "offset: 4096, len: 8192")
                .replace(
                    "    - mmap_write: { offset: 4096",
                    &format!("{room}    - mmap_write: {{ offset: 4096"),
                );
            parse("t.yaml", &text).unwrap_or_else(|e| panic!("{room}: {e}"));
        }
        // A device's length, and a clone's, are not the plan's to know.
        let dev = "name: d\ndevice: { lba_size: 4096 }\nworkload:\n  steps:\n    - open: { file: /dev/nvme0n1 }\n    - mmap_write: { offset: 0, len: 4096 }\n";
        parse("t.yaml", dev).unwrap();
        let cloned = MMAP.replace(
            "    - pwrite: { offset: 0, len: 8192 }\n",
            "    - clone: { from: g }\n",
        );
        parse("t.yaml", &cloned).unwrap();
        // Nothing to store is a mistake.
        let e = parse(
            "t.yaml",
            &MMAP.replace("offset: 512, len: 1024", "offset: 512, len: 0"),
        )
        .unwrap_err();
        assert!(
            e.message.contains("step 4: mmap_write needs len >= 1"),
            "{e}"
        );
        // Before any open, like every file step.
        let e = parse(
            "t.yaml",
            &MMAP.replace(
                "    - open: { file: f }\n    - pwrite: { offset: 0, len: 8192 }\n",
                "",
            ),
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("step 1 (mmap_write) comes before any `open`"),
            "{e}"
        );
    }

    const REPEAT: &str = "\
name: repeat
device: { lba_size: 512 }
mkfs: { block_size: 4096 }
workload:
  steps:
    - open: { file: f }
    - repeat:
        count: 4
        offset_step: 4096
        step: { pwrite: { offset: 0, len: 4096, atomic: true } }
    - repeat: { count: 2, offset_step: 8192, steps: [ { pwrite: { offset: 0, len: 512 } }, { fsync: {} } ] }
    - repeat:
        count: 2
        steps:
          - fdatasync: {}
          - verify: {}
";

    fn refused(text: &str) -> TestcaseError {
        parse("t.yaml", text).unwrap_err()
    }

    #[test]
    fn repeats_expand_into_plain_steps_that_serialise_as_such() {
        let tc = parse("t.yaml", REPEAT).unwrap();
        let Workload::Steps(s) = &tc.workload else {
            panic!("{:?}", tc.workload)
        };
        let described: Vec<String> = s.iter().map(Step::describe).collect();
        assert_eq!(
            described,
            [
                "open(f )",
                "pwritev2(off=0 len=4096 RWF_ATOMIC)",
                "pwritev2(off=4096 len=4096 RWF_ATOMIC)",
                "pwritev2(off=8192 len=4096 RWF_ATOMIC)",
                "pwritev2(off=12288 len=4096 RWF_ATOMIC)",
                "pwritev2(off=0 len=512 )",
                "fsync()",
                "pwritev2(off=8192 len=512 )",
                "fsync()",
                "fdatasync()",
                "verify()",
                "fdatasync()",
                "verify()",
            ]
        );
        // Serialised, the testcase shows the expanded steps, and reads back
        // as the same testcase.
        let yaml = serde_yaml::to_string(&tc).unwrap();
        assert!(!yaml.contains("- repeat"), "{yaml}");
        assert_eq!(parse("t.yaml", &yaml).unwrap(), tc);
        // The type alone (no `parse`) expands, and refuses what cannot be.
        assert_eq!(serde_yaml::from_str::<Testcase>(REPEAT).unwrap(), tc);
        let e = serde_yaml::from_str::<Testcase>(&REPEAT.replace("count: 4", "count: 0"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("workload.steps item 2: count 0 is not between 1 and 4096"),
            "{e}"
        );
    }

    #[test]
    fn repeat_count_is_checked_at_its_line() {
        let e = refused(&REPEAT.replace("count: 4", "count: 0"));
        assert_eq!((e.line, e.column), (8, 9), "{e}");
        assert_eq!(e.field.as_deref(), Some("workload.steps.repeat.count"));
        assert!(
            e.message.contains("count 0 is not between 1 and 4096"),
            "{e}"
        );
        assert!(e.hint.is_some());
        let e = refused(&REPEAT.replace("count: 4", "count: 4097"));
        assert_eq!((e.line, e.column), (8, 9), "{e}");
        // Flow style: the key inside the braces.
        let e = refused(&REPEAT.replace("{ count: 2, offset_step", "{ count: 5000, offset_step"));
        assert_eq!((e.line, e.column), (11, 17), "{e}");
        assert_eq!(e.field.as_deref(), Some("workload.steps.repeat.count"));
        assert!(
            e.to_string()
                .starts_with("t.yaml:11:17: workload.steps.repeat.count: count 5000"),
            "{e}"
        );
    }

    #[test]
    fn repeat_offset_step_is_checked_at_its_line() {
        let e = refused(&REPEAT.replace("offset_step: 4096", "offset_step: 1000"));
        assert_eq!((e.line, e.column), (9, 9), "{e}");
        assert_eq!(
            e.field.as_deref(),
            Some("workload.steps.repeat.offset_step")
        );
        assert!(
            e.message
                .contains("offset_step 1000 is not a multiple of 512"),
            "{e}"
        );
        assert!(e.hint.is_some());
        // On a step without an offset.
        let e = refused(&REPEAT.replace(
            "step: { pwrite: { offset: 0, len: 4096, atomic: true } }",
            "step: { fsync: {} }",
        ));
        assert_eq!((e.line, e.column), (9, 9), "{e}");
        assert_eq!(
            e.field.as_deref(),
            Some("workload.steps.repeat.offset_step")
        );
        assert!(e.message.contains("and fsync has none"), "{e}");
        assert!(
            e.hint.as_deref().unwrap().contains("drop offset_step"),
            "{e}"
        );
        let e = refused(&REPEAT.replace(
            "        count: 2\n",
            "        count: 2\n        offset_step: 512\n",
        ));
        assert_eq!((e.line, e.column), (14, 9), "{e}");
        assert!(e.message.contains("fdatasync, verify have none"), "{e}");
    }

    #[test]
    fn a_repeated_mark_and_a_nested_repeat_are_refused_at_the_step() {
        let e =
            refused(&REPEAT.replace("          - verify: {}", "          - mark: { name: done }"));
        assert_eq!((e.line, e.column), (16, 11), "{e}");
        assert_eq!(e.field.as_deref(), Some("workload.steps.repeat.steps"));
        assert!(e.message.contains("a mark cannot be repeated"), "{e}");
        assert_eq!(
            e.hint.as_deref(),
            Some("put the mark before or after the repeat")
        );
        let e = refused(&REPEAT.replace(
            "          - verify: {}",
            "          - repeat: { count: 2, step: { verify: {} } }",
        ));
        assert_eq!((e.line, e.column), (16, 11), "{e}");
        assert!(
            e.message
                .contains("a repeat inside a repeat is not supported"),
            "{e}"
        );
        assert!(e.hint.is_some());
        // In `step:`: at the key.
        let e = refused(&REPEAT.replace(
            "step: { pwrite: { offset: 0, len: 4096, atomic: true } }",
            "step: { mark: { name: m } }",
        ));
        assert_eq!((e.line, e.column), (10, 9), "{e}");
    }

    #[test]
    fn unknown_repeat_fields_are_named_with_a_hint() {
        let e = refused(&REPEAT.replace(
            "        count: 4\n",
            "        count: 4\n        offsetstep: 4096\n",
        ));
        assert_eq!((e.line, e.column), (9, 9), "{e}");
        assert_eq!(e.field.as_deref(), Some("workload.steps.repeat.offsetstep"));
        assert!(e.message.starts_with("unknown field `offsetstep`, expected one of `count`, `offset_step`, `step`, `steps`"), "{e}");
        assert_eq!(e.hint.as_deref(), Some("did you mean `offset_step`?"));
        let e = refused(&REPEAT.replace("step: { pwrite:", "step: { pwirte:"));
        assert_eq!(e.line, 10, "{e}");
        assert_eq!(e.hint.as_deref(), Some("did you mean `pwrite`?"));
        let e = refused(&REPEAT.replace(
            "    - repeat:\n        count: 4",
            "    - repaet:\n        count: 4",
        ));
        assert_eq!(e.line, 7, "{e}");
        assert_eq!(e.hint.as_deref(), Some("did you mean `repeat`?"));
    }

    #[test]
    fn too_many_expanded_steps_is_an_error_at_the_repeat() {
        let text = REPEAT
            .replace("        count: 2\n", "        count: 4096\n") // 8192 steps
            .replace("{ count: 2,", "{ count: 1000,"); // 2000 more
        let e = refused(&text);
        assert_eq!((e.line, e.column), (13, 9), "{e}");
        assert_eq!(e.field.as_deref(), Some("workload.steps.repeat.count"));
        assert!(
            e.message.contains("expand to 10197 steps (2005 before this repeat, 4096 x 2 here), more than the 10000"),
            "{e}"
        );
        assert!(e.hint.is_some());
    }

    #[test]
    fn a_mistake_in_a_repeated_step_points_at_it_and_names_the_copy() {
        // An atomic write of 3000 bytes: steps 2..5, reported at the first.
        let e = refused(&REPEAT.replace("len: 4096, atomic: true", "len: 3000, atomic: true"));
        assert_eq!((e.line, e.column), (10, 9), "at `step:`: {e}");
        assert_eq!(e.field.as_deref(), Some("workload.steps"));
        assert_eq!(
            e.message,
            "step 2: an atomic write of 3000 bytes (not a power of two) cannot succeed (made by the repeat here: copy 1 of 4)"
        );
        assert!(e.hint.is_some());
        // In a block-style group: at the group's step.
        let text = REPEAT.replace("          - fdatasync: {}\n", "          - fdatasync: {}\n          - pwrite: { offset: 0, len: 3000, atomic: true }\n");
        let e = refused(&text);
        assert_eq!((e.line, e.column), (16, 11), "{e}");
        assert!(e.message.starts_with("step 11: an atomic write"), "{e}");
        assert!(
            e.message
                .ends_with("(made by the repeat here: copy 1 of 2)"),
            "{e}"
        );
        // A plain step after the repeats is found by its own position in
        // the file, not by its number among the expanded steps.
        let e = refused(&REPEAT.replace(
            "          - verify: {}\n",
            "          - verify: {}\n    - pwrite: { offset: 0, len: 3000, atomic: true }\n",
        ));
        assert_eq!((e.line, e.column), (17, 5), "{e}");
        assert!(e.message.starts_with("step 14: an atomic write"), "{e}");
        assert!(!e.message.contains("made by"), "{e}");
    }

    #[test]
    fn mark_names_are_unique() {
        let with = |second: &str| {
            CUT.replace(
                "    - mark: { name: synced }\n",
                &format!("    - mark: {{ name: synced }}\n    - pwrite: {{ offset: 0, len: 4096 }}\n    - mark: {{ name: {second} }}\n"),
            )
        };
        let e = parse("t.yaml", &with("synced")).unwrap_err();
        assert_eq!((e.line, e.column), (11, 5), "{e}");
        assert_eq!(e.field.as_deref(), Some("workload.steps"));
        assert_eq!(
            e.message,
            "step 5: mark \"synced\" is step 3's name already"
        );
        assert!(e.hint.unwrap().contains("give each its own name"));
        parse("t.yaml", &with("end")).unwrap();
    }

    #[test]
    fn unknown_errno_is_rejected() {
        let text = STEPS.replace("expect: EINVAL", "expect: EINVALID");
        let e = parse("t.yaml", &text).unwrap_err();
        assert!(
            e.message.contains("unknown expectation \"EINVALID\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn unknown_step_field_is_located() {
        let text = STEPS.replace("atomic: true }", "atomik: true }");
        let e = parse("t.yaml", &text).unwrap_err();
        assert_eq!(e.line, 7, "{e}");
        // The field path once, without serde_yaml's `workload.steps[1].pwrite: `.
        assert_eq!(e.field.as_deref(), Some("workload.steps.pwrite"), "{e}");
        assert!(
            e.message
                .starts_with("unknown field `atomik`, expected one of"),
            "{}",
            e.message
        );
        assert_eq!(e.hint.as_deref(), Some("did you mean `atomic`?"));
    }

    #[test]
    fn unknown_step_suggests_the_step_meant() {
        let text = STEPS.replace("- fsync: {}", "- fsycn: {}");
        let e = parse("t.yaml", &text).unwrap_err();
        assert_eq!((e.line, e.column), (9, 7), "{e}");
        assert!(e.message.starts_with("unknown variant `fsycn`"), "{e}");
        assert_eq!(e.hint.as_deref(), Some("did you mean `fsync`?"));
    }

    const MATRIX: &str = "\
name: matrix
device: { lba_size: 512 }
mkfs: { block_size: 1024 }
workload:
  steps:
    - sysctl: { name: vm.dirty_expire_centisecs, value: 100 }
    - open: { file: f }
    - pwrite: { offset: 0, len: 8192 }
    - punch_hole: { offset: 1024, len: 2048 }
    - zero_range: { offset: 4096, len: 1024 }
    - sync: {}
    - sleep: { ms: 1500 }
    - memory_pressure: { mb: 256 }
    - repeat: { count: 2, offset_step: 512, step: { punch_hole: { offset: 0, len: 512 } } }
";

    #[test]
    fn matrix_steps_parse_and_describe_themselves() {
        let tc = parse("t.yaml", MATRIX).unwrap();
        let Workload::Steps(s) = &tc.workload else {
            panic!()
        };
        let described: Vec<String> = s.iter().map(Step::describe).collect();
        assert_eq!(
            described,
            [
                "sysctl(vm.dirty_expire_centisecs=100)",
                "open(f )",
                "pwritev2(off=0 len=8192 )",
                "fallocate(PUNCH_HOLE|KEEP_SIZE off=1024 len=2048)",
                "fallocate(ZERO_RANGE off=4096 len=1024)",
                "sync()",
                "sleep(1500 ms)",
                "memory_pressure(256 MiB)",
                "fallocate(PUNCH_HOLE|KEEP_SIZE off=0 len=512)",
                "fallocate(PUNCH_HOLE|KEEP_SIZE off=512 len=512)",
            ]
        );
        // The plan the agent gets round-trips.
        let json = serde_json::to_string(s).unwrap();
        assert_eq!(&serde_json::from_str::<Vec<Step>>(&json).unwrap(), s);
        let Step::Sysctl(sc) = &s[0] else { panic!() };
        assert_eq!(sc.path(), "/proc/sys/vm/dirty_expire_centisecs");
    }

    #[test]
    fn matrix_step_mistakes_are_named_at_their_line_with_a_hint() {
        let cases = [
            (
                "punch_hole: { offset: 1024, len: 2048 }",
                "punch_hole: { offset: 1000, len: 2048 }",
                9,
                "step 4: punch_hole zeroes whole 512-byte sectors: offset 1000 and len 2048 must be multiples of 512, len at least 512",
            ),
            (
                "zero_range: { offset: 4096, len: 1024 }",
                "zero_range: { offset: 4096, len: 0 }",
                10,
                "step 5: zero_range zeroes whole 512-byte sectors: offset 4096 and len 0 must be multiples of 512, len at least 512",
            ),
            (
                "name: vm.dirty_expire_centisecs",
                "name: kernel.panic",
                6,
                "step 1: sysctl \"kernel.panic\" is not a `vm.*` sysctl",
            ),
            (
                "name: vm.dirty_expire_centisecs",
                "name: vm.../x",
                6,
                "step 1: sysctl \"vm.../x\" is not a `vm.*` sysctl",
            ),
            (
                "sleep: { ms: 1500 }",
                "sleep: { ms: 600000 }",
                12,
                "step 7: sleep of 600000 ms is not within 1..=60000",
            ),
            (
                "memory_pressure: { mb: 256 }",
                "memory_pressure: { mb: 4096 }",
                13,
                "step 8: memory_pressure of 4096 MiB is not within 1..=768",
            ),
        ];
        for (from, to, line, message) in cases {
            let e = refused(&MATRIX.replace(from, to));
            assert_eq!(e.message, message, "{e}");
            assert_eq!((e.line, e.column), (line, 5), "{e}");
            assert!(e.hint.is_some(), "{e}");
        }
        // In a repeat: at the repeated step, naming the copy.
        let e = refused(&MATRIX.replace("offset: 0, len: 512 }", "offset: 0, len: 100 }"));
        assert_eq!(e.line, 14, "{e}");
        assert!(
            e.message
                .ends_with("(made by the repeat here: copy 1 of 2)"),
            "{e}"
        );
        // A misspelt field is named.
        let e = refused(&MATRIX.replace("{ ms: 1500 }", "{ msec: 1500 }"));
        assert_eq!(e.line, 12, "{e}");
        // Punching needs an open file; a sync does not.
        let e = refused(&MATRIX.replace(
            "    - sysctl: { name: vm.dirty_expire_centisecs, value: 100 }\n",
            "    - sync: {}\n    - punch_hole: { offset: 0, len: 512 }\n",
        ));
        assert_eq!(
            e.message, "step 2 (punch_hole) comes before any `open`",
            "{e}"
        );
    }

    #[test]
    fn step_before_open_is_rejected() {
        let text = STEPS.replace("    - open: { file: f, direct: true }\n", "");
        let e = parse("t.yaml", &text).unwrap_err();
        assert!(
            e.message
                .contains("step 1 (pwrite) comes before any `open`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn generate_workload_parses_and_validates() {
        let text = "name: g\nmkfs: { block_size: 4096 }\nworkload:\n  generate: { seed: 5, threads: 4, direct: true }\n";
        let tc = parse("t.yaml", text).unwrap();
        match tc.workload {
            Workload::Generate(g) => {
                assert_eq!((g.seed, g.threads, g.ops), (5, 4, 64));
                assert!(g.direct);
            }
            other => panic!("{other:?}"),
        }
        let e = parse("t.yaml", &text.replace("threads: 4", "atomic_ratio: 1.5")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("workload.generate"));
        assert!(
            e.message.contains("atomic_ratio must be between 0 and 1"),
            "{}",
            e.message
        );
    }

    #[test]
    fn command_workload_with_tools() {
        let text = "name: fio\nmkfs: { block_size: 4096 }\nguest_tools: [fio]\nworkload:\n  command:\n    run: fio --version\n    expect_output: '^fio-3'\n";
        let tc = parse("t.yaml", text).unwrap();
        assert_eq!(tc.guest_tools, ["fio"]);
        assert!(matches!(tc.workload, Workload::Command(ref c) if c.expect_exit == 0));
        let e = parse("t.yaml", &text.replace("'^fio-3'", "'(unclosed'")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("workload.command.expect_output"));
        assert_eq!(e.line, 7);
    }

    #[test]
    fn xfs_needs_300_mib() {
        let text = GOOD.replace("  lba_size: 4096\n", "  lba_size: 4096\n  size_mib: 256\n");
        let e = parse("t.yaml", &text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("device.size_mib"));
        assert_eq!(e.line, 5);
        assert!(
            e.message.contains("256 MiB is too small for XFS"),
            "{}",
            e.message
        );
    }

    #[test]
    fn missing_required_field() {
        let e = parse("t.yaml", "name: x\n").unwrap_err();
        assert!(
            e.message.contains("missing field `workload`"),
            "{}",
            e.message
        );
    }
}
