//! Power-cut policies: when the crash disk holds completions back, when it
//! cuts the power, and how many crash states to make from the cut. Pure:
//! the trigger is a small state machine the disk feeds with events.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A testcase's `power_cut:` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerCut {
    /// When to cut the power for real. Optional with a sweep: the workload
    /// then runs to its end and the power goes after it.
    #[serde(default, with = "serde_yaml::with::singleton_map")]
    pub at: Option<CutPolicy>,
    /// Virtual cuts across the recorded run, judged from one VM run.
    #[serde(default)]
    pub sweep: Option<Sweep>,
    #[serde(default)]
    pub hold: HoldPolicy,
    #[serde(default)]
    pub states: StateLimits,
    /// A broken device, to test the lab itself: writes acknowledged after
    /// arming are not durable (as if the device lied about FUA). The
    /// verifier must then find lost data.
    #[serde(default)]
    pub device_lies: bool,
}

/// Completions the disk holds back, so more writes are in flight at the cut
/// than the guest alone would leave. A write is acknowledged when it is the
/// oldest of more than `window` held writes, or after `ms`, whichever is
/// first. Holding never breaks a promise: an unacknowledged write promised
/// nothing yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldPolicy {
    #[serde(default = "default_window")]
    pub window: u32,
    #[serde(default = "default_hold_ms")]
    pub ms: u64,
}

fn default_window() -> u32 {
    8
}
fn default_hold_ms() -> u64 {
    20
}

impl Default for HoldPolicy {
    fn default() -> Self {
        HoldPolicy {
            window: default_window(),
            ms: default_hold_ms(),
        }
    }
}

impl HoldPolicy {
    /// Acknowledge at once (a plain disk).
    pub const NONE: HoldPolicy = HoldPolicy { window: 0, ms: 0 };
}

/// When the power goes. Counts start when the disk is armed (after mkfs
/// and mount, just before the workload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CutPolicy {
    /// Right after the k-th write request (1-based) arrives.
    Write(u64),
    /// When the workload sets this mark (a `mark` step).
    Mark(String),
    /// When a write touching LBAs [first, last] (inclusive) arrives.
    Lba { first: u64, last: u64 },
    /// This long after arming.
    AfterMs(u64),
    /// Each write ends it with probability 1/mean, from a seeded generator:
    /// the same seed and the same writes cut at the same place.
    Random { seed: u64, mean: u64 },
}

impl fmt::Display for CutPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CutPolicy::Write(k) => write!(f, "write:{k}"),
            CutPolicy::Mark(m) => write!(f, "mark:{m}"),
            CutPolicy::Lba { first, last } => write!(f, "lba:{first}-{last}"),
            CutPolicy::AfterMs(t) => write!(f, "after-ms:{t}"),
            CutPolicy::Random { seed, mean } => write!(f, "random:{seed}/{mean}"),
        }
    }
}

impl FromStr for CutPolicy {
    type Err = String;

    /// The command-line form, the same as Display prints: `write:20`,
    /// `mark:NAME`, `lba:FIRST-LAST`, `after-ms:500`, `random:SEED/MEAN`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, arg) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}`: expected KIND:ARG, {}", CUT_FORMS))?;
        let num = |t: &str| {
            t.parse::<u64>()
                .map_err(|_| format!("`{s}`: `{t}` is not a number"))
        };
        match kind {
            "write" => match num(arg)? {
                0 => Err(format!("`{s}`: writes count from 1")),
                k => Ok(CutPolicy::Write(k)),
            },
            "mark" if !arg.is_empty() => Ok(CutPolicy::Mark(arg.into())),
            "lba" => {
                let (a, b) = arg
                    .split_once('-')
                    .ok_or_else(|| format!("`{s}`: expected lba:FIRST-LAST"))?;
                let (first, last) = (num(a)?, num(b)?);
                if first > last {
                    return Err(format!("`{s}`: FIRST is after LAST"));
                }
                Ok(CutPolicy::Lba { first, last })
            }
            "after-ms" => Ok(CutPolicy::AfterMs(num(arg)?)),
            "random" => {
                let (a, b) = arg
                    .split_once('/')
                    .ok_or_else(|| format!("`{s}`: expected random:SEED/MEAN"))?;
                match num(b)? {
                    0 => Err(format!("`{s}`: MEAN must be at least 1")),
                    mean => Ok(CutPolicy::Random {
                        seed: num(a)?,
                        mean,
                    }),
                }
            }
            _ => Err(format!("`{s}`: unknown cut policy, {}", CUT_FORMS)),
        }
    }
}

