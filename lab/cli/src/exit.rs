//! `lab`'s exit codes, and the one place that maps an error to one.
//!
//! Scripts and CI rely on the codes (README, "Commands"): 0 passed, 1 a test
//! failed, 2 bad input, 3 the lab could not run, 130 interrupted. A command
//! returns `Ok(Exit)` for a verdict it reached (passed, failed) and
//! `Err(CmdError)` when it could not reach one; [`CmdError::exit`] says
//! which code that is, so no command picks a number for an error itself.
//!
//! `lab run --bisect-exit` reads the same exits in `git bisect run`'s
//! convention instead ([`Convention::GitBisect`]): 0 good, 1 bad, 125 this
//! revision cannot be tested (its kernel does not build, the lab could not
//! run), 128 bad input and 130 interrupted (both stop git's bisection).

use lab_core::bisect::{git_bisect_status, RunEnd};
use lab_core::report::RunReport;

/// Which numbers the exits are written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    /// README's: 0 passed, 1 failed, 2 bad input, 3 lab error, 130.
    Lab,
    /// `git bisect run`'s (`lab run --bisect-exit`).
    GitBisect,
}

/// What `lab` exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything ran and passed (or the command had nothing to judge).
    Passed,
    /// A test ran and failed: the kernel (or the series) is at fault.
    Failed,
    /// The kernel to test does not build. The series' fault for `lab run`
    /// (1, as a failed `kernel-build` check), but under `git bisect run`
    /// a revision that cannot be tested (125), not a bad one.
    Untestable,
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
            Exit::Failed | Exit::Untestable => 1,
            Exit::BadInput => 2,
            Exit::LabError => 3,
            Exit::Interrupted => 130,
            Exit::Command(c) => c,
        }
    }

    /// The code in a convention: git's reads what the lab could not do
    /// (build the revision, boot it twice) as "skip", never as "bad" or as
    /// a reason to abort the bisection.
    pub fn code_in(self, convention: Convention) -> u8 {
        match convention {
            Convention::Lab => self.code(),
            Convention::GitBisect => git_bisect_status(self.run_end()),
        }
    }

    fn run_end(self) -> RunEnd {
        match self {
            Exit::Passed | Exit::Command(0) => RunEnd::Passed,
            Exit::Failed | Exit::Command(_) => RunEnd::Failed,
            Exit::Untestable | Exit::LabError => RunEnd::Untestable,
            Exit::BadInput => RunEnd::BadInput,
            Exit::Interrupted => RunEnd::Interrupted,
        }
    }

    /// What `git bisect run` will make of the code, for the log.
    pub fn git_bisect_word(self) -> &'static str {
        match self.run_end() {
            RunEnd::Passed => "good",
            RunEnd::Failed => "bad",
            RunEnd::Untestable => "skip: this revision cannot be tested",
            RunEnd::BadInput => "abort the bisection: the command is wrong at every revision",
            RunEnd::Interrupted => "abort the bisection: interrupted",
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
    fn git_bisect_run_skips_what_the_lab_could_not_test_and_never_aborts_for_it() {
        use lab_core::bisect::GitBisectVerdict as G;
        let git = |e: Exit| G::of_status(i32::from(e.code_in(Convention::GitBisect)));
        assert_eq!(git(Exit::Passed), G::Good);
        assert_eq!(git(Exit::Failed), G::Bad);
        assert_eq!(git(Exit::Untestable), G::Skip);
        assert_eq!(git(Exit::LabError), G::Skip);
        assert_eq!(Exit::Untestable.code_in(Convention::GitBisect), 125);
        assert_eq!(git(Exit::BadInput), G::Abort);
        assert_eq!(git(Exit::Interrupted), G::Abort);
        // The lab's own convention is unchanged: a build failure is a failure.
        assert_eq!(Exit::Untestable.code_in(Convention::Lab), 1);
        assert_eq!(
            finish(Err(CmdError::from(anyhow::anyhow!("no QEMU"))), false)
                .code_in(Convention::GitBisect),
            125
        );
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
