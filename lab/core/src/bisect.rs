//! Bisecting a patch series to its first bad patch. Pure: the caller builds
//! and tests a patch level when asked and reports the outcome.
//!
//! Level 0 is the base (no patch applied), level n the whole series. Both
//! ends are checked first (base must pass, the full series must fail), then
//! the untested level nearest the middle of the range still in doubt. A
//! level that does not apply or build is skipped, as `git bisect skip`: it
//! is neither good nor bad, and when only skipped levels remain in doubt
//! the answer is the range.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelVerdict {
    Good,
    Bad,
    /// Did not apply or build: no information.
    #[default]
    Skip,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Next {
    /// Build and test this level.
    Test(usize),
    /// Found: the patch that turns the level bad (1-based patch number).
    FirstBad(usize),
    /// Only skipped levels remain in doubt: the first bad patch is one of
    /// these.
    OneOf(Vec<usize>),
    /// The base already fails.
    BaseFails,
    /// The whole series passes: nothing to bisect.
    SeriesPasses,
    /// An end could not be built or applied.
    EndSkipped(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bisect {
    patches: usize,
    verdicts: Vec<Option<LevelVerdict>>,
}

impl Bisect {
    pub fn new(patches: usize) -> Bisect {
        Bisect {
            patches,
            verdicts: vec![None; patches + 1],
        }
    }

    pub fn record(&mut self, level: usize, v: LevelVerdict) {
        self.verdicts[level] = Some(v);
    }

    pub fn verdict(&self, level: usize) -> Option<LevelVerdict> {
        self.verdicts[level]
    }

    /// Levels tested so far (builds done).
    pub fn tested(&self) -> usize {
        self.verdicts.iter().filter(|v| v.is_some()).count()
    }

    pub fn next(&self) -> Next {
        let n = self.patches;
        match self.verdicts[0] {
            None => return Next::Test(0),
            Some(LevelVerdict::Bad) => return Next::BaseFails,
            Some(LevelVerdict::Skip) => return Next::EndSkipped(0),
            Some(LevelVerdict::Good) => {}
        }
        match self.verdicts[n] {
            None => return Next::Test(n),
            Some(LevelVerdict::Good) => return Next::SeriesPasses,
            Some(LevelVerdict::Skip) => return Next::EndSkipped(n),
            Some(LevelVerdict::Bad) => {}
        }
        // The range in doubt: after the last good level below the first
        // bad one.
        let hi = (1..=n)
            .find(|&l| self.verdicts[l] == Some(LevelVerdict::Bad))
            .expect("level n is bad");
        let lo = (0..hi)
            .rev()
            .find(|&l| self.verdicts[l] == Some(LevelVerdict::Good))
            .expect("level 0 is good");
        if hi == lo + 1 {
            return Next::FirstBad(hi);
        }
        let untested: Vec<usize> = (lo + 1..hi)
            .filter(|&l| self.verdicts[l].is_none())
            .collect();
        if untested.is_empty() {
            return Next::OneOf((lo + 1..=hi).collect());
        }
        let mid = (lo + hi) as f64 / 2.0;
        let pick = untested
            .iter()
            .copied()
            .min_by(|a, b| (*a as f64 - mid).abs().total_cmp(&(*b as f64 - mid).abs()))
            .expect("non-empty");
        Next::Test(pick)
    }
}

/// The most builds a bisection of `n` patches needs without skips: both
/// ends and a binary search of the n-1 levels between them.
pub fn max_builds(n: usize) -> usize {
    2 + (usize::BITS - n.max(1).leading_zeros()) as usize - usize::from(n.is_power_of_two())
}

/// The testcase's runs on one level (or on the culprit reverted). A level
/// is good only when every run passed: a single failure shows the bug can
/// be reached there. When runs disagree the level is still bad, but named
/// flaky, so a maintainer reads the verdict with that in mind rather than
/// trusting whichever run came last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runs {
    pub passed: u32,
    pub failed: u32,
}

impl Runs {
    pub fn record(&mut self, passed: bool) {
        if passed {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }

    pub fn total(&self) -> u32 {
        self.passed + self.failed
    }

    /// Whether to stop running: at the first failure (a bad level needs no
    /// more evidence to be bad), or after `1 + retries` passes.
    pub fn done(&self, retries: u32) -> bool {
        self.failed > 0 || self.passed > retries
    }

    pub fn verdict(&self) -> LevelVerdict {
        if self.failed > 0 {
            LevelVerdict::Bad
        } else {
            LevelVerdict::Good
        }
    }

    /// Runs disagreed: some passed, some failed.
    pub fn flaky(&self) -> bool {
        self.passed > 0 && self.failed > 0
    }

    /// "flaky: 1 of 2 runs failed" when the runs disagreed.
    pub fn flaky_note(&self) -> Option<String> {
        self.flaky()
            .then(|| format!("flaky: {} of {} runs failed", self.failed, self.total()))
    }
}

/// What reverting the named culprit on top of the bad end showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confirmation {
    /// Every run passed with the culprit reverted.
    Confirmed,
    /// A run still failed with the culprit reverted.
    NotConfirmed,
    /// The revert conflicts with the commits after the culprit.
    RevertDoesNotApply,
    /// The bad end with the culprit reverted does not build.
    RevertDoesNotBuild,
}

impl Confirmation {
    pub fn of_runs(runs: &Runs) -> Confirmation {
        match runs.verdict() {
            LevelVerdict::Good => Confirmation::Confirmed,
            _ => Confirmation::NotConfirmed,
        }
    }

    /// The sentence a maintainer reads; `culprit` as "4/5 subject" or
    /// "abc123 subject", `unit` "patch" or "commit".
    pub fn message(self, culprit: &str, unit: &str, testcase: &str, runs: &Runs) -> String {
        match self {
            Confirmation::Confirmed => format!(
                "confirmed: reverting {culprit} makes {testcase} pass ({} of {} runs passed)",
                runs.passed,
                runs.total()
            ),
            Confirmation::NotConfirmed => format!(
                "not confirmed: {testcase} still fails with {culprit} reverted (a later {unit} is also bad, or they interact){}",
                runs.flaky_note()
                    .map(|f| format!("; {f}"))
                    .unwrap_or_default()
            ),
            Confirmation::RevertDoesNotApply => format!(
                "not confirmed: reverting {culprit} does not apply on the bad end (a later change depends on it)"
            ),
            Confirmation::RevertDoesNotBuild => format!(
                "not confirmed: the bad end with {culprit} reverted does not build"
            ),
        }
    }
}

/// One tested level.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BisectStep {
    pub level: usize,
    pub patch: String,
    pub commit: String,
    pub verdict: LevelVerdict,
    /// Why: the failing check, the build error, the patch that did not apply.
    pub reason: String,
    pub build_s: f64,
    pub build_cached: bool,
    pub build_seeded_from: Option<String>,
    pub test_s: f64,
    /// Testcase runs (1 + retries when it kept passing).
    pub tries: u32,
    /// How many of them failed.
    pub failed_runs: u32,
    /// "flaky: 1 of 2 runs failed" when the runs disagreed.
    pub flaky: Option<String>,
    /// Relative to the bisect's directory.
    pub dir: String,
}

