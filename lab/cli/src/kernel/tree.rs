//! Kernel source trees. Every source the lab builds, whatever the user gave,
//! becomes a git repository in the cache (`<cache>/kernel/trees/<key>`) with
//! a base commit, so patch levels are commits and builds are keyed by git
//! tree ids:
//!
//! - a tarball (Debian's `linux-source-7.x`, a kernel.org release) is
//!   unpacked once and committed with a fixed author and date, so the same
//!   tarball gives the same commit on every machine;
//! - a git work tree is cloned with `--shared` (its objects are borrowed, the
//!   user's repository is never written to) and its HEAD is the base;
//! - nothing given: the tarball the set-up script fetched.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::proc;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Where a tree came from, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The tarball `scripts/setup.sh` fetched (Debian's newest linux-source-7.x).
    Default,
    GitTree(PathBuf),
    Tarball(PathBuf),
}

impl SourceSpec {
    /// `--kernel-tree PATH`: a git work tree or a tarball; none: the default.
    pub fn from_arg(arg: Option<&Path>) -> Result<SourceSpec> {
        let Some(p) = arg else {
            return Ok(SourceSpec::Default);
        };
        if p.is_file() {
            return Ok(SourceSpec::Tarball(p.canonicalize()?));
        }
        if !p.is_dir() {
            bail!("--kernel-tree {}: no such file or directory", p.display());
        }
        let top = git_output(p, &["rev-parse", "--show-toplevel"]).map_err(|_| {
            anyhow::anyhow!(
                "--kernel-tree {}: not a git work tree (commit it with `git init && git add -A && git commit`, or pass a tarball)",
                p.display()
            )
        })?;
        let top = PathBuf::from(top);
        if !top.join("Makefile").is_file() || !top.join("Kconfig").is_file() {
            bail!(
                "--kernel-tree {}: {} has no top-level Makefile and Kconfig: not a kernel tree",
                p.display(),
                top.display()
            );
        }
        Ok(SourceSpec::GitTree(top))
    }
}

/// A kernel tree ready to build: a cache repository and its base commit.
#[derive(Debug, Clone)]
pub struct KernelTree {
    /// The cache repository (with a work tree the lab checks levels out in).
    pub repo: PathBuf,
    /// The base commit: level 0 of any series.
    pub base: String,
    /// For humans and reproduce lines: what this tree is.
    pub describe: String,
    /// The `--kernel-tree` argument that reproduces it (None: the default).
    pub arg: Option<PathBuf>,
    /// Short stable name for directories keyed by this tree.
    pub key: String,
}

