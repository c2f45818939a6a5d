//! The emulated NVMe device a testcase asks for, and the rules that make a
//! set of parameters valid.

use serde::{Deserialize, Serialize};

/// LBA sizes QEMU's nvme-ns accepts and Linux can use.
pub const LBA_SIZES: [u32; 4] = [512, 1024, 2048, 4096];

/// Parameters of the emulated NVMe controller and its namespace.
///
/// Atomic fields are in NVMe's own units: 0's-based counts of logical blocks
/// (AWUN = 7 means 8 LBAs). QEMU 10.0 only has the controller-wide
/// `atomic.awun`/`atomic.awupf`/`atomic.dn`; Linux 7.x ignores AWUPF and reads
/// only the namespace's NAWUPF, so with QEMU 10.0 the guest sees one LBA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceParams {
    /// Logical block size in bytes.
    #[serde(default = "default_lba_size")]
    pub lba_size: u32,
    /// Controller Atomic Write Unit Normal (0's based LBA count).
    #[serde(default)]
    pub awun: u16,
    /// Controller Atomic Write Unit Power Fail (0's based LBA count).
    #[serde(default)]
    pub awupf: u16,
    /// Controller "Disable Normal" atomic flag (atomic.dn).
    #[serde(default)]
    pub dn: bool,
    /// Namespace size in MiB (every namespace).
    #[serde(default = "default_size_mib")]
    pub size_mib: u64,
    /// Namespaces on the controller (nvme0n1, nvme0n2, ...), 1 to 4; all
    /// alike. Workloads use the first.
    #[serde(default = "default_namespaces")]
    pub namespaces: u8,
}

fn default_namespaces() -> u8 {
    1
}

fn default_lba_size() -> u32 {
    4096
}
fn default_size_mib() -> u64 {
    512
}

impl Default for DeviceParams {
    fn default() -> Self {
        DeviceParams {
            lba_size: default_lba_size(),
            awun: 0,
            awupf: 0,
            dn: false,
            size_mib: default_size_mib(),
            namespaces: default_namespaces(),
        }
    }
}

/// A device parameter that breaks a rule, with the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParamError {
    pub field: &'static str,
    pub message: String,
}

impl DeviceParams {
    /// Checks the rules QEMU and the NVMe spec impose, so a bad testcase is
    /// rejected before a VM starts rather than by QEMU's own error.
    pub fn validate(&self) -> Result<(), ParamError> {
        if !LBA_SIZES.contains(&self.lba_size) {
            return Err(ParamError {
                field: "lba_size",
                message: format!(
                    "{} is not a supported LBA size (one of {:?})",
                    self.lba_size, LBA_SIZES
                ),
            });
        }
        // NVMe: AWUPF <= AWUN ("power fail" can never promise more than "normal"),
        // and QEMU refuses the pair otherwise.
        if self.awupf > self.awun {
            return Err(ParamError {
                field: "awupf",
                message: format!(
                    "AWUPF ({}) must not exceed AWUN ({}): the power-fail atomic unit \
                     cannot be larger than the normal one",
                    self.awupf, self.awun
                ),
            });
        }
        if !(1..=4).contains(&self.namespaces) {
            return Err(ParamError {
                field: "namespaces",
                message: format!("{} namespaces: the lab supports 1 to 4", self.namespaces),
            });
        }
        let min_mib = 64;
        if self.size_mib < min_mib {
            return Err(ParamError {
                field: "size_mib",
                message: format!(
                    "{} MiB is too small: XFS needs at least {min_mib} MiB",
                    self.size_mib
                ),
            });
        }
        Ok(())
    }

    /// Bytes in the namespace.
    pub fn size_bytes(&self) -> u64 {
        self.size_mib * 1024 * 1024
    }

    /// The power-fail atomic unit in LBAs as Linux 7.x reads it: only the
    /// namespace's NAWUPF counts, so without namespace atomic parameters the
    /// unit is one LBA whatever the controller's AWUPF says. The crash disk
    /// and the model both use this number.
    pub fn atomic_unit_lbas(&self) -> u32 {
        1
    }

    /// The atomic boundary in LBAs (NABSPF + 1), or None when the namespace
    /// has no boundary. A write crossing it is not atomic.
    pub fn atomic_boundary_lbas(&self) -> Option<u32> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_params_are_valid() {
        DeviceParams::default().validate().unwrap();
    }

    #[test]
    fn rejects_odd_lba_size() {
        let p = DeviceParams {
            lba_size: 3000,
            ..Default::default()
        };
        let e = p.validate().unwrap_err();
        assert_eq!(e.field, "lba_size");
        assert!(e.message.contains("3000"));
    }

    #[test]
    fn rejects_awupf_above_awun() {
        let p = DeviceParams {
            awun: 1,
            awupf: 3,
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().field, "awupf");
    }
}
