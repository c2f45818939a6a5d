//! One QEMU VM: started with a private 0700 directory for its QMP socket and
//! keys, its console captured to a file, watched for panics while it boots,
//! reached over SSH, ended by QMP `quit`, and killed on drop whatever happens.

pub mod agent;
pub mod clock;
pub mod kernel;
pub mod procinfo;
pub mod qmp;
pub mod ssh;

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use lab_core::qemu::{self, Accel, NvmeDisk, VmSpec};
use lab_core::splat::{ConsoleScan, Splat, SplatKind};

use crate::paths::PrivateDir;
use crate::proc::{self, reaper};
use crate::vm::clock::GuestClock;
use crate::vm::kernel::Kernel;
use crate::vm::qmp::QmpClient;
use crate::vm::ssh::{CmdOutput, ExecError, Ssh};

/// The marker the guest's init prints once sshd is listening.
pub const READY_MARKER: &str = "LAB-READY";
/// The first line the guest's init prints (with its uptime).
pub const INIT_MARKER: &str = "LAB-T init ";

#[derive(Debug, Clone)]
pub struct VmOptions {
    pub qemu: PathBuf,
    pub accel: Accel,
    pub tcg_threads: lab_core::qemu::TcgThreads,
    pub kernel: Kernel,
    pub initrd: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    pub nvme: Option<NvmeDisk>,
    pub console_log: PathBuf,
    pub boot_timeout: Duration,
    pub extra_cmdline: String,
    /// The NBD server behind the namespace (the crash disk), if any: a
    /// boot that stalls reports what that server saw of QEMU.
    pub nbd_activity: Option<Arc<lab_disk::Activity>>,
}

/// The stages of a boot, in order. Each has its own bound, and a boot that
/// stalls says which stage it stalled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootStage {
    /// The QEMU process until its monitor answers `query-status`: its
    /// main loop runs, so every disk (the crash disk's NBD handshake
    /// included) is open.
    QemuStart,
    /// Firmware and kernel until init's first line (`LAB-T init`). The
    /// kernel runs `quiet loglevel=5`, so before it the console shows only
    /// the kernel's errors and warnings, if any.
    Kernel,
    /// init's first line until sshd listens (the ready marker).
    Init,
    /// The ready marker until an SSH session is authenticated.
    Ssh,
}

impl BootStage {
    pub const ALL: [BootStage; 4] = [
        BootStage::QemuStart,
        BootStage::Kernel,
        BootStage::Init,
        BootStage::Ssh,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BootStage::QemuStart => "qemu-start",
            BootStage::Kernel => "kernel",
            BootStage::Init => "init",
            BootStage::Ssh => "ssh",
        }
    }

    /// What the stage waits for, in words.
    pub fn describe(self) -> &'static str {
        match self {
            BootStage::QemuStart => "QEMU start until its monitor answers",
            BootStage::Kernel => "firmware and kernel until init runs",
            BootStage::Init => "init until sshd listens",
            BootStage::Ssh => "sshd listening until SSH authenticates",
        }
    }

    /// How long the stage may take at most (the boot's whole timeout still
    /// caps the sum). Generous for TCG on a loaded two-core host, where a
    /// whole boot takes 4-14 s: a bound is there to name the stage that
    /// stalled, not to race a slow machine.
    pub fn bound(self) -> Duration {
        Duration::from_secs(match self {
            BootStage::QemuStart => 30,
            BootStage::Kernel => 150,
            BootStage::Init => 90,
            BootStage::Ssh => 90,
        })
    }
}

impl fmt::Display for BootStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything the lab could find out about a boot that stalled, so that the
/// results alone say where it stuck.
#[derive(Debug, Clone)]
pub struct BootDiagnosis {
    pub stage: BootStage,
    /// Since QEMU was started.
    pub elapsed: Duration,
    /// The QEMU process (killed once the error is returned).
    pub qemu_pid: Option<u32>,
    /// When each earlier stage ended (since QEMU was started).
    pub stages_done: Vec<(BootStage, Duration)>,
    /// How long the stage's vCPU thread sat runnable, waiting for a host
    /// CPU: a starved guest, not a stuck one, when it is most of the stage.
    pub host_wait: Duration,
    /// The QEMU process: alive or not, and each thread's state, CPU time
    /// used over one second, and kernel wait channel.
    pub qemu: String,
    /// What the monitor answered: run state and each vCPU's program
    /// counter, or that it did not answer.
    pub monitor: String,
    /// What the NBD server behind the namespace saw, if there is one.
    pub nbd: Option<String>,
    pub console_bytes: u64,
    pub qemu_stderr: String,
}

