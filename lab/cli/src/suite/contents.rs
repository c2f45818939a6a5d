//! Crash states through the verifier VM: each distinct content is mounted
//! (log recovery), scanned and checked with `xfs_repair -n` once; the
//! model then judges the scan against any op log (one cut's, or each point
//! of a sweep that leaves the same content). Failing judgements are kept so
//! `lab verify` can judge them again without the run.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lab_core::report::{CaseResult, Outcome};
use lab_core::testcase::Testcase;
use lab_disk::states::State;
use lab_disk::StateStore;
use lab_model::FileScan;

use crate::host::LabHost;
use crate::powercut::kept::{keep_state, KeptCase};
use crate::powercut::verifier::{PhaseTimes, Verifier, VerifierPool};
use crate::suite::mapped::Classes;
use crate::suite::outcome::result;

/// What the verifier VM made of one content.
#[derive(Debug, Clone)]
pub enum Content {
    /// Mounted, scanned and clean by `xfs_repair -n`: the model decides.
    Scanned(Vec<FileScan>),
    /// A finding whatever the op log: the mount failed, `xfs_repair -n`
    /// found corruption, or the state took the verifier guest down.
    Broken { message: String, detail: String },
    /// Not checked: the verifier could not be (re)started.
    Unchecked,
}

/// Every content checked, plus the results that belong to no one state
/// (a verifier that did not start, splats on a verifier's console).
pub struct Checked {
    pub contents: Vec<Content>,
    pub results: Vec<CaseResult>,
    pub times: Vec<PhaseTimes>,
}

/// Where crash states are checked: the testcase, its results directory
/// and the store the states are served from.
pub struct Site<'a> {
    pub host: &'a LabHost,
    pub tc: &'a Testcase,
    pub case: &'a str,
    pub dir: &'a Path,
    pub store: &'a Arc<StateStore>,
    /// Verifier VMs kept from the worker's earlier testcases, and where
    /// this testcase's go back to.
    pub verifiers: &'a VerifierPool,
}

/// The files the workload wrote, as the verifier scans them.
pub fn written_files(ops: &[lab_model::Op]) -> Vec<String> {
    let mut files: Vec<String> = ops
        .iter()
        .filter_map(|o| match &o.kind {
            lab_model::OpKind::Write(w) => Some(w.file.clone()),
            _ => None,
        })
        .collect();
    files.sort();
    files.dedup();
    files
}

/// What one verifier VM did with its share of the states.
struct Share {
    contents: Vec<(usize, Content)>,
    results: Vec<CaseResult>,
    times: Vec<PhaseTimes>,
    boots: Vec<f64>,
    /// Verifier VMs kept from an earlier testcase that checked states here.
    reused: usize,
    /// Properties for the testcase (a verifier VM ended for crawling).
    notes: Vec<(String, String)>,
}

/// A verifier VM that has started to crawl: the state it just checked took
/// more than `FACTOR` times the median of the states it checked before (at
/// least `HISTORY` of them) and more than `FLOOR_S`. A guest whose
/// interrupt line was disabled completes each I/O only through the NVMe
/// driver's 30 s timeout poll; its states then take minutes instead of
/// seconds, and no check fails. Host load moves per-state times by a few
/// times, not by ten, and never past the floor on its own.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Crawl {
    ratio: f64,
    median: f64,
}

impl Crawl {
    const FACTOR: f64 = 10.0;
    const HISTORY: usize = 3;
    const FLOOR_S: f64 = 20.0;

    fn check(before: &[f64], latest: f64) -> Option<Crawl> {
        if before.len() < Self::HISTORY || latest <= Self::FLOOR_S {
            return None;
        }
        let mut sorted = before.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2].max(0.001);
        let ratio = latest / median;
        (ratio > Self::FACTOR).then_some(Crawl { ratio, median })
    }
}

