//! The crash disk: an NBD server QEMU uses as the backend of the NVMe
//! namespace under test. It serves a sparse backing file and records every
//! write request (sequence, offset, length, flags, data, times), the input
//! of the power-cut model.
//!
//! `proto` is the pure NBD wire format (fixed newstyle handshake, simple
//! replies); `server` is the tokio I/O shell around it.

pub mod proto;
pub mod server;

pub use server::{serve_unix, Disk, WriteRecord};
