//! The NBD server (tokio): the handshake and the request loop, over any
//! [`Catalog`] of exports. What a request does is the export's business:
//! the live crash disk records and may hold a write, a crash state writes
//! into its own copy-on-write overlay.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::proto::{self, Request};

/// The exports a server offers, by name.
pub trait Catalog: Send + Sync + 'static {
    fn names(&self) -> Vec<String>;
    /// The export called `name`; the empty name means the default one.
    fn get(&self, name: &str) -> Option<Arc<dyn Export>>;
}

/// One export.
pub trait Export: Send + Sync + 'static {
    fn size(&self) -> u64;
    /// The LBA size, announced as NBD_INFO_BLOCK_SIZE.
    fn block(&self) -> u32;
    /// Per-connection state.
    fn connect(self: Arc<Self>) -> Box<dyn Connection>;
}

/// One client's view of an export.
pub trait Connection: Send {
    /// Handles one request (the payload of a write in `data`). The reply
    /// may be sent now, later (a held write), or never (power is off).
    fn request(&mut self, req: &Request, data: Vec<u8>, reply: Reply);
}

/// The way back to the client for one request. Replies may go out in any
/// order: NBD matches them by cookie.
pub struct Reply {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    cookie: u64,
}

impl Reply {
    pub fn send(self, error: u32) {
        let _ = self
            .tx
            .send(proto::simple_reply(error, self.cookie).to_vec());
    }

    pub fn send_data(self, data: &[u8]) {
        let mut m = proto::simple_reply(0, self.cookie).to_vec();
        m.extend_from_slice(data);
        let _ = self.tx.send(m);
    }
}

/// One export under one name.
pub struct Single {
    pub name: String,
    pub export: Arc<dyn Export>,
}

impl Catalog for Single {
    fn names(&self) -> Vec<String> {
        vec![self.name.clone()]
    }
    fn get(&self, name: &str) -> Option<Arc<dyn Export>> {
        (name.is_empty() || name == self.name).then(|| self.export.clone())
    }
}

/// Where one client's connection is: what a stuck client waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted; the greeting is being sent or the client's flags awaited.
    Greeting,
    /// Negotiating options (export name, info, go).
    Options,
    /// Serving requests.
    Transmission,
    /// The connection is over.
    Closed,
}

/// One client connection as the server saw it (times since the server
/// started).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub accepted: Duration,
    pub phase: Phase,
    /// Options the client sent, by number, in order.
    pub options: Vec<u32>,
    pub requests: u64,
    pub last_request: Option<Duration>,
    /// How it ended (`None` while it is open).
    pub ended: Option<(Duration, String)>,
}

/// What the server has done, kept so that a client that never finishes
/// its start-up (a QEMU stuck opening its disk) can be told apart from one
/// that never came: read it when a wait times out.
pub struct Activity {
    start: Instant,
    listening: Mutex<Option<Duration>>,
    conns: Mutex<Vec<ConnectionInfo>>,
}

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: Instant::now(),
            listening: Mutex::new(None),
            conns: Mutex::new(Vec::new()),
        }
    }
}

impl Activity {
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// When the accept loop started, if it has.
    pub fn listening_since(&self) -> Option<Duration> {
        *self.listening.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn update(&self, id: usize, f: impl FnOnce(&mut ConnectionInfo)) {
        if let Some(c) = self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(id)
        {
            f(c);
        }
    }

    fn accepted(&self) -> usize {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.push(ConnectionInfo {
            accepted: self.start.elapsed(),
            phase: Phase::Greeting,
            options: Vec::new(),
            requests: 0,
            last_request: None,
            ended: None,
        });
        conns.len() - 1
    }

    /// One line for a report: "accept loop up at 0.00 s; connection 1:
    /// accepted at 0.41 s, transmission, options [7], 12 requests, last at
    /// 3.20 s".
    pub fn describe(&self) -> String {
        let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
        let mut out = match self.listening_since() {
            Some(t) => format!("accept loop up at {}", secs(t)),
            None => "accept loop not started".to_string(),
        };
        let conns = self.connections();
        if conns.is_empty() {
            out.push_str(", no client ever connected");
        }
        for (i, c) in conns.iter().enumerate() {
            out.push_str(&format!(
                "; connection {}: accepted at {}, {:?}, options {:?}, {} requests",
                i + 1,
                secs(c.accepted),
                c.phase,
                c.options,
                c.requests
            ));
            if let Some(t) = c.last_request {
                out.push_str(&format!(", last at {}", secs(t)));
            }
            if let Some((t, why)) = &c.ended {
                out.push_str(&format!(", ended at {} ({why})", secs(*t)));
            }
        }
        out.push_str(&format!(" (now {})", secs(self.now())));
        out
    }
}

/// Serves the catalog to every client that connects, until the listener
/// fails or the task is dropped, noting each connection's progress in
/// `activity`.
pub async fn serve_unix(
    catalog: Arc<dyn Catalog>,
    listener: UnixListener,
    activity: Arc<Activity>,
) -> io::Result<()> {
    *activity.listening.lock().unwrap_or_else(|e| e.into_inner()) = Some(activity.now());
    loop {
        let (stream, _) = listener.accept().await?;
        let catalog = catalog.clone();
        let activity = activity.clone();
        let id = activity.accepted();
        tokio::spawn(async move {
            let r = handle(catalog, stream, &activity, id).await;
            let why = match &r {
                Ok(()) => "closed cleanly".to_string(),
                Err(e) => e.to_string(),
            };
            tracing::debug!("nbd connection ended: {why}");
            let now = activity.now();
            activity.update(id, |c| {
                c.phase = Phase::Closed;
                c.ended = Some((now, why));
            });
        });
    }
}

async fn read_u32(s: &mut UnixStream) -> io::Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b).await?;
    Ok(u32::from_be_bytes(b))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Handshake, then transmission.