/// The default source as the set-up script leaves it: `<cache>/src/default`
/// points at the tarball, `<cache>/src/default.describe` says what it is.
pub fn default_tarball(cache: &Path) -> Result<(PathBuf, String)> {
    let link = cache.join("src/default");
    let tar = link.canonicalize().with_context(|| {
        format!(
            "no default kernel source at {}: run scripts/setup.sh (it fetches Debian's newest linux-source-7.x)",
            link.display()
        )
    })?;
    let describe = std::fs::read_to_string(cache.join("src/default.describe"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| tar.file_name().unwrap_or_default().to_string_lossy().into());
    Ok((tar, describe))
}

/// Turns a source into a cache repository (once per tarball or work tree).
pub fn prepare(cache: &Path, spec: &SourceSpec) -> Result<KernelTree> {
    let trees = cache.join("kernel/trees");
    std::fs::create_dir_all(&trees)?;
    match spec {
        SourceSpec::Default => {
            let (tar, describe) = default_tarball(cache)?;
            let mut t = from_tarball(&trees, &tar)?;
            t.describe = describe;
            t.arg = None;
            Ok(t)
        }
        SourceSpec::Tarball(tar) => from_tarball(&trees, tar),
        SourceSpec::GitTree(dir) => from_git(&trees, dir),
    }
}

fn short_hash(bytes: &[u8]) -> String {
    hex_prefix(&Sha256::digest(bytes), 8)
}

/// The first `bytes` bytes of a digest in hex: the short keys the kernel
/// cache names its trees, configs, builds and applied series by.
pub(crate) fn hex_prefix(digest: &[u8], bytes: usize) -> String {
    digest
        .iter()
        .take(bytes)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn from_tarball(trees: &Path, tar: &Path) -> Result<KernelTree> {
    // Keyed by name, size and mtime: hashing 160 MB on every run would cost
    // more than it protects against (a tarball rewritten in place).
    let meta = std::fs::metadata(tar).with_context(|| tar.display().to_string())?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let name = tar
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let key = format!(
        "tar-{}",
        short_hash(format!("{name}\0{}\0{mtime}", meta.len()).as_bytes())
    );
    let repo = trees.join(&key);
    if !repo.join(".git/lab-base").is_file() {
        unpack_tarball(tar, &repo)?;
    }
    let base = std::fs::read_to_string(repo.join(".git/lab-base"))?
        .trim()
        .to_string();
    Ok(KernelTree {
        repo,
        base,
        describe: name,
        arg: Some(tar.to_path_buf()),
        key,
    })
}

/// Unpacks a tarball into a fresh git repository with one commit. Done in a
/// temporary directory renamed at the end, so an interrupted unpack is
/// redone rather than half used.
fn unpack_tarball(tar: &Path, repo: &Path) -> Result<()> {
    let tmp = repo.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    eprintln!(
        "lab: unpacking {} into a git repository (once; about a minute)",
        tar.display()
    );
    proc::run(
        Command::new("tar")
            .arg("-xf")
            .arg(tar)
            .arg("--strip-components=1")
            .arg("-C")
            .arg(&tmp),
    )?;
    if !tmp.join("Makefile").is_file() || !tmp.join("Kconfig").is_file() {
        let _ = std::fs::remove_dir_all(&tmp);
        bail!(
            "{}: no Makefile and Kconfig at its top level: not a kernel source tarball",
            tar.display()
        );
    }
    git(&tmp, &["init", "-q"])?;
    // -f: Debian's tarball carries a .gitignore that ignores its whole top
    // level (its packaging repository's convention); the tree is pristine,
    // so everything in it is source.
    git(&tmp, &["add", "-A", "-f"])?;
    let msg = format!(
        "{}\n\nUnpacked by the lab from {}.",
        tar.file_name().unwrap_or_default().to_string_lossy(),
        tar.display()
    );
    git_with_fixed_identity(&tmp, &["commit", "-q", "--no-verify", "-m", &msg])?;
    let head = git_output(&tmp, &["rev-parse", "HEAD"])?;
    std::fs::write(tmp.join(".git/lab-base"), format!("{head}\n"))?;
    let _ = std::fs::remove_dir_all(repo);
    std::fs::rename(&tmp, repo)?;
    Ok(())
}

fn from_git(trees: &Path, dir: &Path) -> Result<KernelTree> {
    let key = format!("git-{}", short_hash(dir.as_os_str().as_encoded_bytes()));
    let repo = trees.join(&key);
    let base = git_output(dir, &["rev-parse", "HEAD"])
        .with_context(|| format!("{}: no commit at HEAD", dir.display()))?;
    let dirty = git_output(dir, &["status", "--porcelain", "--untracked-files=no"])?;
    if !dirty.is_empty() {
        eprintln!(
            "lab: warning: {} has uncommitted changes; the lab builds its HEAD {} without them",
            dir.display(),
            &base[..12.min(base.len())]
        );
    }
    let describe = format!(
        "{} at {}",
        dir.display(),
        git_output(dir, &["log", "-1", "--format=%h %s"]).unwrap_or_else(|_| base.clone())
    );
    if let Some(mut t) = on_a_tarball_tree(trees, dir, &base)? {
        t.describe = describe;
        return Ok(t);
    }
    if !repo.join(".git").is_dir() {
        let tmp = repo.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        // --shared: objects are read from the user's repository (new
        // commits there are visible here at once); nothing is written there.
        proc::run(
            Command::new("git")
                .args(["clone", "-q", "--shared", "--no-checkout"])
                .arg(dir)
                .arg(&tmp),
        )?;
        std::fs::rename(&tmp, &repo)?;
    }
    Ok(KernelTree {
        repo,
        base,
        describe,
        arg: Some(dir.to_path_buf()),
        key,
    })
}

/// A git tree whose history holds the base commit of a tarball tree in the
/// cache (a history made on top of the lab's own source, as the commit-range
/// tests make): its commits are fetched into that tree's repository, so it
/// builds in the work tree and `O=` directories already there, incrementally,
/// instead of a clone of its own starting with a full build. Only objects the
/// cache lacks are copied; the user's repository is only read.
fn on_a_tarball_tree(trees: &Path, dir: &Path, head: &str) -> Result<Option<KernelTree>> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(trees)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_none()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("tar-"))
                && p.join(".git/lab-base").is_file()
        })
        .collect();
    candidates.sort();
    for repo in candidates {
        let base = std::fs::read_to_string(repo.join(".git/lab-base"))?
            .trim()
            .to_string();
        // Exit 1: not an ancestor; 128: the user's repository lacks the
        // commit (an unrelated tree). Either way not this family.
        let related = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["merge-base", "--is-ancestor", &base, head])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !related {
            continue;
        }
        let ns = format!(
            "refs/lab/sources/{}",
            short_hash(dir.as_os_str().as_encoded_bytes())
        );
        // Every ref and HEAD (detached under `git bisect`), so --good and
        // --bad revisions are here too.
        git(
            &repo,
            &[
                "fetch",
                "-q",
                "--no-tags",
                "--no-write-fetch-head",
                &dir.to_string_lossy(),
                &format!("+refs/*:{ns}/refs/*"),
                &format!("+HEAD:{ns}/HEAD"),
            ],
        )
        .with_context(|| format!("fetching {} into {}", dir.display(), repo.display()))?;
        let key = repo
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        return Ok(Some(KernelTree {
            repo,
            base: head.to_string(),
            describe: String::new(),
            arg: Some(dir.to_path_buf()),
            key,
        }));
    }
    Ok(None)
}