/// Runs `states` states of the store through `host.verify_jobs` verifier
/// VMs at once (each its own VM and switch export over the same store,
/// taking every n-th state), each state once.
pub fn check_contents(
    site: &Site,
    states: usize,
    files: &[String],
    props: &mut Vec<(String, String)>,
) -> Checked {
    let t = Instant::now();
    let jobs = site.host.verify_jobs.clamp(1, states.max(1));
    // One set of classes for all workers: neighbouring states, which share
    // metadata most, go to different workers.
    let classes = Mutex::new(Classes::default());
    let share_of = |w: usize| -> Vec<usize> { (w..states).step_by(jobs).collect() };
    // Share 0 runs on this thread, the others on threads of their own. A
    // QEMU dies with the thread that started it (PR_SET_PDEATHSIG is per
    // thread), so only share 0's verifier can outlive this testcase and
    // go back to the worker's pool.
    let shares: Vec<Share> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..jobs)
            .map(|w| {
                let (mine, classes) = (share_of(w), &classes);
                scope.spawn(move || check_share(site, w, &mine, files, classes))
            })
            .collect();
        let mut shares = vec![check_share(site, 0, &share_of(0), files, &classes)];
        shares.extend(
            handles
                .into_iter()
                .map(|h| h.join().expect("a verifier worker panicked")),
        );
        shares
    });
    let mut checked = Checked {
        contents: vec![Content::Unchecked; states],
        results: Vec::new(),
        times: Vec::new(),
    };
    let reused: usize = shares.iter().map(|s| s.reused).sum();
    for (w, share) in shares.into_iter().enumerate() {
        for (i, c) in share.contents {
            checked.contents[i] = c;
        }
        checked.results.extend(share.results);
        checked.times.extend(share.times);
        for (k, v) in share.notes {
            let key = if jobs == 1 { k } else { format!("{k}.job{w}") };
            props.push((key, v));
        }
        for (k, b) in share.boots.iter().enumerate() {
            // verify.boot_0_s is the first verifier's first boot, as before.
            let key = if jobs == 1 {
                format!("verify.boot_{k}_s")
            } else {
                format!("verify.job{w}.boot_{k}_s")
            };
            props.push((key, format!("{b:.2}")));
        }
        if jobs > 1 && w == 0 {
            if let Some(b) = share.boots.first() {
                props.push(("verify.boot_0_s".into(), format!("{b:.2}")));
            }
        }
    }
    let classes = classes.into_inner().unwrap_or_else(|e| e.into_inner());
    let mapped = (classes.read, classes.audited, classes.mismatches);
    let times = &checked.times;
    let n = times.len().max(1) as f64;
    let mean = |f: fn(&PhaseTimes) -> f64| times.iter().map(f).sum::<f64>() / n;
    props.extend([
        ("verify.jobs".into(), jobs.to_string()),
        // Verifier VMs kept from the worker's earlier testcases (not booted).
        ("verify.reused".into(), reused.to_string()),
        // Mounted in the verifier (audits included) / read through a map.
        ("verify.states".into(), times.len().to_string()),
        (
            "verify.states_mapped".into(),
            (mapped.0 - mapped.1).to_string(),
        ),
        ("verify.map_audits".into(), mapped.1.to_string()),
        ("verify.map_audit_mismatches".into(), mapped.2.to_string()),
        (
            "verify.total_s".into(),
            format!("{:.2}", t.elapsed().as_secs_f64()),
        ),
        (
            "verify.per_state_attach_s".into(),
            format!("{:.3}", mean(|t| t.attach)),
        ),
        (
            "verify.per_state_mount_s".into(),
            format!("{:.3}", mean(|t| t.mount)),
        ),
        (
            "verify.per_state_scan_s".into(),
            format!("{:.3}", mean(|t| t.scan)),
        ),
        (
            "verify.per_state_repair_s".into(),
            format!("{:.3}", mean(|t| t.repair)),
        ),
        (
            "verify.per_state_overhead_s".into(),
            format!("{:.3}", mean(|t| t.overhead)),
        ),
    ]);
    checked
}

