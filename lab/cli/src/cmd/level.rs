//! The kernel a command builds from `--series`/`--kernel-tree`/`--kconfig`/
//! `--upto`: the pipeline prepared (a series that does not apply up to the
//! level is bad input) and one level built, with what happened printed.
//! `lab run` and `lab build` share it.

use std::path::Path;

use crate::exit::CmdError;
use crate::kernel::build::{BuildError, Built};
use crate::kernel::pipeline::{self, KernelRequest, Pipeline, PipelineError};
use crate::paths;

/// The pipeline for `req` and the level to run: the whole series, or
/// `--upto`. A patch at or below that level that does not apply is the
/// user's input at fault.
pub fn prepare(root: &Path, req: &KernelRequest) -> Result<(Pipeline, usize), CmdError> {
    let cache = paths::cache_dir();
    let pipe = Pipeline::prepare(root, &cache, req).map_err(|e| match e {
        PipelineError::BadInput(m) => CmdError::BadInput(m),
        PipelineError::Lab(e) => CmdError::Lab(e),
    })?;
    let level = pipe.run_level();
    if let Some(f) = &pipe.levels.failure {
        if f.patch <= level {
            return Err(CmdError::BadInput(format!(
                "{f}\nlab: base: {}",
                pipe.tree.describe
            )));
        }
    }
    Ok((pipe, level))
}

/// Why a level did not build.
pub enum LevelFailure {
    /// The series does not compile: the series' failure, recorded as a
    /// failed `kernel-build` check.
    Compile(String),
    /// Anything else ends the command.
    Error(CmdError),
}

/// Builds a level, printing what happened.
pub fn build(pipe: &Pipeline, level: usize) -> Result<Built, LevelFailure> {
    match pipe.build_level(level) {
        Ok(b) => {
            eprintln!("{}", pipeline::describe_build(&pipe.level_short(level), &b));
            Ok(b)
        }
        Err(e @ BuildError::Compile { .. }) => {
            eprintln!("lab: kernel {}: {e}", pipe.level_label(level));
            Err(LevelFailure::Compile(e.to_string()))
        }
        Err(e) => Err(LevelFailure::Error(build_error(e))),
    }
}

/// How a build's error ends a command: a request Kconfig dropped or a bad
/// fragment is the user's input; anything else the lab's.
pub fn build_error(e: BuildError) -> CmdError {
    match e {
        e @ (BuildError::Dropped { .. } | BuildError::Fragment(_)) => {
            CmdError::BadInput(e.to_string())
        }
        BuildError::Interrupted => CmdError::Interrupted,
        e => CmdError::Lab(e.into()),
    }
}
