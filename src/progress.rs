//! Progress for long command-line work (`vault rotate`, `policy diff`): a bar on a terminal,
//! nothing at all when stderr is a pipe or a file (CI logs, scripts).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A counted task's progress, drawn on stderr only when it is a terminal.
pub struct Progress(ProgressBar);

impl Progress {
    /// `len` steps of `what` (e.g. "re-sealing vault entries").
    pub fn new(len: u64, what: &str) -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        Self(bar)
    }

    /// Progress nobody sees (library callers that report nothing).
    pub fn hidden() -> Self {
        Self(ProgressBar::hidden())
    }

    /// One step done.
    pub fn step(&self) {
        self.0.inc(1);
    }

    /// All done: the final count stays on the terminal.
    pub fn finish(&self) {
        self.0.finish();
    }
}
