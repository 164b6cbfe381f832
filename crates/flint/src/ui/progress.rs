//! The console progress bar, after Spark's `ConsoleProgressBar`: when stderr is a TTY
//! (and `ui.show_console_progress` is on), every 200 ms the running stages that have
//! run for over 500 ms are drawn as `[Stage 0:====>      (12 + 2) / 32]` — complete +
//! active / total — through `indicatif`; a stage's bar goes when it ends. Nothing is
//! drawn when stderr is not a terminal.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::status::Status;
use super::{wall_ms, Shared};

/// How often the bars are redrawn.
const REFRESH: Duration = Duration::from_millis(200);
/// A stage shows once it has run this long (ms), as Spark's does.
const FIRST_DELAY_MS: u64 = 500;

/// The running bar thread; stops (clearing its bars) on drop.
pub(crate) struct Progress {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts the bar when stderr is a terminal; `None` otherwise.
    pub fn start(status: Shared) -> Option<Progress> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("flint-progress".into())
            .spawn(move || {
                let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template("[Stage {prefix}:{bar:40} {msg}]")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                let mut bars: HashMap<u64, ProgressBar> = HashMap::new();
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(REFRESH) {
                    let now = wall_ms();
                    let Ok(s) = status.lock() else { break };
                    let mut live = Vec::new();
                    for st in s.stages() {
                        let shown = st.status == Status::Running
                            && st
                                .submission_time
                                .is_some_and(|t| now.saturating_sub(t) >= FIRST_DELAY_MS);
                        if !shown {
                            continue;
                        }
                        live.push(st.stage_id);
                        let pos = u64::from(st.num_complete_tasks.min(st.num_tasks));
                        // The counts are one message, so a frame drawn between two
                        // updates never pairs a new "complete" with an old "active".
                        let counts =
                            format!("({} + {}) / {}", pos, st.num_active_tasks, st.num_tasks);
                        let bar = bars.entry(st.stage_id).or_insert_with(|| {
                            // Filled in before it is added (and first drawn).
                            let b = ProgressBar::with_draw_target(
                                Some(u64::from(st.num_tasks)),
                                ProgressDrawTarget::hidden(),
                            );
                            b.set_style(style.clone());
                            b.set_prefix(st.stage_id.to_string());
                            b.set_message(counts.clone());
                            b.set_position(pos);
                            multi.add(b)
                        });
                        bar.set_message(counts);
                        bar.set_position(pos);
                    }
                    drop(s);
                    bars.retain(|id, b| {
                        let keep = live.contains(id);
                        if !keep {
                            b.finish_and_clear();
                            multi.remove(b);
                        }
                        keep
                    });
                }
                for b in bars.values() {
                    b.finish_and_clear();
                }
            })
            .ok()?;
        Some(Progress {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
