//! Patch series on disk, applied to a kernel tree as one commit per patch.
//!
//! A series is an mbox (`b4 am`), a directory of `git format-patch` files,
//! or a quilt `series` file (or a directory holding one). Level k is the
//! base with the first k patches applied by `git am -3`; a patch that does
//! not apply stops the chain and is explained by patch, file and hunk.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use lab_core::gitam;
use lab_core::series::{self, Series};

use crate::kernel::tree::{self, KernelTree};

/// Reads a series from a file or directory (errors are bad input).
pub fn load(path: &Path) -> Result<Series> {
    let origin = path.display().to_string();
    if path.is_dir() {
        let quilt = path.join("series");
        if quilt.is_file() {
            return load_quilt(&quilt);
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| origin.clone())?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("patch" | "diff" | "eml" | "mbox")
                )
            })
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{origin}: no *.patch files and no quilt `series` file in this directory");
        }
        let mut msgs = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).with_context(|| f.display().to_string())?;
            msgs.push((f.display().to_string(), text));
        }
        return Ok(series::from_messages(&msgs)?);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading series {origin}"))?;
    if path.file_name().is_some_and(|n| n == "series") {
        return load_quilt(path);
    }
    Ok(series::from_mbox(&origin, &text)?)
}

/// A quilt series: the listed files in order. Plain diffs without mail
/// headers get a subject from their file name, so `git am` can take them.
fn load_quilt(series_file: &Path) -> Result<Series> {
    let dir = series_file.parent().unwrap_or(Path::new("."));
    let text =
        std::fs::read_to_string(series_file).with_context(|| series_file.display().to_string())?;
    let names = series::quilt_names(&text);
    if names.is_empty() {
        bail!("{}: lists no patches", series_file.display());
    }
    let mut msgs = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let f = dir.join(n);
        let body = std::fs::read_to_string(&f).with_context(|| {
            format!(
                "{}: line for patch {} names {}, which cannot be read",
                series_file.display(),
                i + 1,
                f.display()
            )
        })?;
        let msg = if body.lines().any(|l| l.starts_with("Subject:")) {
            body
        } else {
            format!("From: quilt <quilt@localhost>\nSubject: [PATCH] {n}\n\n{body}")
        };
        msgs.push((f.display().to_string(), msg));
    }
    Ok(series::from_messages(&msgs)?)
}

/// A patch that did not apply.
#[derive(Debug, Clone)]
pub struct ApplyError {
    /// 1-based position in the series.
    pub patch: usize,
    pub label: String,
    pub origin: String,
    /// File, hunk and reason, from `git apply --check -v`.
    pub explanation: String,
    /// What git printed, for the log.
    pub raw: String,
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "patch {} does not apply ({}): {}",
            self.label, self.origin, self.explanation
        )
    }
}

/// The commits of a series' levels: `commits[k]` has the first k patches.
/// When patch j did not apply, levels j.. are missing and `failure` says why.
#[derive(Debug, Clone)]
pub struct Levels {
    pub commits: Vec<String>,
    pub failure: Option<ApplyError>,
}

/// Applies the series to the tree's base, one commit per patch. A series
/// applied before to the same base is not applied again: its commits are
/// remembered (`.git/lab-levels/<hash of base and patches>`; the commits
/// are the same anyway, with a fixed committer), and leaving the work tree
/// alone keeps the mtimes incremental builds rely on.
pub fn apply(tree: &KernelTree, s: &Series) -> Result<Levels> {
    let repo = &tree.repo;
    let key = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(&tree.base);
        for p in &s.patches {
            h.update([0]);
            h.update(&p.text);
        }
        tree::hex_prefix(&h.finalize(), 12)
    };
    let memo = repo.join(".git/lab-levels").join(&key);
    if let Ok(text) = std::fs::read_to_string(&memo) {
        let commits: Vec<String> = text.lines().map(str::to_string).collect();
        let all_there = commits.len() == s.patches.len() + 1
            && commits
                .iter()
                .all(|c| tree::git(repo, &["cat-file", "-e", &format!("{c}^{{commit}}")]).is_ok());
        if all_there {
            return Ok(Levels {
                commits,
                failure: None,
            });
        }
    }
    // `git am` changes the cache repository: under the tree's lock (a
    // series applied before is read from the memo above without it).
    let _lock = super::build::lock_tree(repo)?;
    let levels = apply_now(tree, s)?;
    if levels.failure.is_none() {
        let _ = std::fs::create_dir_all(repo.join(".git/lab-levels"));
        let _ = std::fs::write(&memo, levels.commits.join("\n") + "\n");
    }
    Ok(levels)
}

