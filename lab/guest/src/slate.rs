//! A clean slate between testcases that share one booted VM (`lab run -j N`
//! with reuse).
//!
//! `baseline` records the guest as the boot left it (processes, mounts,
//! `vm.*` sysctls, the NVMe queues' tunables, the entries of /tmp, /mnt and
//! /run) in /run/lab-baseline.json. `reset` brings the guest back to it
//! before the next testcase: every process started since is killed, every
//! mount and swap added since goes, tunables get their boot values back,
//! new files in /tmp, /mnt and /run are removed, the page cache is dropped,
//! and every NVMe namespace is zeroed (BLKZEROOUT: Write Zeroes, which QEMU
//! turns into a hole in the backing file) and read back as zeroes at both
//! ends. Anything it cannot undo is an error: the lab then boots a fresh VM
//! instead of running the next testcase on a guest it cannot vouch for.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

const BASELINE: &str = "/run/lab-baseline.json";
/// Directories a testcase may leave files in (/ is the initramfs).
const SCRATCH_DIRS: [&str; 3] = ["/tmp", "/mnt", "/run"];
/// `_IO(0x12, 127)`: zero a byte range of a block device.
const BLKZEROOUT: libc::c_ulong = 0x127f;
/// `PF_KTHREAD` in /proc/PID/stat's flags.
const PF_KTHREAD: u64 = 0x0020_0000;

#[derive(Debug, Serialize, Deserialize)]
struct Baseline {
    pids: BTreeSet<u32>,
    mounts: Vec<String>,
    /// Writable files and their values: `vm.*` sysctls, NVMe queue tunables.
    tunables: Vec<(String, String)>,
    files: BTreeSet<String>,
}

/// What a reset did, printed as one JSON line.
#[derive(Debug, Default, Serialize)]
struct Reset {
    killed: Vec<String>,
    unmounted: Vec<String>,
    swapoff: Vec<String>,
    restored: Vec<String>,
    removed: Vec<String>,
    zeroed: Vec<(String, u64)>,
    ms: u128,
}

impl Baseline {
    fn load() -> Result<Baseline, String> {
        let text = std::fs::read_to_string(BASELINE)
            .map_err(|e| format!("{BASELINE}: {e} (no `lab-guest baseline` since boot)"))?;
        serde_json::from_str(&text).map_err(|e| format!("{BASELINE}: {e}"))
    }

    fn save(&self) -> Result<(), String> {
        let text = serde_json::to_string(self).map_err(|e| e.to_string())?;
        std::fs::write(BASELINE, text).map_err(|e| format!("{BASELINE}: {e}"))
    }
}

pub fn baseline() -> Result<(), String> {
    let b = Baseline {
        pids: pids()?,
        mounts: mounts()?,
        tunables: tunables(),
        files: scratch_files()
            .into_iter()
            .chain([BASELINE.into()])
            .collect(),
    };
    b.save()?;
    println!(
        "{}",
        serde_json::json!({ "baseline": { "pids": b.pids.len(), "mounts": b.mounts.len(), "tunables": b.tunables.len() }, "hotplug": hotplug_slots() })
    );
    Ok(())
}

/// PCI slots the kernel can hot-plug (ACPI PCI hotplug registers one per
/// slot of QEMU's root bus in /sys/bus/pci/slots). None: a kernel without
/// `CONFIG_HOTPLUG_PCI_ACPI`, on which the lab boots a VM per device
/// instead of swapping the NVMe controller.
fn hotplug_slots() -> usize {
    std::fs::read_dir("/sys/bus/pci/slots").map_or(0, |rd| rd.count())
}

