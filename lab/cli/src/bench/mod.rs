//! `lab bench <what>`: measured figures written to results/bench/<what>.json
//! as a list of {"metric", "value", "unit"} records, ratios included. One
//! module per benchmark; this one owns the record and the statistics they
//! share. The command itself (which benchmark, where the file goes) is
//! `cmd::bench`.

pub mod boot;
pub mod disk;
pub mod heap;
pub mod kernel;
pub mod run;
pub mod stress;
pub mod verify;

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::host::LabHost;

#[derive(Debug, Serialize)]
pub struct Measurement {
    pub metric: String,
    pub value: f64,
    pub unit: String,
}

pub(crate) fn rec(metric: &str, value: f64, unit: &str) -> Measurement {
    Measurement {
        metric: metric.into(),
        value: (value * 1000.0).round() / 1000.0,
        unit: unit.into(),
    }
}

/// Writes the records to a bench's results file: at the end, and by a
/// long bench after each stage, so that an interrupted one keeps what it
/// measured.
pub(crate) fn write_records(file: &Path, records: &[Measurement]) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        file,
        serde_json::to_string_pretty(records).unwrap_or_default(),
    )
    .with_context(|| format!("writing {}", file.display()))
}

/// Whether the figures were measured under KVM (1) or TCG (0): every
/// benchmark file starts with it.
pub(crate) fn accel_record(host: &LabHost) -> Measurement {
    rec(
        "accel_is_kvm",
        f64::from(u8::from(host.accel == lab_core::qemu::Accel::Kvm)),
        "bool",
    )
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
