//! `lab report merge`: one report from the results of a run's shards
//! (`lab run --shard M/N`, one per CI job). The shards must have run the
//! same kernel, no testcase may appear in two of them, and what the
//! selection held but no shard ran is named, so a lost CI job is not a
//! quietly smaller green run.

use std::collections::{BTreeMap, BTreeSet};

use crate::report::{CaseResult, Outcome, RunReport, SuiteReport};

/// Run properties that say which kernel ran. Paths are left out: the same
/// kernel artifact sits at different paths on different machines.
pub const KERNEL_KEYS: &[&str] = &[
    "kernel.release",
    "kernel.source",
    "kernel.commit",
    "kernel.level",
];

/// Why shards cannot be merged. Each names the shards (as the user gave
/// their directories).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("nothing to merge: give the results directories of the shards")]
    Empty,
    #[error("{key} differs: {first} has {a:?}, {second} has {b:?}; the shards of one run must run the same kernel")]
    KernelsDiffer {
        key: String,
        first: String,
        a: String,
        second: String,
        b: String,
    },
    #[error("testcase {name} was run by more than one shard: {}", shards.join(", "))]
    Duplicate { name: String, shards: Vec<String> },
    #[error("the shards split the run differently: {first} is shard {a}, {second} is shard {b}")]
    Split {
        first: String,
        a: String,
        second: String,
        b: String,
    },
}

/// The merged report and what it lacks.
#[derive(Debug, Clone)]
pub struct Merged {
    pub report: RunReport,
    /// Shards of the split (`2/3`) no directory held.
    pub missing_shards: Vec<String>,
    /// Testcases some shard's selection held that no shard ran.
    pub not_run: Vec<String>,
}

/// A testcase (or the merge itself) with one error result saying why.
fn lost(name: &str, why: &str) -> SuiteReport {
    SuiteReport {
        name: name.to_string(),
        properties: vec![],
        results: vec![CaseResult {
            case: name.to_string(),
            check: "merge".into(),
            outcome: Outcome::Error {
                message: why.to_string(),
                detail: String::new(),
            },
            duration_s: 0.0,
        }],
        console_log: None,
        reproduce: String::new(),
    }
}

