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

/// A value of a QEMU property. The command line takes every value as text
/// (`on`/`off` for a flag); QMP checks JSON types, so a hot-plugged device
/// needs the property's own type (`atomic.dn` must be `true`, not `"on"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropValue {
    Str(String),
    Int(u64),
    Bool(bool),
}

impl PropValue {
    fn text(&self) -> String {
        match self {
            PropValue::Str(s) => escape_opt(s),
            PropValue::Int(n) => n.to_string(),
            PropValue::Bool(b) => if *b { "on" } else { "off" }.to_string(),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            PropValue::Str(s) => s.clone().into(),
            PropValue::Int(n) => (*n).into(),
            PropValue::Bool(b) => (*b).into(),
        }
    }
}

/// A QEMU object's properties, in order. One list is both the command
/// line's text and the JSON of QMP's `device_add` and `blockdev-add`, so a
/// device plugged in later is described exactly as one present at boot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Props(Vec<(String, PropValue)>);

impl Props {
    fn str(mut self, key: &str, value: impl Into<String>) -> Self {
        self.0.push((key.into(), PropValue::Str(value.into())));
        self
    }

    fn int(mut self, key: &str, value: impl Into<u64>) -> Self {
        self.0.push((key.into(), PropValue::Int(value.into())));
        self
    }

    fn flag(mut self, key: &str, value: bool) -> Self {
        self.0.push((key.into(), PropValue::Bool(value)));
        self
    }

    /// `key=value,...` as `-device` and `-blockdev` take it.
    pub fn opts(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={}", v.text()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Flat JSON: QOM property names such as `atomic.awun` are one key
    /// (`device_add`).
    pub fn flat_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.0.iter().map(|(k, v)| (k.clone(), v.json())).collect()
    }

    /// Nested JSON: a dotted key is a path into nested objects
    /// (`file.driver` is `{"file": {"driver": ...}}`), as `blockdev-add`
    /// takes the options `-blockdev` spells with dots.
    pub fn nested_json(&self) -> serde_json::Value {
        let mut root = serde_json::Map::new();
        for (k, v) in &self.0 {
            let mut parts: Vec<&str> = k.split('.').collect();
            let last = parts.pop().unwrap_or_default();
            let mut obj = &mut root;
            for part in parts {
                obj = obj
                    .entry(part)
                    .or_insert_with(|| serde_json::Value::Object(Default::default()))
                    .as_object_mut()
                    .expect("a dotted key's prefix is an object");
            }
            obj.insert(last.to_string(), v.json());
        }
        serde_json::Value::Object(root)
    }
}

/// A device: its driver and properties (`-device DRIVER,...`, or QMP
/// `device_add` with `driver`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub driver: &'static str,
    pub props: Props,
}

impl Device {
    pub fn opts(&self) -> String {
        format!("{},{}", self.driver, self.props.opts())
    }

    /// The arguments of QMP `device_add`.
    pub fn qmp(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = self.props.flat_json();
        m.insert("driver".into(), self.driver.into());
        m
    }
}

/// The QEMU ids of one NVMe controller, its namespaces and their block
/// nodes. The controller present at boot is generation 0 (`nvme0`, `ns1`,
/// `disk0`); each hot-plugged replacement takes the next generation and
/// new ids (`nvme0-g1`, ...): a deleted controller's block nodes stay in
/// use until QEMU ends, so their names are never free again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NvmeIds {
    pub generation: u32,
}

impl NvmeIds {
    fn suffix(&self) -> String {
        match self.generation {
            0 => String::new(),
            g => format!("-g{g}"),
        }
    }

    pub fn controller(&self) -> String {
        format!("nvme0{}", self.suffix())
    }

    /// Namespace `nsid` (1-based).
    pub fn namespace(&self, nsid: usize) -> String {
        format!("ns{nsid}{}", self.suffix())
    }

    /// The block node under namespace `nsid` (1-based).
    pub fn node(&self, nsid: usize) -> String {
        format!("disk{}{}", nsid - 1, self.suffix())
    }
}

/// The NVMe controller, atomic parameters included only when set so that a
/// plain boot also works on a QEMU without them. The serial is the same in
/// every generation: the guest sees the same disk come back.
pub fn nvme_controller(dev: &DeviceParams, ids: NvmeIds) -> Device {
    let mut p = Props::default()
        .str("id", ids.controller())
        .str("serial", "labnvme0");
    if dev.dn {
        p = p.flag("atomic.dn", true);
    }
    if dev.awun != 0 || dev.awupf != 0 {
        p = p
            .int("atomic.awun", dev.awun)
            .int("atomic.awupf", dev.awupf);
    }
    Device {
        driver: "nvme",
        props: p,
    }
}

