//! A process seen from outside through /proc: whether it runs, and what each
//! of its threads is doing (state, CPU used over a short sample, the kernel
//! function it sleeps in). Used to tell a QEMU that is stuck (its main
//! thread asleep in a wait) from one that is busy (vCPU threads burning CPU)
//! or starved (runnable but not running) when a boot stalls.

use std::path::Path;
use std::time::Duration;

/// One thread's line of /proc/PID/task/TID/stat, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadStat {
    pub tid: u32,
    pub comm: String,
    /// R running, S sleeping, D disk sleep, Z zombie, T stopped, ...
    pub state: char,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

/// Parses a /proc stat line. `comm` may hold spaces and parentheses, so the
/// fields after it are found from the last ')'.
pub fn parse_stat(tid: u32, line: &str) -> Option<ThreadStat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let state = rest.first()?.chars().next()?;
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some(ThreadStat {
        tid,
        comm,
        state,
        cpu_ticks: utime + stime,
    })
}

fn threads(pid: u32) -> Vec<(ThreadStat, String)> {
    let dir = format!("/proc/{pid}/task");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut v: Vec<(ThreadStat, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let wchan = std::fs::read_to_string(e.path().join("wchan")).unwrap_or_default();
            Some((parse_stat(tid, stat.trim())?, wchan.trim().to_string()))
        })
        .collect();
    v.sort_by_key(|(t, _)| t.tid);
    v
}

/// "pid 123 alive; threads: qemu-system-x86 S 0% in do_sys_poll, CPU 0/TCG
/// R 48%, ..." sampled over `sample`, or why it could not be read.
pub fn describe_process(pid: u32, sample: Duration) -> String {
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return format!("pid {pid} is gone");
    }
    let before = threads(pid);
    std::thread::sleep(sample);
    let after = threads(pid);
    if after.is_empty() {
        return format!("pid {pid}: its threads could not be read");
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let parts: Vec<String> = after
        .iter()
        .map(|(t, wchan)| {
            let used = before
                .iter()
                .find(|(b, _)| b.tid == t.tid)
                .map(|(b, _)| t.cpu_ticks.saturating_sub(b.cpu_ticks))
                .unwrap_or(0);
            let pct = used as f64 / hz / sample.as_secs_f64().max(0.001) * 100.0;
            let mut s = format!("{} {} {:.0}%", t.comm, t.state, pct);
            if !wchan.is_empty() && wchan != "0" {
                s.push_str(&format!(" in {wchan}"));
            }
            s
        })
        .collect();
    format!(
        "pid {pid} alive, {} threads: {}",
        after.len(),
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let line = "4242 (CPU 0/TCG) R 1 2 3 4 5 6 7 8 9 10 150 30 0 0 20 0 1 0 100";
        let t = parse_stat(4242, line).unwrap();
        assert_eq!(t.comm, "CPU 0/TCG");
        assert_eq!(t.state, 'R');
        assert_eq!(t.cpu_ticks, 180);
        let odd = "7 (a) b) S 1 2 3 4 5 6 7 8 9 10 1 2 0 0";
        assert_eq!(parse_stat(7, odd).unwrap().comm, "a) b");
    }

    #[test]
    fn this_process_is_described_as_alive() {
        let d = describe_process(std::process::id(), Duration::from_millis(10));
        assert!(d.contains("alive"), "{d}");
        assert!(describe_process(u32::MAX - 1, Duration::ZERO).contains("gone"));
    }
}
