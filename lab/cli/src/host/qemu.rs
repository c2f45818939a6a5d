//! Which QEMU the lab uses ($LAB_QEMU, the set-up's private QEMU >= 10.2,
//! or the system's) and what it can do (its version, the NVMe controller's
//! and namespace's atomic-write properties), asked of the binary itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::paths;

/// Where the QEMU the lab uses comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QemuSource {
    /// $LAB_QEMU.
    Env,
    /// The set-up's QEMU >= 10.2 in a private root (~/.cache/lab/qemu).
    Lab,
    /// qemu-system-x86_64 on PATH (Debian 12 + bookworm-backports: 10.0).
    System,
}

impl QemuSource {
    pub fn describe(self) -> &'static str {
        match self {
            QemuSource::Env => "from $LAB_QEMU",
            QemuSource::Lab => "the lab's own, set up by scripts/setup.sh",
            QemuSource::System => "the system's",
        }
    }
}

/// A QEMU binary and what it supports.
#[derive(Debug, Clone, Serialize)]
pub struct QemuInfo {
    pub path: PathBuf,
    pub version: String,
    pub major: u32,
    pub minor: u32,
    /// The controller has atomic.awun/atomic.awupf/atomic.dn (QEMU >= 10.0).
    pub controller_atomics: bool,
    /// nvme-ns has atomic.nawupf etc. (QEMU >= 10.2).
    pub namespace_atomics: bool,
    /// The nvme-ns `atomic.*` properties this QEMU lists.
    pub namespace_atomic_props: Vec<String>,
    pub source: QemuSource,
    /// Set when the lab fell back to a QEMU without namespace atomics: why,
    /// and what that means (also logged as a warning).
    pub notice: Option<String>,
}

/// The set-up's QEMU (a wrapper that runs it from its private root).
pub fn lab_qemu_path(cache: &Path) -> PathBuf {
    cache.join("qemu/current/qemu-system-x86_64")
}

/// The QEMU the lab uses: $LAB_QEMU when set; else the set-up's QEMU >=
/// 10.2 when it runs and has namespace atomics; else qemu-system-x86_64 on
/// PATH, with a notice (a warning, and `notice`) that namespace atomics are
/// unavailable.
pub fn find_qemu() -> Result<QemuInfo> {
    if let Some(p) = std::env::var_os("LAB_QEMU") {
        return probe_qemu(Path::new(&p), QemuSource::Env);
    }
    let lab = lab_qemu_path(&paths::cache_dir());
    let why_not_lab = if lab.exists() {
        match probe_qemu(&lab, QemuSource::Lab) {
            Ok(q) if q.namespace_atomics => return Ok(q),
            Ok(q) => format!(
                "the lab's QEMU {} ({}) has no nvme-ns atomic properties",
                q.version,
                lab.display()
            ),
            Err(e) => format!("the lab's QEMU ({}) does not run: {e:#}", lab.display()),
        }
    } else {
        format!(
            "the lab's QEMU >= 10.2 is not set up ({} is missing)",
            lab.display()
        )
    };
    let mut q = probe_qemu(Path::new("qemu-system-x86_64"), QemuSource::System)?;
    if !q.namespace_atomics {
        let notice = format!(
            "{why_not_lab}; using the system QEMU {}, which cannot set namespace atomics \
             (NAWUPF, NABSPF): guests see a one-LBA atomic unit and testcases that set \
             device.nawupf etc. fail. Run scripts/setup.sh to provision QEMU 11.",
            q.version
        );
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| tracing::warn!("{notice}"));
        q.notice = Some(notice);
    }
    Ok(q)
}

/// Runs `path --version` and `-device nvme,help`/`nvme-ns,help`.
pub fn probe_qemu(path: &Path, source: QemuSource) -> Result<QemuInfo> {
    let out = Command::new(path)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "{} not found: run scripts/setup.sh (installs QEMU 10 from bookworm-backports)",
                path.display()
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "`{} --version` failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let version = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .context("cannot parse `qemu --version`")?
        .to_string();
    let mut nums = version.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    let help = |dev: &str| -> String {
        Command::new(path)
            .args([
                "-nodefaults",
                "-machine",
                "none",
                "-device",
                &format!("{dev},help"),
            ])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_default()
    };
    let ns_help = help("nvme-ns");
    let namespace_atomic_props: Vec<String> = ns_help
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|w| w.split('=').next())
        .filter(|w| w.starts_with("atomic."))
        .map(str::to_string)
        .collect();
    Ok(QemuInfo {
        controller_atomics: help("nvme").contains("atomic.awupf"),
        namespace_atomics: namespace_atomic_props.iter().any(|p| p == "atomic.nawupf"),
        namespace_atomic_props,
        path: path.to_path_buf(),
        version,
        major,
        minor,
        source,
        notice: None,
    })
}

impl QemuInfo {
    /// A device that sets namespace atomic fields needs a QEMU with them:
    /// without, the guest would see other limits than the testcase says.
    /// The error names the fields and the QEMU.
    pub fn check_device(&self, device: &lab_core::device::DeviceParams) -> Result<()> {
        let fields = device.namespace_atomic_fields();
        if fields.is_empty() || self.namespace_atomics {
            return Ok(());
        }
        bail!(
            "device.{} need{} QEMU >= 10.2 (nvme-ns atomic.* properties), but the lab's QEMU is \
             {} {} ({}), which has none; run scripts/setup.sh (it provisions QEMU 11 in \
             ~/.cache/lab/qemu) or point LAB_QEMU at a QEMU >= 10.2",
            fields.join(", device."),
            if fields.len() == 1 { "s" } else { "" },
            self.path.display(),
            self.version,
            self.source.describe()
        )
    }
}
