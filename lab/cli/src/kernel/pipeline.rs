//! The kernel pipeline behind `--kernel-tree`, `--series` and `--kconfig`:
//! a source tree, a series applied to it as one commit per patch, and a
//! builder for any of those levels. Shared by `lab run` and `lab bisect`.

use std::path::{Path, PathBuf};

use lab_core::bisect::{self as plan, Commit};
use lab_core::series::Series;

use crate::kernel::build::{self, BuildError, Builder, Built};
use crate::kernel::series::{self, Levels};
use crate::kernel::tree::{self, KernelTree, SourceSpec};

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct KernelRequest {
    pub tree: Option<PathBuf>,
    pub series: Option<PathBuf>,
    /// Extra fragments (names in vm-images/kconfig/ or paths).
    pub kconfig: Vec<String>,
    /// Apply only the first N patches of the series (a bisection step's
    /// level, reproduced).
    pub upto: Option<usize>,
    /// Build this commit of the `--kernel-tree` git tree instead of its
    /// HEAD (a commit-range bisection's step, reproduced).
    pub rev: Option<String>,
    /// `lab bisect --good --bad`: the commits of the tree between them.
    pub range: Option<RangeRequest>,
}

/// `--good REV --bad REV [--full-history]`.
#[derive(Debug, Clone)]
pub struct RangeRequest {
    pub good: String,
    pub bad: String,
    /// Every commit of the range (`git rev-list --topo-order`), not only the
    /// first-parent line `git bisect --first-parent` walks.
    pub full_history: bool,
}

/// The commits a commit-range bisection walks: level 0 the good commit,
/// level k the k-th commit after it, the last the bad one.
#[derive(Debug, Clone)]
pub struct CommitRange {
    pub good: Commit,
    pub commits: Vec<Commit>,
    pub first_parent: bool,
}

impl KernelRequest {
    /// Whether a kernel must be built (else a prebuilt one boots).
    pub fn wanted(&self) -> bool {
        self.tree.is_some() || self.series.is_some() || !self.kconfig.is_empty()
    }

    /// The options that reproduce this request.
    pub fn reproduce_args(&self) -> String {
        let mut s = String::new();
        if let Some(t) = &self.tree {
            s.push_str(&format!(" --kernel-tree {}", t.display()));
        }
        if let Some(p) = &self.series {
            s.push_str(&format!(" --series {}", p.display()));
        }
        for k in &self.kconfig {
            s.push_str(&format!(" --kconfig {k}"));
        }
        if let Some(n) = self.upto {
            s.push_str(&format!(" --upto {n}"));
        }
        if let Some(r) = &self.rev {
            s.push_str(&format!(" --rev {r}"));
        }
        if let Some(r) = &self.range {
            s.push_str(&format!(" --good {} --bad {}", r.good, r.bad));
            if r.full_history {
                s.push_str(" --full-history");
            }
        }
        s
    }
}

/// Why the pipeline could not be set up; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Exit 2: the user's input (tree, series, fragment) is wrong.
    #[error("{0}")]
    BadInput(String),
    /// Exit 3: the lab could not do its part.
    #[error("{0:#}")]
    Lab(#[from] anyhow::Error),
}

pub struct Pipeline {
    pub tree: KernelTree,
    pub series: Option<Series>,
    pub levels: Levels,
    pub builder: Builder,
    pub request: KernelRequest,
    /// A commit-range bisection's commits (no series then).
    pub range: Option<CommitRange>,
}

