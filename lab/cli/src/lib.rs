//! The I/O shell of the atomic-write lab. The `lab` binary is a thin command
//! line over this library (`cmd`); integration tests use it directly.
//!
//! Layers, each using only those below it:
//!
//! - `cmd`: one module per command (`exit`: the exit codes);
//! - `bench`: `lab bench` figures; `kernel`: kernel builds and bisection;
//! - `suite`: running testcases (stages, workloads, the power-cut stage,
//!   results);
//! - `powercut`: the crash disk, the verifier VM, kept crash states;
//! - `host`: QEMU discovery, the accelerator probe, the guest image, the
//!   host as a run sees it;
//! - `vm`: one QEMU VM (QMP, SSH, console, boot stages);
//! - `proc`, `paths`: child processes, where files go.

pub mod bench;
pub mod cmd;
pub mod exit;
pub mod host;
pub mod kernel;
pub mod paths;
pub mod powercut;
pub mod proc;
pub mod suite;
pub mod vm;
