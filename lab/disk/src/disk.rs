//! The live crash disk: a sparse backing file that always holds every
//! write received (what the guest reads back), the record of those writes,
//! held completions and the power cut.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lab_core::powercut::{CutPolicy, CutTrigger, HoldPolicy};

use crate::proto::{self, Request};
use crate::record::{Cut, Mark, Record, WriteKind, WriteRecord};
use crate::server::{Connection, Export, Reply};

type CutHook = Box<dyn Fn(&Cut) + Send + Sync>;

/// The disk.
pub struct Disk {
    file: std::fs::File,
    start: Instant,
    state: Mutex<Live>,
    cut_signal: Condvar,
    on_cut: Mutex<Option<CutHook>>,
}

struct Live {
    record: Record,
    hold: HoldPolicy,
    trigger: Option<CutTrigger>,
    /// Writes received and not yet acknowledged, oldest first.
    held: VecDeque<(u64, Reply)>,
}

impl Disk {
    /// A fresh, zeroed sparse disk of `size` bytes with `lba`-byte blocks.
    /// The record starts here, so replaying it over zeroes rebuilds the
    /// backing file.
    pub fn create(path: &Path, size: u64, lba: u32) -> io::Result<Arc<Disk>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len(size)?;
        Ok(Arc::new(Disk {
            file,
            start: Instant::now(),
            state: Mutex::new(Live {
                record: Record {
                    lba,
                    size,
                    ..Record::default()
                },
                hold: HoldPolicy::NONE,
                trigger: None,
                held: VecDeque::new(),
            }),
            cut_signal: Condvar::new(),
            on_cut: Mutex::new(None),
        }))
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called once, right after the cut (the lab kills QEMU from here).
    pub fn on_cut(&self, hook: impl Fn(&Cut) + Send + Sync + 'static) {
        *self.on_cut.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(hook));
    }

    /// Starts holding completions and watching for the cut. An `after-ms`
    /// policy needs `rt` for its timer.
    pub fn arm(
        self: &Arc<Self>,
        policy: Option<CutPolicy>,
        hold: HoldPolicy,
        rt: &tokio::runtime::Handle,
    ) {
        let mut live = self.live();
        live.hold = hold;
        live.record.armed = Some(self.start.elapsed());
        let lba = live.record.lba;
        live.trigger = policy.map(|p| CutTrigger::new(p, lba));
        if let Some(ms) = live.trigger.as_ref().and_then(CutTrigger::deadline_ms) {
            let disk = self.clone();
            rt.spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let live = disk.live();
                disk.cut(live, format!("{ms} ms after arming"));
            });
        }
    }

    /// The disk's clock: the time base of every `received`, `acked`, flush,
    /// mark and cut in the record. Sweeps stamp the agent's lines with it,
    /// so a virtual cut knows which operation ends the host had seen.
    pub fn clock(&self) -> Duration {
        self.start.elapsed()
    }

    /// The workload set a mark; the disk records where it fell in the
    /// write sequence and cuts if the policy says so.
    pub fn mark(&self, name: &str) {
        let mut live = self.live();
        if live.record.cut.is_some() {
            return;
        }
        let m = Mark {
            name: name.into(),
            at: self.start.elapsed(),
            writes_before: live.record.writes.len() as u64,
        };
        live.record.marks.push(m);
        if let Some(reason) = live.trigger.as_mut().and_then(|t| t.on_mark(name)) {
            self.cut(live, reason);
        }
    }

    /// Cuts the power now (the lab's own decision, e.g. the workload ended
    /// before the policy fired).
    pub fn cut_now(&self, reason: &str) {
        let live = self.live();
        self.cut(live, reason.into());
    }

    fn cut(&self, mut live: MutexGuard<'_, Live>, reason: String) {
        if live.record.cut.is_some() {
            return;
        }
        let cut = Cut {
            reason,
            at: self.start.elapsed(),
            writes_before: live.record.writes.len() as u64,
        };
        tracing::info!("power cut: {} ({} writes)", cut.reason, cut.writes_before);
        live.record.cut = Some(cut.clone());
        // Held completions are never sent: those writes stay in flight.
        live.held.clear();
        drop(live);
        self.cut_signal.notify_all();
        if let Some(hook) = &*self.on_cut.lock().unwrap_or_else(|e| e.into_inner()) {
            hook(&cut);
        }
    }

    /// The cut, if it happened.
    pub fn cut_info(&self) -> Option<Cut> {
        self.live().record.cut.clone()
    }

    /// Waits up to `timeout` for the cut.
    pub fn wait_cut(&self, timeout: Duration) -> Option<Cut> {
        let live = self.live();
        let (live, _) = self
            .cut_signal
            .wait_timeout_while(live, timeout, |l| l.record.cut.is_none())
            .unwrap_or_else(|e| e.into_inner());
        live.record.cut.clone()
    }

    /// A copy of everything recorded so far (write data is shared, not
    /// copied).
    pub fn record(&self) -> Record {
        self.live().record.clone()
    }

    /// The backing file, which holds every write received.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    fn write(self: &Arc<Self>, r: &Request, kind: WriteKind, data: Vec<u8>, reply: Reply) {
        let mut live = self.live();
        if live.record.cut.is_some() {
            return; // The power is off: nothing lands, nothing answers.
        }
        // Applied under the lock, so the file and the record agree on order.
        // The backing file is never synced: durability is decided by the
        // record and the cut, not by the host's page cache.
        let res = match kind {
            WriteKind::Data => self.file.write_all_at(&data, r.offset),
            WriteKind::Zeroes | WriteKind::Trim => self
                .file
                .write_all_at(&vec![0u8; r.length as usize], r.offset),
        };
        if res.is_err() {
            reply.send(proto::EIO);
            return;
        }
        let seq = live.record.writes.len() as u64;
        live.record.writes.push(WriteRecord {
            seq,
            kind,
            offset: r.offset,
            len: r.length,
            fua: r.flags & proto::CMD_FLAG_FUA != 0,
            data: Arc::new(data),
            received: self.start.elapsed(),
            acked: None,
        });
        let trigger = live
            .trigger
            .as_mut()
            .and_then(|t| t.on_write(r.offset, u64::from(r.length)));
        if let Some(reason) = trigger {
            self.cut(live, reason);
            return;
        }
        let hold = live.hold;
        if hold == HoldPolicy::NONE {
            self.ack(&mut live, seq, reply);
            return;
        }
        live.held.push_back((seq, reply));
        while live.held.len() > hold.window as usize {
            let (s, rp) = live.held.pop_front().expect("non-empty");
            self.ack(&mut live, s, rp);
        }
        if hold.ms > 0 {
            let disk = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(hold.ms)).await;
                let mut live = disk.live();
                if let Some(i) = live.held.iter().position(|(s, _)| *s == seq) {
                    let (s, rp) = live.held.remove(i).expect("present");
                    disk.ack(&mut live, s, rp);
                }
            });
        }
    }

    fn ack(&self, live: &mut Live, seq: u64, reply: Reply) {
        live.record.writes[seq as usize].acked = Some(self.start.elapsed());
        reply.send(0);
    }

    fn powered(&self) -> bool {
        self.live().record.cut.is_none()
    }
}