async fn handle(
    catalog: Arc<dyn Catalog>,
    mut s: UnixStream,
    activity: &Activity,
    id: usize,
) -> io::Result<()> {
    s.write_all(&proto::greeting()).await?;
    let client_flags = read_u32(&mut s).await?;
    activity.update(id, |c| c.phase = Phase::Options);
    let no_zeroes = client_flags & proto::CLIENT_NO_ZEROES != 0;
    let export = loop {
        let mut magic = [0u8; 8];
        s.read_exact(&mut magic).await?;
        if u64::from_be_bytes(magic) != proto::IHAVEOPT {
            return Err(invalid("bad option magic"));
        }
        let option = read_u32(&mut s).await?;
        activity.update(id, |c| c.options.push(option));
        let len = read_u32(&mut s).await? as usize;
        if len > 4096 {
            return Err(invalid("option too long"));
        }
        let mut data = vec![0u8; len];
        s.read_exact(&mut data).await?;
        match option {
            proto::OPT_EXPORT_NAME => {
                // No way to refuse here but to close the connection.
                let name = String::from_utf8_lossy(&data);
                let Some(e) = catalog.get(&name) else {
                    return Err(io::Error::new(io::ErrorKind::NotFound, "unknown export"));
                };
                s.write_all(&proto::export_name_reply(e.size(), no_zeroes))
                    .await?;
                break e;
            }
            proto::OPT_ABORT => {
                s.write_all(&proto::option_reply(option, proto::REP_ACK, &[]))
                    .await?;
                return Ok(());
            }
            proto::OPT_LIST => {
                for name in catalog.names() {
                    let mut d = (name.len() as u32).to_be_bytes().to_vec();
                    d.extend_from_slice(name.as_bytes());
                    s.write_all(&proto::option_reply(option, proto::REP_SERVER, &d))
                        .await?;
                }
                s.write_all(&proto::option_reply(option, proto::REP_ACK, &[]))
                    .await?;
            }
            proto::OPT_INFO | proto::OPT_GO => {
                let name = proto::info_request_name(&data).unwrap_or(b"");
                let Some(e) = catalog.get(&String::from_utf8_lossy(name)) else {
                    s.write_all(&proto::option_reply(option, proto::REP_ERR_UNKNOWN, &[]))
                        .await?;
                    continue;
                };
                for info in [
                    proto::info_export(e.size()),
                    proto::info_block_size(e.block()),
                ] {
                    s.write_all(&proto::option_reply(option, proto::REP_INFO, &info))
                        .await?;
                }
                s.write_all(&proto::option_reply(option, proto::REP_ACK, &[]))
                    .await?;
                if option == proto::OPT_GO {
                    break e;
                }
            }
            _ => {
                s.write_all(&proto::option_reply(option, proto::REP_ERR_UNSUP, &[]))
                    .await?;
            }
        }
    };
    activity.update(id, |c| c.phase = Phase::Transmission);
    transmission(export, s, activity, id).await
}

async fn transmission(
    export: Arc<dyn Export>,
    s: UnixStream,
    activity: &Activity,
    id: usize,
) -> io::Result<()> {
    let size = export.size();
    let mut conn = export.connect();
    let (mut rd, mut wr) = s.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if wr.write_all(&m).await.is_err() {
                break;
            }
        }
    });
    let mut hdr = [0u8; Request::SIZE];
    let result = loop {
        if let Err(e) = rd.read_exact(&mut hdr).await {
            break Err(e);
        }
        let r = match Request::parse(&hdr) {
            Ok(r) => r,
            Err(e) => break Err(invalid(&e.to_string())),
        };
        let now = activity.now();
        activity.update(id, |c| {
            c.requests += 1;
            c.last_request = Some(now);
        });
        let mut data = Vec::new();
        if r.kind == proto::CMD_WRITE {
            // Read straight into spare capacity: no zeroing of a buffer
            // that is overwritten at once.
            let len = r.length as usize;
            data.reserve_exact(len);
            match (&mut rd).take(len as u64).read_to_end(&mut data).await {
                Ok(n) if n == len => {}
                Ok(_) => break Err(io::ErrorKind::UnexpectedEof.into()),
                Err(e) => break Err(e),
            }
        }
        let reply = Reply {
            tx: tx.clone(),
            cookie: r.cookie,
        };
        let in_bounds = r
            .offset
            .checked_add(u64::from(r.length))
            .is_some_and(|end| end <= size);
        match r.kind {
            proto::CMD_DISC => break Ok(()),
            proto::CMD_READ | proto::CMD_WRITE | proto::CMD_WRITE_ZEROES | proto::CMD_TRIM
                if !in_bounds =>
            {
                reply.send(if r.kind == proto::CMD_READ {
                    proto::EINVAL
                } else {
                    proto::ENOSPC
                })
            }
            proto::CMD_READ
            | proto::CMD_WRITE
            | proto::CMD_WRITE_ZEROES
            | proto::CMD_TRIM
            | proto::CMD_FLUSH => conn.request(&r, data, reply),
            _ => reply.send(proto::EINVAL),
        }
    };
    // Held replies may never be sent (the power is off): do not wait for
    // them, the client is gone.
    drop(conn);
    writer.abort();
    result
}