/// The culprit reverted on the bad end, built and run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfirmReport {
    pub outcome: Confirmation,
    pub message: String,
    /// The revert commit (empty when it did not apply).
    pub commit: String,
    pub reason: String,
    pub runs: Runs,
    pub build_s: f64,
    pub build_cached: bool,
    pub test_s: f64,
    pub dir: String,
}

/// bisect.json: the answer and every step. Every field defaults, so a file
/// an older lab wrote still reads (`lab report`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BisectReport {
    pub testcase: String,
    pub series: String,
    pub kernel_source: String,
    pub patches: Vec<String>,
    /// `first_bad`, `one_of`, `base_fails`, `series_passes`, `end_skipped`,
    /// `interrupted` or `running`.
    pub outcome: String,
    pub first_bad: Option<usize>,
    pub first_bad_patch: Option<String>,
    pub candidates: Vec<usize>,
    pub message: String,
    /// `series` or `commits` (`--good`/`--bad`).
    pub mode: String,
    /// The first bad commit's id (a commit range).
    pub first_bad_commit: Option<String>,
    /// The culprit's revert (absent with --no-confirm or no single culprit).
    pub confirmation: Option<ConfirmReport>,
    /// Levels whose runs disagreed.
    pub flaky_levels: Vec<usize>,
    pub steps: Vec<BisectStep>,
    pub builds: usize,
    pub max_builds: usize,
    pub retries: u32,
    pub total_s: f64,
    pub reproduce: String,
}

