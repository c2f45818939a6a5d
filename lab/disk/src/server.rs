//! The NBD server (tokio): the handshake and the request loop, over any
//! [`Catalog`] of exports. What a request does is the export's business:
//! the live crash disk records and may hold a write, a crash state writes
//! into its own copy-on-write overlay.

use std::io;
use std::sync::Arc;

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

/// Serves the catalog to every client that connects, until the listener
/// fails or the task is dropped.
pub async fn serve_unix(catalog: Arc<dyn Catalog>, listener: UnixListener) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let catalog = catalog.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(catalog, stream).await {
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

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Handshake, then transmission.
async fn handle(catalog: Arc<dyn Catalog>, mut s: UnixStream) -> io::Result<()> {
    s.write_all(&proto::greeting()).await?;
    let client_flags = read_u32(&mut s).await?;
    let no_zeroes = client_flags & proto::CLIENT_NO_ZEROES != 0;
    let export = loop {
        let mut magic = [0u8; 8];
        s.read_exact(&mut magic).await?;
        if u64::from_be_bytes(magic) != proto::IHAVEOPT {
            return Err(invalid("bad option magic"));
        }
        let option = read_u32(&mut s).await?;
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
    transmission(export, s).await
}

async fn transmission(export: Arc<dyn Export>, s: UnixStream) -> io::Result<()> {
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