impl Pipeline {
    pub fn prepare(
        root: &Path,
        cache: &Path,
        req: &KernelRequest,
    ) -> Result<Pipeline, PipelineError> {
        let spec = SourceSpec::from_arg(req.tree.as_deref())
            .map_err(|e| PipelineError::BadInput(format!("{e:#}")))?;
        let series = match &req.series {
            Some(p) => {
                Some(series::load(p).map_err(|e| PipelineError::BadInput(format!("{e:#}")))?)
            }
            None => None,
        };
        if let (Some(u), Some(s)) = (req.upto, &series) {
            if u > s.patches.len() {
                return Err(PipelineError::BadInput(format!(
                    "--upto {u}: the series has {} patches",
                    s.patches.len()
                )));
            }
        }
        if req.upto.is_some() && series.is_none() {
            return Err(PipelineError::BadInput("--upto needs --series".into()));
        }
        let recipe = build::config_recipe(root, cache, &req.kconfig)
            .map_err(|e| PipelineError::BadInput(format!("{e:#}")))?;
        let git_dir = match &spec {
            SourceSpec::GitTree(d) => Some(d.clone()),
            _ => None,
        };
        if (req.rev.is_some() || req.range.is_some()) && git_dir.is_none() {
            return Err(PipelineError::BadInput(
                "--rev, --good and --bad need --kernel-tree to be a git work tree".into(),
            ));
        }
        if req.range.is_some() && series.is_some() {
            return Err(PipelineError::BadInput(
                "--good/--bad bisect the tree's own commits: not with --series".into(),
            ));
        }
        let mut tree = tree::prepare(cache, &spec)?;
        let bad_rev = |e: anyhow::Error| PipelineError::BadInput(format!("{e:#}"));
        if let (Some(rev), Some(dir)) = (&req.rev, &git_dir) {
            tree.base = tree::resolve_rev(dir, rev).map_err(bad_rev)?;
        }
        let range = match (&req.range, &git_dir) {
            (Some(r), Some(dir)) => {
                let good = tree::resolve_rev(dir, &r.good).map_err(bad_rev)?;
                let bad = tree::resolve_rev(dir, &r.bad).map_err(bad_rev)?;
                tree.base = good.clone();
                Some(commit_range(&tree.repo, &good, &bad, r)?)
            }
            _ => None,
        };
        let builder = Builder::new(cache, &tree, &recipe).map_err(|e| match e {
            BuildError::Fragment(f) => PipelineError::BadInput(f.to_string()),
            other => PipelineError::Lab(anyhow::anyhow!("{other}")),
        })?;
        let levels = match (&series, &range) {
            (Some(s), _) => series::apply(&tree, s)?,
            (None, Some(r)) => Levels {
                commits: std::iter::once(r.good.id.clone())
                    .chain(r.commits.iter().map(|c| c.id.clone()))
                    .collect(),
                failure: None,
            },
            (None, None) => Levels {
                commits: vec![tree.base.clone()],
                failure: None,
            },
        };
        Ok(Pipeline {
            tree,
            series,
            levels,
            builder,
            request: req.clone(),
            range,
        })
    }

