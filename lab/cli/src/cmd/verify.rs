//! `lab verify STATE`: judges a kept crash state again (a directory a
//! failing power-cut run printed): rebuild it, mount, scan, xfs_repair -n,
//! model.

use std::path::PathBuf;

use crate::cmd::args::KernelArgs;
use crate::exit::{CmdError, Exit};
use crate::powercut::kept;

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub k: KernelArgs,
    /// results/<run>/<testcase>/crash/state-N
    pub state: PathBuf,
}

pub fn run(args: VerifyArgs) -> Result<Exit, CmdError> {
    if !args.state.join("case.json").is_file() {
        return Err(CmdError::bad_input(format!(
            "{}: not a kept crash state (expected results/<run>/<testcase>/crash/state-N with case.json)",
            args.state.display()
        )));
    }
    let host = args.k.host()?;
    Ok(if kept::verify_kept(&host, &args.state)? {
        Exit::Passed
    } else {
        Exit::Failed
    })
}