pub const CUT_FORMS: &str =
    "one of write:K, mark:NAME, lba:FIRST-LAST, after-ms:T, random:SEED/MEAN";

/// Virtual power cuts swept across one recorded run (`power_cut.sweep`):
/// the states a real cut at each chosen moment could leave, judged against
/// the op log as the host had it at that moment (docs/powercut.md, "Sweeps").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    /// Which moments.
    pub every: SweepEvery,
    /// At most this many cut points (a seeded sample when there are more;
    /// the summary says how many were left out).
    #[serde(default = "default_max_points")]
    pub max_points: u32,
    #[serde(default)]
    pub seed: u64,
}

fn default_max_points() -> u32 {
    256
}

/// Where a sweep cuts: each cut falls at the last instant before the next
/// thing the disk sees, the most demanding moment of its interval (the
/// disk's possible contents are fixed there and the host has seen the most
/// operations end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepEvery {
    /// Before every write arrives and before every acknowledgement.
    Write,
    /// After every fsync, fdatasync or synchronous write the host saw end.
    Sync,
    /// At every mark the workload set.
    Mark,
}

impl fmt::Display for SweepEvery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SweepEvery::Write => "write",
            SweepEvery::Sync => "sync",
            SweepEvery::Mark => "mark",
        })
    }
}

/// Bounds on the crash states made from one cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateLimits {
    /// Every subset of the in-flight writes when there are at most this
    /// many (2^n states); beyond it, seeded random subsets.
    #[serde(default = "default_all_subsets")]
    pub all_subsets_up_to: u32,
    /// Random subsets when the window is larger.
    #[serde(default = "default_random_subsets")]
    pub random_subsets: u32,
    /// Tear points per non-atomic write (the midpoint first, then evenly
    /// spread LBA boundaries).
    #[serde(default = "default_tear_points")]
    pub tear_points: u32,
    #[serde(default)]
    pub seed: u64,
    /// At most this many distinct states are checked (a seeded sample when
    /// there are more; the summary says how many were left out).
    #[serde(default = "default_max_states")]
    pub max: u32,
}

fn default_max_states() -> u32 {
    64
}

fn default_all_subsets() -> u32 {
    12
}
fn default_random_subsets() -> u32 {
    256
}
fn default_tear_points() -> u32 {
    8
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            all_subsets_up_to: default_all_subsets(),
            random_subsets: default_random_subsets(),
            tear_points: default_tear_points(),
            seed: 0,
            max: default_max_states(),
        }
    }
}

/// The cut decision, fed one event at a time by the disk.
#[derive(Debug, Clone)]
pub struct CutTrigger {
    policy: CutPolicy,
    lba_size: u64,
    writes: u64,
    rng: u64,
}

impl CutTrigger {
    pub fn new(policy: CutPolicy, lba_size: u32) -> CutTrigger {
        let rng = match &policy {
            CutPolicy::Random { seed, .. } => *seed,
            _ => 0,
        };
        CutTrigger {
            policy,
            lba_size: u64::from(lba_size),
            writes: 0,
            rng,
        }
    }

    pub fn policy(&self) -> &CutPolicy {
        &self.policy
    }

    /// A write request of `len` bytes at `offset` arrived; Some(reason)
    /// means cut now, with this write in flight.
    pub fn on_write(&mut self, offset: u64, len: u64) -> Option<String> {
        self.writes += 1;
        let n = self.writes;
        match &self.policy {
            CutPolicy::Write(k) if n == *k => Some(format!("write {n}")),
            CutPolicy::Lba { first, last } => {
                let a = offset / self.lba_size;
                let b = (offset + len.max(1) - 1) / self.lba_size;
                (a <= *last && b >= *first)
                    .then(|| format!("write {n} touched LBAs {a}-{b} (policy {first}-{last})"))
            }
            CutPolicy::Random { mean, .. } => {
                let mean = *mean;
                splitmix(&mut self.rng)
                    .is_multiple_of(mean)
                    .then(|| format!("write {n} (random)"))
            }
            _ => None,
        }
    }

