//! SIGINT and SIGTERM in a driver (any master, `local[N]` too): once per process a
//! thread waits for them and calls the context's handler, which cancels the running
//! jobs and ends the applications KILLED; then the process exits with the
//! conventional status (130 for SIGINT, 143 for SIGTERM). A second signal while the
//! first is handled exits at once.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

/// The signal being handled (0: none yet).
static RECEIVED: AtomicI32 = AtomicI32::new(0);
static INSTALLED: OnceLock<()> = OnceLock::new();

/// SIGINT's number.
pub(crate) const SIGINT: i32 = 2;
/// SIGTERM's number.
pub(crate) const SIGTERM: i32 = 15;

/// The signal that interrupted this process, if one did.
pub(crate) fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Called where a program's thread lets go of a context: once a signal is being
/// handled, a program thread (not one of flint's own) waits here for the signal
/// thread to end the process, so a `main` that returns after its cancelled job
/// cannot exit 0 in the middle of the clean-up. Bounded: after 30 s it returns.
pub(crate) fn hold_if_interrupted() {
    if received().is_none() {
        return;
    }
    let ours = std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("flint-"));
    if ours {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The signal's name for messages.
pub(crate) fn name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// Starts the signal thread unless it runs already. `handle(sig)` runs on it for
/// the first signal; the process exits with `128 + sig` when it returns.
pub(crate) fn install(handle: fn(i32)) {
    INSTALLED.get_or_init(|| {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!("cannot watch for SIGINT/SIGTERM ({e}); an interrupted driver leaves its application to the master's disconnect handling");
                return;
            }
        };
        use tokio::signal::unix::{signal, SignalKind};
        let streams = rt.block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        });
        let (mut int, mut term) = match streams {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot watch for SIGINT/SIGTERM ({e}); an interrupted driver leaves its application to the master's disconnect handling");
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("flint-signals".into())
            .spawn(move || loop {
                let sig = rt.block_on(async {
                    tokio::select! {
                        _ = int.recv() => SIGINT,
                        _ = term.recv() => SIGTERM,
                    }
                });
                if RECEIVED
                    .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    // A second signal: do not wait for the first one's clean-up.
                    std::process::exit(128 + sig);
                }
                // The clean-up runs on its own thread, so a second signal is heard.
                let cleanup = std::thread::Builder::new()
                    .name("flint-signal-stop".into())
                    .spawn(move || {
                        handle(sig);
                        std::process::exit(128 + sig);
                    });
                if cleanup.is_err() {
                    handle(sig);
                    std::process::exit(128 + sig);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the signal thread: {e}");
        }
    });
}
