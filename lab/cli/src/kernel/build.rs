//! Building kernels: configure from the repo's fragments, build with `O=`,
//! cache the bzImage by what went into it.
//!
//! Layout under `<cache>/kernel/`:
//! - `out/<tree>-<config>/<tree id>/`: one `O=` directory per (tree,
//!   config, patch level). A new level starts as a copy of the built level
//!   nearest to it (fewest changed files), so neighbouring levels build
//!   incrementally; `ccache` catches the rest.
//! - `artifacts/<build key>/`: bzImage, .config, build.log, release,
//!   meta.json. The key hashes the git tree id, the fragments and the
//!   compiler, so a repeated run (or another level with the same content)
//!   does not build again.
//!
//! Everything the guest needs is built in (no modules), see
//! `vm-images/kconfig/lab.config`.

use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lab_core::kconfig::{self, Dropped, KOption};
use lab_core::make_output::{self, BuildLine};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::kernel::tree::{self, KernelTree};
use crate::proc::{self, reaper};
use crate::vm::kernel::Kernel;

/// The base configuration the fragments are merged onto.
pub const BASE_CONFIG: &str = "tinyconfig";
/// Bumped when the build procedure changes in a way that changes artifacts.
const BUILD_RECIPE: &str = "lab-kbuild-1";
/// `O=` directories kept per (tree, config); older ones are removed.
const KEEP_OUT_DIRS: usize = 8;

/// Why a kernel could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A fragment has a syntax error (bad input).
    #[error("{0}")]
    Fragment(#[from] kconfig::FragmentError),
    /// Options asked for did not survive `olddefconfig` (bad input for
    /// this tree: a typo, or a dependency it lacks).
    #[error("{}", dropped_message(.dropped))]
    Dropped {
        dropped: Vec<Dropped>,
        config: PathBuf,
    },
    /// The compiler or linker failed (the tree's fault).
    #[error("build failed: {summary}\n--- last lines of {} ---\n{tail}", .log.display())]
    Compile {
        summary: String,
        tail: String,
        log: PathBuf,
    },
    #[error("interrupted")]
    Interrupted,
    /// The lab could not run the build at all.
    #[error("{0:#}")]
    Lab(#[from] anyhow::Error),
}

impl From<std::io::Error> for BuildError {
    fn from(e: std::io::Error) -> Self {
        BuildError::Lab(e.into())
    }
}

fn dropped_message(d: &[Dropped]) -> String {
    let mut s = format!(
        "{} kernel config option(s) asked for did not survive olddefconfig:",
        d.len()
    );
    for x in d {
        let got = x
            .got
            .as_ref()
            .map_or("not set".to_string(), |g| format!("={g}"));
        s.push_str(&format!(
            "\n  {}:{}: CONFIG_{}={} but the final config has it {}",
            x.origin, x.line, x.name, x.wanted, got
        ));
    }
    s.push_str("\n(a misspelt option, or one whose dependencies this tree or base config lacks)");
    s
}

/// The `.config` the fragments are merged onto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseConfig {
    /// `make tinyconfig`: the lab's small kernel.
    Tiny,
    /// `--kconfig distro`: a distribution kernel's own config file (the
    /// default kernel's, as the set-up downloaded it).
    Distro(PathBuf),
}

impl BaseConfig {
    /// How results and build.json name it.
    pub fn label(&self) -> String {
        match self {
            BaseConfig::Tiny => BASE_CONFIG.to_string(),
            BaseConfig::Distro(p) => format!("distro:{}", p.display()),
        }
    }
}

/// What a build is configured from: a base, then fragments merged in order.
#[derive(Debug, Clone)]
pub struct ConfigRecipe {
    pub base: BaseConfig,
    pub fragments: Vec<PathBuf>,
}

/// The `--kconfig` name that swaps the base for the distribution's config.
pub const DISTRO: &str = "distro";