impl Export for Disk {
    fn size(&self) -> u64 {
        self.live().record.size
    }
    fn block(&self) -> u32 {
        self.live().record.lba
    }
    fn connect(self: Arc<Self>) -> Box<dyn Connection> {
        Box::new(LiveConnection { disk: self })
    }
}

struct LiveConnection {
    disk: Arc<Disk>,
}

impl Connection for LiveConnection {
    fn request(&mut self, r: &Request, data: Vec<u8>, reply: Reply) {
        let disk = &self.disk;
        match r.kind {
            proto::CMD_READ => {
                if !disk.powered() {
                    return;
                }
                let mut buf = vec![0u8; r.length as usize];
                match disk.file.read_exact_at(&mut buf, r.offset) {
                    Ok(()) => reply.send_data(&buf),
                    Err(_) => reply.send(proto::EIO),
                }
            }
            proto::CMD_WRITE => disk.write(r, WriteKind::Data, data, reply),
            proto::CMD_WRITE_ZEROES => disk.write(r, WriteKind::Zeroes, data, reply),
            proto::CMD_TRIM => disk.write(r, WriteKind::Trim, data, reply),
            proto::CMD_FLUSH => {
                let mut live = disk.live();
                if live.record.cut.is_none() {
                    let t = disk.start.elapsed();
                    live.record.flushes.push(t);
                    reply.send(0);
                }
            }
            _ => reply.send(proto::EINVAL),
        }
    }
}
