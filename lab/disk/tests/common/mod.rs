//! Records for the planner's tests.

use std::sync::Arc;
use std::time::Duration;

use lab_disk::{WriteKind, WriteRecord};

pub const LBA: u32 = 512;

/// Data write `seq` over `lbas` LBAs from `first`: its bytes differ per
/// write and per LBA and are never zero, so every state's image tells
/// which write landed where.
pub fn data_write(
    seq: u64,
    first: u64,
    lbas: u32,
    fua: bool,
    received: Duration,
    acked: Option<Duration>,
) -> WriteRecord {
    let data: Vec<u8> = (0..lbas * LBA)
        .map(|b| (seq as u32 * 31 + b / LBA * 7 + 1) as u8)
        .collect();
    WriteRecord {
        seq,
        kind: WriteKind::Data,
        offset: first * u64::from(LBA),
        len: lbas * LBA,
        fua,
        data: Arc::new(data),
        received,
        acked,
    }
}