/// One verifier VM's share. A hung or crashed verifier makes its state a
/// finding (with the console) and a fresh VM takes the rest; after three,
/// the rest stay unchecked.
fn check_share(
    site: &Site,
    worker: usize,
    states: &[usize],
    files: &[String],
    classes: &Mutex<Classes>,
) -> Share {
    let Site {
        host,
        tc,
        case,
        dir,
        store,
        verifiers,
    } = *site;
    let mut share = Share {
        contents: Vec::new(),
        results: Vec::new(),
        times: Vec::new(),
        boots: Vec::new(),
        reused: 0,
        notes: Vec::new(),
    };
    let mut verifier: Option<Verifier> = None;
    let mut restarts = 0;
    // Per-state seconds of the current verifier VM, and how many VMs crawled.
    let mut vm_times: Vec<f64> = Vec::new();
    let mut crawls = 0;
    let lock = || classes.lock().unwrap_or_else(|e| e.into_inner());
    for (k, &i) in states.iter().enumerate() {
        // A state that shares a mounted state's metadata is read through
        // its extent map, on the host; audits are mounted as well.
        let mapped = if host.verify_by_map {
            lock().read(store, i).unwrap_or(None)
        } else {
            None
        };
        let mapped = match mapped {
            Some(m) if !m.audit => {
                share.contents.push((i, Content::Scanned(m.files)));
                continue;
            }
            other => other,
        };
        let console = dir.join(if worker == 0 {
            format!("verifier-{restarts}.console.log")
        } else {
            format!("verifier-{restarts}.job{worker}.console.log")
        });
        // Share 0 first asks the worker's pool for a verifier it kept.
        if verifier.is_none() && worker == 0 {
            let timeout = Duration::from_secs(tc.timeouts.command_s);
            verifier = verifiers.take(store, &tc.device, &console, timeout);
            share.reused += usize::from(verifier.is_some());
        }
        if verifier.is_none() {
            match Verifier::start(host, store.clone(), &tc.device, console) {
                Ok(v) => {
                    share.boots.push(v.boot_seconds());
                    verifier = Some(v)
                }
                Err(e) => {
                    share.results.push(result(
                        case,
                        "verify.start",
                        Outcome::Error {
                            message: format!("the verifier VM did not start: {e:#}"),
                            detail: format!("{} crash states left unchecked", states.len() - k),
                        },
                        Duration::ZERO,
                    ));
                    break;
                }
            }
        }
        let v = verifier.as_mut().expect("started");
        match v.check(i, files, Duration::from_secs(tc.timeouts.command_s)) {
            Ok(c) => {
                let took = c.times.total();
                share.times.push(c.times);
                if let Some(crawl) = Crawl::check(&vm_times, took) {
                    // The state was checked; the VM is not trusted with more.
                    crawls += 1;
                    let what = format!(
                        "crash state {i} took {took:.1} s, {:.0}x the median {:.1} s of the {} states this verifier VM checked before",
                        crawl.ratio, crawl.median, vm_times.len()
                    );
                    if crawls == 1 {
                        share.notes.push((
                            "verify.crawl".into(),
                            format!("{what}; ended it, a fresh VM took the rest"),
                        ));
                    } else {
                        share.results.push(result(
                            case,
                            "verify.stall",
                            Outcome::Error {
                                message: format!("a fresh verifier VM crawled again: {what}"),
                                detail: v.vm().console_tail(),
                            },
                            Duration::ZERO,
                        ));
                    }
                    vm_times.clear();
                    if let Some(v) = verifier.take() {
                        v.shutdown();
                    }
                    restarts += 1;
                } else {
                    vm_times.push(took);
                }
                let content = if let Some(m) = c.mount_error {
                    Content::Broken {
                        message: "XFS: mount (log recovery) failed".into(),
                        detail: m,
                    }
                } else if let Some(r) = c.repair_error {
                    Content::Broken {
                        message: "XFS: xfs_repair -n found corruption".into(),
                        detail: r,
                    }
                } else {
                    if mapped.is_none() {
                        lock().learn(i, &c.files, &c.maps);
                    }
                    Content::Scanned(c.files)
                };
                // An audit: the mount must have found what the map read
                // did (a clean mount and the same files).
                if let Some(m) = &mapped {
                    let mounted = match &content {
                        Content::Scanned(files) => Ok(files.as_slice()),
                        Content::Broken { message, .. } => Err(message.as_str()),
                        Content::Unchecked => Err("not checked"),
                    };
                    if let Some(why) = lock().audit(m, mounted, i, dir) {
                        share.results.push(result(
                            case,
                            "verify.extent-map",
                            Outcome::Error {
                                message: why,
                                detail: "the mounted result is used for this state; its class is read through no more".into(),
                            },
                            Duration::ZERO,
                        ));
                    }
                }
                share.contents.push((i, content));
            }
            Err(e) => {
                share.contents.push((
                    i,
                    Content::Broken {
                        message: format!("the verifier guest failed: {e}"),
                        detail: e.console_tail().unwrap_or_default().to_string(),
                    },
                ));
                if let Some(v) = verifier.take() {
                    v.shutdown();
                }
                vm_times.clear();
                restarts += 1;
                if restarts > 2 {
                    share.results.push(result(
                        case,
                        "verify.start",
                        Outcome::Error {
                            message: "the verifier guest failed three times".into(),
                            detail: format!("{} crash states left unchecked", states.len() - k - 1),
                        },
                        Duration::ZERO,
                    ));
                    break;
                }
            }
        }
    }
    if let Some(v) = verifier.take() {
        for s in v.vm().splats() {
            share.results.push(result(
                case,
                "verify.console",
                Outcome::Failed {
                    message: format!("{} (verifier guest)", s.title),
                    detail: s.excerpt.clone(),
                },
                Duration::ZERO,
            ));
        }
        if worker == 0 {
            verifiers.give_back(v);
        } else {
            v.shutdown();
        }
    }
    share
}

