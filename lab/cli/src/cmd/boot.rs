//! `lab boot`: boots a VM on an NVMe device with the given limits; runs a
//! command over SSH (exiting with its status) or opens a shell.

use std::path::PathBuf;
use std::time::Duration;

use lab_core::device::{AtomicField, DeviceParams, NAMESPACE_ATOMIC_FIELDS};

use crate::cmd::args::KernelArgs;
use crate::exit::{CmdError, Exit};
use crate::host::launch::Backing;
use crate::paths;
use crate::vm::VmError;

#[derive(clap::Args)]
pub struct BootArgs {
    #[command(flatten)]
    pub k: KernelArgs,
    /// Logical block size of the namespace.
    #[arg(long, default_value_t = 4096)]
    pub lba_size: u32,
    /// Controller AWUN (0's based LBA count).
    #[arg(long, default_value_t = 0)]
    pub awun: u16,
    /// Controller AWUPF (0's based LBA count).
    #[arg(long, default_value_t = 0)]
    pub awupf: u16,
    /// Controller atomic.dn (disable normal).
    #[arg(long)]
    pub dn: bool,
    /// Namespace size in MiB.
    #[arg(long, default_value_t = 512)]
    pub size_mib: u64,
    /// Namespaces (nvme0n1, nvme0n2, ...), 1 to 4.
    #[arg(long, default_value_t = 1)]
    pub namespaces: u8,
    #[command(flatten)]
    pub namespace_atomics: NamespaceAtomicArgs,
    /// Seconds to wait for SSH.
    #[arg(long, default_value_t = 120)]
    pub boot_timeout: u64,
    /// Seconds the command may run.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Where to write the serial console (default: results/boot/console.log).
    #[arg(long)]
    pub console: Option<PathBuf>,
    /// Command to run in the guest (after `--`).
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

impl BootArgs {
    fn device(&self) -> DeviceParams {
        let mut d = DeviceParams {
            lba_size: self.lba_size,
            awun: self.awun,
            awupf: self.awupf,
            dn: self.dn,
            size_mib: self.size_mib,
            namespaces: self.namespaces,
            ..DeviceParams::default()
        };
        self.namespace_atomics.apply(&mut d);
        d
    }
}

/// The namespace's atomic-write fields as flags (`--nawun` ... `--nabo`),
/// made from lab-core's one table of them, so a field added there is a flag
/// here with the same name and help.
#[derive(Clone, Default)]
pub struct NamespaceAtomicArgs {
    values: Vec<(&'static AtomicField, u16)>,
}

impl NamespaceAtomicArgs {
    pub fn apply(&self, device: &mut DeviceParams) {
        for (f, v) in &self.values {
            (f.set)(device, *v);
        }
    }
}

impl clap::FromArgMatches for NamespaceAtomicArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(NamespaceAtomicArgs {
            values: NAMESPACE_ATOMIC_FIELDS
                .iter()
                .map(|f| (f, m.get_one::<u16>(f.name).copied().unwrap_or(0)))
                .collect(),
        })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for NamespaceAtomicArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        NAMESPACE_ATOMIC_FIELDS.iter().fold(cmd, |c, f| {
            c.arg(
                clap::Arg::new(f.name)
                    .long(f.name)
                    .value_parser(clap::value_parser!(u16))
                    .default_value("0")
                    .help(f.doc),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

pub fn run(args: BootArgs) -> Result<Exit, CmdError> {
    let device = args.device();
    if let Err(e) = device.validate() {
        return Err(CmdError::bad_input(format!(
            "--{}: {}",
            e.field.replace('_', "-"),
            e.message
        )));
    }
    let host = args.k.host()?;
    host.qemu.check_device(&device)?;
    // The console outlives the VM (it is what you read when a boot goes
    // wrong): by default results/boot/console.log, overwritten by each boot.
    let console = args
        .console
        .clone()
        .unwrap_or_else(|| paths::results_dir(&host.root).join("boot/console.log"));
    eprintln!(
        "lab: booting {} ({}; {}), console: {}",
        host.kernel.release,
        host.accel.as_str(),
        host.accel_reason,
        console.display()
    );
    let mut vm = host
        .plan(console.clone())
        .disk(&device, Backing::Scratch)
        .boot_timeout(Duration::from_secs(args.boot_timeout))
        .boot()
        .map_err(|e| anyhow::anyhow!("{}", e.report()))?;
    eprintln!(
        "lab: guest ready in {:.1} s (ssh on 127.0.0.1:{}, qmp {})",
        vm.boot_time.unwrap_or_default().as_secs_f64(),
        vm.ssh_port(),
        vm.qmp_socket().display()
    );
    let status = if args.cmd.is_empty() {
        vm.shell().map(|s| s.clamp(0, 255) as u8)
    } else {
        let line = args.cmd.join(" ");
        vm.exec(&line, Duration::from_secs(args.timeout)).map(|o| {
            print!("{}", o.stdout);
            eprint!("{}", o.stderr);
            o.status.clamp(0, 255) as u8
        })
    };
    let splats = vm.splats();
    for s in &splats {
        eprintln!("lab: kernel splat: {} (console line {})", s.title, s.line);
    }
    let exit = match status {
        Ok(0) if !splats.is_empty() && !args.cmd.is_empty() => Exit::Failed,
        Ok(c) => Exit::Command(c),
        Err(e) => {
            eprintln!("lab: error: {}", e.report());
            // A crashed or hung guest is the kernel's failure, not the lab's.
            match e {
                VmError::Crashed { .. } | VmError::Timeout { .. } => Exit::Failed,
                _ => Exit::LabError,
            }
        }
    };
    if let Err(e) = vm.shutdown() {
        eprintln!("lab: error at shutdown: {e}");
    }
    Ok(exit)
}