/// Namespace `nsid` (1-based): block sizes equal to the LBA size so Linux
/// sees that LBA.
pub fn nvme_namespace(disk: &NvmeDisk, nsid: usize, ids: NvmeIds) -> Device {
    let lba = disk.device.lba_size;
    let mut p = Props::default()
        .str("id", ids.namespace(nsid))
        .str("drive", ids.node(nsid))
        .str("bus", ids.controller())
        .int("nsid", nsid as u64)
        .int("logical_block_size", lba)
        .int("physical_block_size", lba);
    // Namespace atomic parameters (QEMU >= 10.2), only those set, so a
    // device without them still starts on QEMU 10.0.
    for (field, value) in disk.device.namespace_atomic_values() {
        p = p.int(field.qemu_prop, value);
    }
    if let Some(wc) = disk.write_cache {
        p = p.flag("write-cache", wc);
    }
    Device {
        driver: "nvme-ns",
        props: p,
    }
}

/// The block node under a namespace: a raw file, or the crash disk's NBD
/// export (QEMU's NBD client then sends each NVMe write as an NBD write).
pub fn blockdev(node: &str, backend: &Backend) -> Props {
    let p = Props::default().str("driver", "raw").str("node-name", node);
    match backend {
        Backend::File(path) => p
            .str("file.driver", "file")
            .str("file.filename", path.clone())
            .str("file.aio", "threads")
            .flag("cache.direct", false),
        Backend::Nbd { socket, export } => p
            .str("file.driver", "nbd")
            .str("file.server.type", "unix")
            .str("file.server.path", socket.clone())
            .str("file.export", export.clone()),
    }
}

/// Everything that makes up an NVMe disk, in the order QEMU needs it: the
/// block nodes, the controller, then the namespaces on its bus. The
/// command line and a hot-plug (`blockdev-add` each node, `device_add` each
/// device) both take this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmeParts {
    pub nodes: Vec<Props>,
    pub controller: Device,
    pub namespaces: Vec<Device>,
}

pub fn nvme_parts(disk: &NvmeDisk, ids: NvmeIds) -> NvmeParts {
    let backends: Vec<&Backend> = std::iter::once(&disk.backend)
        .chain(&disk.extra_namespaces)
        .collect();
    NvmeParts {
        nodes: backends
            .iter()
            .enumerate()
            .map(|(i, b)| blockdev(&ids.node(i + 1), b))
            .collect(),
        controller: nvme_controller(&disk.device, ids),
        namespaces: (1..=backends.len())
            .map(|nsid| nvme_namespace(disk, nsid, ids))
            .collect(),
    }
}

