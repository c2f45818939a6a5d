//! The NBD server (tokio): one export backed by a sparse file, every write
//! recorded with its data and times.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::proto::{self, Request};

/// What a recorded request did to the media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Data,
    Zeroes,
    Trim,
}

/// One write-like request as the disk received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    /// Order of arrival, from 0.
    pub seq: u64,
    pub kind: WriteKind,
    pub offset: u64,
    pub len: u32,
    /// NBD_CMD_FLAG_FUA was set.
    pub fua: bool,
    /// The bytes written (Data only): storage grows with the data written.
    pub data: Vec<u8>,
    /// Since the disk was created.
    pub received: Duration,
    pub acked: Option<Duration>,
}

/// The disk: backing file, geometry, write record.
pub struct Disk {
    file: std::fs::File,
    size: u64,
    block: u32,
    export: String,
    start: Instant,
    record: Mutex<Vec<WriteRecord>>,
    flushes: Mutex<Vec<Duration>>,
}

impl Disk {
    /// A sparse backing file of `size` bytes; `block` is the LBA size
    /// announced to clients (NBD_INFO_BLOCK_SIZE).
    pub fn create(path: &Path, size: u64, block: u32, export: &str) -> io::Result<Arc<Disk>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len(size)?;
        Ok(Arc::new(Disk {
            file,
            size,
            block,
            export: export.to_string(),
            start: Instant::now(),
            record: Mutex::new(Vec::new()),
            flushes: Mutex::new(Vec::new()),
        }))
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// A copy of the write record so far.
    pub fn records(&self) -> Vec<WriteRecord> {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// When each flush arrived.
    pub fn flushes(&self) -> Vec<Duration> {
        self.flushes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn in_bounds(&self, r: &Request) -> bool {
        r.offset
            .checked_add(u64::from(r.length))
            .is_some_and(|end| end <= self.size)
    }

    fn record(&self, kind: WriteKind, r: &Request, data: Vec<u8>) -> usize {
        let mut rec = self.record.lock().unwrap_or_else(|e| e.into_inner());
        let seq = rec.len() as u64;
        rec.push(WriteRecord {
            seq,
            kind,
            offset: r.offset,
            len: r.length,
            fua: r.flags & proto::CMD_FLAG_FUA != 0,
            data,
            received: self.start.elapsed(),
            acked: None,
        });
        seq as usize
    }

    fn acked(&self, idx: usize) {
        let mut rec = self.record.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = rec.get_mut(idx) {
            w.acked = Some(self.start.elapsed());
        }
    }
}

/// Serves `disk` to every client that connects, until the listener fails
/// or the task is dropped.
pub async fn serve_unix(disk: Arc<Disk>, listener: UnixListener) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let disk = disk.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(disk, stream).await {
                tracing::debug!("nbd connection ended: {e}");
            }
        });
    }
}

async fn read_u32(s: &mut UnixStream) -> io::Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b).await?;
    Ok(u32::from_be_bytes(b))
}

/// Handshake, then transmission.
async fn handle(disk: Arc<Disk>, mut s: UnixStream) -> io::Result<()> {
    s.write_all(&proto::greeting()).await?;
    let client_flags = read_u32(&mut s).await?;
    let no_zeroes = client_flags & proto::CLIENT_NO_ZEROES != 0;
    loop {
        let mut magic = [0u8; 8];
        s.read_exact(&mut magic).await?;
        if u64::from_be_bytes(magic) != proto::IHAVEOPT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad option magic",
            ));
        }
        let option = read_u32(&mut s).await?;
        let len = read_u32(&mut s).await? as usize;
        if len > 4096 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "option too long",
            ));
        }
        let mut data = vec![0u8; len];
        s.read_exact(&mut data).await?;
        match option {
            proto::OPT_EXPORT_NAME => {
                // No way to refuse here but to close: only our export exists.
                if data != disk.export.as_bytes() && !data.is_empty() {
                    return Err(io::Error::new(io::ErrorKind::NotFound, "unknown export"));
                }
                s.write_all(&proto::export_name_reply(disk.size, no_zeroes))
                    .await?;
                break;
            }
            proto::OPT_ABORT => {
                s.write_all(&proto::option_reply(option, proto::REP_ACK, &[]))
                    .await?;
                return Ok(());
            }
            proto::OPT_LIST => {
                let mut d = (disk.export.len() as u32).to_be_bytes().to_vec();
                d.extend_from_slice(disk.export.as_bytes());
                s.write_all(&proto::option_reply(option, proto::REP_SERVER, &d))
                    .await?;
                s.write_all(&proto::option_reply(option, proto::REP_ACK, &[]))
                    .await?;
            }
            proto::OPT_INFO | proto::OPT_GO => {
                let name = proto::info_request_name(&data).unwrap_or(b"");
                if !name.is_empty() && name != disk.export.as_bytes() {
                    s.write_all(&proto::option_reply(option, proto::REP_ERR_UNKNOWN, &[]))
                        .await?;
                    continue;
                }
                s.write_all(&proto::option_reply(
                    option,
                    proto::REP_INFO,
                    &proto::info_export(disk.size),
                ))
                .await?;
                s.write_all(&proto::option_reply(
                    option,
                    proto::REP_INFO,
                    &proto::info_block_size(disk.block),
                ))
                .await?;
                s.write_all(&proto::option_reply(option, proto::REP_ACK, &[]))
                    .await?;
                if option == proto::OPT_GO {
                    break;
                }
            }
            _ => {
                s.write_all(&proto::option_reply(option, proto::REP_ERR_UNSUP, &[]))
                    .await?;
            }
        }
    }
    transmission(&disk, &mut s).await
}

