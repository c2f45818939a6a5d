//! The crash disk as a VM's NVMe backend: lab-disk's NBD server on a unix
//! socket in a private directory, served from a background tokio runtime
//! that lives as long as this value.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use lab_core::qemu::Backend;
use lab_disk::{serve_unix, Disk, Single};

use crate::paths::PrivateDir;

const EXPORT: &str = "lab";

pub struct CrashDisk {
    pub disk: Arc<Disk>,
    pub socket: PathBuf,
    // Dropped first: stops serving before the directory goes.
    _rt: tokio::runtime::Runtime,
    _dir: PrivateDir,
}

impl CrashDisk {
    /// A fresh sparse disk of `size` bytes announcing `block`-byte blocks.
    pub fn start(size: u64, block: u32) -> Result<CrashDisk> {
        let dir = PrivateDir::new("lab-crashdisk")?;
        let socket = dir.path().join("nbd.sock");
        let disk = Disk::create(&dir.path().join("disk.raw"), size, block)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lab-crashdisk")
            .enable_all()
            .build()
            .context("starting the crash disk's runtime")?;
        let listener = rt
            .block_on(async { tokio::net::UnixListener::bind(&socket) })
            .with_context(|| format!("binding {}", socket.display()))?;
        rt.spawn(serve_unix(
            Arc::new(Single {
                name: EXPORT.into(),
                export: disk.clone(),
            }),
            listener,
        ));
        Ok(CrashDisk {
            disk,
            socket,
            _rt: rt,
            _dir: dir,
        })
    }

    /// Starts holding completions and watching for the cut.
    pub fn arm(
        &self,
        policy: Option<lab_core::powercut::CutPolicy>,
        hold: lab_core::powercut::HoldPolicy,
    ) {
        self.disk.arm(policy, hold, self._rt.handle());
    }

    /// The runtime serving the disk (state exports can share it).
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self._rt
    }

    /// The private directory holding the socket and the backing file.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The QEMU block backend that reaches this disk.
    pub fn backend(&self) -> Backend {
        Backend::Nbd {
            socket: self.socket.to_string_lossy().into_owned(),
            export: EXPORT.into(),
        }
    }
}
