//! Crash states served as NBD exports, copy-on-write: each state reads as
//! the frozen backing file overlaid with its delta (which points into the
//! write record), and each client connection writes into its own overlay,
//! dropped when it disconnects. No state is ever a full copy.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::proto::{self, Request};
use crate::record::Record;
use crate::server::{Catalog, Connection, Export, Reply};
use crate::states::{Delta, Source, State};

/// The frozen disk, its record, and the states planned from it.
pub struct StateStore {
    base: Arc<std::fs::File>,
    record: Arc<Record>,
    states: Vec<Arc<StateExport>>,
}

/// One state as an export.
pub struct StateExport {
    name: String,
    // Shared by every state: a state costs its delta and nothing more.
    base: Arc<std::fs::File>,
    record: Arc<Record>,
    delta: Delta,
}

impl StateStore {
    /// `base` must hold every write of `record` (the crash disk's backing
    /// file after the cut); it is only read.
    pub fn new(base: &std::fs::File, record: Record, states: &[State]) -> io::Result<StateStore> {
        let base = Arc::new(base.try_clone()?);
        let record = Arc::new(record);
        let exports = states
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Arc::new(StateExport {
                    name: state_name(i),
                    base: base.clone(),
                    record: record.clone(),
                    delta: s.delta.clone(),
                })
            })
            .collect();
        Ok(StateStore {
            base,
            record,
            states: exports,
        })
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Reads `buf.len()` bytes at `offset` of state `i` (no overlay).
    pub fn read(&self, i: usize, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.states[i].read_into(&BTreeMap::new(), offset, buf)
    }

    /// Whether states `a` and `b` hold the same bytes everywhere outside
    /// `covered` (merged, sorted byte ranges of the device). Both are the
    /// same base overlaid with a delta, so they can only differ at LBAs of
    /// either delta: only those are read. An LBA partly inside `covered` is
    /// compared whole.
    pub fn same_outside(&self, a: usize, b: usize, covered: &[(u64, u64)]) -> io::Result<bool> {
        let lba = u64::from(self.record.lba);
        let (sa, sb) = (&self.states[a], &self.states[b]);
        let empty = BTreeMap::new();
        let (mut x, mut y) = (vec![0u8; lba as usize], vec![0u8; lba as usize]);
        let mut lbas: Vec<u64> = sa.delta.keys().chain(sb.delta.keys()).copied().collect();
        lbas.sort_unstable();
        lbas.dedup();
        for l in lbas {
            if lab_core::filemap::inside(covered, l * lba, (l + 1) * lba) {
                continue;
            }
            sa.read_lba(&empty, l, &mut x)?;
            sb.read_lba(&empty, l, &mut y)?;
            if x != y {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The record the states come from.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Bytes the base file holds (for memory accounting: it is shared).
    pub fn base_len(&self) -> io::Result<u64> {
        Ok(self.base.metadata()?.len())
    }
}

/// Export name of state `i`.
pub fn state_name(i: usize) -> String {
    format!("state-{i}")
}

impl Catalog for StateStore {
    fn names(&self) -> Vec<String> {
        self.states.iter().map(|s| s.name.clone()).collect()
    }
    fn get(&self, name: &str) -> Option<Arc<dyn Export>> {
        self.states
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.clone() as Arc<dyn Export>)
    }
}

impl StateExport {
    fn lba(&self) -> u64 {
        u64::from(self.record.lba)
    }

    /// One LBA of the state: the connection's overlay, else the delta,
    /// else the base file.
    fn read_lba(
        &self,
        overlay: &BTreeMap<u64, Box<[u8]>>,
        l: u64,
        out: &mut [u8],
    ) -> io::Result<()> {
        if let Some(b) = overlay.get(&l) {
            out.copy_from_slice(b);
            return Ok(());
        }
        match self.delta.get(&l) {
            Some(Source::Zero) => out.fill(0),
            Some(Source::Write { seq, index }) => {
                let w = &self.record.writes[*seq as usize];
                match w.lba_bytes(*index, self.record.lba) {
                    Some(b) => out.copy_from_slice(b),
                    None => out.fill(0),
                }
            }
            None => self.base.read_exact_at(out, l * self.lba())?,
        }
        Ok(())
    }

    fn read_into(
        &self,
        overlay: &BTreeMap<u64, Box<[u8]>>,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<()> {
        let lba = self.lba();
        let mut block = vec![0u8; lba as usize];
        let mut pos = offset;
        let end = offset + buf.len() as u64;
        while pos < end {
            let l = pos / lba;
            let in_block = (pos % lba) as usize;
            let n = ((lba as usize) - in_block).min((end - pos) as usize);
            self.read_lba(overlay, l, &mut block)?;
            let at = (pos - offset) as usize;
            buf[at..at + n].copy_from_slice(&block[in_block..in_block + n]);
            pos += n as u64;
        }
        Ok(())
    }
}

impl Export for StateExport {
    fn size(&self) -> u64 {
        self.record.size
    }
    fn block(&self) -> u32 {
        self.record.lba
    }
    fn connect(self: Arc<Self>) -> Box<dyn Connection> {
        Box::new(StateConnection {
            state: self,
            overlay: BTreeMap::new(),
        })
    }
}

/// A client of one state: its writes (log recovery, repair) stay here.
struct StateConnection {
    state: Arc<StateExport>,
    overlay: BTreeMap<u64, Box<[u8]>>,
}

impl StateConnection {
    fn write(&mut self, offset: u64, data: Option<&[u8]>, len: usize) -> io::Result<()> {
        let lba = self.state.lba();
        let mut pos = offset;
        let end = offset + len as u64;
        while pos < end {
            let l = pos / lba;
            let in_block = (pos % lba) as usize;
            let n = ((lba as usize) - in_block).min((end - pos) as usize);
            let mut block = vec![0u8; lba as usize];
            if n != lba as usize {
                self.state.read_lba(&self.overlay, l, &mut block)?;
            }
            let at = (pos - offset) as usize;
            match data {
                Some(d) => block[in_block..in_block + n].copy_from_slice(&d[at..at + n]),
                None => block[in_block..in_block + n].fill(0),
            }
            self.overlay.insert(l, block.into_boxed_slice());
            pos += n as u64;
        }
        Ok(())
    }
}

/// One export that shows whichever state the lab selected: a verifier
/// guest keeps one device and one connection while the states change
/// behind it (it must unmount and drop its block cache in between). The
/// connection's overlay is dropped at every switch. The store itself can
/// change too (`retarget`): a verifier VM kept for the next testcase's
/// crash states, whose disk has the same size and block.
pub struct Switch {
    store: std::sync::RwLock<Arc<StateStore>>,
    current: std::sync::atomic::AtomicUsize,
    generation: std::sync::atomic::AtomicU64,
}

/// Why a switch cannot show another store: the guest's device was sized
/// at connection time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the export has {size} bytes in {lba}-byte blocks, the new store {new_size} in {new_lba}-byte blocks")]
pub struct RetargetError {
    pub size: u64,
    pub lba: u32,
    pub new_size: u64,
    pub new_lba: u32,
}

impl Switch {
    pub fn new(store: Arc<StateStore>) -> Arc<Switch> {
        Arc::new(Switch {
            store: std::sync::RwLock::new(store),
            current: 0.into(),
            generation: 0.into(),
        })
    }

    /// Shows state `i` from the next request on.
    pub fn select(&self, i: usize) {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.store().len();
        assert!(i < n, "state {i} of {n}");
        self.current.store(i, SeqCst);
        self.generation.fetch_add(1, SeqCst);
    }

    pub fn store(&self) -> Arc<StateStore> {
        self.store.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Shows `store`'s state 0 from the next request on, if it has this
    /// export's size and block.
    pub fn retarget(&self, store: Arc<StateStore>) -> Result<(), RetargetError> {
        use std::sync::atomic::Ordering::SeqCst;
        let mut cur = self.store.write().unwrap_or_else(|e| e.into_inner());
        let (old, new) = (&cur.record, &store.record);
        if (old.size, old.lba) != (new.size, new.lba) {
            return Err(RetargetError {
                size: old.size,
                lba: old.lba,
                new_size: new.size,
                new_lba: new.lba,
            });
        }
        *cur = store;
        self.current.store(0, SeqCst);
        self.generation.fetch_add(1, SeqCst);
        Ok(())
    }
}

impl Export for Switch {
    fn size(&self) -> u64 {
        self.store().record.size
    }
    fn block(&self) -> u32 {
        self.store().record.lba
    }
    fn connect(self: Arc<Self>) -> Box<dyn Connection> {
        let state = self.store().states[0].clone();
        Box::new(SwitchConnection {
            seen: u64::MAX,
            conn: StateConnection {
                state,
                overlay: BTreeMap::new(),
            },
            switch: self,
        })
    }
}

struct SwitchConnection {
    switch: Arc<Switch>,
    seen: u64,
    conn: StateConnection,
}

impl Connection for SwitchConnection {
    fn request(&mut self, r: &Request, data: Vec<u8>, reply: Reply) {
        use std::sync::atomic::Ordering::SeqCst;
        let g = self.switch.generation.load(SeqCst);
        if g != self.seen {
            self.seen = g;
            let i = self.switch.current.load(SeqCst);
            self.conn.state = self.switch.store().states[i].clone();
            self.conn.overlay.clear();
        }
        self.conn.request(r, data, reply)
    }
}

impl Connection for StateConnection {
    fn request(&mut self, r: &Request, data: Vec<u8>, reply: Reply) {
        let res = match r.kind {
            proto::CMD_READ => {
                let mut buf = vec![0u8; r.length as usize];
                match self.state.read_into(&self.overlay, r.offset, &mut buf) {
                    Ok(()) => return reply.send_data(&buf),
                    Err(e) => Err(e),
                }
            }
            proto::CMD_WRITE => self.write(r.offset, Some(&data), data.len()),
            proto::CMD_WRITE_ZEROES | proto::CMD_TRIM => {
                self.write(r.offset, None, r.length as usize)
            }
            proto::CMD_FLUSH => Ok(()),
            _ => return reply.send(proto::EINVAL),
        };
        reply.send(if res.is_ok() { 0 } else { proto::EIO });
    }
}