async fn transmission(disk: &Disk, s: &mut UnixStream) -> io::Result<()> {
    let mut hdr = [0u8; Request::SIZE];
    loop {
        s.read_exact(&mut hdr).await?;
        let r = Request::parse(&hdr).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        match r.kind {
            proto::CMD_DISC => return Ok(()),
            proto::CMD_READ => {
                if !disk.in_bounds(&r) {
                    s.write_all(&proto::simple_reply(proto::EINVAL, r.cookie))
                        .await?;
                    continue;
                }
                let mut buf = vec![0u8; r.length as usize];
                match disk.file.read_exact_at(&mut buf, r.offset) {
                    Ok(()) => {
                        s.write_all(&proto::simple_reply(0, r.cookie)).await?;
                        s.write_all(&buf).await?;
                    }
                    Err(_) => {
                        s.write_all(&proto::simple_reply(proto::EIO, r.cookie))
                            .await?
                    }
                }
            }
            proto::CMD_WRITE => {
                let mut buf = vec![0u8; r.length as usize];
                s.read_exact(&mut buf).await?;
                if !disk.in_bounds(&r) {
                    s.write_all(&proto::simple_reply(proto::ENOSPC, r.cookie))
                        .await?;
                    continue;
                }
                let res = disk.file.write_all_at(&buf, r.offset);
                let idx = disk.record(WriteKind::Data, &r, buf);
                reply_write(disk, s, &r, idx, res).await?;
            }
            proto::CMD_WRITE_ZEROES | proto::CMD_TRIM => {
                if !disk.in_bounds(&r) {
                    s.write_all(&proto::simple_reply(proto::ENOSPC, r.cookie))
                        .await?;
                    continue;
                }
                // Trimmed blocks read back as zeroes here (allowed: after a
                // trim the content is unspecified).
                let zeros = vec![0u8; r.length as usize];
                let res = disk.file.write_all_at(&zeros, r.offset);
                let kind = if r.kind == proto::CMD_TRIM {
                    WriteKind::Trim
                } else {
                    WriteKind::Zeroes
                };
                let idx = disk.record(kind, &r, Vec::new());
                reply_write(disk, s, &r, idx, res).await?;
            }
            proto::CMD_FLUSH => {
                disk.flushes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(disk.start.elapsed());
                let err = if disk.file.sync_data().is_ok() {
                    0
                } else {
                    proto::EIO
                };
                s.write_all(&proto::simple_reply(err, r.cookie)).await?;
            }
            _ => {
                s.write_all(&proto::simple_reply(proto::EINVAL, r.cookie))
                    .await?
            }
        }
    }
}

async fn reply_write(
    disk: &Disk,
    s: &mut UnixStream,
    r: &Request,
    idx: usize,
    res: io::Result<()>,
) -> io::Result<()> {
    let mut err = if res.is_ok() { 0 } else { proto::EIO };
    if err == 0 && r.flags & proto::CMD_FLAG_FUA != 0 && disk.file.sync_data().is_err() {
        err = proto::EIO;
    }
    s.write_all(&proto::simple_reply(err, r.cookie)).await?;
    disk.acked(idx);
    Ok(())
}