pub fn nvme_args(disk: &NvmeDisk) -> Vec<String> {
    let parts = nvme_parts(disk, NvmeIds::default());
    let mut v = Vec::new();
    for node in &parts.nodes {
        v.extend(["-blockdev".into(), node.opts()]);
    }
    v.extend(["-device".into(), parts.controller.opts()]);
    for ns in &parts.namespaces {
        v.extend(["-device".into(), ns.opts()]);
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
            nvme_controller(&d.device, NvmeIds::default()).opts(),
            "nvme,id=nvme0,serial=labnvme0,atomic.dn=on,atomic.awun=7,atomic.awupf=3"
        );
        let ns = nvme_namespace(d, 1, NvmeIds::default()).opts();
        assert!(ns.contains("logical_block_size=512,physical_block_size=512"));
        assert!(ns.ends_with(",write-cache=off"));
    }

    #[test]
    fn nbd_backend_points_at_the_socket_and_export() {
        let p = blockdev(
            "disk0",
            &Backend::Nbd {
                socket: "/run/lab/nbd.sock".into(),
                export: "lab".into(),
            },
        )
        .opts();
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
        let p = nvme_controller(&DeviceParams::default(), NvmeIds::default()).opts();
        assert!(!p.contains("atomic"), "{p}");
        let mut s = spec();
        let d = s.nvme.as_mut().unwrap();
        d.device = DeviceParams::default();
        assert!(!nvme_namespace(d, 1, NvmeIds::default())
            .opts()
            .contains("atomic"));
    }

    #[test]
    fn namespace_atomics_go_on_every_namespace() {
        let mut s = spec();
        let d = s.nvme.as_mut().unwrap();
        d.device.nawupf = 15;
        d.device.nabspf = 31;
        d.extra_namespaces = vec![Backend::File("/img/ns2.raw".into())];
        for nsid in [1, 2] {
            let p = nvme_namespace(d, nsid, NvmeIds::default()).opts();
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
    fn a_hot_plugged_disk_is_the_boot_disk_in_qmp_types_under_new_ids() {
        let mut s = spec();
        let d = s.nvme.as_mut().unwrap();
        d.device.nawupf = 15;
        d.extra_namespaces = vec![Backend::File("/img/ns2.raw".into())];
        let boot = nvme_parts(d, NvmeIds::default());
        let plug = nvme_parts(d, NvmeIds { generation: 2 });
        let ctrl = plug.controller.qmp();
        assert_eq!(ctrl["driver"], "nvme");
        assert_eq!(ctrl["id"], "nvme0-g2");
        assert_eq!(ctrl["serial"], "labnvme0");
        // QMP checks types: a flag is a JSON boolean, a number a number.
        assert_eq!(ctrl["atomic.dn"], serde_json::json!(true));
        assert_eq!(ctrl["atomic.awun"], serde_json::json!(7));
        let ns2 = plug.namespaces[1].qmp();
        assert_eq!(ns2["driver"], "nvme-ns");
        assert_eq!(
            (&ns2["id"], &ns2["bus"], &ns2["drive"], &ns2["nsid"]),
            (
                &serde_json::json!("ns2-g2"),
                &serde_json::json!("nvme0-g2"),
                &serde_json::json!("disk1-g2"),
                &serde_json::json!(2)
            )
        );
        assert_eq!(ns2["logical_block_size"], serde_json::json!(512));
        assert_eq!(ns2["atomic.nawupf"], serde_json::json!(15));
        assert_eq!(ns2["write-cache"], serde_json::json!(false));
        assert_eq!(
            plug.nodes[0].nested_json(),
            serde_json::json!({
                "driver": "raw",
                "node-name": "disk0-g2",
                "file": {"driver": "file", "filename": "/img/disk.raw", "aio": "threads"},
                "cache": {"direct": false},
            })
        );
        // Apart from the ids, the same properties as at boot.
        let strip = |m: serde_json::Map<String, serde_json::Value>| {
            m.into_iter()
                .filter(|(k, _)| !["id", "bus", "drive"].contains(&k.as_str()))
                .collect::<serde_json::Map<_, _>>()
        };
        for (b, p) in boot.namespaces.iter().zip(&plug.namespaces) {
            assert_eq!(strip(b.qmp()), strip(p.qmp()));
        }
        assert_eq!(strip(boot.controller.qmp()), strip(plug.controller.qmp()));
        assert_eq!(
            boot.controller.props.opts().split(',').next(),
            Some("id=nvme0")
        );
    }

    /// `a.b.c` paths of a nested object, back to dotted keys; a key that
    /// still holds a dot was not nested.
    fn flatten(
        prefix: &str,
        v: &serde_json::Value,
        out: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        match v.as_object() {
            Some(m) => {
                for (k, v) in m {
                    assert!(!k.contains('.'), "{k} was not nested");
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            None => {
                out.insert(prefix.to_string(), v.clone());
            }
        }
    }

    proptest::proptest! {
        /// Whatever the keys (distinct, none the prefix of another, as a
        /// block node's are), the nested JSON `blockdev-add` gets holds
        /// exactly the flat list's keys and values, and the command line's
        /// text lists them in order, a flag as on/off.
        #[test]
        fn nested_json_is_the_flat_list_and_the_text_its_order(
            entries in proptest::collection::vec(
                (proptest::collection::vec(0u8..3, 0..3), 0u8..3, 0u64..1000),
                0..12,
            )
        ) {
            let mut p = Props::default();
            let mut keys = Vec::new();
            for (n, (path, kind, value)) in entries.iter().enumerate() {
                let mut key: Vec<String> = path.iter().map(|s| ["a", "b", "c"][*s as usize].to_string()).collect();
                // Leaves are named x<n>: unique, and never an inner segment.
                key.push(format!("x{n}"));
                let key = key.join(".");
                p = match kind {
                    0 => p.str(&key, format!("v{value}")),
                    1 => p.int(&key, *value),
                    _ => p.flag(&key, value % 2 == 0),
                };
                keys.push(key);
            }
            let mut back = serde_json::Map::new();
            flatten("", &p.nested_json(), &mut back);
            proptest::prop_assert_eq!(back, p.flat_json());
            let text = p.opts();
            let got: Vec<&str> = text.split(',').filter(|s| !s.is_empty()).map(|kv| kv.split('=').next().unwrap()).collect();
            proptest::prop_assert_eq!(got, keys.iter().map(String::as_str).collect::<Vec<_>>());
            proptest::prop_assert!(!text.contains("true") && !text.contains("false"));
        }
    }

    #[test]
    fn no_disk_no_nvme() {
        let mut s = spec();
        s.nvme = None;
        assert!(!argv(&s).iter().any(|a| a.contains("nvme")));
    }
}
