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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelVerdict {
    Good,
    Bad,
    /// Did not apply or build: no information.
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

    proptest! {
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