/// A revision of the user's git tree as a full commit id, read in their
/// repository (which is only read).
pub fn resolve_rev(dir: &Path, rev: &str) -> Result<String> {
    git_output(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .map_err(|_| anyhow::anyhow!("{rev}: no such commit in {}", dir.display()))
}

/// Checks a commit out in the cache repository, discarding whatever an
/// interrupted apply or build left. Git rewrites only files that differ,
/// and gives them a new mtime, which is what makes builds incremental.
pub fn checkout(repo: &Path, commit: &str) -> Result<()> {
    abort_am(repo);
    git(repo, &["checkout", "-q", "-f", "--detach", commit])?;
    Ok(())
}

/// Abandons an unfinished `git am` (a previous run that stopped on a patch).
pub fn abort_am(repo: &Path) {
    // --git-path: in a linked work tree the state lives in its own git dir.
    let Ok(p) = git_output(repo, &["rev-parse", "--git-path", "rebase-apply"]) else {
        return;
    };
    let p = repo.join(p);
    if p.exists() {
        let _ = git(repo, &["am", "--abort"]);
        let _ = std::fs::remove_dir_all(&p);
    }
}

pub fn tree_id(repo: &Path, commit: &str) -> Result<String> {
    git_output(repo, &["rev-parse", &format!("{commit}^{{tree}}")])
}

/// Files that differ between two commits.
pub fn changed_files(repo: &Path, a: &str, b: &str) -> Result<Vec<String>> {
    Ok(git_output(repo, &["diff", "--name-only", a, b])?
        .lines()
        .map(str::to_string)
        .collect())
}

pub(crate) fn git(dir: &Path, args: &[&str]) -> Result<()> {
    proc::run(Command::new("git").arg("-C").arg(dir).args(args))?;
    Ok(())
}

/// Commits made by the lab carry a fixed identity and date, so the same
/// base and patches give the same commit ids on every machine and run.
pub(crate) fn git_with_fixed_identity(dir: &Path, args: &[&str]) -> Result<()> {
    proc::run(fixed_identity(
        Command::new("git").arg("-C").arg(dir).args(args),
    ))?;
    Ok(())
}

pub(crate) fn fixed_identity(cmd: &mut Command) -> &mut Command {
    cmd.env("GIT_AUTHOR_NAME", "lab")
        .env("GIT_AUTHOR_EMAIL", "lab@localhost")
        .env("GIT_AUTHOR_DATE", "@0 +0000")
        .env("GIT_COMMITTER_NAME", "lab")
        .env("GIT_COMMITTER_EMAIL", "lab@localhost")
        .env("GIT_COMMITTER_DATE", "@0 +0000")
}

pub(crate) fn git_output(dir: &Path, args: &[&str]) -> Result<String> {
    Ok(proc::stdout(
        Command::new("git").arg("-C").arg(dir).args(args),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tree_is_named() {
        let e = SourceSpec::from_arg(Some(Path::new("/nonexistent/linux"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/linux"), "{e}");
    }

    #[test]
    fn a_directory_that_is_not_a_git_tree_is_refused_with_a_way_out() {
        let d = tempfile::tempdir().unwrap();
        let e = SourceSpec::from_arg(Some(d.path())).unwrap_err();
        assert!(e.to_string().contains("not a git work tree"), "{e}");
    }

    #[test]
    fn a_git_tree_that_is_not_a_kernel_is_refused() {
        let d = tempfile::tempdir().unwrap();
        git(d.path(), &["init", "-q"]).unwrap();
        let e = SourceSpec::from_arg(Some(d.path())).unwrap_err();
        assert!(e.to_string().contains("not a kernel tree"), "{e}");
    }

    #[test]
    fn no_argument_is_the_default_source() {
        assert_eq!(SourceSpec::from_arg(None).unwrap(), SourceSpec::Default);
    }
}