/// The recipe of a build: `lab.config` always, then each `--kconfig` (a
/// name in vm-images/kconfig/ such as `debug`, or a path). `distro` also
/// swaps tinyconfig for the default kernel's config (`distro.config` then
/// holds what building it on a lab machine needs).
pub fn config_recipe(root: &Path, cache: &Path, extra: &[String]) -> Result<ConfigRecipe> {
    let dir = root.join("vm-images/kconfig");
    let mut base = BaseConfig::Tiny;
    let mut v = vec![dir.join("lab.config")];
    for e in extra {
        if e == DISTRO {
            base = BaseConfig::Distro(distro_config(cache)?);
        }
        let by_name = dir.join(format!("{e}.config"));
        let p = if by_name.is_file() {
            by_name
        } else if Path::new(e).is_file() {
            PathBuf::from(e)
        } else {
            let names: Vec<String> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter_map(|e| {
                            e.file_name()
                                .to_string_lossy()
                                .strip_suffix(".config")
                                .map(str::to_string)
                        })
                        .collect()
                })
                .unwrap_or_default();
            bail!(
                "--kconfig {e}: neither a fragment in {} ({}) nor a file",
                dir.display(),
                names.join(", ")
            );
        };
        v.push(p);
    }
    Ok(ConfigRecipe { base, fragments: v })
}

/// The default kernel's config file (Debian ships it beside the modules).
fn distro_config(cache: &Path) -> Result<PathBuf> {
    let kernel = Kernel::default_kernel(cache)?;
    let config = kernel
        .modules
        .as_ref()
        .map(|m| m.join("config"))
        .filter(|c| c.is_file())
        .with_context(|| {
            format!(
                "--kconfig {DISTRO}: the default kernel ({}) has no config file beside its modules: run scripts/setup.sh",
                kernel.release
            )
        })?;
    Ok(config)
}

/// What went into a build, kept beside its bzImage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildMeta {
    pub commit: String,
    pub tree_id: String,
    pub fragments: Vec<String>,
    /// The base the fragments went onto (older builds: tinyconfig).
    #[serde(default = "tiny_label")]
    pub base: String,
    pub compiler: String,
    pub release: String,
    pub duration_s: f64,
    /// Kbuild steps run (CC, LD, AR... lines).
    pub steps: usize,
    /// The level whose `O=` directory this build started from.
    pub seeded_from: Option<String>,
}

fn tiny_label() -> String {
    BASE_CONFIG.to_string()
}

/// A built (or cached) kernel.
#[derive(Debug, Clone)]
pub struct Built {
    pub kernel: Kernel,
    pub artifact: PathBuf,
    pub cached: bool,
    pub meta: BuildMeta,
    pub log: PathBuf,
}

/// Builds levels of one tree with one configuration. Each build holds a
/// lock on the tree's cache repository while it checks out and makes (two
/// labs checking out levels in the same work tree would build each other's
/// sources), and only then: a run's testcases never hold it.
pub struct Builder {
    cache: PathBuf,
    tree: KernelTree,
    base: BaseConfig,
    /// Each fragment file and the options it asks for.
    fragments: Vec<(PathBuf, Vec<KOption>)>,
    config_key: String,
    compiler: String,
    ccache: bool,
    jobs: usize,
}

