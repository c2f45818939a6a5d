//! The I/O shell of the atomic-write lab: host discovery, guest image, QEMU
//! VMs driven over QMP and SSH, runs and benchmarks. The `lab` binary is a
//! thin command line over this library; integration tests use it directly.

pub mod bench;
pub mod benchdisk;
pub mod benchkernel;
pub mod benchstress;
pub mod benchverify;
pub mod bisectrun;
pub mod crashdisk;
pub mod doctor;
pub mod heap;
pub mod host;
pub mod image;
pub mod kbuild;
pub mod keep;
pub mod kernel;
pub mod kpipe;
pub mod ksource;
pub mod patchset;
pub mod paths;
pub mod powercut;
pub mod procinfo;
pub mod qmp;
pub mod reaper;
pub mod run;
pub mod ssh;
pub mod verify;
pub mod vm;

/// Exit codes of `lab` (stable: CI scripts rely on them).
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;
pub const EXIT_LAB: u8 = 3;
/// Ctrl-C or SIGTERM: VMs were stopped, partial results written.
pub const EXIT_INTERRUPTED: u8 = 130;
