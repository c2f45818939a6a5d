//! The guest image: an initramfs assembled from the recipe in
//! `vm-images/guest.yaml`, cached by a hash of everything that goes in.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use lab_core::cpio::CpioWriter;
use lab_core::kmod::{self, ModulesDep};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::vm::kernel::Kernel;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recipe {
    binaries: Vec<String>,
    #[serde(default)]
    early_modules: Vec<String>,
    modules: Vec<String>,
    init: String,
    #[serde(default)]
    optional_tools: BTreeMap<String, ForeignTool>,
}

/// A program from another Debian suite's root, run through that root's
/// loader with its own libraries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForeignTool {
    /// The root, relative to the cache.
    root: String,
    binary: String,
    install_as: String,
    library_path: Vec<String>,
}

/// Where foreign roots live in the guest.
const FOREIGN_PREFIX: &str = "opt/foreign";

/// Adds a foreign tool: its binary, its loader and the libraries the loader
/// resolves (`ld.so --list`), under /opt/foreign/, plus a wrapper script.
fn add_foreign_tool(files: &mut Contents, cache: &Path, name: &str, t: &ForeignTool) -> Result<()> {
    let root = cache.join(&t.root);
    let loader_rel = "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
    let loader = root.join(loader_rel);
    let bin = root.join(t.binary.trim_start_matches('/'));
    if !bin.is_file() || !loader.is_file() {
        bail!(
            "guest tool {name} needs {} and its loader {}: run scripts/setup.sh",
            bin.display(),
            loader.display()
        );
    }
    let host_lp: Vec<String> = t
        .library_path
        .iter()
        .map(|d| {
            root.join(d.trim_start_matches('/'))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let out = Command::new(&loader)
        .arg("--library-path")
        .arg(host_lp.join(":"))
        .arg("--list")
        .arg(&bin)
        .output()
        .with_context(|| format!("listing the libraries of {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} --list {} failed: {}",
            loader.display(),
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let prefix = format!("{FOREIGN_PREFIX}/{}", name);
    let root_str = root.to_string_lossy().into_owned();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(path) = line
            .split("=>")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
        else {
            continue;
        };
        let Some(rel) = path.strip_prefix(&root_str) else {
            bail!("{name} resolved {path} outside its root {root_str}");
        };
        files.insert(format!("{prefix}{rel}"), (0o755, std::fs::read(path)?));
    }
    files.insert(
        format!("{prefix}/{loader_rel}"),
        (0o755, std::fs::read(&loader)?),
    );
    files.insert(
        format!("{prefix}{}", t.binary),
        (0o755, std::fs::read(&bin)?),
    );
    let guest_lp: Vec<String> = t
        .library_path
        .iter()
        .map(|d| format!("/{prefix}{d}"))
        .collect();
    let wrapper = format!(
        "#!/bin/sh\n# {name} from {}, with its own libraries (see vm-images/guest.yaml)\nexec /{prefix}/{loader_rel} --library-path {} /{prefix}{} \"$@\"\n",
        t.root,
        guest_lp.join(":"),
        t.binary
    );
    files.insert(
        t.install_as.trim_start_matches('/').into(),
        (0o755, wrapper.into_bytes()),
    );
    Ok(())
}

/// A built image.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub path: PathBuf,
    pub hash: String,
    /// False when it came from the cache.
    pub built: bool,
}

/// Where the static guest agent is built.
pub fn agent_path(root: &Path) -> PathBuf {
    root.join("target/guest/x86_64-unknown-linux-gnu/release/lab-guest")
}

/// Builds the static guest agent (cargo is incremental: a no-op when fresh).
/// Without cargo, an already built agent is used as it is.
pub fn ensure_agent(root: &Path) -> Result<PathBuf> {
    let path = agent_path(root);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "lab-guest",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--target-dir",
        ])
        .arg(root.join("target/guest"))
        .status();
    match status {
        Ok(s) if s.success() => Ok(path),
        Ok(s) => bail!("building the guest agent failed ({s}); try: scripts/setup.sh"),
        Err(_) if path.is_file() => Ok(path),
        Err(e) => bail!(
            "cannot build the guest agent (cargo: {e}) and {} is missing",
            path.display()
        ),
    }
}

/// Shared libraries a dynamic executable loads, from `ldd`.
fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

fn decompress_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => Ok(std::fs::read(path)?),
        Some(t) => {
            let out = Command::new(t)
                .args(["-dc"])
                .arg(path)
                .output()
                .with_context(|| format!("running {t} to decompress {}", path.display()))?;
            if !out.status.success() {
                bail!("{t} -dc {} failed", path.display());
            }
            Ok(out.stdout)
        }
    }
}

/// Everything that goes into the image: destination path -> (mode, bytes).
type Contents = BTreeMap<String, (u32, Vec<u8>)>;

