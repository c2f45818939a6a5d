//! The kernel pipeline behind `--kernel-tree`, `--series` and `--kconfig`:
//! a source tree, a series applied to it as one commit per patch, and a
//! builder for any of those levels. Shared by `lab run` and `lab bisect`.

use std::path::{Path, PathBuf};

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
        let tree = tree::prepare(cache, &spec)?;
        let builder = Builder::new(cache, &tree, &recipe).map_err(|e| match e {
            BuildError::Fragment(f) => PipelineError::BadInput(f.to_string()),
            other => PipelineError::Lab(anyhow::anyhow!("{other}")),
        })?;
        let levels = match &series {
            Some(s) => series::apply(&tree, s)?,
            None => Levels {
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
        })
    }

    /// The level `lab run` builds: the whole series, or `--upto N`.
    pub fn run_level(&self) -> usize {
        let n = self.patches();
        self.request.upto.map_or(n, |u| u.min(n))
    }

    /// Number of patches in the series (0 without one).
    pub fn patches(&self) -> usize {
        self.series.as_ref().map_or(0, |s| s.patches.len())
    }

    /// "base" or "3/4 fs: subject".
    pub fn level_label(&self, level: usize) -> String {
        match (&self.series, level) {
            (_, 0) | (None, _) => "base".into(),
            (Some(s), l) => s.patches[l - 1].label(),
        }
    }

    /// Short form for progress lines: "base", "3/4".
    pub fn level_short(&self, level: usize) -> String {
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