impl Builder {
    pub fn new(
        cache: &Path,
        tree: &KernelTree,
        recipe: &ConfigRecipe,
    ) -> Result<Builder, BuildError> {
        let mut fragments = Vec::new();
        let mut hasher = Sha256::new();
        match &recipe.base {
            // As before distro bases existed: tiny builds keep their keys.
            BaseConfig::Tiny => hasher.update(BASE_CONFIG),
            BaseConfig::Distro(p) => {
                hasher.update("distro\0");
                hasher.update(std::fs::read(p).with_context(|| p.display().to_string())?);
            }
        }
        for f in &recipe.fragments {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading kernel config fragment {}", f.display()))?;
            let opts = kconfig::parse_fragment(&f.display().to_string(), &text)?;
            hasher.update(f.file_name().unwrap_or_default().as_encoded_bytes());
            hasher.update([0]);
            hasher.update(&text);
            hasher.update([0]);
            fragments.push((f.clone(), opts));
        }
        let config_key = tree::hex_prefix(&hasher.finalize(), 6);
        let compiler = first_line(Command::new("gcc").arg("--version"))
            .context("gcc --version (install build-essential: scripts/setup.sh)")?;
        let ccache = first_line(Command::new("ccache").arg("--version")).is_ok();
        if !ccache {
            eprintln!("lab: warning: ccache not found; kernel builds will not be cached across levels (scripts/setup.sh installs it)");
        }
        Ok(Builder {
            cache: cache.to_path_buf(),
            tree: tree.clone(),
            base: recipe.base.clone(),
            fragments,
            config_key,
            compiler,
            ccache,
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        })
    }

    fn out_base(&self) -> PathBuf {
        self.cache
            .join("kernel/out")
            .join(format!("{}-{}", self.tree.key, self.config_key))
    }

    fn build_key(&self, tree_id: &str) -> String {
        let mut h = Sha256::new();
        for part in [BUILD_RECIPE, tree_id, &self.config_key, &self.compiler] {
            h.update(part);
            h.update([0]);
        }
        tree::hex_prefix(&h.finalize(), 10)
    }

