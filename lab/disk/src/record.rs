//! What the crash disk saw: every write-like request in arrival order, the
//! flushes, the marks the workload set and the cut. Pure data; the server
//! fills it and the crash-state planner reads it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a recorded request did to the media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteKind {
    Data,
    Zeroes,
    /// Trimmed blocks read back as zeroes on this disk (allowed: after a
    /// trim the content is unspecified), so a trim is modelled as zeroes.
    Trim,
}

/// One write-like request as the disk received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteRecord {
    /// Order of arrival, from 0. Writes are applied to the backing store in
    /// this order, so replaying them in it rebuilds the store.
    pub seq: u64,
    pub kind: WriteKind,
    pub offset: u64,
    pub len: u32,
    /// NBD_CMD_FLAG_FUA was set.
    pub fua: bool,
    /// The bytes written (Data only): the record costs storage in
    /// proportion to the data written, and nothing else. The request's
    /// buffer itself, moved in (an `Arc<[u8]>` would copy it).
    #[serde(skip)]
    pub data: Arc<Vec<u8>>,
    /// Since the disk was created.
    pub received: Duration,
    /// When the completion was sent; None while held or after the cut.
    pub acked: Option<Duration>,
}

impl WriteRecord {
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }

    /// Bytes of LBA `i` of this write (relative index), or None for a
    /// zeroes/trim request.
    pub fn lba_bytes(&self, i: u32, lba: u32) -> Option<&[u8]> {
        match self.kind {
            WriteKind::Data => {
                let s = (i as usize) * (lba as usize);
                Some(&self.data[s..s + lba as usize])
            }
            WriteKind::Zeroes | WriteKind::Trim => None,
        }
    }
}

/// A point the workload named (the guest agent's `mark` step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub name: String,
    pub at: Duration,
    /// Writes received before the mark (their seq is below this).
    pub writes_before: u64,
}

/// The power cut: after it the disk applies, records and answers nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    /// Which policy fired, in words ("write 20", "mark after-fsync").
    pub reason: String,
    pub at: Duration,
    pub writes_before: u64,
}

/// Everything the disk saw, as one value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Record {
    /// Logical block size in bytes.
    pub lba: u32,
    pub size: u64,
    pub writes: Vec<WriteRecord>,
    /// When each flush arrived.
    pub flushes: Vec<Duration>,
    pub marks: Vec<Mark>,
    pub cut: Option<Cut>,
    /// When the lab armed the cut (the workload started).
    pub armed: Option<Duration>,
}

impl Record {
    /// Whether write `w` is durable at time `t`: its completion was sent,
    /// and either it carried FUA or a flush arrived after its completion
    /// (NBD: a flush covers every write completed before it). With the NVMe
    /// write cache off every write is FUA, so completion alone decides.
    pub fn durable_at(&self, w: &WriteRecord, t: Duration) -> bool {
        match w.acked {
            Some(a) if a <= t => w.fua || self.flushes.iter().any(|&f| f >= a && f <= t),
            _ => false,
        }
    }

    /// Writes received before `writes_before` that were not durable at
    /// `t`: any subset of them may have reached the media.
    pub fn in_flight(&self, writes_before: u64, t: Duration) -> Vec<u64> {
        self.writes
            .iter()
            .take(writes_before as usize)
            .filter(|w| !self.durable_at(w, t))
            .map(|w| w.seq)
            .collect()
    }

    /// The same record as a device that lied would leave it: every write
    /// received after arming counts as never acknowledged.
    pub fn as_if_acks_lied(&self) -> Record {
        let mut r = self.clone();
        if let Some(armed) = r.armed {
            for w in r.writes.iter_mut().filter(|w| w.received >= armed) {
                w.acked = None;
            }
        }
        r
    }

    /// How many writes had arrived by time `t` (arrival order is `seq`
    /// order, so they are the first ones).
    pub fn writes_received_by(&self, t: Duration) -> u64 {
        self.writes.partition_point(|w| w.received <= t) as u64
    }

    /// The record a real power cut at `t` would have left: the writes and
    /// flushes that had arrived, acknowledgements sent by then, the marks
    /// set by then. The reference for virtual cuts (`sweep`).
    pub fn cut_at(&self, t: Duration, reason: &str) -> Record {
        let n = self.writes_received_by(t);
        let writes = self.writes[..n as usize]
            .iter()
            .map(|w| WriteRecord {
                acked: w.acked.filter(|&a| a <= t),
                ..w.clone()
            })
            .collect();
        Record {
            lba: self.lba,
            size: self.size,
            writes,
            flushes: self.flushes.iter().copied().filter(|&f| f <= t).collect(),
            marks: self.marks.iter().filter(|m| m.at <= t).cloned().collect(),
            cut: Some(Cut {
                reason: reason.into(),
                at: t,
                writes_before: n,
            }),
            armed: self.armed.filter(|&a| a <= t),
        }
    }

    /// Total bytes of write data held.
    pub fn data_bytes(&self) -> u64 {
        self.writes.iter().map(|w| w.data.len() as u64).sum()
    }
}
