//! How `lab run -j N` shares testcases among its workers: which one a
//! worker takes next, given the VM it already holds, and how many workers
//! a host can take.
//!
//! A testcase runs either in a VM booted for it alone (a power cut ends its
//! VM; `isolation: boot` asks for one) or in a VM of its *class*: testcases
//! whose VMs would be identical (same device, same guest tools, same boot
//! bound) share one booted VM, one after another, with a clean slate
//! between them. The queue keeps a worker on its VM's class while work of
//! that class remains, so a class costs one boot per worker that touches
//! it, not one per testcase.

use crate::qemu::Accel;

/// One run of one testcase (a testcase's `repeat` makes several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The VM class it may share a booted VM with; `None` when it needs a
    /// VM of its own.
    pub class: Option<String>,
    /// A power-cut testcase: it boots its own VM, and it is among the
    /// longest (the workload, then verifier VMs on every crash state).
    pub power_cut: bool,
}

/// The slots not yet taken, in the order workers take them.
#[derive(Debug, Clone)]
pub struct Queue {
    slots: Vec<Slot>,
    /// Slot indices in taking order.
    order: Vec<usize>,
    taken: Vec<bool>,
}

impl Queue {
    /// The taking order: power cuts first (the longest work starts first,
    /// so no worker is left with one at the end while the others idle),
    /// then the shared classes, largest first, each in its testcases'
    /// order; a slot with a VM of its own counts as a class of one.
    pub fn new(slots: Vec<Slot>) -> Queue {
        let class_size = |c: &Option<String>| match c {
            Some(c) => slots.iter().filter(|s| s.class.as_ref() == Some(c)).count(),
            None => 1,
        };
        let first_of = |i: usize| match &slots[i].class {
            Some(c) => slots
                .iter()
                .position(|s| s.class.as_ref() == Some(c))
                .unwrap_or(i),
            None => i,
        };
        let mut order: Vec<usize> = (0..slots.len()).collect();
        order.sort_by_key(|&i| {
            let s = &slots[i];
            (
                !s.power_cut,
                std::cmp::Reverse(class_size(&s.class)),
                first_of(i),
                i,
            )
        });
        let taken = vec![false; slots.len()];
        Queue {
            slots,
            order,
            taken,
        }
    }

    /// The slot a worker takes next: one of the class of the VM it holds
    /// while any remains (no boot), else the first in taking order. `None`
    /// once every slot is taken.
    pub fn next(&mut self, held: Option<&str>) -> Option<usize> {
        let same_class = held.and_then(|h| {
            self.order
                .iter()
                .copied()
                .find(|&i| !self.taken[i] && self.slots[i].class.as_deref() == Some(h))
        });
        let pick = same_class.or_else(|| self.order.iter().copied().find(|&i| !self.taken[i]))?;
        self.taken[pick] = true;
        Some(pick)
    }

    pub fn remaining(&self) -> usize {
        self.taken.iter().filter(|t| !**t).count()
    }

    /// Whether a slot of this class is still to be taken: a worker keeps
    /// its VM booted only while one is.
    pub fn wants(&self, class: &str) -> bool {
        self.slots
            .iter()
            .zip(&self.taken)
            .any(|(s, t)| !t && s.class.as_deref() == Some(class))
    }
}

/// How many testcases run at once by default, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jobs {
    pub jobs: usize,
    pub reason: String,
}

/// Memory a running testcase can take: its VM (1 GiB) and, for a power
/// cut, a verifier VM (1 GiB) at the same time, plus QEMU's own.
const MIB_PER_JOB: u64 = 2 * 1024 + 256;

