//! Seeded workload generators: random mixes of atomic and non-atomic writes
//! with sizes and alignments drawn from the limits the guest really reports,
//! syncs at a configured rate, spread over N writer threads.
//!
//! Generation is a pure function of (parameters, seed, limits), so a run is
//! reproduced from the seed and the limits recorded in its results. Each
//! thread writes its own region of one shared file: the regions share the
//! file, its extents and the folios at their edges, while the final content
//! of every sector stays well defined (the last write of its owner thread).

use serde::{Deserialize, Serialize};

use crate::steps::{Expect, FileOnly, Pwrite, Step};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenParams {
    pub seed: u64,
    /// Operations per thread.
    #[serde(default = "d_ops")]
    pub ops: u32,
    #[serde(default = "d_threads")]
    pub threads: u32,
    /// Fraction of writes issued with RWF_ATOMIC (0..=1).
    #[serde(default = "d_half")]
    pub atomic_ratio: f64,
    /// Fraction of operations followed by fsync or fdatasync (0..=1).
    #[serde(default = "d_sync")]
    pub sync_ratio: f64,
    /// O_DIRECT (else buffered).
    #[serde(default)]
    pub direct: bool,
    /// Bytes of file each thread owns.
    #[serde(default = "d_region")]
    pub region_bytes: u64,
    /// What an atomic write must return: `ok`, or `supported_or_skip` for
    /// kernels that may not have the feature (buffered atomic writes).
    #[serde(default)]
    pub expect_atomic: Expect,
}

fn d_ops() -> u32 {
    64
}
fn d_threads() -> u32 {
    2
}
fn d_half() -> f64 {
    0.5
}
fn d_sync() -> f64 {
    0.1
}
fn d_region() -> u64 {
    1 << 20
}

/// The limits generation draws from (read by the agent in the guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenLimits {
    /// statx atomic unit min/max of the file (0 when atomic writes are not
    /// advertised; a buffered workload then still tries one block).
    pub atomic_min: u32,
    pub atomic_max: u32,
    /// Alignment of non-atomic writes (the LBA size for O_DIRECT, the
    /// 512-byte stamp sector otherwise).
    pub align: u32,
    /// Filesystem block size (the atomic size used when none is advertised).
    pub block: u32,
}

impl GenParams {
    pub fn validate(&self) -> Result<(), String> {
        if self.ops == 0 || self.threads == 0 || self.threads > 64 {
            return Err("ops must be >= 1 and threads 1..=64".into());
        }
        for (name, r) in [
            ("atomic_ratio", self.atomic_ratio),
            ("sync_ratio", self.sync_ratio),
        ] {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("{name} must be between 0 and 1, not {r}"));
            }
        }
        if self.region_bytes < 65536 || !self.region_bytes.is_multiple_of(65536) {
            return Err("region_bytes must be a multiple of 64 KiB".into());
        }
        if matches!(self.expect_atomic, Expect::Errno(_)) {
            return Err("expect_atomic is `ok` or `supported_or_skip`".into());
        }
        Ok(())
    }
}

/// splitmix64: tiny, good enough, and identical everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// The operations of each thread: `file` is opened by the agent; offsets are
/// absolute in the file (thread t owns [t*region, (t+1)*region)).
pub fn generate(p: &GenParams, limits: &GenLimits) -> Vec<Vec<Step>> {
    let region = p.region_bytes;
    let (amin, amax) = if limits.atomic_min > 0 {
        (
            u64::from(limits.atomic_min),
            u64::from(limits.atomic_max.max(limits.atomic_min)),
        )
    } else {
        (u64::from(limits.block), u64::from(limits.block))
    };
    let align = u64::from(limits.align.max(512));
    (0..p.threads)
        .map(|t| {
            // Each thread has its own stream so that thread count does not
            // change what thread 0 does.
            let mut rng = Rng::new(p.seed ^ (u64::from(t) + 1).wrapping_mul(0xA24B_AED4_963E_E407));
            let base = u64::from(t) * region;
            let mut steps = Vec::new();
            for _ in 0..p.ops {
                let atomic = rng.chance(p.atomic_ratio);
                let (offset, len) = if atomic {
                    // A power of two in [amin, amax], naturally aligned.
                    let choices = (amax / amin).trailing_zeros() as u64 + 1;
                    let len = amin << rng.below(choices);
                    (base + rng.below(region / len) * len, len)
                } else {
                    // Any aligned length up to 4 atomic units, at any aligned
                    // offset: these are the writes that can tear.
                    let max_units = (4 * amax / align).max(1);
                    let len = (rng.below(max_units) + 1) * align;
                    let slots = (region - len) / align + 1;
                    (base + rng.below(slots) * align, len)
                };
                steps.push(Step::Pwrite(Pwrite {
                    expect: if atomic {
                        p.expect_atomic.clone()
                    } else {
                        Expect::Ok
                    },
                    ..Pwrite::new(offset, len, atomic)
                }));
                if rng.chance(p.sync_ratio) {
                    let f = FileOnly::default();
                    steps.push(if rng.chance(0.5) {
                        Step::Fsync(f)
                    } else {
                        Step::Fdatasync(f)
                    });
                }
            }
            steps
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(seed: u64) -> GenParams {
        GenParams {
            seed,
            ops: 200,
            threads: 3,
            atomic_ratio: 0.5,
            sync_ratio: 0.2,
            direct: true,
            region_bytes: 1 << 20,
            expect_atomic: Expect::Ok,
        }
    }

    const LIM: GenLimits = GenLimits {
        atomic_min: 4096,
        atomic_max: 65536,
        align: 4096,
        block: 4096,
    };

    #[test]
    fn same_seed_same_ops_other_seed_other_ops() {
        assert_eq!(generate(&params(7), &LIM), generate(&params(7), &LIM));
        assert_ne!(generate(&params(7), &LIM), generate(&params(8), &LIM));
    }

    #[test]
    fn thread_streams_do_not_depend_on_thread_count() {
        let mut one = params(3);
        one.threads = 1;
        assert_eq!(generate(&one, &LIM)[0], generate(&params(3), &LIM)[0]);
    }

    #[test]
    fn syncs_appear_at_about_the_rate() {
        let ops = generate(&params(1), &LIM);
        let syncs = ops[0]
            .iter()
            .filter(|s| !matches!(s, Step::Pwrite(_)))
            .count();
        assert!(
            (20..=60).contains(&syncs),
            "{syncs} syncs for 200 ops at 0.2"
        );
    }

    proptest! {
        #[test]
        fn writes_respect_limits_alignment_and_regions(seed: u64, amax_shift in 0u32..5, ratio in 0.0f64..=1.0) {
            let lim = GenLimits { atomic_max: 4096 << amax_shift, ..LIM };
            let mut p = params(seed);
            p.atomic_ratio = ratio;
            for (t, steps) in generate(&p, &lim).iter().enumerate() {
                let lo = t as u64 * p.region_bytes;
                for s in steps {
                    if let Step::Pwrite(w) = s {
                        prop_assert!(w.offset >= lo && w.offset + w.len <= lo + p.region_bytes);
                        prop_assert_eq!(w.offset % 4096, 0);
                        prop_assert_eq!(w.len % 4096, 0);
                        if w.atomic {
                            prop_assert!(w.len.is_power_of_two());
                            prop_assert!(w.len >= 4096 && w.len <= u64::from(lim.atomic_max));
                            prop_assert_eq!(w.offset % w.len, 0, "natural alignment");
                        }
                    }
                }
            }
        }
    }
}