/// The arguments of `git revert` for a culprit with `parents` parents: a
/// merge is reverted against its first parent, the line a first-parent
/// bisection walked.
pub fn revert_args(parents: usize) -> Vec<&'static str> {
    let mut v = vec!["revert", "--no-edit"];
    if parents > 1 {
        v.extend(["-m", "1"]);
    }
    v
}

/// One commit of a range, as `git log --format=%H%x00%P%x00%s` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub id: String,
    pub parents: Vec<String>,
    pub subject: String,
}

impl Commit {
    /// "abc123def456 subject": what a step and the answer name.
    pub fn label(&self) -> String {
        format!("{} {}", &self.id[..12.min(self.id.len())], self.subject)
    }
}

/// Why a commit range cannot be bisected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("git log printed a line that is not `id NUL parents NUL subject`: {0:?}")]
    Malformed(String),
    #[error("no commits between --good {good} and --bad {bad}: the good revision is the bad one or comes after it")]
    Empty { good: String, bad: String },
    #[error("--good {good} is not an ancestor of --bad {bad}")]
    NotAncestor { good: String, bad: String },
    #[error("--good {good} is not on the first-parent line of --bad {bad} (it is on a merged branch): give a first-parent ancestor, or --full-history")]
    NotFirstParent { good: String, bad: String },
}

/// One line of `git log --format=%H%x00%P%x00%s`.
pub fn parse_commit(line: &str) -> Result<Commit, RangeError> {
    let mut it = line.splitn(3, '\0');
    let (Some(id), Some(parents), Some(subject)) = (it.next(), it.next(), it.next()) else {
        return Err(RangeError::Malformed(line.to_string()));
    };
    if id.len() < 7 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RangeError::Malformed(line.to_string()));
    }
    Ok(Commit {
        id: id.to_string(),
        parents: parents.split_whitespace().map(str::to_string).collect(),
        subject: subject.to_string(),
    })
}

/// The levels of a commit range from `git log --reverse --format=%H%x00%P%x00%s
/// [--first-parent] good..bad`: oldest first, the bad commit last. Level 0 is
/// the good commit, level k the k-th commit. On the first-parent line each
/// commit's first parent is the one before it, and the first one's is the
/// good commit; anything else means good is not where the user thinks.
pub fn parse_range(
    text: &str,
    good: &str,
    bad: &str,
    first_parent: bool,
) -> Result<Vec<Commit>, RangeError> {
    let v = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_commit)
        .collect::<Result<Vec<_>, _>>()?;
    let (g, b) = (good.to_string(), bad.to_string());
    let Some(last) = v.last() else {
        return Err(RangeError::Empty { good: g, bad: b });
    };
    if last.id != bad {
        return Err(RangeError::NotAncestor { good: g, bad: b });
    }
    if first_parent {
        let mut prev = good;
        for c in &v {
            if c.parents.first().map(String::as_str) != Some(prev) {
                return Err(RangeError::NotFirstParent { good: g, bad: b });
            }
            prev = &c.id;
        }
    } else if !v.iter().any(|c| c.parents.iter().any(|p| p == good)) {
        return Err(RangeError::NotAncestor { good: g, bad: b });
    }
    Ok(v)
}

/// How `git bisect run` reads a script's exit status (git's
/// builtin/bisect.c): 0 good, 125 skip, 1..=127 otherwise bad, anything
/// else (128 and up, or negative) stops the whole bisection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitBisectVerdict {
    Good,
    Bad,
    Skip,
    Abort,
}

impl GitBisectVerdict {
    pub fn of_status(code: i32) -> GitBisectVerdict {
        match code {
            0 => GitBisectVerdict::Good,
            125 => GitBisectVerdict::Skip,
            1..=127 => GitBisectVerdict::Bad,
            _ => GitBisectVerdict::Abort,
        }
    }
}

