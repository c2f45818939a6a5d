//! SSH to the guest with the ssh2 crate: key-only authentication with the
//! lab's per-VM key pair, and the guest's host key checked against the one
//! the lab generated for it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::vm::clock::GuestClock;

use anyhow::{bail, Context, Result};
use base64::Engine;
use ssh2::Session;

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("command timed out after {0:?}")]
    Timeout(Duration, CmdOutputPartial),
    /// The caller's liveness check said to stop (the VM died).
    #[error("aborted: the VM stopped while the command ran")]
    Aborted,
    #[error("ssh: {0}")]
    Ssh(#[from] ssh2::Error),
    #[error("ssh i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Output gathered before a timeout.
#[derive(Debug, Clone, Default)]
pub struct CmdOutputPartial {
    pub stdout: String,
    pub stderr: String,
}

pub struct Ssh {
    session: Session,
}

impl Ssh {
    /// One connection attempt: TCP, handshake, host key check, key auth.
    pub fn connect(
        port: u16,
        key: &Path,
        host_key_b64: Option<&str>,
        timeout: Duration,
    ) -> Result<Ssh> {
        let addr = ("127.0.0.1", port);
        let tcp = TcpStream::connect(addr).context("tcp connect")?;
        tcp.set_read_timeout(Some(timeout))?;
        let mut session = Session::new()?;
        session.set_timeout(timeout.as_millis() as u32);
        session.set_tcp_stream(tcp);
        session.handshake().context("ssh handshake")?;
        if let Some(want) = host_key_b64 {
            let (got, _) = session.host_key().context("no host key")?;
            let got = base64::engine::general_purpose::STANDARD.encode(got);
            if got != want {
                bail!("guest host key mismatch: got {got}, expected {want}");
            }
        }
        session
            .userauth_pubkey_file("root", None, key, None)
            .context("ssh public key authentication")?;
        if !session.authenticated() {
            bail!("ssh authentication failed");
        }
        session.set_timeout(0);
        Ok(Ssh { session })
    }

    /// Runs `cmd` with a deadline; on timeout the partial output is returned
    /// in the error (the caller kills the VM: a hung guest cannot be trusted).
    pub fn exec(&self, cmd: &str, timeout: Duration) -> Result<CmdOutput, ExecError> {
        self.exec_watched(cmd, timeout, &mut || false)
    }

    /// Like `exec`, calling `dead()` about every 200 ms: when it returns
    /// true (QEMU exited, the guest panicked) the command is abandoned at
    /// once instead of waiting out its timeout.
    pub fn exec_watched(
        &self,
        cmd: &str,
        timeout: Duration,
        dead: &mut dyn FnMut() -> bool,
    ) -> Result<CmdOutput, ExecError> {
        self.exec_streaming(cmd, timeout, &GuestClock::wall(), dead, &mut |_| None)
    }

    /// Like `exec_watched`, handing every complete stdout line to
    /// `on_line` as it arrives; what it returns is written to the
    /// command's stdin at once (the agent's synchronous marks). `timeout`
    /// runs on `clock` (the guest's time, so a starved guest is not called
    /// hung).
    pub fn exec_streaming(
        &self,
        cmd: &str,
        timeout: Duration,
        clock: &GuestClock,
        dead: &mut dyn FnMut() -> bool,
        on_line: &mut dyn FnMut(&str) -> Option<String>,
    ) -> Result<CmdOutput, ExecError> {
        let mut line_start = 0;
        let mut last_check = Instant::now();
        self.session.set_blocking(true);
        let mut ch = self.session.channel_session()?;
        ch.exec(cmd)?;
        self.session.set_blocking(false);
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            let mut progressed = false;
            for (stream, sink) in [(0, &mut out), (1, &mut err)] {
                match read_some(&mut ch.stream(stream), &mut buf, sink) {
                    Ok(p) => progressed |= p,
                    Err(e) => {
                        drop(ch);
                        self.session.set_blocking(true);
                        return Err(e.into());
                    }
                }
            }
            while let Some(nl) = out[line_start..].iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&out[line_start..line_start + nl]).into_owned();
                line_start += nl + 1;
                if let Some(answer) = on_line(&line) {
                    if let Err(e) = write_all_nonblocking(&mut ch, answer.as_bytes()) {
                        drop(ch);
                        self.session.set_blocking(true);
                        return Err(e.into());
                    }
                }
            }
            if ch.eof() && !progressed {
                break;
            }
            if last_check.elapsed() > Duration::from_millis(200) {
                last_check = Instant::now();
                if dead() {
                    drop(ch);
                    self.session.set_blocking(true);
                    return Err(ExecError::Aborted);
                }
            }
            if clock.passed(timeout) {
                // Free the channel while non-blocking: a blocking free waits
                // for the remote command to close it, which a hung command
                // never does.
                drop(ch);
                self.session.set_blocking(true);
                return Err(ExecError::Timeout(
                    timeout,
                    CmdOutputPartial {
                        stdout: String::from_utf8_lossy(&out).into_owned(),
                        stderr: String::from_utf8_lossy(&err).into_owned(),
                    },
                ));
            }
            if !progressed {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.session.set_blocking(true);
        ch.wait_close()?;
        Ok(CmdOutput {
            status: ch.exit_status()?,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
            elapsed: clock.wall_elapsed(),
        })
    }

    /// An interactive shell on the user's terminal; returns its exit status.
    pub fn shell(&self) -> Result<i32> {
        let (cols, rows) = terminal_size().unwrap_or((80, 24));
        let mut ch = self.session.channel_session()?;
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
        ch.request_pty(&term, None, Some((cols, rows, 0, 0)))?;
        ch.shell()?;
        let _raw = RawTerminal::enter();
        self.session.set_blocking(false);
        let mut buf = [0u8; 8192];
        let mut stdout = std::io::stdout();
        loop {
            let mut progressed = false;
            match ch.read(&mut buf) {
                Ok(n) if n > 0 => {
                    stdout.write_all(&buf[..n])?;
                    stdout.flush()?;
                    progressed = true;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
            if ch.eof() {
                break;
            }
            let mut pfd = libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, if progressed { 0 } else { 10 }) };
            if ready > 0 {
                // SAFETY: reading into a stack buffer of the given size.
                let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    break;
                }
                let mut data = &buf[..n as usize];
                while !data.is_empty() {
                    match ch.write(data) {
                        Ok(w) => data = &data[w..],
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2))
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        self.session.set_blocking(true);
        ch.wait_close()?;
        Ok(ch.exit_status()?)
    }
}

/// One non-blocking read from a channel stream into `sink`; true when
/// something arrived.
/// Writes all of `data` on a non-blocking channel.
fn write_all_nonblocking(ch: &mut ssh2::Channel, mut data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !data.is_empty() {
        match ch.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(e),
        }
    }
    loop {
        match ch.flush() {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(e),
        }
    }
}

fn read_some(stream: &mut impl Read, buf: &mut [u8], sink: &mut Vec<u8>) -> std::io::Result<bool> {
    match stream.read(buf) {
        Ok(0) => Ok(false),
        Ok(n) => {
            sink.extend_from_slice(&buf[..n]);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

fn terminal_size() -> Option<(u32, u32)> {
    // SAFETY: TIOCGWINSZ fills a winsize.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0 {
            return Some((u32::from(ws.ws_col), u32::from(ws.ws_row)));
        }
    }
    None
}

/// Puts stdin in raw mode for the interactive shell; restores on drop.
struct RawTerminal {
    saved: Option<libc::termios>,
}

impl RawTerminal {
    fn enter() -> Self {
        // SAFETY: termios calls on fd 0 with valid structs.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return RawTerminal { saved: None };
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawTerminal { saved: Some(saved) }
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(t) = self.saved {
            // SAFETY: restoring the attributes read in enter().
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }
}