impl fmt::Display for BootDiagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "boot stalled in stage {} ({}) after {:.1} s",
            self.stage,
            self.stage.describe(),
            self.elapsed.as_secs_f64()
        )?;
        for (st, t) in &self.stages_done {
            writeln!(f, "  stage {st} done at {:.2} s", t.as_secs_f64())?;
        }
        writeln!(
            f,
            "host: the vCPU thread waited {:.1} s for a CPU during the stage",
            self.host_wait.as_secs_f64()
        )?;
        writeln!(f, "qemu: {}", self.qemu)?;
        writeln!(f, "monitor: {}", self.monitor)?;
        if let Some(n) = &self.nbd {
            writeln!(f, "nbd server: {n}")?;
        }
        writeln!(f, "console: {} bytes", self.console_bytes)?;
        let stderr = self.qemu_stderr.trim();
        writeln!(
            f,
            "qemu stderr: {}",
            if stderr.is_empty() { "(empty)" } else { stderr }
        )
    }
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
    #[error("{stage} timed out after {waited}")]
    Timeout {
        stage: String,
        secs: u64,
        /// `secs` in guest time, and the wall time if the host made the
        /// guest wait (see [`clock`]).
        waited: String,
        console_tail: String,
    },
    #[error("boot stalled in stage {} ({}): no progress after {waited}", diagnosis.stage, diagnosis.stage.describe())]
    BootStalled {
        /// The bound that ran out, in guest time (see [`clock`]).
        waited: String,
        diagnosis: Box<BootDiagnosis>,
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
            | VmError::Timeout { console_tail, .. }
            | VmError::BootStalled { console_tail, .. } => Some(console_tail),
            _ => None,
        }
    }

    /// Everything known about the failure, for a person: the message, the
    /// diagnosis of a stalled boot and the console tail.
    pub fn report(&self) -> String {
        let mut r = self.to_string();
        if let VmError::BootStalled { diagnosis, .. } = self {
            r.push_str(&format!("\n--- diagnosis ---\n{diagnosis}"));
        }
        if let Some(t) = self.console_tail() {
            r.push_str(&format!("\n--- console tail ---\n{t}"));
        }
        r
    }

    /// A failure of the boot itself with no sign that the kernel under test
    /// was at fault (it stalled, or QEMU went away without a splat): the
    /// lab retries such a boot once with a fresh VM.
    pub fn is_infrastructure(&self) -> bool {
        matches!(
            self,
            VmError::BootStalled { .. } | VmError::Exited { .. } | VmError::Start(_)
        )
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
    /// Guest time since QEMU started: the whole boot's bound runs on it.
    boot_clock: GuestClock,
    /// Splats found so far (a cell: reading the console is not a change of
    /// the VM, and `splats` is asked for through shared references).
    console: RefCell<ConsoleWatch>,
    /// From QEMU start to SSH authenticated.
    pub boot_time: Option<Duration>,
    /// From QEMU start to the guest's ready marker on the console.
    pub marker_time: Option<Duration>,
    /// When each boot stage ended, since QEMU start.
    pub stage_times: Vec<(BootStage, Duration)>,
    nbd_activity: Option<Arc<lab_disk::Activity>>,
    /// How many times the NVMe controller was replaced (`replug_nvme`): the
    /// generation of the ids the present one has.
    nvme_ids: qemu::NvmeIds,
}

/// Generates the per-VM client key (ssh-keygen) and guest host key
/// (dropbearkey). Returns (client key path, client pubkey blob, host key
/// file, host pubkey blob).
fn make_keys(dir: &Path) -> anyhow::Result<(PathBuf, String, PathBuf, String)> {
    let key = dir.join("id_ed25519");
    proc::run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "lab", "-f"])
            .arg(&key),
    )?;
    let pubkey = std::fs::read_to_string(dir.join("id_ed25519.pub"))?;
    let blob = pubkey
        .split_whitespace()
        .nth(1)
        .context("bad public key")?
        .to_string();
    let host = dir.join("host_ed25519");
    proc::run(
        Command::new("dropbearkey")
            .args(["-t", "ed25519", "-f"])
            .arg(&host),
    )?;
    let host_pub = proc::stdout(Command::new("dropbearkey").args(["-y", "-f"]).arg(&host))?;
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