/// Applies in a second work tree of the same repository (`<tree>.apply`),
/// so the build work tree only ever changes by checking levels out: a file
/// the series touches is then new only to the levels that differ in it.
fn apply_now(tree: &KernelTree, s: &Series) -> Result<Levels> {
    let repo = &apply_worktree(tree)?;
    tree::checkout(repo, &tree.base)?;
    let mut commits = vec![tree.base.clone()];
    let tmp = tempfile_dir()?;
    for (i, p) in s.patches.iter().enumerate() {
        let file = tmp.join(format!("{:04}.patch", i + 1));
        std::fs::write(&file, &p.text)?;
        let out = tree::fixed_identity(
            Command::new("git")
                .arg("-C")
                .arg(repo)
                .args(["am", "-3", "--quiet", "--committer-date-is-author-date"])
                .arg(&file),
        )
        .stdin(Stdio::null())
        .output()
        .context("running git am")?;
        if out.status.success() {
            commits.push(tree::git_output(repo, &["rev-parse", "HEAD"])?);
            continue;
        }
        let raw = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tree::abort_am(repo);
        // git am -3 says which file conflicted, not which hunk; a plain
        // `git apply --check -v` on the same tree names the hunk.
        let check = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["apply", "--check", "--verbose"])
            .arg(&file)
            .output()
            .context("running git apply --check")?;
        let check_out = String::from_utf8_lossy(&check.stderr).into_owned();
        let why = gitam::explain(&format!("{check_out}\n{raw}"), &p.text);
        let _ = std::fs::remove_dir_all(&tmp);
        return Ok(Levels {
            commits,
            failure: Some(ApplyError {
                patch: i + 1,
                label: p.label(),
                origin: p.origin.clone(),
                explanation: why.to_string(),
                raw: format!("{raw}\n$ git apply --check --verbose\n{check_out}"),
            }),
        });
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(Levels {
        commits,
        failure: None,
    })
}

/// The second work tree commits are made in (`<tree>.apply`), created on
/// first use.
fn apply_worktree(tree: &KernelTree) -> Result<PathBuf> {
    let repo = tree.repo.with_extension("apply");
    if !repo.join(".git").exists() {
        let _ = std::fs::remove_dir_all(&repo);
        tree::git(&tree.repo, &["worktree", "prune"])?;
        tree::git(
            &tree.repo,
            &[
                "worktree",
                "add",
                "-q",
                "--detach",
                &repo.to_string_lossy(),
                &tree.base,
            ],
        )?;
    }
    Ok(repo)
}

/// A revert that does not apply: the files it conflicts in.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the revert conflicts in {}", .files.join(", "))]
pub struct RevertConflict {
    pub files: Vec<String>,
}

/// `bad` with `culprit` reverted on top (as `git revert` with the lab's
/// fixed identity, so the same revert is the same commit on every run), in
/// the apply work tree: the commit, or the conflict that stopped it.
pub fn revert(
    tree: &KernelTree,
    bad: &str,
    culprit: &str,
) -> Result<std::result::Result<String, RevertConflict>> {
    // The apply work tree is shared with every lab using this tree.
    let _lock = super::build::lock_tree(&tree.repo)?;
    let repo = apply_worktree(tree)?;
    tree::checkout(&repo, bad)?;
    let parents = tree::git_output(&repo, &["rev-list", "--parents", "-n", "1", culprit])?
        .split_whitespace()
        .count()
        .saturating_sub(1);
    let mut args = lab_core::bisect::revert_args(parents);
    args.push(culprit);
    let out = tree::fixed_identity(Command::new("git").arg("-C").arg(&repo).args(&args))
        .stdin(Stdio::null())
        .output()
        .context("running git revert")?;
    if out.status.success() {
        return Ok(Ok(tree::git_output(&repo, &["rev-parse", "HEAD"])?));
    }
    let files: Vec<String> = tree::git_output(&repo, &["diff", "--name-only", "--diff-filter=U"])
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let _ = tree::git(&repo, &["revert", "--abort"]);
    if files.is_empty() {
        bail!(
            "git revert {culprit} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(Err(RevertConflict { files }))
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("lab-series-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_path(p: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
    }

    #[test]
    fn the_demo_series_reads_as_four_patches_with_the_cover_aside() {
        let s = load(&repo_path("patches/demo-atomic-align")).unwrap();
        assert_eq!(s.patches.len(), 4);
        assert!(s.cover.unwrap().subject.contains("planted bug"));
        assert_eq!(
            s.patches[2].label(),
            "3/4 fs: test atomic write alignment with a mask"
        );
        assert!(s
            .patches
            .iter()
            .all(|p| p.author.contains("Atomic Write Lab")));
    }

    #[test]
    fn a_quilt_series_keeps_its_order_and_names_headerless_diffs() {
        let d = tempfile::tempdir().unwrap();
        let diff = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n";
        std::fs::write(d.path().join("b.diff"), diff).unwrap();
        std::fs::write(
            d.path().join("a.patch"),
            format!("From: A <a@b>\nSubject: [PATCH] first\n\n{diff}"),
        )
        .unwrap();
        std::fs::write(d.path().join("series"), "# order\na.patch\nb.diff -p1\n").unwrap();
        let s = load(d.path()).unwrap();
        let labels: Vec<String> = s.patches.iter().map(|p| p.label()).collect();
        assert_eq!(labels, ["1 first", "2 b.diff"]);
    }

    #[test]
    fn a_quilt_series_naming_a_missing_file_says_which() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("series"), "gone.patch\n").unwrap();
        let e = load(d.path()).unwrap_err().to_string();
        assert!(e.contains("gone.patch"), "{e}");
    }

    #[test]
    fn an_empty_directory_is_refused_with_what_was_expected() {
        let d = tempfile::tempdir().unwrap();
        let e = load(d.path()).unwrap_err().to_string();
        assert!(e.contains("no *.patch files"), "{e}");
    }
}