/// The default `-j`: under TCG each VM is one host thread (single-threaded
/// TCG, docs/boot.md), so one VM per core keeps every core busy without
/// starving a guest; under KVM each VM has two vCPUs, so one VM per two
/// cores. Memory caps both: a job may hold a testcase VM and a verifier VM.
/// At most 8 (more VMs than that mostly wait on the disk).
pub fn default_jobs(accel: Accel, cores: usize, available_mib: u64) -> Jobs {
    let cores = cores.max(1);
    let (by_cpu, why_cpu) = match accel {
        Accel::Tcg => (cores, format!("{cores} cores, one TCG VM per core")),
        Accel::Kvm => (
            (cores / 2).max(1),
            format!("{cores} cores, two vCPUs per KVM VM"),
        ),
    };
    let by_mem = usize::try_from(available_mib / MIB_PER_JOB)
        .unwrap_or(usize::MAX)
        .max(1);
    let jobs = by_cpu.min(by_mem).min(8);
    let reason = if by_mem < by_cpu.min(8) {
        format!(
            "{why_cpu}, but {available_mib} MiB available holds {by_mem} (a VM and a verifier VM each)"
        )
    } else {
        why_cpu
    };
    Jobs { jobs, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn slot(class: Option<&str>, power_cut: bool) -> Slot {
        Slot {
            class: class.map(str::to_string),
            power_cut,
        }
    }

    #[test]
    fn power_cuts_first_then_the_largest_class() {
        let mut q = Queue::new(vec![
            slot(Some("a"), false),
            slot(Some("b"), false),
            slot(None, true),
            slot(Some("b"), false),
            slot(None, false),
        ]);
        let mut got = Vec::new();
        while let Some(i) = q.next(None) {
            got.push(i);
        }
        assert_eq!(got, [2, 1, 3, 0, 4]);
    }

    #[test]
    fn a_worker_stays_on_its_class() {
        let mut q = Queue::new(vec![
            slot(Some("a"), false),
            slot(Some("b"), false),
            slot(Some("b"), false),
            slot(Some("a"), false),
        ]);
        // "a" and "b" are the same size: "a" comes first by position.
        assert_eq!(q.next(None), Some(0));
        assert_eq!(q.next(Some("b")), Some(1));
        assert!(q.wants("a"));
        assert_eq!(q.next(Some("a")), Some(3));
        assert!(!q.wants("a"));
        assert_eq!(q.next(Some("a")), Some(2));
        assert_eq!(q.next(Some("b")), None);
        assert_eq!(q.remaining(), 0);
    }

    #[test]
    fn default_jobs_by_accelerator_and_memory() {
        assert_eq!(default_jobs(Accel::Tcg, 2, 23_000).jobs, 2);
        assert_eq!(default_jobs(Accel::Kvm, 2, 23_000).jobs, 1);
        assert_eq!(default_jobs(Accel::Kvm, 16, 64_000).jobs, 8);
        let small = default_jobs(Accel::Tcg, 8, 5_000);
        assert_eq!(small.jobs, 2);
        assert!(small.reason.contains("5000 MiB"), "{}", small.reason);
        assert_eq!(default_jobs(Accel::Tcg, 0, 100).jobs, 1);
    }

    proptest! {
        /// Whatever the workers hold when they ask, every slot is handed
        /// out exactly once, and a worker holding a class gets that class
        /// while any of it remains.
        #[test]
        fn every_slot_once_and_class_kept(
            classes in proptest::collection::vec((proptest::option::of(0u8..4), any::<bool>()), 0..24),
            holds in proptest::collection::vec(proptest::option::of(0u8..4), 0..64),
        ) {
            let slots: Vec<Slot> = classes
                .iter()
                .map(|(c, p)| Slot { class: c.map(|c| c.to_string()), power_cut: *p })
                .collect();
            let mut q = Queue::new(slots.clone());
            let mut seen = vec![0u32; slots.len()];
            let mut holds = holds.into_iter().cycle();
            loop {
                let held = holds.next().flatten().map(|c| c.to_string());
                let wanted = held.as_deref().is_some_and(|h| q.wants(h));
                let Some(i) = q.next(held.as_deref()) else { break };
                seen[i] += 1;
                if wanted {
                    prop_assert_eq!(slots[i].class.as_deref(), held.as_deref());
                }
            }
            prop_assert!(seen.iter().all(|n| *n == 1), "{:?}", seen);
            prop_assert_eq!(q.remaining(), 0);
        }
    }
}