/// The verdict on one content against one op log; None when unchecked.
pub fn judge(content: &Content, model: &lab_model::Model) -> Option<Outcome> {
    match content {
        Content::Unchecked => None,
        Content::Broken { message, detail } => Some(Outcome::Failed {
            message: message.clone(),
            detail: detail.clone(),
        }),
        Content::Scanned(files) => {
            let verdict = model.judge(files);
            Some(match verdict.violations.first() {
                None => Outcome::Passed,
                Some(first) => Outcome::Failed {
                    message: format!("{}: {}", first.rule, first.message),
                    detail: verdict
                        .violations
                        .iter()
                        .map(|v| format!("- {} ({}): {}", v.rule, v.file, v.message))
                        .collect::<Vec<_>>()
                        .join("\n"),
                },
            })
        }
    }
}

/// Keeps a failing judgement (state `i`'s delta, the recipe that made it
/// and the op log that judged it) as `crash/<name>/`, and says in the
/// outcome how to judge it again; a state that could not be kept says why.
/// The verifier's scan of it goes beside it as `scan.json`, so the run's
/// page can draw its sector map without rebuilding and mounting the state.
#[allow(clippy::too_many_arguments)]
pub fn keep_failure(
    outcome: Outcome,
    content: &Content,
    dir: &Path,
    base: &Path,
    store: &StateStore,
    i: usize,
    st: &State,
    name: &str,
    kept: &KeptCase,
) -> Outcome {
    let Outcome::Failed { message, detail } = outcome else {
        return outcome;
    };
    match keep_state(&dir.join("crash"), base, store, i, st, name, kept) {
        Ok(d) => {
            if let Content::Scanned(files) = content {
                let _ = std::fs::write(
                    d.join("scan.json"),
                    serde_json::to_string(files).unwrap_or_default(),
                );
            }
            Outcome::Failed {
                message: format!("{message} (reproduce: lab verify {})", d.display()),
                detail,
            }
        }
        Err(e) => Outcome::Failed {
            message,
            detail: format!("{detail}\n(could not keep the state: {e:#})"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_crawls_only_far_above_its_own_median_and_the_floor() {
        let healthy = [1.2, 0.9, 1.5, 1.1];
        // Load makes a state a few times slower: not a crawl.
        assert_eq!(Crawl::check(&healthy, 4.0), None);
        // Ten times the median but under the floor: not a crawl either.
        assert_eq!(Crawl::check(&[0.1, 0.1, 0.1], 15.0), None);
        // The 30 s NVMe timeout poll per I/O: a crawl.
        let c = Crawl::check(&healthy, 95.0).unwrap();
        assert!((c.median - 1.2).abs() < 1e-9, "{c:?}");
        assert!(c.ratio > 70.0, "{c:?}");
        // Too little history to judge.
        assert_eq!(Crawl::check(&[1.0, 1.0], 95.0), None);
    }
}