fn collect(
    root: &Path,
    cache: &Path,
    kernel: &Kernel,
    agent: &Path,
    tools: &[String],
) -> Result<Contents> {
    let recipe_path = root.join("vm-images/guest.yaml");
    let text = std::fs::read_to_string(&recipe_path)
        .with_context(|| format!("reading {}", recipe_path.display()))?;
    let recipe: Recipe = serde_yaml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", recipe_path.display()))?;
    let mut files = Contents::new();
    let init = root.join("vm-images").join(&recipe.init);
    files.insert(
        "init".into(),
        (
            0o755,
            std::fs::read(&init).with_context(|| format!("reading {}", init.display()))?,
        ),
    );
    for b in &recipe.binaries {
        let p = Path::new(b);
        let data = std::fs::read(p).with_context(|| {
            format!(
                "guest image needs {b} (from the recipe {}); run scripts/setup.sh",
                recipe_path.display()
            )
        })?;
        files.insert(b.trim_start_matches('/').into(), (0o755, data));
        for lib in shared_libs(p)? {
            let key = lib.to_string_lossy().trim_start_matches('/').to_string();
            if let std::collections::btree_map::Entry::Vacant(e) = files.entry(key) {
                e.insert((0o755, std::fs::read(&lib)?));
            }
        }
    }
    files.insert("usr/bin/lab-guest".into(), (0o755, std::fs::read(agent)?));
    for name in tools {
        let t = recipe.optional_tools.get(name).with_context(|| {
            format!(
                "unknown guest tool {name:?} (the recipe {} has: {})",
                recipe_path.display(),
                recipe
                    .optional_tools
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        add_foreign_tool(&mut files, cache, name, t)?;
    }

    // Modules, dependencies first, decompressed (busybox insmod cannot
    // decompress); load orders go to /etc/lab-modules-{early,late}.
    let mut early = Vec::new();
    let mut late = Vec::new();
    if let Some(mdir) = &kernel.modules {
        let dep = std::fs::read_to_string(mdir.join("modules.dep"))
            .with_context(|| format!("{}/modules.dep (run depmod)", mdir.display()))?;
        let builtin = std::fs::read_to_string(mdir.join("modules.builtin"))
            .map(|t| kmod::parse_builtin(&t))
            .unwrap_or_default();
        let dep = ModulesDep::parse(&dep);
        let early_wanted: Vec<&str> = recipe.early_modules.iter().map(String::as_str).collect();
        let all_wanted: Vec<&str> = recipe
            .early_modules
            .iter()
            .chain(&recipe.modules)
            .map(String::as_str)
            .collect();
        let early_paths = dep.load_order(&early_wanted, &builtin)?;
        for m in dep.load_order(&all_wanted, &builtin)? {
            let name = kmod::module_name(&m);
            files.insert(
                format!("lib/modules/{name}.ko"),
                (0o644, decompress_module(&mdir.join(&m))?),
            );
            if early_paths.contains(&m) {
                early.push(name);
            } else {
                late.push(name);
            }
        }
    }
    for (file, list) in [
        ("etc/lab-modules-early", &early),
        ("etc/lab-modules-late", &late),
    ] {
        files.insert(
            file.into(),
            (0o644, format!("{}\n", list.join("\n")).into_bytes()),
        );
    }
    files.insert(
        "etc/passwd".into(),
        (0o644, b"root:x:0:0:root:/root:/bin/sh\n".to_vec()),
    );
    files.insert("etc/group".into(), (0o644, b"root:x:0:\n".to_vec()));
    files.insert("etc/shells".into(), (0o644, b"/bin/sh\n".to_vec()));
    files.insert(
        "etc/lab-image".into(),
        (0o644, format!("kernel={}\n", kernel.release).into_bytes()),
    );
    Ok(files)
}

fn image_hash(files: &Contents) -> String {
    let mut h = Sha256::new();
    for (path, (mode, data)) in files {
        h.update(path.as_bytes());
        h.update(mode.to_le_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write_cpio(files: &Contents, out: &Path) -> Result<()> {
    let f = std::fs::File::create(out)?;
    let mut w = CpioWriter::new(std::io::BufWriter::new(f));
    let mut dirs = HashSet::new();
    for d in [
        "proc", "sys", "dev", "tmp", "run", "mnt", "root", "bin", "sbin", "usr/bin", "usr/sbin",
    ] {
        dirs.insert(d.to_string());
    }
    for path in files.keys() {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }
    let mut dirs: Vec<_> = dirs.into_iter().collect();
    dirs.sort();
    for d in &dirs {
        w.dir(d, if d == "root" { 0o700 } else { 0o755 })?;
    }
    for (path, (mode, data)) in files {
        w.file(path, *mode, data)?;
    }
    use std::io::Write;
    w.finish()?.flush()?;
    Ok(())
}

/// The image for `kernel`, from the cache or freshly built.
pub fn ensure_image(root: &Path, cache: &Path, kernel: &Kernel) -> Result<GuestImage> {
    ensure_image_with(root, cache, kernel, &[])
}

/// The image with optional tools (from the recipe's `optional_tools`) added.
pub fn ensure_image_with(
    root: &Path,
    cache: &Path,
    kernel: &Kernel,
    tools: &[String],
) -> Result<GuestImage> {
    let dir = cache.join("images");
    std::fs::create_dir_all(&dir)?;
    // One image maker at a time, across threads and processes: cargo may
    // replace the agent binary while another maker reads it, and two makers
    // would write the same temporary file (seen as ENOENT when tests and a
    // `lab run` start together).
    let _lock = crate::paths::lock_exclusive(&dir.join(".make.lock"), None)?;
    let agent = ensure_agent(root)?;
    let files = collect(root, cache, kernel, &agent, tools)?;
    let hash = image_hash(&files);
    let path = dir.join(format!("guest-{hash}.cpio"));
    if path.is_file() {
        return Ok(GuestImage {
            path,
            hash,
            built: false,
        });
    }
    let tmp = dir.join(format!(".guest-{hash}.{}.tmp", std::process::id()));
    write_cpio(&files, &tmp)?;
    std::fs::rename(&tmp, &path)?;
    tracing::info!(image = %path.display(), "built guest image");
    Ok(GuestImage {
        path,
        hash,
        built: true,
    })
}
