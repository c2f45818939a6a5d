//! Time as a guest has it: wall time minus the time QEMU's vCPU threads sat
//! runnable on the host's run queue, waiting for a CPU.
//!
//! Every wait on a guest (a boot stage, a command, module loading) used to
//! be a wall-clock bound. On a host whose two cores carry a dozen VMs and a
//! compiler, a guest gets a tenth of a core: a boot that takes 10 s alone
//! takes 100 s, and a wall-clock bound called a healthy but starved guest
//! "hung" (seen: a `lab run` beside `tests/vm.rs` and a cold `cargo build`,
//! load average 17, failed `limits-4k` with "guest hung" while loading
//! modules). The scheduler counts, per thread, the time it was runnable
//! but waiting for a CPU (`/proc/PID/task/TID/schedstat`, second field);
//! subtracting it leaves the time the guest could have run. A guest that
//! really hangs is still caught on time:
//!
//! - a guest that spins (an Oops loop, a lockup) is running, not waiting,
//!   so its clock advances as fast as it is scheduled;
//! - a guest that sleeps (every vCPU halted, waiting for an interrupt or an
//!   I/O that never comes) is not runnable, so nothing is subtracted and
//!   its clock is the wall clock.
//!
//! A hard cap of [`WALL_CAP_FACTOR`] times the bound on the wall keeps every
//! wait finite even on a host that starves the guest completely. Where the
//! scheduler statistics cannot be read (no `CONFIG_SCHED_INFO`, another
//! user's process), the clock is the wall clock.

use std::time::{Duration, Instant};

/// However starved the guest, a wait ends after this many times its bound
/// on the wall.
pub const WALL_CAP_FACTOR: u32 = 4;

/// Parses one `schedstat` line: time on a CPU, time waiting on a run queue
/// (both in nanoseconds), time slices. Returns the waiting time.
pub fn parse_schedstat(line: &str) -> Option<Duration> {
    let mut fields = line.split_whitespace();
    let _running: u64 = fields.next()?.parse().ok()?;
    let waiting: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_nanos(waiting))
}

/// Whether a thread name is one of QEMU's vCPU threads (`CPU n/KVM`,
/// `CPU n/TCG`, or with one TCG thread `ALL CPUs/TCG`).
pub fn is_vcpu_thread(comm: &str) -> bool {
    comm.ends_with("/TCG") || comm.ends_with("/KVM")
}

/// The least run-queue wait among `threads` (name, schedstat line) that are
/// vCPU threads; None when there is none. The least-waiting vCPU decides:
/// the guest made progress whenever any of its vCPUs ran.
pub fn least_vcpu_wait<'a>(
    threads: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<Duration> {
    threads
        .into_iter()
        .filter(|(comm, _)| is_vcpu_thread(comm.trim()))
        .filter_map(|(_, stat)| parse_schedstat(stat))
        .min()
}

/// The guest time between two readings: wall time minus what the run-queue
/// wait grew by (never below zero, never above the wall time).
pub fn guest_elapsed(wall: Duration, wait_before: Duration, wait_now: Duration) -> Duration {
    wall.saturating_sub(wait_now.saturating_sub(wait_before))
}

/// Reads the vCPU threads' run-queue wait of process `pid`.
fn vcpu_wait(pid: u32) -> Option<Duration> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let threads: Vec<(String, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(e.path().join("schedstat")).ok()?;
            Some((comm, stat))
        })
        .collect();
    least_vcpu_wait(threads.iter().map(|(c, s)| (c.as_str(), s.as_str())))
}

/// A stopwatch in guest time, started when it is made.
#[derive(Debug, Clone)]
pub struct GuestClock {
    pid: Option<u32>,
    wall_start: Instant,
    wait_start: Duration,
}

impl GuestClock {
    /// Guest time of QEMU process `pid` (the wall clock if it cannot be read).
    pub fn start(pid: Option<u32>) -> GuestClock {
        GuestClock {
            pid,
            wall_start: Instant::now(),
            wait_start: pid.and_then(vcpu_wait).unwrap_or_default(),
        }
    }

    /// A clock that is the wall clock (no guest to ask).
    pub fn wall() -> GuestClock {
        GuestClock::start(None)
    }

    pub fn wall_elapsed(&self) -> Duration {
        self.wall_start.elapsed()
    }

    /// How long the host kept the guest waiting for a CPU since the start.
    pub fn starved(&self) -> Duration {
        let now = self.pid.and_then(vcpu_wait).unwrap_or(self.wait_start);
        now.saturating_sub(self.wait_start)
    }

