//! The kernel a VM boots: a bzImage plus (optionally) its modules.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone)]
pub struct Kernel {
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of this kernel, when it has modules.
    pub modules: Option<PathBuf>,
    pub release: String,
    /// What built it, for kernels `lab build` wrote (`build.json`'s
    /// properties: kernel.artifact, kernel.source, kernel.commit,
    /// kernel.level, kernel.config); every run on it reports them.
    pub provenance: Vec<(String, String)>,
}

/// The file `lab build` writes beside the kernel it built.
pub const BUILD_JSON: &str = "build.json";

impl Kernel {
    /// The default kernel the set-up script downloaded.
    pub fn default_kernel(cache: &Path) -> Result<Kernel> {
        let dir = cache.join("kernels/default");
        if !dir.join("vmlinuz").exists() {
            bail!(
                "no default kernel in {}: run scripts/setup.sh (it downloads Debian's newest cloud-amd64 7.x kernel)",
                dir.display()
            );
        }
        Self::from_dir(&dir)
    }

    /// A kernel directory as the set-up script lays it out (vmlinuz, modules,
    /// release), or a path to a bzImage with an optional modules directory.
    pub fn from_dir(dir: &Path) -> Result<Kernel> {
        let vmlinuz = dir
            .join("vmlinuz")
            .canonicalize()
            .with_context(|| format!("{}/vmlinuz", dir.display()))?;
        let modules = dir.join("modules").canonicalize().ok();
        let release = std::fs::read_to_string(dir.join("release"))
            .map(|s| s.trim().to_string())
            .or_else(|_| {
                modules
                    .as_ref()
                    .and_then(|m| m.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .context("no release file")
            })?;
        Ok(Kernel {
            vmlinuz,
            modules,
            release,
            provenance: provenance(dir)?,
        })
    }

    /// `--kernel PATH`: a kernel directory, or a bzImage file (modules from
    /// `--modules` or none: everything the guest needs must then be built in).
    pub fn from_arg(path: &Path, modules: Option<&Path>) -> Result<Kernel> {
        if path.is_dir() {
            return Self::from_dir(path);
        }
        if !path.is_file() {
            bail!("kernel {} does not exist", path.display());
        }
        let modules = modules.map(|m| m.to_path_buf());
        let release = modules
            .as_ref()
            .and_then(|m| m.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "custom".into());
        Ok(Kernel {
            vmlinuz: path.canonicalize()?,
            modules,
            release,
            provenance: Vec::new(),
        })
    }
}

/// The `properties` of a kernel directory's `build.json`, if it has one.
fn provenance(dir: &Path) -> Result<Vec<(String, String)>> {
    let path = dir.join(BUILD_JSON);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Vec::new());
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let props = v["properties"]
        .as_object()
        .with_context(|| format!("{}: no properties", path.display()))?;
    Ok(props
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect())
}