/// The console read as QEMU writes it: each poll scans only the bytes
/// added since the last one (a guest's console grows for the whole run, and
/// the lab polls it every 25-200 ms).
struct ConsoleWatch {
    path: PathBuf,
    read: u64,
    scan: ConsoleScan,
    found: Vec<Splat>,
}

impl ConsoleWatch {
    fn new(path: PathBuf) -> ConsoleWatch {
        ConsoleWatch {
            path,
            read: 0,
            scan: ConsoleScan::new(),
            found: Vec::new(),
        }
    }

    fn poll(&mut self) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        let mut new = Vec::new();
        if f.seek(SeekFrom::Start(self.read)).is_ok() && f.read_to_end(&mut new).is_ok() {
            self.read += new.len() as u64;
            let splats = self.scan.feed(&new);
            self.found.extend(splats);
        }
    }

    /// Every splat so far, a report still being printed included.
    fn splats(&mut self) -> Vec<Splat> {
        self.poll();
        let mut all = self.found.clone();
        all.extend(self.scan.pending());
        all
    }

    fn saw_fatal(&mut self) -> bool {
        self.poll();
        self.scan.saw_fatal()
    }
}

/// "CPU#0:RIP=ffffffff81e0ab12(HLT=0)" per vCPU from `info registers -a`.
fn vcpu_pcs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cpu = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("CPU#") {
            cpu = format!("CPU#{}", n.trim());
        }
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name).map(str::to_string))
        };
        if let Some(rip) = field("RIP=") {
            let halted = text_hlt(line);
            out.push(format!("{cpu}:RIP={rip}{halted}"));
        }
    }
    out
}

fn text_hlt(line: &str) -> &'static str {
    if line.contains("HLT=1") {
        "(halted)"
    } else {
        ""
    }
}

/// Where a stalled boot's diagnosis is written: beside the console log.
pub fn diagnosis_path(console: &Path) -> PathBuf {
    let stem = console
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "console".into());
    console.with_file_name(format!("{stem}.diagnosis.txt"))
}

