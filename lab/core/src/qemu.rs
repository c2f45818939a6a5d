//! QEMU command lines, built by small pure functions (one per concern) so
//! each part can be unit-tested and read on its own.

use crate::device::DeviceParams;

/// How the guest CPU is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// How TCG runs a guest's vCPUs: one host thread each (`multi`, QEMU's
/// default), or all in one thread taking turns (`single`).
///
/// The lab uses `single`. Measured here (`lab bench stress`, two cores
/// loaded by other VMs and CPU hogs), multi-threaded TCG broke about one
/// boot in forty in the guest kernel: an `int3` Oops at a static-key site
/// the kernel had just re-patched (`0f <1f> 44 00 00`: a vCPU executed a
/// breakpoint the other had already removed, which real hardware's
/// serialising IPIs rule out), and silent stalls with both vCPUs spinning
/// before init. With one thread, code one vCPU patches is never run stale
/// by the other. See docs/boot.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcgThreads {
    #[default]
    Single,
    Multi,
}

impl TcgThreads {
    pub fn as_str(self) -> &'static str {
        match self {
            TcgThreads::Single => "single",
            TcgThreads::Multi => "multi",
        }
    }
}

/// Where the namespace's blocks live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A raw image file.
    File(String),
    /// An NBD export on a unix socket (the crash disk).
    Nbd { socket: String, export: String },
}

/// The NVMe disk of a VM: a backing store and the device it is presented as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmeDisk {
    /// Namespace 1.
    pub backend: Backend,
    /// Namespaces 2, 3, ... (same device parameters).
    pub extra_namespaces: Vec<Backend>,
    pub device: DeviceParams,
    /// `write-cache` of the namespace; `None` leaves QEMU's default.
    pub write_cache: Option<bool>,
}

/// Everything needed to start one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    pub accel: Accel,
    /// Ignored under KVM.
    pub tcg_threads: TcgThreads,
    pub memory_mib: u32,
    pub cpus: u32,
    pub kernel: String,
    pub initrd: String,
    pub cmdline: String,
    /// File the serial console is written to.
    pub console_log: String,
    /// Unix socket QEMU listens on for QMP.
    pub qmp_socket: String,
    /// Host port (on 127.0.0.1 only) forwarded to the guest's sshd.
    pub ssh_port: u16,
    pub nvme: Option<NvmeDisk>,
    /// Files handed to the guest through fw_cfg (name, host path): secrets
    /// such as the guest's SSH host key, which must not appear on the
    /// kernel command line (world-readable in /proc on the host).
    pub fw_cfg: Vec<(String, String)>,
}

/// QEMU's option syntax separates properties with commas; a literal comma
/// inside a value (a path, say) is written as two.
pub fn escape_opt(value: &str) -> String {
    value.replace(',', ",,")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The CPU model under TCG. `max` emulates every feature QEMU knows and
/// the kernel spends longer setting them up: measured here, Westmere (SSE4.2
/// for crc32c, PCLMULQDQ, AES-NI) boots the Debian cloud kernel to init
/// about 0.7 s faster, and nothing the lab tests depends on newer features.
pub const TCG_CPU: &str = "Westmere";

/// Machine, CPU and memory. `-no-reboot` turns a guest reboot or panic
/// (with `panic=-1`) into QEMU exiting, which the lab detects.
pub fn machine_args(spec: &VmSpec) -> Vec<String> {
    let (accel, cpu) = match spec.accel {
        Accel::Kvm => ("kvm".to_string(), "host"),
        Accel::Tcg => (format!("tcg,thread={}", spec.tcg_threads.as_str()), TCG_CPU),
    };
    let mut v = args(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-machine",
        "pc",
        "-accel",
        &accel,
        "-cpu",
        cpu,
    ]);
    v.extend(["-m".into(), spec.memory_mib.to_string()]);
    v.extend(["-smp".into(), spec.cpus.to_string()]);
    v
}

