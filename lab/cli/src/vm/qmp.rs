//! QMP over the VM's unix socket, with the qapi crate.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use qapi::{qmp, Qmp, Stream};

type QmpStream = Stream<BufReader<UnixStream>, UnixStream>;

/// Connects without ever blocking: a QEMU whose main loop is stuck never
/// accepts, its listen backlog fills up, and a blocking connect(2) on a
/// unix socket then waits forever. Non-blocking, that connect fails at once
/// (EAGAIN) and the caller's deadline decides.
fn connect_nonblocking(path: &Path) -> std::io::Result<UnixStream> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain socket(2); the fd is owned by the UnixStream below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: addr is a valid sockaddr_un of at least `len` bytes.
    let r = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

pub struct QmpClient {
    qmp: Qmp<QmpStream>,
}

impl QmpClient {
    /// Connects (QEMU creates the socket shortly after it starts) and
    /// negotiates capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> Result<QmpClient> {
        QmpClient::connect_with(path, timeout, Duration::from_secs(30))
    }

    /// Like `connect`, waiting at most `reply_timeout` for each answer (the
    /// greeting included): a QEMU whose main loop is stuck answers nothing.
    pub fn connect_with(
        path: &Path,
        timeout: Duration,
        reply_timeout: Duration,
    ) -> Result<QmpClient> {
        let start = Instant::now();
        let sock = loop {
            match connect_nonblocking(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < timeout => {
                    tracing::trace!("qmp connect: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("connecting to QMP at {}", path.display()))
                }
            }
        };
        sock.set_read_timeout(Some(reply_timeout.max(Duration::from_millis(1))))?;
        sock.set_write_timeout(Some(reply_timeout.max(Duration::from_millis(1))))?;
        let reader = BufReader::new(sock.try_clone()?);
        let mut qmp = Qmp::new(Stream::new(reader, sock));
        qmp.handshake().context("QMP capabilities negotiation")?;
        Ok(QmpClient { qmp })
    }

    /// `query-status`: the VM's run state, e.g. "running".
    pub fn status(&mut self) -> Result<String> {
        let st = self
            .qmp
            .execute(&qmp::query_status {})
            .context("query-status")?;
        let v = serde_json::to_value(st.status)?;
        Ok(v.as_str().unwrap_or("unknown").to_string())
    }

    /// `query-version`: QEMU's version as "major.minor.micro".
    pub fn version(&mut self) -> Result<String> {
        let v = self
            .qmp
            .execute(&qmp::query_version {})
            .context("query-version")?;
        Ok(format!(
            "{}.{}.{}",
            v.qemu.major, v.qemu.minor, v.qemu.micro
        ))
    }

    /// A human monitor command (`info cpus`, say): for diagnosis only, its
    /// text is not an interface.
    pub fn hmp(&mut self, command: &str) -> Result<String> {
        self.qmp
            .execute(&qmp::human_monitor_command {
                command_line: command.into(),
                cpu_index: None,
            })
            .with_context(|| format!("human-monitor-command {command:?}"))
    }

    /// `chardev-change`: the serial console (chardev `console`) writes to
    /// `path` from now on, truncated first.
    pub fn console_to(&mut self, path: &Path) -> Result<()> {
        let file = qmp::ChardevFile {
            base: qmp::ChardevCommon {
                logappend: None,
                logfile: None,
            },
            append: Some(false),
            in_: None,
            out: path.to_string_lossy().into_owned(),
        };
        self.qmp
            .execute(&qmp::chardev_change {
                id: "console".into(),
                backend: qmp::ChardevBackend::file(qmp::ChardevFileWrapper { data: file }),
            })
            .with_context(|| format!("chardev-change console to {}", path.display()))?;
        Ok(())
    }

    /// `device_del`, then waits for QEMU's `DEVICE_DELETED` of that id: a
    /// PCI device leaves only once the guest has let go of it (ACPI eject),
    /// so the wait is the guest's unplug.
    pub fn device_del(&mut self, id: &str, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        self.qmp
            .execute(&qmp::device_del { id: id.into() })
            .with_context(|| format!("device_del {id}"))?;
        loop {
            for event in self.qmp.events() {
                if let qmp::Event::DEVICE_DELETED { data, .. } = event {
                    if data.device.as_deref() == Some(id) {
                        return Ok(started.elapsed());
                    }
                }
            }
            if started.elapsed() > timeout {
                anyhow::bail!(
                    "device_del {id}: no DEVICE_DELETED within {} s (the guest did not release the device)",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
            // Reads whatever events arrived meanwhile.
            self.qmp.nop().context("waiting for DEVICE_DELETED")?;
        }
    }

    /// `blockdev-add` of a block node given as `-blockdev`'s options in
    /// JSON (`Props::nested_json`); qapi checks it against the schema.
    pub fn blockdev_add(&mut self, options: serde_json::Value) -> Result<()> {
        let what = options.to_string();
        let options: qmp::BlockdevOptions = serde_json::from_value(options)
            .with_context(|| format!("blockdev-add: not a block node: {what}"))?;
        self.qmp
            .execute(&qmp::blockdev_add(options))
            .with_context(|| format!("blockdev-add {what}"))?;
        Ok(())
    }

    /// `device_add` of a device given as its properties (`Device::qmp`).
    pub fn device_add(
        &mut self,
        mut args: serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        let what = serde_json::Value::Object(args.clone()).to_string();
        let text = |v: Option<serde_json::Value>| v.and_then(|v| v.as_str().map(str::to_string));
        let driver = text(args.remove("driver")).context("device_add without a driver")?;
        let id = text(args.remove("id"));
        let bus = text(args.remove("bus"));
        self.qmp
            .execute(&qmp::device_add {
                driver,
                id,
                bus,
                arguments: args.into_iter().collect(),
            })
            .with_context(|| format!("device_add {what}"))?;
        Ok(())
    }

    /// `quit`: QEMU exits at once (the clean end of a VM the lab is done with).
    pub fn quit(&mut self) -> Result<()> {
        match self.qmp.execute(&qmp::quit {}) {
            Ok(_) => Ok(()),
            // QEMU may close the socket before the reply arrives.
            Err(e) => {
                tracing::debug!("qmp quit: {e}");
                Ok(())
            }
        }
    }
}