/// Keeps a failed boot's console and diagnosis under `<prefix>.console.log`
/// and `<prefix>.diagnosis.txt` beside them, so a retry starts from fresh
/// files and the first attempt stays readable.
pub fn set_aside_failed_boot(console: &Path, prefix: &str) {
    for (from, suffix) in [
        (console.to_path_buf(), "console.log"),
        (diagnosis_path(console), "diagnosis.txt"),
    ] {
        if from.exists() {
            let _ = std::fs::rename(&from, console.with_file_name(format!("{prefix}.{suffix}")));
        }
    }
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
            tcg_threads: opts.tcg_threads,
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
        let boot_clock = GuestClock::start(Some(child.id()));
        Ok(Vm {
            boot_clock,
            console: RefCell::new(ConsoleWatch::new(opts.console_log.clone())),
            child: Some(child),
            dir,
            spec,
            key,
            host_key_b64: host_blob,
            ssh: None,
            started: Instant::now(),
            boot_time: None,
            marker_time: None,
            stage_times: Vec::new(),
            nbd_activity: opts.nbd_activity.clone(),
            nvme_ids: qemu::NvmeIds::default(),
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

    /// Writes the serial console to `path` from now on (QMP
    /// `chardev-change`): a VM reused for another testcase writes that
    /// testcase's console to its own log. The watch starts afresh on the
    /// new file; a VM is reused only when its console had no splat.
    pub fn redirect_console(&mut self, path: &Path) -> Result<(), VmError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(anyhow::Error::from)?;
        }
        self.qmp()?.console_to(path)?;
        self.spec.console_log = path.to_string_lossy().into_owned();
        *self.console.borrow_mut() = ConsoleWatch::new(path.to_path_buf());
        Ok(())
    }

    /// The NVMe disk the guest has now (`None`: no controller).
    pub fn nvme(&self) -> Option<&NvmeDisk> {
        self.spec.nvme.as_ref()
    }

    /// Replaces the NVMe controller and its namespaces with `disk` while
    /// the guest runs: QMP `device_del` of the controller, which returns
    /// once the guest has released it (ACPI eject; its namespaces go with
    /// it), then `blockdev-add` of each new block node and `device_add` of
    /// the controller and its namespaces, under the next generation's ids.
    /// The guest must have let go of the old disk (nothing mounted on it)
    /// and is then waited for with `lab-guest plugged`. Returns how long
    /// the guest took to release the old controller.
    pub fn replug_nvme(&mut self, disk: NvmeDisk, timeout: Duration) -> Result<Duration, VmError> {
        let old = self
            .spec
            .nvme
            .as_ref()
            .map(|_| self.nvme_ids.controller())
            .context("this VM has no NVMe controller to replace")?;
        let mut q = self.qmp()?;
        let unplugged = q.device_del(&old, timeout)?;
        // The old controller is gone from here on, whatever happens next.
        self.spec.nvme = None;
        let ids = qemu::NvmeIds {
            generation: self.nvme_ids.generation + 1,
        };
        self.nvme_ids = ids;
        let parts = qemu::nvme_parts(&disk, ids);
        for node in &parts.nodes {
            q.blockdev_add(node.nested_json())?;
        }
        q.device_add(parts.controller.qmp())?;
        for ns in &parts.namespaces {
            q.device_add(ns.qmp())?;
        }
        self.spec.nvme = Some(disk);
        Ok(unplugged)
    }

    /// Whether QEMU is still running.
    pub fn is_running(&mut self) -> bool {
        !self.wait_exit(Duration::ZERO)
    }

    /// Splats in the console so far.
    pub fn splats(&self) -> Vec<Splat> {
        self.console.borrow_mut().splats()
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
        let fatal = self
            .splats()
            .into_iter()
            .find(|s| s.is_fatal() || exited.is_some() && s.kind != SplatKind::Warning);
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

    /// Waits, stage by stage, until SSH authenticates, watching for a dead
    /// QEMU or a panicking kernel all the while. Each stage has its own
    /// bound ([`BootStage::bound`]) inside the whole `timeout`; a stage
    /// that runs out is reported with a [`BootDiagnosis`], also written
    /// next to the console log (`<console>.diagnosis.txt`).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), VmError> {
        let boot = self.boot_clock.clone();
        for stage in BootStage::ALL {
            let clock = GuestClock::start(self.pid());
            let bound = stage.bound();
            let expired = || clock.passed(bound) || boot.passed(timeout);
            let done = match stage {
                BootStage::QemuStart => self.wait_monitor(&expired)?,
                BootStage::Kernel => self.wait_console(&expired, |c| {
                    String::from_utf8_lossy(c).contains(INIT_MARKER)
                })?,
                BootStage::Init => self.wait_console(&expired, |c| {
                    String::from_utf8_lossy(c).contains(READY_MARKER)
                })?,
                BootStage::Ssh => self.wait_ssh(&expired)?,
            };
            if !done {
                // Name what ran out: the stage's bound or the whole boot's.
                let waited = if clock.passed(bound) {
                    clock.describe(bound)
                } else {
                    format!("{} (the whole boot's bound)", boot.describe(timeout))
                };
                return Err(self.stalled(stage, waited, clock.starved()));
            }
            let at = self.started.elapsed();
            tracing::debug!(%stage, ?at, "boot stage done");
            self.stage_times.push((stage, at));
            if stage == BootStage::Init {
                self.marker_time = Some(at);
            }
        }
        self.boot_time = Some(self.started.elapsed());
        Ok(())
    }

    /// Stage qemu-start: the monitor answers `query-status` (which runs in
    /// QEMU's main loop, so QEMU has opened its disks). One connection
    /// waits for the answer: a stuck QEMU never accepts, and more attempts
    /// would only fill its listen backlog. A QEMU that dies closes the
    /// socket, which ends the wait at once.
    fn wait_monitor(&mut self, expired: &dyn Fn() -> bool) -> Result<bool, VmError> {
        // One attempt may wait this long; `expired` decides when to give up.
        let attempt = BootStage::QemuStart.bound();
        loop {
            self.check_alive("boot")?;
            if expired() {
                return Ok(false);
            }
            match QmpClient::connect_with(self.qmp_socket(), attempt, attempt)
                .and_then(|mut q| q.status())
            {
                Ok(status) => {
                    tracing::debug!(%status, "QEMU monitor answers");
                    return Ok(true);
                }
                Err(e) => tracing::debug!("monitor not ready: {e:#}"),
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until the console satisfies `ready`.
    fn wait_console(
        &mut self,
        expired: &dyn Fn() -> bool,
        ready: impl Fn(&[u8]) -> bool,
    ) -> Result<bool, VmError> {
        loop {
            self.check_alive("boot")?;
            let console = std::fs::read(self.console_log()).unwrap_or_default();
            if ready(&console) {
                return Ok(true);
            }
            if expired() {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stage ssh: an authenticated session (the host key is the one the lab
    /// made for this VM).
    fn wait_ssh(&mut self, expired: &dyn Fn() -> bool) -> Result<bool, VmError> {
        loop {
            self.check_alive("boot")?;
            if expired() {
                return Ok(false);
            }
            match Ssh::connect(
                self.spec.ssh_port,
                &self.key,
                Some(&self.host_key_b64),
                Duration::from_secs(5),
            ) {
                Ok(s) => {
                    self.ssh = Some(s);
                    return Ok(true);
                }
                Err(e) => tracing::debug!("ssh not ready: {e:#}"),
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The error for a stage that ran out of time, with everything the lab
    /// can find out, also written next to the console log.
    fn stalled(&mut self, stage: BootStage, waited: String, host_wait: Duration) -> VmError {
        let mut diagnosis = self.diagnose(stage);
        diagnosis.host_wait = host_wait;
        let path = diagnosis_path(self.console_log());
        if let Err(e) = std::fs::write(&path, diagnosis.to_string()) {
            tracing::warn!("writing {}: {e}", path.display());
        }
        tracing::warn!("{diagnosis}");
        VmError::BootStalled {
            waited,
            diagnosis: Box::new(diagnosis),
            console_tail: self.console_tail(),
        }
    }

    /// Looks at QEMU from outside (/proc) and through its monitor, and at
    /// the NBD server behind its disk.
    pub fn diagnose(&mut self, stage: BootStage) -> BootDiagnosis {
        let qemu = match self.pid() {
            Some(pid) => crate::vm::procinfo::describe_process(pid, Duration::from_secs(1)),
            None => "not running".into(),
        };
        let monitor = match QmpClient::connect_with(
            self.qmp_socket(),
            Duration::from_secs(2),
            Duration::from_secs(5),
        ) {
            Err(e) => format!("did not answer: {e:#}"),
            Ok(mut q) => {
                let status = q.status().unwrap_or_else(|e| format!("no status ({e:#})"));
                // Where each vCPU executes, sampled three times: a program
                // counter that stays in one small range is a guest spinning
                // in one loop; kernel addresses start 0xffffffff8.
                let mut samples = Vec::new();
                for i in 0..3 {
                    if i > 0 {
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    match q.hmp("info registers -a") {
                        Ok(t) => samples.push(vcpu_pcs(&t).join(" ")),
                        Err(e) => {
                            samples.push(format!("no registers ({e:#})"));
                            break;
                        }
                    }
                }
                let code = q
                    .hmp("x/6i $pc")
                    .map(|t| t.trim().replace("\r\n", "; ").replace('\n', "; "))
                    .unwrap_or_default();
                format!(
                    "status {status}; vCPU program counters: [{}]; CPU 0 at: {code}",
                    samples.join("] [")
                )
            }
        };
        BootDiagnosis {
            stage,
            elapsed: self.started.elapsed(),
            qemu_pid: self.pid(),
            stages_done: self.stage_times.clone(),
            host_wait: Duration::ZERO,
            qemu,
            monitor,
            nbd: self.nbd_activity.as_ref().map(|a| a.describe()),
            console_bytes: std::fs::metadata(self.console_log())
                .map(|m| m.len())
                .unwrap_or(0),
            qemu_stderr: self.stderr_text(),
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
        let clock = GuestClock::start(self.pid());
        let child = &mut self.child;
        let console = &self.console;
        let mut dead = || {
            let exited = child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            exited || console.borrow_mut().saw_fatal()
        };
        let r = ssh.exec_streaming(cmd, timeout, &clock, &mut dead, on_line);
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
                    waited: clock.describe(t),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_program_counters_from_info_registers() {
        let text = "CPU#0\r\nRAX=0000000000000000 RBX=ffffffff82a0c940\r\n\
            RIP=ffffffff81e0ab12 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\r\n\
            CPU#1\r\nRAX=0000000000000001\r\n\
            RIP=ffffffffb1967780 RFL=00000202 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\r\n";
        assert_eq!(
            vcpu_pcs(text),
            [
                "CPU#0:RIP=ffffffff81e0ab12(halted)",
                "CPU#1:RIP=ffffffffb1967780"
            ]
        );
    }

    #[test]
    fn diagnosis_sits_beside_the_console() {
        assert_eq!(
            diagnosis_path(Path::new("/r/case/console.log")),
            Path::new("/r/case/console.diagnosis.txt")
        );
    }

    #[test]
    fn boot_stages_are_ordered_and_named() {
        let names: Vec<&str> = BootStage::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["qemu-start", "kernel", "init", "ssh"]);
        assert!(BootStage::ALL.windows(2).all(|w| w[0] < w[1]));
    }
}
