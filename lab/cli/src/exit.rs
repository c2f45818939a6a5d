//! `lab`'s exit codes, and the one place that maps an error to one.
//!
//! Scripts and CI rely on the codes (README, "Commands"): 0 passed, 1 a test
//! failed, 2 bad input, 3 the lab could not run, 130 interrupted. A command
//! returns `Ok(Exit)` for a verdict it reached (passed, failed) and
//! `Err(CmdError)` when it could not reach one; [`CmdError::exit`] says
//! which code that is, so no command picks a number for an error itself.

use lab_core::report::RunReport;

/// What `lab` exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything ran and passed (or the command had nothing to judge).
    Passed,
    /// A test ran and failed: the kernel (or the series) is at fault.
    Failed,
    /// What the user typed or wrote is wrong (a flag, a path, a testcase
    /// file, a series that does not apply to its base).
    BadInput,
    /// The lab could not run (a missing tool, QEMU, a boot that failed
    /// twice for no fault of the kernel).
    LabError,
    /// Ctrl-C or SIGTERM: VMs were stopped, partial results written.
    Interrupted,
    /// `lab boot -- CMD` and the shell: the guest command's own status.
    Command(u8),
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Passed => 0,
            Exit::Failed => 1,
            Exit::BadInput => 2,
            Exit::LabError => 3,
            Exit::Interrupted => 130,
            Exit::Command(c) => c,
        }
    }

    /// A run's exit: lab errors before failures before passes.
    pub fn of_report(report: &RunReport) -> Exit {
        let c = report.counts();
        if c.errors > 0 {
            Exit::LabError
        } else if c.failed > 0 {
            Exit::Failed
        } else {
            Exit::Passed
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// Why a command could not reach a verdict.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The user's input is wrong; the message names the flag, file or field.
    #[error("{0}")]
    BadInput(String),
    /// Several invalid inputs, each already a full message (testcase files
    /// with file:line:column), and what that means for the command.
    #[error("{}\n{summary}", errors.join("\n"))]
    BadInputs {
        errors: Vec<String>,
        summary: String,
    },
    /// The lab could not do its part.
    #[error(transparent)]
    Lab(#[from] anyhow::Error),
    #[error("interrupted")]
    Interrupted,
}

impl CmdError {
    pub fn bad_input(message: impl Into<String>) -> CmdError {
        CmdError::BadInput(message.into())
    }

    pub fn exit(&self) -> Exit {
        match self {
            CmdError::BadInput(_) | CmdError::BadInputs { .. } => Exit::BadInput,
            CmdError::Lab(_) => Exit::LabError,
            CmdError::Interrupted => Exit::Interrupted,
        }
    }
}

/// Prints the error of a command (if any) and returns the exit code;
/// an interrupted process exits 130 whatever the command returned.
pub fn finish(result: Result<Exit, CmdError>, interrupted: bool) -> Exit {
    let exit = match result {
        Ok(exit) => exit,
        Err(e) => {
            match &e {
                CmdError::BadInputs { errors, summary } => {
                    for m in errors {
                        eprintln!("error: {m}");
                    }
                    eprintln!("lab: {summary}");
                }
                CmdError::Interrupted => {}
                CmdError::Lab(inner) => eprintln!("lab: error: {inner:#}"),
                CmdError::BadInput(m) => eprintln!("lab: error: {m}"),
            }
            e.exit()
        }
    };
    if interrupted {
        Exit::Interrupted
    } else {
        exit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        let all = [
            (Exit::Passed, 0),
            (Exit::Failed, 1),
            (Exit::BadInput, 2),
            (Exit::LabError, 3),
            (Exit::Interrupted, 130),
        ];
        for (e, code) in all {
            assert_eq!(e.code(), code, "{e:?}");
        }
    }

    #[test]
    fn errors_map_by_whose_fault_they_are() {
        assert_eq!(CmdError::bad_input("--x").exit(), Exit::BadInput);
        assert_eq!(
            CmdError::from(anyhow::anyhow!("no QEMU")).exit(),
            Exit::LabError
        );
        assert_eq!(CmdError::Interrupted.exit(), Exit::Interrupted);
        assert_eq!(finish(Ok(Exit::Passed), true), Exit::Interrupted);
        assert_eq!(
            finish(Err(CmdError::bad_input("--kernel x: no such file")), false),
            Exit::BadInput
        );
    }
}
