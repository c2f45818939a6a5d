//! One QEMU VM: started with a private 0700 directory for its QMP socket and
//! keys, its console captured to a file, watched for panics while it boots,
//! reached over SSH, ended by QMP `quit`, and killed on drop whatever happens.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lab_core::qemu::{self, Accel, NvmeDisk, VmSpec};
use lab_core::splat::{self, Splat, SplatKind};

use crate::kernel::Kernel;
use crate::paths::PrivateDir;
use crate::qmp::QmpClient;
use crate::reaper;
use crate::ssh::{CmdOutput, ExecError, Ssh};

/// The marker the guest's init prints once sshd is listening.
pub const READY_MARKER: &str = "LAB-READY";

#[derive(Debug, Clone)]
pub struct VmOptions {
    pub qemu: PathBuf,
    pub accel: Accel,
    pub kernel: Kernel,
    pub initrd: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    pub nvme: Option<NvmeDisk>,
    pub console_log: PathBuf,
    pub boot_timeout: Duration,
    pub extra_cmdline: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("QEMU could not start: {0}")]
    Start(String),
    #[error("guest crashed during {stage}: {}", splat.title)]
    Crashed {
        stage: String,
        splat: Box<Splat>,
        console_tail: String,
    },
    #[error("QEMU exited unexpectedly ({status}) during {stage}{}", if stderr.is_empty() { String::new() } else { format!(": {}", stderr.trim()) })]
    Exited {
        stage: String,
        status: String,
        stderr: String,
        console_tail: String,
    },
    #[error("{stage} timed out after {secs} s")]
    Timeout {
        stage: String,
        secs: u64,
        console_tail: String,
    },
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl VmError {
    /// The console tail, for reports.
    pub fn console_tail(&self) -> Option<&str> {
        match self {
            VmError::Crashed { console_tail, .. }
            | VmError::Exited { console_tail, .. }
            | VmError::Timeout { console_tail, .. } => Some(console_tail),
            _ => None,
        }
    }
}

pub struct Vm {
    child: Option<Child>,
    dir: PrivateDir,
    spec: VmSpec,
    key: PathBuf,
    host_key_b64: String,
    ssh: Option<Ssh>,
    started: Instant,
    /// From QEMU start to SSH authenticated.
    pub boot_time: Option<Duration>,
    /// From QEMU start to the guest's ready marker on the console.
    pub marker_time: Option<Duration>,
}

fn run_tool(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {what} (is it installed? run scripts/setup.sh)"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Generates the per-VM client key (ssh-keygen) and guest host key
/// (dropbearkey). Returns (client key path, client pubkey blob, host key
/// file, host pubkey blob).
fn make_keys(dir: &Path) -> anyhow::Result<(PathBuf, String, PathBuf, String)> {
    let key = dir.join("id_ed25519");
    run_tool(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "lab", "-f"])
            .arg(&key),
        "ssh-keygen",
    )?;
    let pubkey = std::fs::read_to_string(dir.join("id_ed25519.pub"))?;
    let blob = pubkey
        .split_whitespace()
        .nth(1)
        .context("bad public key")?
        .to_string();
    let host = dir.join("host_ed25519");
    run_tool(
        Command::new("dropbearkey")
            .args(["-t", "ed25519", "-f"])
            .arg(&host),
        "dropbearkey",
    )?;
    let host_pub = run_tool(
        Command::new("dropbearkey").args(["-y", "-f"]).arg(&host),
        "dropbearkey -y",
    )?;
    let host_blob = host_pub
        .lines()
        .find(|l| l.starts_with("ssh-ed25519 "))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("dropbearkey -y printed no ssh-ed25519 line")?
        .to_string();
    Ok((key, blob, host, host_blob))
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A cheap look for a panic in the console (the full scan runs after).
fn console_has_panic(console: &Path) -> bool {
    std::fs::read(console)
        .map(|b| b.windows(14).any(|w| w == b"Kernel panic -"))
        .unwrap_or(false)
}

