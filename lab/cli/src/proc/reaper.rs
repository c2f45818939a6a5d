//! No QEMU outlives the lab. Every child is registered here; Ctrl-C (or
//! SIGTERM) kills them all and marks the run interrupted so it can write its
//! partial results. Children also get PR_SET_PDEATHSIG, so even a lab killed
//! with SIGKILL takes its QEMU with it.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Install the Ctrl-C/SIGTERM handler (once, at start-up).
pub fn install_signal_handler() {
    let _ = ctrlc::set_handler(|| {
        INTERRUPTED.store(true, Ordering::SeqCst);
        eprintln!("\nlab: interrupted; stopping VMs and writing partial results");
        kill_all();
    });
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn register(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
    // A signal that arrived between spawn and register must still reach it.
    if interrupted() {
        kill_all();
    }
}

pub fn unregister(pid: u32) {
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid);
}

pub fn kill_all() {
    let pids = CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for pid in pids {
        // SAFETY: plain kill(2) on a pid we spawned and have not reaped yet,
        // and on its process group (guard_child made it the leader of its
        // own): a kernel build's make takes its compilers with it.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// Children run in their own process group (a terminal's Ctrl-C reaches the
/// lab, which then decides) and die with the thread that spawned them.
pub fn guard_child(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}