/// After the lab replaced the NVMe controller (QMP `device_del`, then
/// `device_add` with the next testcase's parameters): waits until the
/// guest has exactly the namespaces asked for, nvme0n1..nvme0n`count`,
/// each of `lba`-byte blocks and `bytes` long, then makes their queue
/// tunables the baseline's in place of the old device's (a new device's
/// defaults are its boot values). The rest of the baseline stays as booted.
pub fn plugged(count: usize, lba: u32, bytes: u64) -> Result<(), String> {
    let started = Instant::now();
    let want: Vec<String> = (1..=count).map(|i| format!("/dev/nvme0n{i}")).collect();
    let deadline = started + Duration::from_secs(20);
    loop {
        let seen = nvme_namespaces()?;
        let ready = seen == want
            && want.iter().all(|dev| {
                let name = dev.trim_start_matches("/dev/");
                let lba_now =
                    std::fs::read_to_string(format!("/sys/block/{name}/queue/logical_block_size"));
                let size = std::fs::read_to_string(format!("/sys/block/{name}/size"));
                let is_block =
                    std::fs::metadata(dev).is_ok_and(|m| m.file_type().is_block_device());
                lba_now.is_ok_and(|v| v.trim() == lba.to_string())
                    && size
                        .is_ok_and(|v| v.trim().parse::<u64>().ok().map(|s| s * 512) == Some(bytes))
                    && is_block
            });
        if ready {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the new NVMe controller's namespaces did not appear: want {want:?} of {lba}-byte blocks, {bytes} bytes; the guest has {seen:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut base = Baseline::load()?;
    base.tunables
        .retain(|(path, _)| !path.starts_with("/sys/block/"));
    base.tunables.extend(
        tunables()
            .into_iter()
            .filter(|(path, _)| path.starts_with("/sys/block/")),
    );
    base.save()?;
    println!(
        "{}",
        serde_json::json!({ "plugged": want, "ms": started.elapsed().as_millis() })
    );
    Ok(())
}

pub fn reset() -> Result<(), String> {
    let started = Instant::now();
    let base = Baseline::load()?;
    let mut r = Reset {
        killed: kill_new_processes(&base)?,
        ..Reset::default()
    };
    r.swapoff = swapoff_all()?;
    r.unmounted = unmount_new(&base)?;
    for (path, value) in &base.tunables {
        let now = read_tunable(path);
        if now.as_deref() != Some(value.as_str()) {
            std::fs::write(path, value).map_err(|e| format!("restoring {path}={value}: {e}"))?;
            r.restored.push(format!("{path}={value}"));
        }
    }
    for f in scratch_files() {
        if !base.files.contains(&f) {
            let p = std::path::Path::new(&f);
            let gone = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(p)
            } else {
                std::fs::remove_file(p)
            };
            gone.map_err(|e| format!("removing {f}: {e}"))?;
            r.removed.push(f);
        }
    }
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| format!("drop_caches: {e}"))?;
    for dev in nvme_namespaces()? {
        let bytes = zero_namespace(&dev)?;
        r.zeroed.push((dev, bytes));
    }
    r.ms = started.elapsed().as_millis();
    println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    Ok(())
}

