//! `lab build`: build a kernel the way `lab run --series` does and write a
//! self-contained kernel directory another machine can boot with `lab run
//! --kernel DIR` (a CI build job feeding test shards): `vmlinuz`, `release`,
//! `config`, `build.log` and `build.json` (source, series, level, config
//! fragments, compiler, build time). Runs on it report `build.json`'s
//! properties, so every result names the artifact it ran.

use std::path::{Path, PathBuf};

use crate::cmd::args::BuildArgs;
use crate::cmd::level::{self, LevelFailure};
use crate::exit::{CmdError, Exit};
use crate::kernel::build::{BuildError, Built, BASE_CHANGES};
use crate::kernel::pipeline::Pipeline;
use crate::paths;
use crate::vm::kernel::BUILD_JSON;

#[derive(clap::Args)]
pub struct BuildCmdArgs {
    #[command(flatten)]
    pub b: BuildArgs,
    /// The kernel directory to write (created; its files are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Configure only: write `config` (and, with `--kconfig distro`,
    /// `base-changes.txt`) to the directory without building, to read a
    /// config before paying for its build.
    #[arg(long)]
    pub config_only: bool,
}

pub fn run(args: BuildCmdArgs) -> Result<Exit, CmdError> {
    let root = paths::repo_root()?;
    let req = args.b.request(&root);
    let (pipe, level) = level::prepare(&root, &req)?;
    if args.config_only {
        return configure_only(&pipe, level, &args.out);
    }
    let built = match level::build(&pipe, level) {
        Ok(b) => b,
        // The series does not compile: its failure, printed with the log's tail.
        Err(LevelFailure::Compile(_)) => return Ok(Exit::Failed),
        Err(LevelFailure::Error(e)) => return Err(e),
    };
    write_kernel_dir(&pipe, level, &built, &args.out)
        .map_err(|e| CmdError::Lab(e.context(format!("writing {}", args.out.display()))))?;
    println!(
        "kernel: {} ({})",
        args.out.display(),
        pipe.level_label(level)
    );
    println!("run it: lab run --kernel {}", args.out.display());
    Ok(Exit::Passed)
}

fn configure_only(pipe: &Pipeline, level: usize, out: &Path) -> Result<Exit, CmdError> {
    let commit = pipe
        .levels
        .commits
        .get(level)
        .ok_or_else(|| CmdError::Lab(anyhow::anyhow!("level {level} was not applied")))?;
    match pipe.builder.configure_only(commit, out) {
        Ok(()) => {
            println!(
                "config: {} ({}, not built)",
                out.join("config").display(),
                pipe.level_label(level)
            );
            Ok(Exit::Passed)
        }
        // The tree's Kconfig did not take it: the tree's failure, as a
        // build that does not compile is.
        Err(e @ BuildError::Compile { .. }) => {
            eprintln!("lab: kernel {}: {e}", pipe.level_label(level));
            Ok(Exit::Failed)
        }
        Err(e) => Err(level::build_error(e)),
    }
}

fn write_kernel_dir(
    pipe: &Pipeline,
    level: usize,
    built: &Built,
    out: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::copy(&built.kernel.vmlinuz, out.join("vmlinuz"))?;
    std::fs::write(out.join("release"), format!("{}\n", built.kernel.release))?;
    for (from, to) in [
        ("config", "config"),
        ("build.log", "build.log"),
        (BASE_CHANGES, BASE_CHANGES),
    ] {
        let src = built.artifact.join(from);
        if src.exists() {
            std::fs::copy(src, out.join(to))?;
        }
    }
    let artifact = built
        .artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut properties = serde_json::Map::new();
    properties.insert("kernel.artifact".into(), artifact.clone().into());
    for (k, v) in pipe.properties(level, built) {
        // A cache hit here says nothing about the machine that runs it.
        if k != "kernel.build_cached" {
            properties.insert(k, v.into());
        }
    }
    let json = serde_json::json!({
        "artifact": artifact,
        "release": built.kernel.release,
        "source": pipe.tree.describe,
        "series": req_series(pipe),
        "level": pipe.level_label(level),
        "level_index": level,
        "base": built.meta.base,
        "fragments": built.meta.fragments,
        "compiler": built.meta.compiler,
        "commit": built.meta.commit,
        "build_s": built.meta.duration_s,
        "kbuild_steps": built.meta.steps,
        "properties": properties,
    });
    std::fs::write(out.join(BUILD_JSON), serde_json::to_string_pretty(&json)?)?;
    Ok(())
}

fn req_series(pipe: &Pipeline) -> Option<String> {
    pipe.request
        .series
        .as_ref()
        .map(|p| p.display().to_string())
}
