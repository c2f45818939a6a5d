//! The crash disk: an NBD server QEMU uses as the backend of the NVMe
//! namespace under test. It records every write request, may hold
//! completions back, cuts the power when a policy says so, and serves the
//! crash states planned from the cut as copy-on-write exports.
//!
//! Pure parts: `proto` (NBD wire format), `record` (what the disk saw),
//! `states` (which contents a cut may leave), `sweep` (where virtual
//! cuts of one recorded run fall). I/O shells: `server` (the
//! tokio NBD loop, noting each connection's progress in an `Activity` so
//! a VM stuck on its disk can be diagnosed), `disk` (the live recording
//! disk), `cow` (state exports).

pub mod cow;
pub mod disk;
pub mod proto;
pub mod record;
pub mod server;
pub mod states;
pub mod sweep;

pub use cow::StateStore;
pub use disk::Disk;
pub use record::{Cut, Mark, Record, WriteKind, WriteRecord};
pub use server::{serve_unix, Activity, Catalog, Single};
pub use states::{AtomicRules, Planner, Recipe};
pub use sweep::{CutPoint, Judgement, NextEvent, SweepPlan};