    /// Time the guest could run since the start.
    pub fn elapsed(&self) -> Duration {
        let wall = self.wall_elapsed();
        wall.saturating_sub(self.starved())
    }

    /// Whether `bound` has passed in guest time, or [`WALL_CAP_FACTOR`]
    /// times it on the wall.
    pub fn passed(&self, bound: Duration) -> bool {
        let wall = self.wall_elapsed();
        // Guest time never runs ahead of the wall: until the wall passes the
        // bound there is nothing to read in /proc (SSH commands ask this
        // every few milliseconds).
        if wall <= bound {
            return false;
        }
        wall > bound * WALL_CAP_FACTOR || wall.saturating_sub(self.starved()) > bound
    }

    /// "120 s of guest time (310 s on the wall, 190 s waiting for a host
    /// CPU)", or just "120 s" when the host never made the guest wait.
    pub fn describe(&self, bound: Duration) -> String {
        let starved = self.starved();
        if starved < Duration::from_secs(1) {
            return format!("{} s", bound.as_secs());
        }
        format!(
            "{} s of guest time ({:.0} s on the wall, {:.0} s waiting for a host CPU)",
            bound.as_secs(),
            self.wall_elapsed().as_secs_f64(),
            starved.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_gives_the_run_queue_wait() {
        assert_eq!(
            parse_schedstat("21001638343 5747394716 20607\n"),
            Some(Duration::from_nanos(5_747_394_716))
        );
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("12 x 3"), None);
    }

    #[test]
    fn only_vcpu_threads_count_and_the_least_waiting_one_decides() {
        let threads = [
            ("qemu-system-x86\n", "1 9000000000 3"),
            ("CPU 0/TCG\n", "1 4000000000 3"),
            ("CPU 1/TCG\n", "1 2000000000 3"),
            ("call_rcu\n", "1 1 3"),
        ];
        assert_eq!(
            least_vcpu_wait(threads.iter().copied()),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            least_vcpu_wait([("ALL CPUs/TCG", "5 7000000000 1")]),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            least_vcpu_wait([("CPU 0/KVM", "5 1000 1")]),
            Some(Duration::from_micros(1))
        );
        assert_eq!(least_vcpu_wait([("IO mon_iothread", "5 7 1")]), None);
    }

    #[test]
    fn guest_time_is_wall_time_less_the_new_waiting() {
        let s = Duration::from_secs;
        assert_eq!(guest_elapsed(s(100), s(10), s(70)), s(40));
        // A counter that went backwards (another thread now waits least)
        // subtracts nothing; more waiting than wall time leaves zero.
        assert_eq!(guest_elapsed(s(100), s(70), s(10)), s(100));
        assert_eq!(guest_elapsed(s(10), s(0), s(50)), s(0));
    }

    #[test]
    fn a_process_that_is_not_there_runs_on_the_wall_clock() {
        let c = GuestClock::start(Some(u32::MAX));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(c.starved(), Duration::ZERO);
        assert!(c.elapsed() >= Duration::from_millis(20));
        assert!(c.passed(Duration::from_millis(10)));
        assert!(!c.passed(Duration::from_secs(60)));
    }

    /// Pins the calling thread to CPU 0.
    fn pin_to_cpu0() {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
        // sched_setaffinity(0, ...) only touch it and the calling thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            assert_eq!(
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
                0
            );
        }
    }

    /// A thread named as QEMU names a vCPU thread, sharing one host CPU
    /// with two busy threads: the scheduler makes it wait about two thirds
    /// of the time, and the clock takes that off the wall time.
    #[test]
    fn a_starved_vcpu_thread_slows_the_guest_clock() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        assert_eq!(vcpu_wait(std::process::id()), None, "no vCPU thread yet");
        let stop = Arc::new(AtomicBool::new(false));
        let spin = |name: &str| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || {
                    pin_to_cpu0();
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
                .unwrap()
        };
        let threads = [spin("CPU 0/TCG"), spin("hog 1"), spin("hog 2")];
        std::thread::sleep(Duration::from_millis(200));
        let clock = GuestClock::start(Some(std::process::id()));
        std::thread::sleep(Duration::from_millis(2500));
        let (wall, starved, guest) = (clock.wall_elapsed(), clock.starved(), clock.elapsed());
        let described = clock.describe(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            starved > Duration::from_millis(1200),
            "the vCPU thread shared a CPU with two busy threads for {wall:?} but waited only {starved:?}"
        );
        assert!(
            guest + Duration::from_millis(1200) < wall,
            "guest {guest:?}, wall {wall:?}"
        );
        assert!(described.contains("waiting for a host CPU"), "{described}");
    }
}
