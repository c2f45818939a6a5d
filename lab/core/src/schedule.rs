//! How `lab run -j N` shares testcases among its workers: which one a
//! worker takes next, given the VM it already holds, and how many workers
//! a host can take.
//!
//! A testcase runs either in a VM booted for it alone (a power cut ends its
//! VM; `isolation: boot` asks for one) or in a VM of its *class*: testcases
//! whose VMs would be the same but for the NVMe device (same guest tools,
//! same boot bound) share one booted VM, one after another, with a clean
//! slate between them and, where the devices differ, the NVMe controller
//! replaced. The queue keeps a worker on its VM's class while work of that
//! class remains, on its device first (a swap costs about 0.35 s, a boot
//! about 10 s), so a class costs one boot per worker that touches it, not
//! one per testcase; and it sends a worker with nothing left of its class to a
//! class no other worker is on, so a second VM of a class is booted only
//! when enough of it is left to pay for the boot.

use crate::qemu::Accel;

/// One run of one testcase (a testcase's `repeat` makes several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The VM class it may share a booted VM with; `None` when it needs a
    /// VM of its own.
    pub class: Option<String>,
    /// Its NVMe device (`Testcase::device_key`): within a class, a VM
    /// already on this device needs no swap.
    pub device: String,
    /// A power-cut testcase: it boots its own VM, and it is among the
    /// longest (the workload, then verifier VMs on every crash state).
    pub power_cut: bool,
}

/// The VM a worker holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldVm<'a> {
    pub class: &'a str,
    pub device: &'a str,
}

/// A worker boots a second VM of a class another worker is on only when
/// at least this many of its slots are left: with two left the other
/// worker's next one and a boot take longer than the two one after the
/// other (a boot costs about as much as two testcases under TCG).
pub const SHARE_CLASS_MIN: usize = 3;

/// The slots not yet taken, in the order workers take them.
#[derive(Debug, Clone)]
pub struct Queue {
    slots: Vec<Slot>,
    /// Slot indices in taking order.
    order: Vec<usize>,
    taken: Vec<bool>,
    /// The class each worker's last slot belongs to (the VM it holds or
    /// will hold), until it asks again.
    on: Vec<Option<String>>,
}