/// Direct kernel boot.
pub fn kernel_args(spec: &VmSpec) -> Vec<String> {
    vec![
        "-kernel".into(),
        spec.kernel.clone(),
        "-initrd".into(),
        spec.initrd.clone(),
        "-append".into(),
        spec.cmdline.clone(),
    ]
}

/// Serial console to a file (the lab scans it for splats).
pub fn console_args(spec: &VmSpec) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("file,id=console,path={}", escape_opt(&spec.console_log)),
        "-serial".into(),
        "chardev:console".into(),
    ]
}

/// QMP on a unix socket; QEMU waits for nothing (`server=on,wait=off`).
/// `-qmp chardev:ID` works on QEMU 10.0 and 11.x alike; QEMU 11 warns that
/// `-mon` is deprecated.
pub fn qmp_args(spec: &VmSpec) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!(
            "socket,id=qmp,path={},server=on,wait=off",
            escape_opt(&spec.qmp_socket)
        ),
        "-qmp".into(),
        "chardev:qmp".into(),
    ]
}

/// User-mode networking with only the SSH port forwarded, bound to 127.0.0.1.
pub fn net_args(spec: &VmSpec) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!(
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{}-:22",
            spec.ssh_port
        ),
        "-device".into(),
        "virtio-net-pci,netdev=net0".into(),
    ]
}

/// The NVMe controller property list, atomic parameters included only when
/// set so that a plain boot also works on a QEMU without them.
pub fn nvme_controller_props(dev: &DeviceParams) -> String {
    let mut p = String::from("nvme,id=nvme0,serial=labnvme0");
    if dev.dn {
        p.push_str(",atomic.dn=on");
    }
    if dev.awun != 0 || dev.awupf != 0 {
        p.push_str(&format!(
            ",atomic.awun={},atomic.awupf={}",
            dev.awun, dev.awupf
        ));
    }
    p
}

/// Namespace `nsid` (1-based, on block node `disk{nsid-1}`): block sizes
/// equal to the LBA size so Linux sees that LBA.
pub fn nvme_namespace_props(disk: &NvmeDisk, nsid: usize) -> String {
    let lba = disk.device.lba_size;
    let node = nsid - 1;
    let mut p = format!(
        "nvme-ns,id=ns{nsid},drive=disk{node},bus=nvme0,nsid={nsid},logical_block_size={lba},physical_block_size={lba}"
    );
    // Namespace atomic parameters (QEMU >= 10.2), only those set, so a
    // device without them still starts on QEMU 10.0.
    for (field, value) in disk.device.namespace_atomic_values() {
        p.push_str(&format!(",{}={value}", field.qemu_prop));
    }
    if let Some(wc) = disk.write_cache {
        p.push_str(if wc {
            ",write-cache=on"
        } else {
            ",write-cache=off"
        });
    }
    p
}

/// The block node under the namespace: a raw file, or the crash disk's NBD
/// export (QEMU's NBD client then sends each NVMe write as an NBD write).
pub fn blockdev_props(node: &str, backend: &Backend) -> String {
    match backend {
        Backend::File(path) => format!(
            "driver=raw,node-name={node},file.driver=file,file.filename={},file.aio=threads,cache.direct=off",
            escape_opt(path)
        ),
        Backend::Nbd { socket, export } => format!(
            "driver=raw,node-name={node},file.driver=nbd,file.server.type=unix,file.server.path={},file.export={}",
            escape_opt(socket),
            escape_opt(export)
        ),
    }
}

pub fn nvme_args(disk: &NvmeDisk) -> Vec<String> {
    let mut v = vec!["-device".into(), nvme_controller_props(&disk.device)];
    for (i, backend) in std::iter::once(&disk.backend)
        .chain(&disk.extra_namespaces)
        .enumerate()
    {
        v.extend([
            "-blockdev".into(),
            blockdev_props(&format!("disk{i}"), backend),
        ]);
        v.extend(["-device".into(), nvme_namespace_props(disk, i + 1)]);
    }
    v
}

