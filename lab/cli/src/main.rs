//! `lab`: the atomic-write lab's command line. Parsing and the commands
//! live in `lab_cli::cmd`, exit codes in `lab_cli::exit`.

use std::process::ExitCode;

use clap::Parser;
use lab_cli::cmd::Cli;
use lab_cli::exit;
use lab_cli::proc::reaper;

#[global_allocator]
static HEAP: lab_cli::bench::heap::Counting = lab_cli::bench::heap::Counting;

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    reaper::install_signal_handler();
    // What a `lab` killed with SIGKILL left: its QEMU died with it
    // (PR_SET_PDEATHSIG), its private directories did not.
    lab_cli::paths::remove_stale_private_dirs();
    let convention = cli.command.convention();
    let result = cli.command.run();
    let exit = exit::finish(result, reaper::interrupted());
    let code = exit.code_in(convention);
    if convention == exit::Convention::GitBisect {
        eprintln!(
            "lab: --bisect-exit: exit {code} ({})",
            exit.git_bisect_word()
        );
    }
    ExitCode::from(code)
}
