//! One run split across machines: `lab run --shard M/N` runs the M-th of N
//! disjoint shards of the selected testcases, and `--run-id ID` lets the
//! shards of one pipeline share a run id. A testcase's shard comes from a
//! stable hash of its name alone (FNV-1a, not Rust's randomised hasher), so
//! every machine computes the same split and adding a testcase moves only
//! that testcase.

use std::fmt;
use std::str::FromStr;

/// The M-th of N shards, 1-based as CI engines count matrix jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub total: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--shard {given:?}: {why}; the form is M/N with 1 <= M <= N, e.g. 2/3")]
pub struct ShardError {
    pub given: String,
    pub why: &'static str,
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let bad = |why| ShardError {
            given: s.to_string(),
            why,
        };
        let (m, n) = s.split_once('/').ok_or_else(|| bad("no `/`"))?;
        let index: u32 = m.trim().parse().map_err(|_| bad("M is not a number"))?;
        let total: u32 = n.trim().parse().map_err(|_| bad("N is not a number"))?;
        if total == 0 {
            return Err(bad("N must be at least 1"));
        }
        if index == 0 {
            return Err(bad("shards count from 1"));
        }
        if index > total {
            return Err(bad("M is larger than N"));
        }
        Ok(Shard { index, total })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.total)
    }
}

/// 64-bit FNV-1a: small, stable across platforms and Rust versions.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Shard {
    /// The shard (1-based) a testcase of this name belongs to, of `total`.
    pub fn of(name: &str, total: u32) -> u32 {
        (fnv1a(name.as_bytes()) % u64::from(total.max(1))) as u32 + 1
    }

    pub fn contains(&self, name: &str) -> bool {
        Shard::of(name, self.total) == self.index
    }
}

/// A run id given with `--run-id`: it names a directory, so letters,
/// digits, `.`, `_` and `-` only, and not `.` or `..` or `latest`.
pub fn check_run_id(id: &str) -> Result<(), String> {
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if id.is_empty() || !ok_chars || id.starts_with('.') || id == "latest" || id.len() > 128 {
        return Err(format!(
            "--run-id {id:?}: a run id names a directory: 1-128 letters, digits, `.`, `_` or `-`, not starting with `.`, not `latest`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_form_is_m_of_n_and_mistakes_name_it() {
        assert_eq!("2/3".parse(), Ok(Shard { index: 2, total: 3 }));
        assert_eq!("1/1".parse::<Shard>().unwrap().to_string(), "1/1");
        for (bad, why) in [
            ("0/3", "shards count from 1"),
            ("4/3", "M is larger than N"),
            ("x/y", "M is not a number"),
            ("1/0", "N must be at least 1"),
            ("3", "no `/`"),
            ("1/-2", "N is not a number"),
        ] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert_eq!(e.why, why, "{bad}");
            assert!(e.to_string().contains("the form is M/N"), "{e}");
        }
    }

    #[test]
    fn the_split_is_stable_across_builds() {
        // Fixed values: a change of hash would move every testcase between
        // the shards of a pipeline whose jobs run different lab builds.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Shard::of("limits-4k", 1), 1);
    }

    #[test]
    fn run_ids_name_a_directory() {
        assert!(check_run_id("pipeline-1234.5_a").is_ok());
        for bad in ["", "..", ".x", "a/b", "latest", "a b"] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// Every name lands in exactly one shard of N, and which one does
        /// not depend on the other names (adding a testcase moves only it).
        #[test]
        fn shards_are_disjoint_and_cover_the_selection(
            names in proptest::collection::btree_set("[a-z0-9-]{1,24}", 0..60),
            total in 1u32..9,
        ) {
            for n in &names {
                let holders: Vec<u32> = (1..=total)
                    .filter(|&m| Shard { index: m, total }.contains(n))
                    .collect();
                prop_assert_eq!(holders.len(), 1);
                prop_assert_eq!(holders[0], Shard::of(n, total));
            }
        }

        /// Adding a testcase to the selection moves no other testcase.
        #[test]
        fn adding_a_name_moves_only_that_name(
            names in proptest::collection::btree_set("[a-z0-9-]{1,24}", 1..40),
            extra in "[a-z0-9-]{1,24}",
            total in 1u32..9,
        ) {
            let split = |set: &std::collections::BTreeSet<String>| -> Vec<(String, u32)> {
                let shards: Vec<Shard> = (1..=total).map(|index| Shard { index, total }).collect();
                set.iter()
                    .map(|n| (n.clone(), shards.iter().find(|s| s.contains(n)).unwrap().index))
                    .collect()
            };
            let before = split(&names);
            let mut grown = names.clone();
            grown.insert(extra.clone());
            let after: Vec<(String, u32)> =
                split(&grown).into_iter().filter(|(n, _)| names.contains(n)).collect();
            prop_assert_eq!(before, after);
        }
    }
}