    /// What a level is called in sentences: "patch" or "commit".
    pub fn unit(&self) -> &'static str {
        if self.range.is_some() {
            "commit"
        } else {
            "patch"
        }
    }

    /// The request that builds exactly this level: `--upto k` of a series,
    /// `--rev <commit>` of a range.
    pub fn level_request(&self, level: usize) -> KernelRequest {
        let mut r = self.request.clone();
        if self.range.is_some() {
            r.range = None;
            r.rev = self.levels.commits.get(level).cloned();
        } else {
            r.upto = Some(level);
        }
        r
    }

    /// The level `lab run` builds: the whole series, or `--upto N`.
    pub fn run_level(&self) -> usize {
        let n = self.patches();
        self.request.upto.map_or(n, |u| u.min(n))
    }

    /// Number of patches in the series, or commits in the range (0 without
    /// either).
    pub fn patches(&self) -> usize {
        if let Some(r) = &self.range {
            return r.commits.len();
        }
        self.series.as_ref().map_or(0, |s| s.patches.len())
    }

    /// "base" or "3/4 fs: subject"; for a range "abc123def456 subject" (the
    /// good end "good abc123def456 subject").
    pub fn level_label(&self, level: usize) -> String {
        if let Some(r) = &self.range {
            return match level {
                0 => format!("good {}", r.good.label()),
                l => r.commits[l - 1].label(),
            };
        }
        match (&self.series, level) {
            (_, 0) | (None, _) => "base".into(),
            (Some(s), l) => s.patches[l - 1].label(),
        }
    }

    /// Short form for progress lines: "base", "3/4".
    pub fn level_short(&self, level: usize) -> String {
        if let Some(c) = self
            .levels
            .commits
            .get(level)
            .filter(|_| self.range.is_some())
        {
            return c[..12.min(c.len())].to_string();
        }
        if level == 0 {
            "base".into()
        } else {
            format!("{level}/{}", self.patches())
        }
    }

    pub fn build_level(&self, level: usize) -> Result<Built, BuildError> {
        let commit = self
            .levels
            .commits
            .get(level)
            .ok_or_else(|| BuildError::Lab(anyhow::anyhow!("level {level} was not applied")))?;
        self.builder.build(commit, &self.level_short(level))
    }

    /// Properties a run report carries about the kernel it ran on.
    pub fn properties(&self, level: usize, built: &Built) -> Vec<(String, String)> {
        let mut v = vec![
            ("kernel.source".into(), self.tree.describe.clone()),
            ("kernel.commit".into(), built.meta.commit.clone()),
            ("kernel.level".into(), self.level_label(level)),
            (
                "kernel.config".into(),
                std::iter::once(built.meta.base.clone())
                    .chain(built.meta.fragments.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" + "),
            ),
            (
                "kernel.build_s".into(),
                format!("{:.1}", built.meta.duration_s),
            ),
            ("kernel.build_cached".into(), built.cached.to_string()),
        ];
        if let Some(p) = &self.request.series {
            v.push(("series".into(), p.display().to_string()));
            v.push(("series.patches".into(), self.patches().to_string()));
        }
        v
    }
}

/// The commits from `good` (exclusive) to `bad`, oldest first, read in the
/// cache repository (which sees the user's objects).
fn commit_range(
    repo: &Path,
    good: &str,
    bad: &str,
    r: &RangeRequest,
) -> Result<CommitRange, PipelineError> {
    let fmt = "--format=%H%x00%P%x00%s";
    let walk = if r.full_history {
        "--topo-order"
    } else {
        "--first-parent"
    };
    let text = tree::git_output(
        repo,
        &["log", "--reverse", walk, fmt, &format!("{good}..{bad}")],
    )?;
    let commits = plan::parse_range(&text, good, bad, !r.full_history)
        .map_err(|e| PipelineError::BadInput(e.to_string()))?;
    let good_line = tree::git_output(repo, &["log", "-1", fmt, good])?;
    let good = plan::parse_commit(good_line.trim_end()).unwrap_or(Commit {
        id: good.to_string(),
        parents: vec![],
        subject: String::new(),
    });
    Ok(CommitRange {
        good,
        commits,
        first_parent: !r.full_history,
    })
}

/// Keeps a build's log and config with the results that used it.
pub fn keep_build_files(built: &Built, dir: &Path) {
    let _ = std::fs::create_dir_all(dir);
    for (from, to) in [
        (built.artifact.join("build.log"), "build.log"),
        (built.artifact.join("config"), "config"),
        (built.artifact.join("meta.json"), "build.json"),
        (
            built.artifact.join(build::BASE_CHANGES),
            build::BASE_CHANGES,
        ),
    ] {
        let _ = std::fs::copy(from, dir.join(to));
    }
}

/// One line about a build for the terminal.
pub fn describe_build(label: &str, b: &Built) -> String {
    if b.cached {
        format!(
            "lab: kernel {label}: {} (cached build, {})",
            b.meta.release,
            b.artifact.display()
        )
    } else {
        format!(
            "lab: kernel {label}: {} built in {:.0} s ({} steps{})",
            b.meta.release,
            b.meta.duration_s,
            b.meta.steps,
            b.meta
                .seeded_from
                .as_ref()
                .map(|c| format!(", incremental from {}", &c[..12.min(c.len())]))
                .unwrap_or_default()
        )
    }
}
