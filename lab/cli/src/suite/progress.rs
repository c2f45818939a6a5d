//! What a run shows while it runs: one progress line per job (indicatif,
//! on a terminal only), and each finished testcase's block printed above
//! them in one piece.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The progress lines of a run's jobs.
pub struct Bars {
    multi: MultiProgress,
    bars: Vec<ProgressBar>,
    terminal: bool,
}

impl Bars {
    pub fn new(jobs: usize) -> Bars {
        let terminal = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let style = ProgressStyle::with_template("{spinner} [{prefix}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bars = (0..jobs)
            .map(|j| {
                let pb = multi.add(ProgressBar::new_spinner());
                pb.set_style(style.clone());
                pb.set_prefix(format!("vm {}", j + 1));
                if terminal {
                    pb.enable_steady_tick(Duration::from_millis(120));
                }
                pb
            })
            .collect();
        Bars {
            multi,
            bars,
            terminal,
        }
    }

    /// Job `j`'s line. Off a terminal the line is hidden and what would be
    /// its first message of a testcase goes to stderr as a plain line.
    pub fn worker(&self, j: usize) -> Line {
        Line {
            pb: self.bars[j].clone(),
            terminal: self.terminal,
        }
    }

    /// Prints a finished testcase's block on stdout above the progress
    /// lines, in one write.
    pub fn print(&self, text: &str) {
        let write = || {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        };
        if self.terminal {
            self.multi.suspend(write);
        } else {
            write();
        }
    }

    pub fn finish(&self, j: usize) {
        self.bars[j].finish_and_clear();
    }
}

/// One job's progress line.
#[derive(Clone)]
pub struct Line {
    pb: ProgressBar,
    terminal: bool,
}

impl Line {
    /// A testcase starts on this job: shown on the line, or, off a
    /// terminal, printed on stderr.
    pub fn start(&self, msg: String) {
        if !self.terminal {
            eprintln!("{msg}");
        }
        self.pb.set_message(msg);
    }

    pub fn clear(&self) {
        self.pb.set_message(String::new());
    }

    pub fn bar(&self) -> &ProgressBar {
        &self.pb
    }
}
