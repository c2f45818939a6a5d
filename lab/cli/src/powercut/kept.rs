//! Failing crash states kept for later: `crash/base.raw.zst` (the disk as
//! the cut left it, once per run), and per state `crash/state-N/` with its
//! recipe, its delta (`delta.bin.zst`: per changed LBA, the LBA as 8 bytes
//! little-endian then its bytes) and what `lab verify` needs to judge it
//! again (`case.json`: the device, the files, the op log).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lab_core::device::DeviceParams;
use lab_disk::states::{Delta, Recipe, State};
use lab_disk::{Record, StateStore};
use serde::{Deserialize, Serialize};

use crate::host::LabHost;
use crate::powercut::verifier::Verifier;
use crate::proc;

/// What a kept state needs besides its bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptCase {
    pub testcase: String,
    pub device: DeviceParams,
    pub files: Vec<String>,
    pub ops: Vec<lab_model::Op>,
    pub recipe: String,
    pub timeout_s: u64,
}

fn zstd(args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>> {
    let mut cmd = Command::new("zstd");
    cmd.args(args);
    let out = match input {
        Some(data) => proc::run_with_input(&mut cmd, data)?,
        None => proc::run(&mut cmd)?,
    };
    Ok(out.stdout)
}

/// Keeps state `i` of `store` under `crash_dir/name` (a sweep judges one
/// content at several points, each with its own op log, so the name is the
/// judgement's, not the state's); `base` is the crash disk's backing file.
/// Returns the kept directory.
pub fn keep_state(
    crash_dir: &Path,
    base: &Path,
    store: &StateStore,
    i: usize,
    st: &State,
    name: &str,
    case: &KeptCase,
) -> Result<PathBuf> {
    // The state's directory first: it makes `crash_dir` too, which zstd
    // needs to exist before it writes the base there.
    let dir = crash_dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let base_zst = crash_dir.join("base.raw.zst");
    if !base_zst.exists() {
        zstd(
            &[
                "-q",
                "-f",
                "-T0",
                &base.display().to_string(),
                "-o",
                &base_zst.display().to_string(),
            ],
            None,
        )?;
    }
    let lba = store.record().lba as usize;
    let mut raw = Vec::with_capacity(st.delta.len() * (8 + lba));
    let mut buf = vec![0u8; lba];
    for &l in st.delta.keys() {
        store.read(i, l * lba as u64, &mut buf)?;
        raw.extend_from_slice(&l.to_le_bytes());
        raw.extend_from_slice(&buf);
    }
    std::fs::write(dir.join("delta.bin.zst"), zstd(&["-q", "-c"], Some(&raw))?)?;
    std::fs::write(dir.join("recipe.txt"), format!("{}\n", case.recipe))?;
    std::fs::write(dir.join("case.json"), serde_json::to_string_pretty(case)?)?;
    Ok(dir)
}

/// `lab verify DIR`: rebuilds a kept state (base + delta), boots a verifier
/// on it and judges it again, printing the verdict. Returns whether the
/// state is one the kernel was allowed to leave.
pub fn verify_kept(host: &LabHost, dir: &Path) -> Result<bool> {
    let case: KeptCase = serde_json::from_str(
        &std::fs::read_to_string(dir.join("case.json"))
            .with_context(|| format!("{}: not a kept crash state", dir.display()))?,
    )?;
    let crash_dir = dir.parent().context("a kept state lives in crash/")?;
    let tmp = crate::paths::PrivateDir::new("lab-verify-state")?;
    let base = tmp.path().join("base.raw");
    zstd(
        &[
            "-q",
            "-d",
            "-f",
            &crash_dir.join("base.raw.zst").display().to_string(),
            "-o",
            &base.display().to_string(),
        ],
        None,
    )?;
    let delta_raw = zstd(
        &[
            "-q",
            "-d",
            "-c",
            &dir.join("delta.bin.zst").display().to_string(),
        ],
        None,
    )?;
    let lba = case.device.lba_size as usize;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&base)?;
    {
        use std::os::unix::fs::FileExt;
        for chunk in delta_raw.chunks(8 + lba) {
            if chunk.len() != 8 + lba {
                bail!("{}: truncated delta", dir.display());
            }
            let l = u64::from_le_bytes(chunk[..8].try_into().expect("8 bytes"));
            file.write_all_at(&chunk[8..], l * lba as u64)?;
        }
    }
    let record = Record {
        lba: case.device.lba_size,
        size: case.device.size_bytes(),
        ..Record::default()
    };
    let recipe: Recipe = case
        .recipe
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let state = State {
        recipe,
        delta: Delta::new(),
        torn: Vec::new(),
    };
    let store = Arc::new(StateStore::new(&file, record, &[state])?);
    println!(
        "lab verify: {} (testcase {}, recipe `{}`)",
        dir.display(),
        case.testcase,
        case.recipe
    );
    let mut v = Verifier::start(host, store, &case.device, dir.join("verify-console.log"))?;
    let c = v
        .check(0, &case.files, Duration::from_secs(case.timeout_s))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    v.shutdown();
    if let Some(m) = c.mount_error {
        println!("FAIL  XFS: mount (log recovery) failed\n{m}");
        return Ok(false);
    }
    if let Some(r) = c.repair_error {
        println!("FAIL  XFS: xfs_repair -n found corruption\n{r}");
        return Ok(false);
    }
    let verdict = lab_model::Model::new(&case.ops).judge(&c.files);
    if verdict.passed() {
        println!("PASS  the state is one the kernel was allowed to leave");
        return Ok(true);
    }
    for viol in &verdict.violations {
        println!("FAIL  {}: {}", viol.rule, viol.message);
    }
    Ok(false)
}
