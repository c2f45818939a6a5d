//! Child processes: the one way the lab runs an external command and fails
//! with what it said ([`run`], [`run_with_input`]), and the reaper that no
//! child outlives the lab (`reaper`).

pub mod reaper;

use std::io::Write;
use std::process::{Command, ExitStatus, Output, Stdio};

/// How many lines of a failed command's stderr its error keeps.
const STDERR_TAIL_LINES: usize = 20;

/// An external command that could not run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{command} could not be started ({source}; is it installed? scripts/setup.sh installs what the lab needs)")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}){}", if stderr_tail.is_empty() { String::new() } else { format!(":\n{stderr_tail}") })]
    Failed {
        command: String,
        status: ExitStatus,
        /// The last lines of what it wrote to stderr.
        stderr_tail: String,
        /// Everything it wrote, for callers that keep a log.
        output: Output,
    },
}

/// `program arg...` as a person would type it (for messages).
fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn tail(text: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(text);
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn checked(cmd: &Command, output: Output) -> Result<Output, CommandError> {
    if output.status.success() {
        return Ok(output);
    }
    Err(CommandError::Failed {
        command: describe(cmd),
        status: output.status,
        stderr_tail: tail(&output.stderr, STDERR_TAIL_LINES),
        output,
    })
}

/// Runs `cmd` with stdin from /dev/null, capturing stdout and stderr; its
/// output if it exits 0, else an error with the tail of its stderr.
pub fn run(cmd: &mut Command) -> Result<Output, CommandError> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CommandError::Spawn {
            command: describe(cmd),
            source,
        })?;
    checked(cmd, output)
}

/// [`run`], with `input` written to the command's stdin (from a thread, so
/// a command that writes before it has read everything cannot deadlock).
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Result<Output, CommandError> {
    let command = describe(cmd);
    let spawn_error = |source| CommandError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let output = child.wait_with_output().map_err(spawn_error)?;
    let _ = writer.join();
    checked(cmd, output)
}

/// [`run`], returning stdout as text, trimmed.
pub fn stdout(cmd: &mut Command) -> Result<String, CommandError> {
    let out = run(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_command_its_status_and_the_tail_of_its_stderr() {
        let err = run(Command::new("sh").args([
            "-c",
            "for i in $(seq 1 30); do echo line$i >&2; done; exit 3",
        ]))
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("sh -c for i in"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.contains("line30") && text.contains("line11"), "{text}");
        assert!(!text.contains("line10\n"), "{text}");
    }

    #[test]
    fn a_missing_program_says_so() {
        let err = run(&mut Command::new("lab-no-such-program")).unwrap_err();
        assert!(matches!(err, CommandError::Spawn { .. }));
        assert!(err.to_string().contains("is it installed?"), "{err}");
    }

    #[test]
    fn input_goes_to_stdin_and_stdout_comes_back() {
        let out = run_with_input(&mut Command::new("cat"), b"hello").unwrap();
        assert_eq!(out.stdout, b"hello");
        assert_eq!(stdout(Command::new("echo").arg(" hi ")).unwrap(), "hi");
    }
}