/// What a `lab run` ended with, as far as a bisection cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Passed,
    /// A testcase failed on this kernel.
    Failed,
    /// This revision could not be tested: its kernel does not build, or
    /// the lab could not run (a boot that stalled twice, a missing tool).
    Untestable,
    /// The command itself is wrong (a typo in a flag or testcase): the
    /// same at every revision, so git must stop rather than mark commits.
    BadInput,
    Interrupted,
}

/// The exit status under `lab run --bisect-exit`: git's convention, where
/// only the kernel's own failure is "bad" and nothing the lab could not do
/// ever aborts the bisection. Bad input aborts (128: a wrong command would
/// otherwise mark every commit), and so does Ctrl-C (130, the user's stop).
pub fn git_bisect_status(end: RunEnd) -> u8 {
    match end {
        RunEnd::Passed => 0,
        RunEnd::Failed => 1,
        RunEnd::Untestable => 125,
        RunEnd::BadInput => 128,
        RunEnd::Interrupted => 130,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(n: usize, first_bad: usize, skips: &[usize]) -> (Next, usize) {
        let mut b = Bisect::new(n);
        loop {
            match b.next() {
                Next::Test(l) => {
                    let v = if skips.contains(&l) {
                        LevelVerdict::Skip
                    } else if l >= first_bad {
                        LevelVerdict::Bad
                    } else {
                        LevelVerdict::Good
                    };
                    b.record(l, v);
                }
                other => return (other, b.tested()),
            }
        }
    }

    #[test]
    fn ends_are_checked_first() {
        let mut b = Bisect::new(5);
        assert_eq!(b.next(), Next::Test(0));
        b.record(0, LevelVerdict::Bad);
        assert_eq!(b.next(), Next::BaseFails);
        let mut b = Bisect::new(5);
        b.record(0, LevelVerdict::Good);
        assert_eq!(b.next(), Next::Test(5));
        b.record(5, LevelVerdict::Good);
        assert_eq!(b.next(), Next::SeriesPasses);
    }

    #[test]
    fn a_skipped_neighbour_gives_a_range() {
        // Patch 3 is bad, level 2 does not build.
        assert_eq!(run(4, 3, &[2]).0, Next::OneOf(vec![2, 3]));
        // Level 3 skipped, the answer is still exact when 2 and 4 decide.
        assert_eq!(run(4, 4, &[3]).0, Next::OneOf(vec![3, 4]));
        assert_eq!(run(4, 2, &[3]).0, Next::FirstBad(2));
    }

    #[test]
    fn build_bound() {
        assert_eq!(max_builds(1), 2);
        assert_eq!(max_builds(4), 4);
        assert_eq!(max_builds(5), 5);
        assert_eq!(max_builds(8), 5);
    }

    #[test]
    fn runs_stop_at_the_first_failure_and_name_disagreement() {
        let mut r = Runs::default();
        r.record(true);
        assert!(!r.done(1));
        assert_eq!(r.flaky_note(), None);
        r.record(false);
        assert!(r.done(1));
        assert_eq!(r.verdict(), LevelVerdict::Bad);
        assert_eq!(r.flaky_note().unwrap(), "flaky: 1 of 2 runs failed");
        let mut r = Runs::default();
        r.record(true);
        r.record(true);
        assert!(r.done(1));
        assert_eq!(r.verdict(), LevelVerdict::Good);
        assert_eq!(Confirmation::of_runs(&r), Confirmation::Confirmed);
        assert!(Confirmation::Confirmed
            .message("4/5 xfs: x", "patch", "t", &r)
            .starts_with("confirmed: reverting 4/5 xfs: x makes t pass (2 of 2"));
    }

    #[test]
    fn a_merge_is_reverted_against_its_first_parent() {
        assert_eq!(revert_args(1), ["revert", "--no-edit"]);
        assert_eq!(revert_args(2), ["revert", "--no-edit", "-m", "1"]);
    }

    fn line(id: &str, parents: &[&str], subject: &str) -> String {
        format!("{id}\0{}\0{subject}\n", parents.join(" "))
    }

    #[test]
    fn a_range_off_the_first_parent_line_is_refused() {
        let (g, a, b, m, side) = ("1111111", "aaaaaaa", "bbbbbbb", "ccccccc", "ddddddd");
        // good = side, a commit of a merged branch: --first-parent lists the
        // main line, whose first commit does not sit on it.
        let text = line(a, &["0000000"], "a") + &line(m, &[a, side], "merge") + &line(b, &[m], "b");
        assert!(matches!(
            parse_range(&text, side, b, true),
            Err(RangeError::NotFirstParent { .. })
        ));
        let text = line(a, &[g], "a") + &line(m, &[a, side], "Merge") + &line(b, &[m], "b");
        let v = parse_range(&text, g, b, true).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].parents.len(), 2);
        assert_eq!(v[2].label(), "bbbbbbb b");
        assert!(matches!(
            parse_range("", g, b, true),
            Err(RangeError::Empty { .. })
        ));
        assert!(matches!(
            parse_range("zz\0\0x\n", g, b, true),
            Err(RangeError::Malformed(_))
        ));
    }

    #[test]
    fn git_bisect_never_aborts_for_what_the_lab_could_not_do() {
        use GitBisectVerdict as G;
        let reads = |e| G::of_status(i32::from(git_bisect_status(e)));
        assert_eq!(reads(RunEnd::Passed), G::Good);
        assert_eq!(reads(RunEnd::Failed), G::Bad);
        assert_eq!(reads(RunEnd::Untestable), G::Skip);
        assert_eq!(reads(RunEnd::BadInput), G::Abort);
        assert_eq!(reads(RunEnd::Interrupted), G::Abort);
        assert_eq!(G::of_status(127), G::Bad);
        assert_eq!(G::of_status(128), G::Abort);
        assert_eq!(G::of_status(-1), G::Abort);
    }

    proptest! {
        #[test]
        fn a_first_parent_chain_parses_back_to_itself(n in 1usize..30, merges in prop::collection::vec(any::<bool>(), 30)) {
            let id = |i: usize| format!("{i:040x}");
            let good = id(1000);
            let mut text = String::new();
            let mut prev = good.clone();
            for (i, &merge) in merges.iter().enumerate().take(n) {
                let mut parents = vec![prev.clone()];
                if merge {
                    parents.push(id(5000 + i));
                }
                text.push_str(&format!("{}\0{}\0subject {i}\n", id(i), parents.join(" ")));
                prev = id(i);
            }
            let v = parse_range(&text, &good, &id(n - 1), true).unwrap();
            prop_assert_eq!(v.len(), n);
            for (i, c) in v.iter().enumerate() {
                prop_assert_eq!(&c.id, &id(i));
                prop_assert_eq!(c.parents.len(), 1 + usize::from(merges[i]));
                prop_assert_eq!(revert_args(c.parents.len()).len(), if merges[i] { 4 } else { 2 });
            }
            // The same text read with the wrong good commit is refused.
            prop_assert!(parse_range(&text, &id(999), &id(n - 1), true).is_err());
        }

        #[test]
        fn flaky_means_the_runs_disagreed(outcomes in prop::collection::vec(any::<bool>(), 1..6)) {
            let mut r = Runs::default();
            for o in &outcomes {
                r.record(*o);
            }
            prop_assert_eq!(r.flaky(), outcomes.contains(&true) && outcomes.contains(&false));
            prop_assert_eq!(r.verdict() == LevelVerdict::Good, !outcomes.contains(&false));
            prop_assert_eq!(r.total() as usize, outcomes.len());
        }

        #[test]
        fn finds_the_first_bad_patch_within_the_bound(n in 1usize..80, f in 1usize..80) {
            let f = 1 + (f - 1) % n;
            let (r, builds) = run(n, f, &[]);
            prop_assert_eq!(r, Next::FirstBad(f));
            prop_assert!(builds <= max_builds(n), "{builds} builds for {n} patches");
        }

        #[test]
        fn skips_never_give_a_wrong_answer(n in 2usize..40, f in 1usize..40,
                                          skips in prop::collection::vec(1usize..40, 0..6)) {
            let f = 1 + (f - 1) % n;
            let skips: Vec<usize> = skips.into_iter().filter(|&s| s < n).collect();
            match run(n, f, &skips).0 {
                Next::FirstBad(x) => prop_assert_eq!(x, f),
                Next::OneOf(r) => prop_assert!(r.contains(&f), "{r:?} lacks {f}"),
                other => prop_assert!(false, "{other:?}"),
            }
        }
    }
}