/// Merges the shards' reports, each with a label (its directory). Suites
/// come out sorted by name, as one run orders them; run properties are
/// the first kernel-carrying shard's, plus `merged.shards`.
pub fn merge(shards: &[(String, RunReport)]) -> Result<Merged, MergeError> {
    let (first_label, first) = shards.first().ok_or(MergeError::Empty)?;
    // The kernel: every shard that ran something ran the same one.
    let ran: Vec<&(String, RunReport)> = shards
        .iter()
        .filter(|(_, r)| !r.suites.is_empty())
        .collect();
    if let Some((l0, r0)) = ran.first() {
        for (l, r) in &ran[1..] {
            for key in KERNEL_KEYS {
                let (a, b) = (r0.property(key), r.property(key));
                if a != b {
                    return Err(MergeError::KernelsDiffer {
                        key: key.to_string(),
                        first: l0.clone(),
                        a: a.unwrap_or("(none)").to_string(),
                        second: l.clone(),
                        b: b.unwrap_or("(none)").to_string(),
                    });
                }
            }
        }
    }
    // One split: the same N everywhere.
    let total = |r: &RunReport| {
        r.property("run.shard")
            .and_then(|s| s.split_once('/'))
            .map(|(_, n)| n.to_string())
    };
    for (l, r) in &shards[1..] {
        if total(r) != total(first) {
            return Err(MergeError::Split {
                first: first_label.clone(),
                a: first
                    .property("run.shard")
                    .unwrap_or("(not a shard)")
                    .to_string(),
                second: l.clone(),
                b: r.property("run.shard")
                    .unwrap_or("(not a shard)")
                    .to_string(),
            });
        }
    }
    // No testcase twice.
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (l, r) in shards {
        for s in &r.suites {
            by_name.entry(&s.name).or_default().push(l);
        }
    }
    if let Some((name, ls)) = by_name.iter().find(|(_, ls)| ls.len() > 1) {
        return Err(MergeError::Duplicate {
            name: name.to_string(),
            shards: ls.iter().map(|s| s.to_string()).collect(),
        });
    }
    // What the split promised and what arrived.
    let missing_shards = match total(first).and_then(|n| n.parse::<u32>().ok()) {
        Some(n) => {
            let have: BTreeSet<String> = shards
                .iter()
                .filter_map(|(_, r)| r.property("run.shard").map(str::to_string))
                .collect();
            (1..=n)
                .map(|m| format!("{m}/{n}"))
                .filter(|s| !have.contains(s))
                .collect()
        }
        None => Vec::new(),
    };
    let selected: BTreeSet<&str> = shards
        .iter()
        .filter_map(|(_, r)| r.property("run.selected"))
        .flat_map(|v| v.split_whitespace())
        .collect();
    let not_run: Vec<String> = selected
        .iter()
        .filter(|n| !by_name.contains_key(*n))
        .map(|n| n.to_string())
        .collect();

    let carrier = ran.first().map_or(first, |(_, r)| r);
    let mut properties: Vec<(String, String)> = carrier
        .properties
        .iter()
        .filter(|(k, _)| k != "run.shard")
        .cloned()
        .collect();
    properties.push((
        "merged.shards".into(),
        shards
            .iter()
            .map(|(l, r)| format!("{} ({l})", r.property("run.shard").unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    let mut suites: Vec<SuiteReport> = shards.iter().flat_map(|(_, r)| r.suites.clone()).collect();
    // What did not run is an error of the merged run, as a testcase the lab
    // could not carry out is in one run.
    for name in &not_run {
        suites.push(lost(
            name,
            "no shard ran this testcase (a shard's job lost or never started?)",
        ));
    }
    if !missing_shards.is_empty() {
        suites.push(lost(
            "merge",
            &format!("no results from shard(s) {}", missing_shards.join(", ")),
        ));
    }
    suites.sort_by(|a, b| a.name.cmp(&b.name));
    let ids: BTreeSet<&str> = shards.iter().map(|(_, r)| r.run_id.as_str()).collect();
    let report = RunReport {
        run_id: if ids.len() == 1 {
            first.run_id.clone()
        } else {
            format!("merged-{}", first.run_id)
        },
        started_at: shards
            .iter()
            .map(|(_, r)| r.started_at.clone())
            .min()
            .unwrap_or_default(),
        properties,
        suites,
        reproduce: carrier.reproduce.clone(),
        interrupted: shards.iter().any(|(_, r)| r.interrupted),
    };
    Ok(Merged {
        report,
        missing_shards,
        not_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite(name: &str, outcome: Outcome) -> SuiteReport {
        SuiteReport {
            name: name.into(),
            properties: vec![],
            results: vec![CaseResult {
                case: name.into(),
                check: "c".into(),
                outcome,
                duration_s: 1.0,
            }],
            console_log: None,
            reproduce: format!("lab run {name}"),
        }
    }

    fn shard(m: u32, n: u32, release: &str, names: &[&str], selected: &[&str]) -> RunReport {
        RunReport {
            run_id: "p-1".into(),
            started_at: format!("2026-12-03T08:0{m}:00Z"),
            properties: vec![
                ("kernel.release".into(), release.into()),
                ("run.shard".into(), format!("{m}/{n}")),
                ("run.selected".into(), selected.join(" ")),
            ],
            suites: names.iter().map(|x| suite(x, Outcome::Passed)).collect(),
            reproduce: String::new(),
            interrupted: false,
        }
    }

    #[test]
    fn shards_merge_into_one_sorted_run() {
        let sel = ["a", "b", "c"];
        let mut two = shard(2, 2, "7.2.13", &["c", "a"], &sel);
        two.suites[0] = suite(
            "c",
            Outcome::Failed {
                message: "m".into(),
                detail: String::new(),
            },
        );
        let m = merge(&[
            ("s1".into(), shard(1, 2, "7.2.13", &["b"], &sel)),
            ("s2".into(), two),
        ])
        .unwrap();
        let names: Vec<&str> = m.report.suites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(m.report.exit_code(), 1);
        assert_eq!(m.report.run_id, "p-1");
        assert!(m.missing_shards.is_empty() && m.not_run.is_empty());
        assert!(m
            .report
            .properties
            .contains(&("merged.shards".into(), "1/2 (s1), 2/2 (s2)".into())));
    }

    #[test]
    fn a_lost_shard_and_what_it_held_are_named() {
        let sel = ["a", "b", "c"];
        let m = merge(&[("s1".into(), shard(1, 3, "7.2.13", &["b"], &sel))]).unwrap();
        assert_eq!(m.missing_shards, ["2/3", "3/3"]);
        assert_eq!(m.not_run, ["a", "c"]);
        // As one run over everything: the lost testcases are errors.
        assert_eq!(m.report.exit_code(), 3);
        let names: Vec<&str> = m.report.suites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "merge"]);
    }

    #[test]
    fn different_kernels_duplicates_and_splits_are_refused() {
        let sel = ["a", "b"];
        let e = merge(&[
            ("s1".into(), shard(1, 2, "7.2.13", &["a"], &sel)),
            ("s2".into(), shard(2, 2, "7.3.4", &["b"], &sel)),
        ])
        .unwrap_err();
        assert!(
            matches!(&e, MergeError::KernelsDiffer { key, .. } if key == "kernel.release"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("s1 has \"7.2.13\", s2 has \"7.3.4\""),
            "{e}"
        );
        let e = merge(&[
            ("s1".into(), shard(1, 2, "7.2.13", &["a"], &sel)),
            ("s2".into(), shard(2, 2, "7.2.13", &["a", "b"], &sel)),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "testcase a was run by more than one shard: s1, s2"
        );
        let e = merge(&[
            ("s1".into(), shard(1, 2, "7.2.13", &["a"], &sel)),
            ("s2".into(), shard(2, 3, "7.2.13", &["b"], &sel)),
        ])
        .unwrap_err();
        assert!(matches!(e, MergeError::Split { .. }), "{e}");
        // An empty shard (it ran nothing, so it has no kernel) merges.
        let mut empty = shard(2, 2, "", &[], &sel);
        empty.properties.retain(|(k, _)| k != "kernel.release");
        assert!(merge(&[
            ("s1".into(), shard(1, 2, "7.2.13", &["a", "b"], &sel)),
            ("s2".into(), empty)
        ])
        .is_ok());
        assert_eq!(merge(&[]).unwrap_err(), MergeError::Empty);
    }
}