fn pids() -> Result<BTreeSet<u32>, String> {
    let rd = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
    Ok(rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// (parent pid, flags, state) from /proc/PID/stat; the command name is in
/// parentheses and may hold spaces, so fields are counted after the last ')'.
fn stat(pid: u32) -> Option<(u32, u64, char, String)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(s: &str) -> Option<(u32, u64, char, String)> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let rest: Vec<&str> = s[close + 2..].split_whitespace().collect();
    let state = rest.first()?.chars().next()?;
    let ppid = rest.get(1)?.parse().ok()?;
    let flags = rest.get(6)?.parse().ok()?;
    Some((ppid, flags, state, comm))
}

/// Every user process not in the baseline, except this one and the
/// session that runs it (its ancestors): SIGKILL, then wait until only
/// zombies are left of them.
fn kill_new_processes(base: &Baseline) -> Result<Vec<String>, String> {
    let mut ours = BTreeSet::new();
    let mut p = std::process::id();
    while p > 1 && ours.insert(p) {
        p = stat(p).map_or(0, |s| s.0);
    }
    let victims = |killed_only: bool| -> Result<Vec<(u32, String)>, String> {
        Ok(pids()?
            .into_iter()
            .filter(|p| *p > 2 && !base.pids.contains(p) && !ours.contains(p))
            .filter_map(|p| stat(p).map(|s| (p, s)))
            .filter(|(_, (ppid, flags, state, _))| {
                *ppid != 2 && flags & PF_KTHREAD == 0 && !(killed_only && *state == 'Z')
            })
            .map(|(p, (_, _, _, comm))| (p, comm))
            .collect())
    };
    let found = victims(false)?;
    let mut killed = Vec::new();
    for (pid, comm) in &found {
        // SAFETY: kill(2) on a pid read from /proc; a process that exited
        // meanwhile gives ESRCH, which is what we want anyway.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        killed.push(format!("{pid} {comm}"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = victims(true)?;
        if left.is_empty() {
            return Ok(killed);
        }
        if Instant::now() > deadline {
            return Err(format!("processes survived SIGKILL: {left:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mounts() -> Result<Vec<String>, String> {
    let text =
        std::fs::read_to_string("/proc/self/mounts").map_err(|e| format!("/proc/mounts: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect())
}

/// Unmounts what was mounted since the baseline, newest first; a busy
/// mount (a process still closing files) gets a few tries.
fn unmount_new(base: &Baseline) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    for m in mounts()?.into_iter().rev() {
        if base.mounts.contains(&m) {
            continue;
        }
        let c = std::ffi::CString::new(m.as_str()).map_err(|e| e.to_string())?;
        let mut tries = 0;
        loop {
            // SAFETY: umount2 with a NUL-terminated path we own.
            if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            tries += 1;
            if err.raw_os_error() != Some(libc::EBUSY) || tries > 50 {
                return Err(format!("umount {m}: {err}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        done.push(m);
    }
    Ok(done)
}

/// Swap is never on at boot: any swap on is a testcase's.
fn swapoff_all() -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    let mut off = Vec::new();
    for dev in text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
    {
        let c = std::ffi::CString::new(dev).map_err(|e| e.to_string())?;
        // SAFETY: swapoff with a NUL-terminated path we own.
        if unsafe { libc::swapoff(c.as_ptr()) } != 0 {
            return Err(format!(
                "swapoff {dev}: {}",
                std::io::Error::last_os_error()
            ));
        }
        off.push(dev.to_string());
    }
    Ok(off)
}

/// The value to write back: a list attribute (`none [mq-deadline]`) is its
/// selected entry.
fn read_tunable(path: &str) -> Option<String> {
    Some(tunable_value(&std::fs::read_to_string(path).ok()?))
}

fn tunable_value(v: &str) -> String {
    let v = v.trim();
    match (v.find('['), v.find(']')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].to_string(),
        _ => v.to_string(),
    }
}

/// Writable `vm.*` sysctls (not the write-only triggers) and the NVMe
/// namespaces' queue tunables, with their values.
fn tunables() -> Vec<(String, String)> {
    let mut dirs = vec!["/proc/sys/vm".to_string()];
    if let Ok(ns) = nvme_namespaces() {
        dirs.extend(
            ns.iter()
                .map(|d| format!("/sys/block/{}/queue", d.trim_start_matches("/dev/"))),
        );
    }
    let mut out = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut files: Vec<_> = rd.filter_map(|e| e.ok()).collect();
        files.sort_by_key(|e| e.file_name());
        for e in files {
            let Ok(md) = e.metadata() else { continue };
            let mode = md.permissions().mode();
            // Readable and writable by root: write-only triggers
            // (drop_caches, compact_memory) have no value to restore.
            if !md.is_file() || mode & 0o600 != 0o600 {
                continue;
            }
            let path = e.path().display().to_string();
            if let Some(v) = read_tunable(&path) {
                out.push((path, v));
            }
        }
    }
    out
}

fn scratch_files() -> Vec<String> {
    let mut out = Vec::new();
    for d in SCRATCH_DIRS {
        if let Ok(rd) = std::fs::read_dir(d) {
            out.extend(rd.filter_map(|e| Some(e.ok()?.path().display().to_string())));
        }
    }
    out.sort();
    out
}

/// /dev/nvme0n1, /dev/nvme0n2, ...: the namespaces, not the controllers.
fn nvme_namespaces() -> Result<Vec<String>, String> {
    let rd = std::fs::read_dir("/sys/block").map_err(|e| format!("/sys/block: {e}"))?;
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with("nvme"))
        .map(|n| format!("/dev/{n}"))
        .collect();
    v.sort();
    Ok(v)
}

/// Zeroes the whole namespace, then reads its first and last 64 KiB back
/// with O_DIRECT (past any cache): zeroes, or an error.
fn zero_namespace(dev: &str) -> Result<u64, String> {
    use std::io::{Read, Seek, SeekFrom};
    let name = dev.trim_start_matches("/dev/");
    let sectors: u64 = std::fs::read_to_string(format!("/sys/block/{name}/size"))
        .map_err(|e| format!("{name}/size: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("{name}/size: {e}"))?;
    let bytes = sectors * 512;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .map_err(|e| format!("{dev}: {e}"))?;
    if !f
        .metadata()
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
    {
        return Err(format!("{dev} is not a block device"));
    }
    let range: [u64; 2] = [0, bytes];
    // SAFETY: BLKZEROOUT reads a u64[2] (start, length) we own.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            BLKZEROOUT,
            range.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "BLKZEROOUT {dev}: {}",
            std::io::Error::last_os_error()
        ));
    }
    drop(f);
    let mut r = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .map_err(|e| format!("{dev}: {e}"))?;
    // O_DIRECT wants an aligned buffer: 64 KiB inside a 68 KiB vector.
    let mut raw = vec![0u8; (68 << 10) + 4096];
    let off = raw.as_ptr().align_offset(4096);
    let win = 64u64 << 10;
    for at in [0, bytes.saturating_sub(win)] {
        let buf = &mut raw[off..off + win as usize];
        r.seek(SeekFrom::Start(at))
            .map_err(|e| format!("{dev}: {e}"))?;
        r.read_exact(buf)
            .map_err(|e| format!("reading {dev} at {at}: {e}"))?;
        if let Some(i) = buf.iter().position(|b| *b != 0) {
            return Err(format!(
                "{dev} is not zero after BLKZEROOUT (byte {})",
                at + i as u64
            ));
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "269 (sleep (x) y) S 1 269 269 0 -1 4194560 91 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some((1, 4_194_560, 'S', "sleep (x) y".to_string()))
        );
        let kthread = "12 (kworker/0:1) I 2 0 0 0 -1 69238880 0 0 0 0 0 0";
        let (ppid, flags, ..) = parse_stat(kthread).unwrap();
        assert_eq!(ppid, 2);
        assert_ne!(flags & PF_KTHREAD, 0);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_list_tunable_is_its_selected_entry() {
        assert_eq!(tunable_value("none [mq-deadline] kyber\n"), "mq-deadline");
        assert_eq!(tunable_value("128\n"), "128");
        assert_eq!(tunable_value("write back\n"), "write back");
    }
}
