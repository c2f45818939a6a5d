//! QMP over the VM's unix socket, with the qapi crate.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use qapi::{qmp, Qmp, Stream};

type QmpStream = Stream<BufReader<UnixStream>, UnixStream>;

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
            match UnixStream::connect(path) {
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