/// The whole argument list (without the program name).
pub fn argv(spec: &VmSpec) -> Vec<String> {
    let mut v = machine_args(spec);
    v.extend(kernel_args(spec));
    v.extend(console_args(spec));
    v.extend(qmp_args(spec));
    v.extend(net_args(spec));
    if let Some(d) = &spec.nvme {
        v.extend(nvme_args(d));
    }
    for (name, path) in &spec.fw_cfg {
        v.push("-fw_cfg".into());
        v.push(format!(
            "name={},file={}",
            escape_opt(name),
            escape_opt(path)
        ));
    }
    v
}

/// Kernel command line: serial console, reboot (so QEMU exits) at once on a
/// panic, no IO-APIC timer check, and the lab's own parameters for the
/// guest's init.
///
/// `no_timer_check`: the kernel's boot-time check that the timer interrupt
/// arrives through the IO-APIC waits a few ticks; on a loaded host the
/// emulated timer can miss that window, the kernel prints `..MP-BIOS bug:
/// 8254 timer not connected to IO-APIC`, routes the timer another way, and
/// the boot then stalled before init (seen under `lab bench stress` and in
/// a parallel `tests/vm.rs`, docs/boot.md). QEMU's PC machine wires the
/// timer correctly, so the check only adds a way to fail.
///
/// `quiet loglevel=5`: the console shows messages below KERN_NOTICE, i.e.
/// errors and warnings. `WARN()` and lockdep print at KERN_WARNING (4), so
/// with `loglevel=4` (errors only) the console, the lab's only view of the
/// guest's splats, never showed them. The Debian 7.2 cloud kernel prints
/// 13 warning-level lines in a TCG boot (TSC calibration, MTRR, clocksource
/// skew), none of them a splat.
pub fn kernel_cmdline(lab_params: &[(&str, &str)], extra: &str) -> String {
    let mut c = String::from("console=ttyS0,115200 panic=-1 quiet loglevel=5 no_timer_check");
    for (k, v) in lab_params {
        c.push_str(&format!(" lab.{k}={v}"));
    }
    if !extra.is_empty() {
        c.push(' ');
        c.push_str(extra);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            accel: Accel::Tcg,
            tcg_threads: TcgThreads::Single,
            memory_mib: 1024,
            cpus: 2,
            kernel: "/k/vmlinuz".into(),
            initrd: "/k/initrd".into(),
            cmdline: "console=ttyS0".into(),
            console_log: "/run/lab,1/console.log".into(),
            qmp_socket: "/run/lab/qmp.sock".into(),
            ssh_port: 2222,
            nvme: Some(NvmeDisk {
                backend: Backend::File("/img/disk.raw".into()),
                extra_namespaces: vec![],
                device: DeviceParams {
                    lba_size: 512,
                    awun: 7,
                    awupf: 3,
                    dn: true,
                    size_mib: 256,
                    namespaces: 1,
                    ..DeviceParams::default()
                },
                write_cache: Some(false),
            }),
            fw_cfg: vec![("opt/lab/hostkey".into(), "/run/lab/host_ed25519".into())],
        }
    }

    fn window<'a>(v: &'a [String], flag: &str) -> Vec<&'a str> {
        v.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn ssh_forward_binds_loopback_only() {
        let v = argv(&spec());
        let net = window(&v, "-netdev");
        assert_eq!(net.len(), 1);
        assert!(
            net[0].contains("hostfwd=tcp:127.0.0.1:2222-:22"),
            "{}",
            net[0]
        );
    }

    #[test]
    fn tcg_uses_the_fast_cpu_model_kvm_the_host_cpu() {
        let v = machine_args(&spec());
        assert_eq!(window(&v, "-cpu"), ["Westmere"]);
        assert_eq!(window(&v, "-accel"), ["tcg,thread=single"]);
        let mut s = spec();
        s.accel = Accel::Kvm;
        assert_eq!(window(&machine_args(&s), "-cpu"), ["host"]);
    }

    #[test]
    fn commas_in_paths_are_doubled() {
        let v = console_args(&spec());
        assert_eq!(v[1], "file,id=console,path=/run/lab,,1/console.log");
    }

    #[test]
    fn nvme_carries_atomic_parameters_and_lba_size() {
        let s = spec();
        let d = s.nvme.as_ref().unwrap();
        assert_eq!(
            nvme_controller_props(&d.device),
            "nvme,id=nvme0,serial=labnvme0,atomic.dn=on,atomic.awun=7,atomic.awupf=3"
        );
        let ns = nvme_namespace_props(d, 1);
        assert!(ns.contains("logical_block_size=512,physical_block_size=512"));
        assert!(ns.ends_with(",write-cache=off"));
    }

    #[test]
    fn nbd_backend_points_at_the_socket_and_export() {
        let p = blockdev_props(
            "disk0",
            &Backend::Nbd {
                socket: "/run/lab/nbd.sock".into(),
                export: "lab".into(),
            },
        );
        assert_eq!(
            p,
            "driver=raw,node-name=disk0,file.driver=nbd,file.server.type=unix,file.server.path=/run/lab/nbd.sock,file.export=lab"
        );
    }

    #[test]
    fn secrets_go_through_fw_cfg_not_the_command_line() {
        let v = argv(&spec());
        assert_eq!(
            window(&v, "-fw_cfg"),
            ["name=opt/lab/hostkey,file=/run/lab/host_ed25519"]
        );
    }

    #[test]
    fn extra_namespaces_get_their_own_node_and_nsid() {
        let mut s = spec();
        let d = s.nvme.as_mut().unwrap();
        d.extra_namespaces = vec![Backend::File("/img/ns2.raw".into())];
        let v = argv(&s);
        let devs = window(&v, "-device");
        assert!(
            devs.iter()
                .any(|d| d.starts_with("nvme-ns,id=ns2,drive=disk1,bus=nvme0,nsid=2,")),
            "{devs:?}"
        );
        let nodes = window(&v, "-blockdev");
        assert_eq!(nodes.len(), 2);
        assert!(nodes[1].contains("node-name=disk1,") && nodes[1].contains("/img/ns2.raw"));
        // The controller comes before the namespaces that sit on its bus.
        let ctrl = v.iter().position(|a| a.starts_with("nvme,")).unwrap();
        assert!(v.iter().position(|a| a.starts_with("nvme-ns,")).unwrap() > ctrl);
    }

    #[test]
    fn plain_device_has_no_atomic_properties() {
        let p = nvme_controller_props(&DeviceParams::default());
        assert!(!p.contains("atomic"), "{p}");
        let mut s = spec();
        let d = s.nvme.as_mut().unwrap();
        d.device = DeviceParams::default();
        assert!(!nvme_namespace_props(d, 1).contains("atomic"));
    }

    #[test]
    fn namespace_atomics_go_on_every_namespace() {
        let mut s = spec();
        let d = s.nvme.as_mut().unwrap();
        d.device.nawupf = 15;
        d.device.nabspf = 31;
        d.extra_namespaces = vec![Backend::File("/img/ns2.raw".into())];
        for nsid in [1, 2] {
            let p = nvme_namespace_props(d, nsid);
            assert!(p.contains(",atomic.nawupf=15,atomic.nabspf=31"), "{p}");
            assert!(!p.contains("nawun") && !p.contains("nabo"), "{p}");
        }
    }

    #[test]
    fn qmp_uses_the_qmp_option_not_deprecated_mon() {
        let v = qmp_args(&spec());
        assert_eq!(window(&v, "-qmp"), ["chardev:qmp"]);
        assert!(!v.iter().any(|a| a == "-mon"));
    }

    #[test]
    fn cmdline_carries_lab_params() {
        let c = kernel_cmdline(&[("key", "AAAA")], "foo=1");
        assert!(c.starts_with("console=ttyS0"));
        assert!(c.contains(" panic=-1 "));
        assert!(
            c.contains(" no_timer_check "),
            "the IO-APIC timer check stalls loaded boots: {c}"
        );
        assert!(c.ends_with(" lab.key=AAAA foo=1"));
    }

    #[test]
    fn no_disk_no_nvme() {
        let mut s = spec();
        s.nvme = None;
        assert!(!argv(&s).iter().any(|a| a.contains("nvme")));
    }
}