impl Queue {
    /// The taking order: power cuts first (the longest work starts first,
    /// so no worker is left with one at the end while the others idle),
    /// then the shared classes, largest first, each in its testcases'
    /// order with the testcases of one device together; a slot with a VM
    /// of its own counts as a class of one.
    pub fn new(slots: Vec<Slot>, workers: usize) -> Queue {
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
        let first_of_device = |i: usize| match &slots[i].class {
            Some(c) => slots
                .iter()
                .position(|s| s.class.as_ref() == Some(c) && s.device == slots[i].device)
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
                first_of_device(i),
                i,
            )
        });
        let taken = vec![false; slots.len()];
        Queue {
            slots,
            order,
            taken,
            on: vec![None; workers.max(1)],
        }
    }

    /// The slot `worker` takes next, holding the VM `held`:
    /// 1. one of its class while any remains (no boot), of its device
    ///    first (no swap);
    /// 2. else the first in taking order that no other worker's class
    ///    claims (a VM of its own, or a class nobody is on);
    /// 3. else the first of a class another worker is on with at least
    ///    `SHARE_CLASS_MIN` left (a second VM of that class).
    ///
    /// `None` when none of these is left: the worker is done, and the
    /// workers on the remaining classes take what is left of them (a
    /// worker always gets its own class, and a class nobody else is on).
    pub fn next(&mut self, worker: usize, held: Option<HeldVm<'_>>) -> Option<usize> {
        let pick = self.choose(worker, held);
        self.on[worker] = pick.and_then(|i| self.slots[i].class.clone());
        if let Some(i) = pick {
            self.taken[i] = true;
        }
        pick
    }

    fn choose(&self, worker: usize, held: Option<HeldVm<'_>>) -> Option<usize> {
        let left = |class: &str| {
            self.order
                .iter()
                .filter(|&&i| !self.taken[i] && self.slots[i].class.as_deref() == Some(class))
                .count()
        };
        let others_on = |class: &str| {
            self.on
                .iter()
                .enumerate()
                .any(|(w, c)| w != worker && c.as_deref() == Some(class))
        };
        let mut untaken = self.order.iter().copied().filter(|&i| !self.taken[i]);
        if let Some(h) = held {
            let of_class = |i: &usize| self.slots[*i].class.as_deref() == Some(h.class);
            if let Some(i) = untaken
                .clone()
                .filter(of_class)
                .find(|&i| self.slots[i].device == h.device)
                .or_else(|| untaken.clone().find(of_class))
            {
                return Some(i);
            }
        }
        untaken
            .clone()
            .find(|&i| self.slots[i].class.as_deref().is_none_or(|c| !others_on(c)))
            .or_else(|| {
                untaken.find(|&i| {
                    self.slots[i]
                        .class
                        .as_deref()
                        .is_some_and(|c| left(c) >= SHARE_CLASS_MIN)
                })
            })
    }

    pub fn remaining(&self) -> usize {
        self.taken.iter().filter(|t| !**t).count()
    }

    /// Whether a power-cut slot is still to be taken: a worker keeps its
    /// verifier VMs only while one is.
    pub fn wants_power_cut(&self) -> bool {
        self.slots
            .iter()
            .zip(&self.taken)
            .any(|(s, t)| !t && s.power_cut)
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
            device: "d".into(),
            power_cut,
        }
    }

    /// A VM of `class` on the device every `slot` has.
    fn held(class: &str) -> Option<HeldVm<'_>> {
        Some(HeldVm { class, device: "d" })
    }

    #[test]
    fn power_cuts_first_then_the_largest_class() {
        let mut q = Queue::new(
            vec![
                slot(Some("a"), false),
                slot(Some("b"), false),
                slot(None, true),
                slot(Some("b"), false),
                slot(None, false),
            ],
            1,
        );
        let mut got = Vec::new();
        let mut power_cuts_left = Vec::new();
        while let Some(i) = q.next(0, None) {
            got.push(i);
            power_cuts_left.push(q.wants_power_cut());
        }
        assert_eq!(got, [2, 1, 3, 0, 4]);
        // Kept verifier VMs go once the last power cut is taken.
        assert_eq!(power_cuts_left, [false; 5]);
        let mut two = Queue::new(
            vec![slot(None, true), slot(None, true), slot(None, false)],
            1,
        );
        two.next(0, None);
        assert!(two.wants_power_cut());
        two.next(0, None);
        assert!(!two.wants_power_cut());
    }

    #[test]
    fn a_worker_stays_on_its_class() {
        let mut q = Queue::new(
            vec![
                slot(Some("a"), false),
                slot(Some("b"), false),
                slot(Some("b"), false),
                slot(Some("a"), false),
            ],
            1,
        );
        // "a" and "b" are the same size: "a" comes first by position.
        assert_eq!(q.next(0, None), Some(0));
        assert_eq!(q.next(0, held("b")), Some(1));
        assert!(q.wants("a"));
        assert_eq!(q.next(0, held("a")), Some(3));
        assert!(!q.wants("a"));
        assert_eq!(q.next(0, held("a")), Some(2));
        assert_eq!(q.next(0, held("b")), None);
        assert_eq!(q.remaining(), 0);
    }

    #[test]
    fn an_idle_worker_goes_to_a_class_nobody_is_on() {
        let a = || slot(Some("a"), false);
        let b = || slot(Some("b"), false);
        let mut q = Queue::new(vec![a(), a(), a(), a(), b(), b()], 2);
        assert_eq!(q.next(0, None), Some(0));
        // Worker 0 is on "a": worker 1 starts "b", not a second "a".
        assert_eq!(q.next(1, None), Some(4));
        assert_eq!(q.next(1, held("b")), Some(5));
        // Nothing of "b" left, and only two of "a": not worth a boot.
        assert_eq!(q.next(1, held("b")), Some(1));
    }

    #[test]
    fn a_class_left_large_gets_a_second_vm() {
        let a = || slot(Some("a"), false);
        let mut q = Queue::new(vec![a(), a(), a(), a(), a()], 2);
        assert_eq!(q.next(0, None), Some(0));
        // Four of "a" left: worker 1 boots a second VM of it.
        assert_eq!(q.next(1, None), Some(1));
        assert_eq!(q.next(0, held("a")), Some(2));
        assert_eq!(q.next(1, held("a")), Some(3));
        assert_eq!(q.next(0, held("a")), Some(4));
        assert_eq!(q.next(1, held("a")), None);
    }

    #[test]
    fn a_small_class_another_worker_is_on_is_left_to_it() {
        let a = || slot(Some("a"), false);
        let mut q = Queue::new(vec![a(), a(), a()], 2);
        assert_eq!(q.next(0, None), Some(0));
        // Two left: worker 1 is done; worker 0 takes both.
        assert_eq!(q.next(1, None), None);
        assert_eq!(q.next(0, held("a")), Some(1));
        // Worker 0's VM failed: it takes the last one with a fresh boot.
        assert_eq!(q.next(0, None), Some(2));
        assert_eq!(q.next(0, None), None);
    }

    #[test]
    fn a_worker_stays_on_its_device_then_swaps_within_its_class() {
        let on = |class: &str, device: &str| Slot {
            class: Some(class.into()),
            device: device.into(),
            power_cut: false,
        };
        let mut q = Queue::new(
            vec![
                on("a", "4k"),
                on("a", "512"),
                on("a", "4k"),
                on("b", "4k"),
                on("a", "512"),
            ],
            1,
        );
        // The class's testcases of one device are taken together.
        assert_eq!(q.next(0, None), Some(0));
        let vm = |device| Some(HeldVm { class: "a", device });
        assert_eq!(q.next(0, vm("4k")), Some(2));
        // Nothing of "4k" left in "a": its "512" ones (a swap), not "b".
        assert_eq!(q.next(0, vm("4k")), Some(1));
        // Holding "512", the other "512" one comes first.
        let mut q2 = Queue::new(
            vec![on("a", "4k"), on("a", "512"), on("a", "4k"), on("a", "512")],
            1,
        );
        assert_eq!(q2.next(0, vm("512")), Some(1));
        assert_eq!(q2.next(0, vm("512")), Some(3));
        assert_eq!(q2.next(0, vm("512")), Some(0));
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
        /// Workers asking in any order, each holding the class and device
        /// of its last slot unless its VM failed (then nothing), stopping
        /// when told there is nothing for them: every slot is handed out
        /// exactly once; a worker holding a class gets that class while any
        /// of it remains, and its device while any of that remains; a
        /// worker never starts a second VM of another worker's
        /// class while a slot no one else is on waits.
        #[test]
        fn every_slot_once_and_classes_shared_only_when_nothing_else_waits(
            classes in proptest::collection::vec((proptest::option::of(0u8..4), 0u8..3, any::<bool>()), 0..24),
            workers in 1usize..4,
            turns in proptest::collection::vec((0usize..4, any::<bool>()), 0..96),
        ) {
            let slots: Vec<Slot> = classes
                .iter()
                .map(|(c, d, p)| Slot { class: c.map(|c| c.to_string()), device: d.to_string(), power_cut: *p })
                .collect();
            let mut q = Queue::new(slots.clone(), workers);
            let mut seen = vec![0u32; slots.len()];
            let mut holds: Vec<Option<String>> = vec![None; workers];
            let mut devices: Vec<String> = vec![String::new(); workers];
            let mut active: Vec<bool> = vec![true; workers];
            // The given turns, then each worker in turn until all are done.
            let tail = (0..).map(|n| (n % workers, false));
            for (w, vm_failed) in turns.into_iter().chain(tail) {
                let w = w % workers;
                if !active.iter().any(|a| *a) {
                    break;
                }
                if !active[w] {
                    continue;
                }
                if vm_failed {
                    holds[w] = None;
                }
                let held = holds[w].clone();
                let wanted = held.as_deref().is_some_and(|h| q.wants(h));
                let same_device_left = (0..slots.len()).any(|i| {
                    !q.taken[i] && held.is_some() && slots[i].class == held && slots[i].device == devices[w]
                });
                let others: Vec<Option<String>> = (0..workers)
                    .filter(|&o| o != w && active[o])
                    .map(|o| holds[o].clone())
                    .collect();
                let free_waits = (0..slots.len()).any(|i| {
                    !q.taken[i] && slots[i].class.as_ref().is_none_or(|c| !others.contains(&Some(c.clone())))
                });
                let vm = held.as_deref().map(|class| HeldVm { class, device: &devices[w] });
                let Some(i) = q.next(w, vm) else {
                    active[w] = false;
                    continue;
                };
                seen[i] += 1;
                if wanted {
                    prop_assert_eq!(slots[i].class.as_deref(), held.as_deref());
                    if same_device_left {
                        prop_assert_eq!(&slots[i].device, &devices[w]);
                    }
                } else if let Some(c) = &slots[i].class {
                    if others.contains(&Some(c.clone())) {
                        prop_assert!(!free_waits, "slot {} shared while a free one waits", i);
                    }
                }
                holds[w] = slots[i].class.clone();
                devices[w] = slots[i].device.clone();
            }
            prop_assert!(seen.iter().all(|n| *n == 1), "{:?}", seen);
            prop_assert_eq!(q.remaining(), 0);
        }
    }
}