    /// Builds `commit` (or returns its cached artifact). `label` names the
    /// level on the progress line ("base", "3/4").
    pub fn build(&self, commit: &str, label: &str) -> Result<Built, BuildError> {
        let started = Instant::now();
        let tree_id = tree::tree_id(&self.tree.repo, commit)?;
        let key = self.build_key(&tree_id);
        let artifacts = self.cache.join("kernel/artifacts");
        let art = artifacts.join(&key);
        if let Some(b) = load_artifact(&art)? {
            return Ok(b);
        }
        // The tree's lock for the checkout, the make and the cache update
        // only: runs on kernels already built never wait for it.
        let _lock = lock_tree(&self.tree.repo)?;
        // Another lab may have built it while this one waited.
        if let Some(b) = load_artifact(&art)? {
            return Ok(b);
        }
        let tmp = artifacts.join(format!("{key}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).context("creating the artifact directory")?;
        let log_path = tmp.join("build.log");

        tree::checkout(&self.tree.repo, commit)?;
        let base = self.out_base();
        std::fs::create_dir_all(&base)?;
        let odir = base.join(&tree_id[..16]);
        let seeded_from = if odir.join(".lab-built").is_file() {
            None
        } else {
            self.seed(&odir, commit)?
        };

        let mut log = std::fs::File::create(&log_path)?;
        if let Err(e) = self.configure_checked(&odir, &mut log, &log_path) {
            drop(log);
            return Err(self.fail(&tmp, &key, e));
        }
        let dropped = self.check_config(&odir)?;
        if !dropped.is_empty() {
            // Kept beside the failed builds' logs, not as a half artifact.
            let failed = self.cache.join("kernel/failed");
            let _ = std::fs::create_dir_all(&failed);
            let config = failed.join(format!("{key}.config"));
            let _ = std::fs::copy(odir.join(".config"), &config);
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(BuildError::Dropped { dropped, config });
        }

        if let Some(changes) = self.base_changes(&odir)? {
            std::fs::write(tmp.join(BASE_CHANGES), changes.render(&self.base.label()))?;
            eprintln!("{}", describe_base_changes(&changes, &art));
        }

        let expected = std::fs::read_to_string(base.join("steps-full"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        let fresh = seeded_from.is_none() && !odir.join(".lab-built").exists();
        let made = self.make(&odir, &mut log, label, if fresh { expected } else { None })?;
        drop(log);
        let steps = match made {
            Ok(s) => s,
            Err(e) => return Err(self.fail(&tmp, &key, e)),
        };
        if fresh {
            let _ = std::fs::write(base.join("steps-full"), format!("{steps}\n"));
        }
        std::fs::write(odir.join(".lab-built"), format!("{commit}\n"))?;
        let release = std::fs::read_to_string(odir.join("include/config/kernel.release"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "custom".into());
        std::fs::copy(odir.join("arch/x86/boot/bzImage"), tmp.join("bzImage"))
            .context("copying bzImage")?;
        std::fs::copy(odir.join(".config"), tmp.join("config"))?;
        let meta = BuildMeta {
            commit: commit.to_string(),
            tree_id,
            fragments: self
                .fragments
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect(),
            base: self.base.label(),
            compiler: self.compiler.clone(),
            release: release.clone(),
            duration_s: started.elapsed().as_secs_f64(),
            steps,
            seeded_from,
        };
        std::fs::write(
            tmp.join("meta.json"),
            serde_json::to_string_pretty(&meta).unwrap(),
        )?;
        std::fs::write(tmp.join("release"), format!("{release}\n"))?;
        let _ = std::fs::remove_dir_all(&art);
        std::fs::rename(&tmp, &art)?;
        self.prune(&base);
        let mut b = load_artifact(&art)?.context("artifact vanished after the build")?;
        b.cached = false;
        Ok(b)
    }

    /// A failed build: its log moves out of the artifact directory (which
    /// must never hold a half build) to `kernel/failed/<key>.log`.
    fn fail(&self, tmp: &Path, key: &str, e: BuildError) -> BuildError {
        let failed = self.cache.join("kernel/failed");
        let _ = std::fs::create_dir_all(&failed);
        let dest = failed.join(format!("{key}.log"));
        let _ = std::fs::rename(tmp.join("build.log"), &dest);
        let _ = std::fs::remove_dir_all(tmp);
        match e {
            BuildError::Compile { summary, tail, .. } => BuildError::Compile {
                summary,
                tail,
                log: dest,
            },
            other => other,
        }
    }

    /// Starts a level's `O=` directory as a copy of the built level with the
    /// fewest files changed from it. Files that differ are given a new mtime
    /// (git already does on checkout; this also covers a work tree that was
    /// recreated), so make rebuilds exactly what changed.
    fn seed(&self, odir: &Path, commit: &str) -> Result<Option<String>> {
        let base = self.out_base();
        let mut best: Option<(usize, PathBuf, String, Vec<String>)> = None;
        for e in std::fs::read_dir(&base)?.flatten() {
            let p = e.path();
            let Ok(c) = std::fs::read_to_string(p.join(".lab-built")) else {
                continue;
            };
            let c = c.trim().to_string();
            let Ok(changed) = tree::changed_files(&self.tree.repo, &c, commit) else {
                continue;
            };
            if best.as_ref().is_none_or(|b| changed.len() < b.0) {
                best = Some((changed.len(), p, c, changed));
            }
        }
        let Some((_, from, from_commit, changed)) = best else {
            return Ok(None);
        };
        let tmp = odir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        proc::run(
            Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(&from)
                .arg(&tmp),
        )?;
        let _ = std::fs::remove_file(tmp.join(".lab-built"));
        let _ = std::fs::remove_dir_all(odir);
        std::fs::rename(&tmp, odir)?;
        let now = std::time::SystemTime::now();
        for f in changed {
            if let Ok(file) = std::fs::File::options()
                .write(true)
                .open(self.tree.repo.join(&f))
            {
                let _ = file.set_modified(now);
            }
        }
        Ok(Some(from_commit))
    }

    /// [`Builder::configure`], a failure being the tree's (a Kconfig that
    /// does not parse): a `Compile` error with the tail of `log_path`.
    fn configure_checked(
        &self,
        odir: &Path,
        log: &mut std::fs::File,
        log_path: &Path,
    ) -> Result<(), BuildError> {
        self.configure(odir, log).map_err(|e| {
            let text = std::fs::read_to_string(log_path).unwrap_or_default();
            BuildError::Compile {
                summary: format!("configuring failed: {e:#}"),
                tail: make_output::tail(&text, 30),
                log: log_path.to_path_buf(),
            }
        })
    }

    /// The base (`make tinyconfig`, or the distribution's config copied
    /// in), merge the fragments, `make olddefconfig`. Cheap when nothing
    /// changed: Kbuild only touches the symbols that did.
    fn configure(&self, odir: &Path, log: &mut std::fs::File) -> Result<()> {
        let src = &self.tree.repo;
        let o = format!("O={}", odir.display());
        match &self.base {
            BaseConfig::Tiny => run_logged(
                Command::new("make")
                    .arg("-C")
                    .arg(src)
                    .arg(&o)
                    .arg(BASE_CONFIG),
                log,
            )?,
            BaseConfig::Distro(p) => {
                std::fs::create_dir_all(odir)?;
                std::fs::copy(p, odir.join(".config"))
                    .with_context(|| format!("copying {}", p.display()))?;
            }
        }
        let mut merge = Command::new(src.join("scripts/kconfig/merge_config.sh"));
        merge
            .current_dir(src)
            .arg("-m")
            .arg("-O")
            .arg(odir)
            .arg(odir.join(".config"));
        for (p, _) in &self.fragments {
            merge.arg(p.canonicalize().unwrap_or_else(|_| p.clone()));
        }
        run_logged(&mut merge, log)?;
        run_logged(
            Command::new("make")
                .arg("-C")
                .arg(src)
                .arg(&o)
                .arg("olddefconfig"),
            log,
        )?;
        Ok(())
    }

    /// Configures `commit` without building it: `out/config` (and, on a
    /// distribution base, `out/base-changes.txt`), for reading a config
    /// before paying for its build. Requests that did not survive are an
    /// error as for a build.
    pub fn configure_only(&self, commit: &str, out: &Path) -> Result<(), BuildError> {
        let _lock = lock_tree(&self.tree.repo)?;
        let tree_id = tree::tree_id(&self.tree.repo, commit)?;
        tree::checkout(&self.tree.repo, commit)?;
        let odir = self
            .out_base()
            .join(format!("{}.config-only", &tree_id[..16]));
        std::fs::create_dir_all(&odir)?;
        std::fs::create_dir_all(out)?;
        let log_path = out.join("config.log");
        let mut log = std::fs::File::create(&log_path)?;
        self.configure_checked(&odir, &mut log, &log_path)?;
        std::fs::copy(odir.join(".config"), out.join("config"))?;
        let dropped = self.check_config(&odir)?;
        let changes = self.base_changes(&odir)?;
        let _ = std::fs::remove_dir_all(&odir);
        if !dropped.is_empty() {
            return Err(BuildError::Dropped {
                dropped,
                config: out.join("config"),
            });
        }
        if let Some(changes) = changes {
            std::fs::write(out.join(BASE_CHANGES), changes.render(&self.base.label()))?;
            eprintln!("{}", describe_base_changes(&changes, out));
        }
        Ok(())
    }

    /// On a distribution base, what the fragments and `olddefconfig` made
    /// of it (`None` on tinyconfig, where nearly everything is off anyway).
    fn base_changes(&self, odir: &Path) -> Result<Option<kconfig::BaseChanges>> {
        let BaseConfig::Distro(base) = &self.base else {
            return Ok(None);
        };
        let base = kconfig::parse_config(
            &std::fs::read_to_string(base).with_context(|| base.display().to_string())?,
        );
        let fin = kconfig::parse_config(
            &std::fs::read_to_string(odir.join(".config"))
                .with_context(|| format!("{}/.config", odir.display()))?,
        );
        Ok(Some(kconfig::base_changes(&base, &self.requests(), &fin)))
    }

    /// Each fragment (as a name) and the options it asks for, in merge order.
    fn requests(&self) -> Vec<(String, Vec<KOption>)> {
        self.fragments
            .iter()
            .map(|(p, o)| (p.display().to_string(), o.clone()))
            .collect()
    }

    fn check_config(&self, odir: &Path) -> Result<Vec<Dropped>> {
        let text = std::fs::read_to_string(odir.join(".config"))
            .with_context(|| format!("{}/.config", odir.display()))?;
        let fin = kconfig::parse_config(&text);
        Ok(kconfig::check_survived(&self.requests(), &fin))
    }

    /// Runs the build, streaming its output to the log and the progress
    /// bar. Outer error: the lab failed; inner: the build failed.
    fn make(
        &self,
        odir: &Path,
        log: &mut std::fs::File,
        label: &str,
        expected_steps: Option<u64>,
    ) -> Result<Result<usize, BuildError>, BuildError> {
        use std::io::Write;
        let mut cmd = Command::new("make");
        cmd.arg("-C")
            .arg(&self.tree.repo)
            .arg(format!("O={}", odir.display()))
            .arg(format!("-j{}", self.jobs))
            // Reproducible version strings (and ccache hits on init/version.c).
            .env("KBUILD_BUILD_TIMESTAMP", "1970-01-01")
            .env("KBUILD_BUILD_USER", "lab")
            .env("KBUILD_BUILD_HOST", "lab")
            .arg("bzImage")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.ccache {
            cmd.arg("CC=ccache gcc")
                .env("CCACHE_DIR", self.cache.join("ccache"))
                // Paths under the cache are hashed relative to it, and the
                // working directory not at all: O= directories share hits.
                .env("CCACHE_BASEDIR", self.cache.join("kernel"))
                .env("CCACHE_NOHASHDIR", "true")
                .env("CCACHE_MAXSIZE", "5G");
        }
        reaper::guard_child(&mut cmd);
        let mut child = cmd.spawn().context("running make")?;
        reaper::register(child.id());
        let pb = progress(label, expected_steps);
        // Both streams into one channel so the log keeps their order.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let mut readers = Vec::new();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }));
        }
        drop(tx);
        let mut steps = 0usize;
        let mut text = String::new();
        for line in rx {
            if let BuildLine::Step { kind, target } = make_output::classify(&line) {
                steps += 1;
                pb.inc(1);
                pb.set_message(format!("{kind} {target}"));
            }
            let _ = writeln!(log, "{line}");
            text.push_str(&line);
            text.push('\n');
        }
        for r in readers {
            let _ = r.join();
        }
        let status = child.wait().context("waiting for make")?;
        reaper::unregister(child.id());
        pb.finish_and_clear();
        if reaper::interrupted() {
            return Err(BuildError::Interrupted);
        }
        if status.success() {
            return Ok(Ok(steps));
        }
        let mut failure = make_output::find_failure(&text);
        let mut tail = make_output::tail(&text, 30);
        // With O= the compiler names sources relative to the output
        // directory (../../../trees/<key>/fs/x.c): name them as the
        // tree does (fs/x.c), in the summary and in the tail.
        if let Some(f) = failure.file.clone() {
            if let Some(rel) = self.tree_relative(odir, &f) {
                if let Some(prefix) = f.strip_suffix(&rel) {
                    if !prefix.is_empty() {
                        tail = tail.replace(prefix, "");
                    }
                }
                failure.file = Some(rel);
            }
        }
        Ok(Err(BuildError::Compile {
            summary: failure.summary(),
            tail,
            log: PathBuf::new(),
        }))
    }

    /// A path the compiler printed (relative to `odir`, or absolute) as a
    /// path inside the source tree, when it is one.
    fn tree_relative(&self, odir: &Path, printed: &str) -> Option<String> {
        let abs = odir.join(printed).canonicalize().ok()?;
        let repo = self.tree.repo.canonicalize().ok()?;
        abs.strip_prefix(repo)
            .ok()
            .map(|r| r.to_string_lossy().into_owned())
    }

    /// Keeps the newest `KEEP_OUT_DIRS` output directories.
    fn prune(&self, base: &Path) {
        let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(base)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| {
                        let t = std::fs::metadata(e.path().join(".lab-built"))
                            .and_then(|m| m.modified())
                            .ok()?;
                        Some((t, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        while dirs.len() > KEEP_OUT_DIRS {
            let (_, p) = dirs.remove(0);
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// The file beside a distro-based config that says what became of the base.
pub const BASE_CHANGES: &str = "base-changes.txt";

/// One line for the terminal about a distribution base's fate.
fn describe_base_changes(c: &kconfig::BaseChanges, dir: &Path) -> String {
    let features: Vec<&str> = c.lost_features().collect();
    let probes = c.lost.len() - features.len();
    format!(
        "lab: distro config: {} of the {} options it enables kept; {} changed by the lab's fragments ({} more follow them); dropped by olddefconfig: {} feature(s){}{}; {} modules configured, none built (a bzImage build): {}",
        c.kept,
        c.enabled,
        c.overridden.len(),
        c.followed.len(),
        features.len(),
        if features.is_empty() {
            String::new()
        } else {
            format!(" ({})", features.join(", "))
        },
        if probes > 0 {
            format!(" and {probes} probe(s) of Debian's toolchain this one lacks")
        } else {
            String::new()
        },
        c.modules,
        dir.join(BASE_CHANGES).display()
    )
}

fn load_artifact(art: &Path) -> Result<Option<Built>> {
    let meta_path = art.join("meta.json");
    if !art.join("bzImage").is_file() || !meta_path.is_file() {
        return Ok(None);
    }
    let meta: BuildMeta = serde_json::from_str(&std::fs::read_to_string(&meta_path)?)
        .with_context(|| meta_path.display().to_string())?;
    Ok(Some(Built {
        kernel: Kernel {
            vmlinuz: art.join("bzImage"),
            modules: None,
            release: meta.release.clone(),
            provenance: Vec::new(),
        },
        artifact: art.to_path_buf(),
        cached: true,
        log: art.join("build.log"),
        meta,
    }))
}

fn progress(label: &str, expected: Option<u64>) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        eprintln!("lab: building kernel ({label})");
        return indicatif::ProgressBar::hidden();
    }
    let pb = match expected {
        Some(n) => {
            let pb = indicatif::ProgressBar::new(n);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "building {prefix} [{bar:30}] {pos}/{len} {elapsed} {wide_msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            pb
        }
        None => {
            let pb = indicatif::ProgressBar::new_spinner();
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} building {prefix}: {pos} steps {elapsed} {wide_msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            pb
        }
    };
    pb.set_prefix(label.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Runs a configuration step, appending its output to the build log
/// whether it succeeds or not.
fn run_logged(cmd: &mut Command, log: &mut std::fs::File) -> Result<()> {
    use std::io::Write;
    let result = proc::run(cmd);
    let output = match &result {
        Ok(out) | Err(proc::CommandError::Failed { output: out, .. }) => Some(out),
        Err(proc::CommandError::Spawn { .. }) => None,
    };
    if let Some(out) = output {
        let _ = log.write_all(&out.stdout);
        let _ = log.write_all(&out.stderr);
    }
    result?;
    Ok(())
}

fn first_line(cmd: &mut Command) -> Result<String> {
    Ok(proc::stdout(cmd)?
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// An exclusive lock on a tree's cache repository (flock: released when the
/// process dies, however it dies).
pub(crate) fn lock_tree(repo: &Path) -> Result<std::fs::File> {
    crate::paths::lock_exclusive(
        &repo.with_extension("lock"),
        Some(&format!(
            "waiting for another lab using {} ...",
            repo.display()
        )),
    )
}
