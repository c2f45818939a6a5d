//! The disks a VM's NVMe namespaces run on, each in its own private
//! directory and gone when dropped: sparse files ([`ScratchDisk`]), an NBD
//! export served from a background tokio runtime ([`NbdServer`]), and the
//! crash disk, lab-disk's recording disk behind such a server
//! ([`CrashDisk`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use lab_core::qemu::Backend;
use lab_disk::server::Export;
use lab_disk::{serve_unix, Activity, Disk, Single};

use crate::paths::PrivateDir;

/// One NBD export served on a unix socket from its own tokio runtime (one
/// worker), until dropped. The crash disk and the verifier's state switch
/// both run on one.
pub struct NbdServer {
    socket: String,
    export: String,
    activity: Arc<Activity>,
    rt: tokio::runtime::Runtime,
}

impl NbdServer {
    /// Serves `export` as `name` on `dir/<name>.sock`.
    pub fn start(dir: &Path, name: &str, export: Arc<dyn Export>) -> Result<NbdServer> {
        let socket = dir.join(format!("{name}.sock"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("lab-nbd-{name}"))
            .enable_all()
            .build()
            .with_context(|| format!("starting the runtime of NBD export {name}"))?;
        let listener = rt
            .block_on(async { tokio::net::UnixListener::bind(&socket) })
            .with_context(|| format!("binding {}", socket.display()))?;
        let activity = Arc::new(Activity::default());
        rt.spawn(serve_unix(
            Arc::new(Single {
                name: name.into(),
                export,
            }),
            listener,
            activity.clone(),
        ));
        Ok(NbdServer {
            socket: socket.to_string_lossy().into_owned(),
            export: name.into(),
            activity,
            rt,
        })
    }

    /// The server's connections so far, for a VM that waits on its disk.
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// The QEMU block backend that reaches this export.
    pub fn backend(&self) -> Backend {
        Backend::Nbd {
            socket: self.socket.clone(),
            export: self.export.clone(),
        }
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.rt.handle()
    }
}

pub struct CrashDisk {
    pub disk: Arc<Disk>,
    // Dropped first: stops serving before the directory goes.
    server: NbdServer,
    dir: PrivateDir,
}

impl CrashDisk {
    /// A fresh sparse disk of `size` bytes announcing `block`-byte blocks.
    pub fn start(size: u64, block: u32) -> Result<CrashDisk> {
        let dir = PrivateDir::new("lab-crashdisk")?;
        let disk = Disk::create(&dir.path().join("disk.raw"), size, block)?;
        let server = NbdServer::start(dir.path(), "lab", disk.clone())?;
        Ok(CrashDisk { disk, server, dir })
    }

    /// Starts holding completions and watching for the cut.
    pub fn arm(
        &self,
        policy: Option<lab_core::powercut::CutPolicy>,
        hold: lab_core::powercut::HoldPolicy,
    ) {
        self.disk.arm(policy, hold, self.server.handle());
    }

    /// The private directory holding the socket and the backing file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The QEMU block backend that reaches this disk.
    pub fn backend(&self) -> Backend {
        self.server.backend()
    }

    /// What the NBD server has seen of its clients.
    pub fn activity(&self) -> Arc<Activity> {
        self.server.activity()
    }
}

/// A sparse raw disk image in a private directory, removed on drop.
pub struct ScratchDisk {
    _dir: PrivateDir,
    pub path: PathBuf,
}

impl ScratchDisk {
    pub fn new(size_bytes: u64) -> Result<ScratchDisk> {
        let dir = PrivateDir::new("lab-disk")?;
        let path = dir.path().join("nvme0n1.raw");
        let f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        f.set_len(size_bytes)?;
        Ok(ScratchDisk { _dir: dir, path })
    }

    /// The QEMU block backend that reaches this file.
    pub fn backend(&self) -> Backend {
        Backend::File(self.path.to_string_lossy().into_owned())
    }
}