    /// The workload set a mark.
    pub fn on_mark(&mut self, name: &str) -> Option<String> {
        match &self.policy {
            CutPolicy::Mark(m) if m == name => Some(format!("mark {name}")),
            _ => None,
        }
    }

    /// Milliseconds after arming at which a timer should cut, if any.
    pub fn deadline_ms(&self) -> Option<u64> {
        match self.policy {
            CutPolicy::AfterMs(t) => Some(t),
            _ => None,
        }
    }
}

/// splitmix64: small, seedable, and the same everywhere.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kth_write_cuts_once_at_k() {
        let mut t = CutTrigger::new(CutPolicy::Write(3), 4096);
        assert_eq!(t.on_write(0, 4096), None);
        assert_eq!(t.on_write(0, 4096), None);
        assert_eq!(t.on_write(0, 4096).as_deref(), Some("write 3"));
        assert_eq!(t.on_write(0, 4096), None);
    }

    #[test]
    fn lba_range_cuts_on_overlap_only() {
        let mut t = CutTrigger::new(
            CutPolicy::Lba {
                first: 10,
                last: 11,
            },
            4096,
        );
        assert_eq!(t.on_write(0, 10 * 4096), None, "ends just before LBA 10");
        assert_eq!(t.on_write(12 * 4096, 4096), None);
        assert!(t.on_write(8 * 4096, 3 * 4096).is_some(), "covers LBA 10");
    }

    #[test]
    fn marks_match_by_name() {
        let mut t = CutTrigger::new(CutPolicy::Mark("synced".into()), 512);
        assert_eq!(t.on_mark("other"), None);
        assert_eq!(t.on_write(0, 512), None);
        assert!(t.on_mark("synced").is_some());
    }

    #[test]
    fn random_is_reproducible_from_its_seed() {
        let first = |seed| {
            let mut t = CutTrigger::new(CutPolicy::Random { seed, mean: 16 }, 512);
            (1..10_000).find(|_| t.on_write(0, 512).is_some())
        };
        assert_eq!(first(7), first(7));
        assert!(first(7).is_some());
    }

    #[test]
    fn parse_errors_name_the_forms() {
        let e = "sometime:3".parse::<CutPolicy>().unwrap_err();
        assert!(e.contains("write:K"), "{e}");
        assert!("write:0".parse::<CutPolicy>().is_err());
        assert!("lba:9-3".parse::<CutPolicy>().is_err());
        assert!("random:1/0".parse::<CutPolicy>().is_err());
    }

    #[test]
    fn yaml_forms() {
        let p: PowerCut = serde_yaml::from_str("at: { write: 4 }").unwrap();
        assert_eq!(p.at, Some(CutPolicy::Write(4)));
        assert_eq!(p.hold, HoldPolicy::default());
        assert_eq!(p.sweep, None);
        let p: PowerCut = serde_yaml::from_str("sweep: { every: sync }").unwrap();
        assert_eq!(p.at, None);
        assert_eq!(
            p.sweep,
            Some(Sweep {
                every: SweepEvery::Sync,
                max_points: 256,
                seed: 0
            })
        );
        assert!(serde_yaml::from_str::<PowerCut>("sweep: { every: fsync }").is_err());
        let p: PowerCut =
            serde_yaml::from_str("at: { lba: { first: 1, last: 2 } }\nhold: { window: 2 }")
                .unwrap();
        assert_eq!(p.at, Some(CutPolicy::Lba { first: 1, last: 2 }));
        assert_eq!(p.hold.window, 2);
        assert!(serde_yaml::from_str::<PowerCut>("at: { wirte: 4 }").is_err());
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(k in 1u64..1000, s in 0u64..u64::MAX, m in 1u64..100,
                                        a in 0u64..100, d in 0u64..100) {
            for p in [CutPolicy::Write(k), CutPolicy::Random { seed: s, mean: m },
                      CutPolicy::Lba { first: a, last: a + d }, CutPolicy::AfterMs(k),
                      CutPolicy::Mark(format!("m{k}"))] {
                prop_assert_eq!(p.to_string().parse::<CutPolicy>().unwrap(), p);
            }
        }
    }
}