/// The last `n` lines of a file (the console, usually).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Vm {
    /// Starts QEMU. Returns once the process runs; `wait_ready` waits for SSH.
    pub fn start(opts: &VmOptions) -> Result<Vm, VmError> {
        if reaper::interrupted() {
            return Err(VmError::Interrupted);
        }
        let dir = PrivateDir::new("lab-vm")?;
        let (key, blob, host_file, host_blob) = make_keys(dir.path())?;
        // The public key may be on the command line; the host key (private)
        // goes through fw_cfg from the 0700 directory.
        let cmdline = qemu::kernel_cmdline(&[("authkey", blob.as_str())], &opts.extra_cmdline);
        if let Some(parent) = opts.console_log.parent() {
            std::fs::create_dir_all(parent).map_err(anyhow::Error::from)?;
        }
        // A console left by an earlier VM at this path would show its ready
        // marker and its panics as this VM's: start from an empty file.
        std::fs::write(&opts.console_log, b"").map_err(anyhow::Error::from)?;
        let spec = VmSpec {
            accel: opts.accel,
            memory_mib: opts.memory_mib,
            cpus: opts.cpus,
            kernel: opts.kernel.vmlinuz.to_string_lossy().into_owned(),
            initrd: opts.initrd.to_string_lossy().into_owned(),
            cmdline,
            console_log: opts.console_log.to_string_lossy().into_owned(),
            qmp_socket: dir.path().join("qmp.sock").to_string_lossy().into_owned(),
            ssh_port: free_port()?,
            nvme: opts.nvme.clone(),
            fw_cfg: vec![(
                "opt/lab/hostkey".into(),
                host_file.to_string_lossy().into_owned(),
            )],
        };
        let argv = qemu::argv(&spec);
        tracing::debug!(qemu = %opts.qemu.display(), ?argv, "starting QEMU");
        let stderr_path = dir.path().join("qemu.stderr");
        let stderr = std::fs::File::create(&stderr_path).map_err(anyhow::Error::from)?;
        let mut cmd = Command::new(&opts.qemu);
        cmd.args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        reaper::guard_child(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| VmError::Start(format!("{}: {e}", opts.qemu.display())))?;
        reaper::register(child.id());
        Ok(Vm {
            child: Some(child),
            dir,
            spec,
            key,
            host_key_b64: host_blob,
            ssh: None,
            started: Instant::now(),
            boot_time: None,
            marker_time: None,
        })
    }

    /// Start and wait until SSH works.
    pub fn boot(opts: &VmOptions) -> Result<Vm, VmError> {
        let mut vm = Vm::start(opts)?;
        vm.wait_ready(opts.boot_timeout)?;
        Ok(vm)
    }

    pub fn console_log(&self) -> &Path {
        Path::new(&self.spec.console_log)
    }

    pub fn qmp_socket(&self) -> &Path {
        Path::new(&self.spec.qmp_socket)
    }

    pub fn private_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn ssh_port(&self) -> u16 {
        self.spec.ssh_port
    }

    pub fn console_tail(&self) -> String {
        tail(self.console_log(), 40)
    }

    /// Splats in the console so far.
    pub fn splats(&self) -> Vec<Splat> {
        let text = std::fs::read(self.console_log()).unwrap_or_default();
        splat::scan(&String::from_utf8_lossy(&text))
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("qemu.stderr")).unwrap_or_default()
    }

    /// If QEMU has exited or the guest panicked, the error that says so.
    fn check_alive(&mut self, stage: &str) -> Result<(), VmError> {
        if reaper::interrupted() {
            return Err(VmError::Interrupted);
        }
        let exited = match self.child.as_mut() {
            Some(c) => c.try_wait().map_err(anyhow::Error::from)?,
            None => None,
        };
        let fatal = self.splats().into_iter().find(|s| {
            matches!(s.kind, SplatKind::Panic) || exited.is_some() && s.kind != SplatKind::Warning
        });
        if let Some(s) = fatal {
            return Err(VmError::Crashed {
                stage: stage.into(),
                splat: Box::new(s),
                console_tail: self.console_tail(),
            });
        }
        if let Some(st) = exited {
            return Err(VmError::Exited {
                stage: stage.into(),
                status: st.to_string(),
                stderr: self.stderr_text(),
                console_tail: self.console_tail(),
            });
        }
        Ok(())
    }

    /// Waits for the guest's ready marker, then for SSH to authenticate,
    /// watching for a dead QEMU or a panicking kernel all the while.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), VmError> {
        let deadline = self.started + timeout;
        loop {
            self.check_alive("boot")?;
            let console = std::fs::read(self.console_log()).unwrap_or_default();
            if String::from_utf8_lossy(&console).contains(READY_MARKER) {
                if self.marker_time.is_none() {
                    self.marker_time = Some(self.started.elapsed());
                    tracing::debug!(after = ?self.marker_time, "ready marker on the console");
                }
                match Ssh::connect(
                    self.spec.ssh_port,
                    &self.key,
                    Some(&self.host_key_b64),
                    Duration::from_secs(5),
                ) {
                    Ok(s) => {
                        self.ssh = Some(s);
                        self.boot_time = Some(self.started.elapsed());
                        tracing::debug!(boot = ?self.boot_time, "guest ready");
                        return Ok(());
                    }
                    Err(e) => tracing::debug!("ssh not ready: {e:#}"),
                }
            }
            if Instant::now() > deadline {
                return Err(VmError::Timeout {
                    stage: "boot (QEMU start to SSH ready)".into(),
                    secs: timeout.as_secs(),
                    console_tail: self.console_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn ssh(&self) -> Result<&Ssh, VmError> {
        self.ssh
            .as_ref()
            .ok_or_else(|| VmError::Other(anyhow::anyhow!("VM is not ready for SSH")))
    }

    /// Runs a shell command in the guest with a deadline.
    pub fn exec(&mut self, cmd: &str, timeout: Duration) -> Result<CmdOutput, VmError> {
        self.exec_streaming(cmd, timeout, &mut |_| None)
    }

    /// Like `exec`, with every stdout line handed to `on_line` as it comes;
    /// its answer goes to the command's stdin.
    pub fn exec_streaming(
        &mut self,
        cmd: &str,
        timeout: Duration,
        on_line: &mut dyn FnMut(&str) -> Option<String>,
    ) -> Result<CmdOutput, VmError> {
        let ssh = self
            .ssh
            .as_ref()
            .ok_or_else(|| VmError::Other(anyhow::anyhow!("VM is not ready for SSH")))?;
        let child = &mut self.child;
        let console = Path::new(&self.spec.console_log);
        let mut dead = || {
            let exited = child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            exited || console_has_panic(console)
        };
        let r = ssh.exec_streaming(cmd, timeout, &mut dead, on_line);
        match r {
            Ok(o) => Ok(o),
            Err(ExecError::Timeout(t, partial)) => {
                // A panic makes a command look hung: say which it was.
                self.check_alive(&format!("command `{cmd}`"))?;
                Err(VmError::Timeout {
                    stage: format!(
                        "command `{cmd}` (stdout so far: {:?})",
                        partial.stdout.chars().take(200).collect::<String>()
                    ),
                    secs: t.as_secs(),
                    console_tail: self.console_tail(),
                })
            }
            Err(e) => {
                std::thread::sleep(Duration::from_millis(300));
                self.check_alive(&format!("command `{cmd}`"))?;
                Err(VmError::Other(anyhow::anyhow!("running `{cmd}`: {e}")))
            }
        }
    }

    /// Waits until the guest's init has loaded its late modules (xfs); SSH
    /// is up before that so the module load overlaps with the lab's set-up.
    pub fn wait_modules(&mut self, timeout: Duration) -> Result<(), VmError> {
        let out = self.exec(
            "while [ ! -e /run/lab-modules-done ]; do sleep 0.05; done; grep -h LAB-ERROR /run/lab-init.log 2>/dev/null; true",
            timeout,
        )?;
        if !out.stdout.trim().is_empty() {
            return Err(VmError::Other(anyhow::anyhow!(
                "guest init could not load modules: {}",
                out.stdout.trim()
            )));
        }
        Ok(())
    }

    pub fn shell(&mut self) -> Result<i32, VmError> {
        Ok(self.ssh()?.shell()?)
    }

    pub fn qmp(&self) -> Result<QmpClient, VmError> {
        Ok(QmpClient::connect(
            self.qmp_socket(),
            Duration::from_secs(10),
        )?)
    }

    /// Ends the VM cleanly with QMP `quit`; kills it if that does not work.
    pub fn shutdown(mut self) -> Result<(), VmError> {
        self.ssh = None;
        if self.wait_exit(Duration::ZERO) {
            // Already gone (a panic with -no-reboot ends QEMU by itself).
            self.kill();
            return Ok(());
        }
        let quit = self.qmp().and_then(|mut q| q.quit().map_err(VmError::from));
        let waited = self.wait_exit(Duration::from_secs(10));
        if let Err(e) = quit {
            tracing::warn!("QMP quit failed: {e}; killing QEMU");
        }
        if !waited {
            tracing::warn!("QEMU did not exit after quit; killing it");
        }
        self.kill();
        Ok(())
    }

    /// Waits up to `timeout` for QEMU to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while let Some(c) = self.child.as_mut() {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// The QEMU pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            reaper::unregister(c.id());
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}
