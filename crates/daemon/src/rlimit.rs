//! The open-file limit. Every connection, listener, child pipe and log file
//! is a descriptor, and the soft `RLIMIT_NOFILE` most shells start with
//! (1024, sometimes 256) is far below the hard limit. A daemon raises its soft
//! limit to the hard one at start-up ([`raise_nofile_limit_once`], called by
//! [`bind`](crate::bind())), logs the outcome, and its children inherit the
//! raised limit. Capping connections ([`http`](crate::http)) keeps what remains
//! in reserve for executor launches and files.

use std::sync::OnceLock;

/// A daemon below this many descriptors after raising warns: a few hundred
/// connections or executors would exhaust it.
pub const LOW_NOFILE: u64 = 1024;

/// The open-file limit before and after raising it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit (the most the soft limit can be raised to).
    pub hard: u64,
}

/// The current `(soft, hard)` open-file limits.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
pub fn nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// Sets the open-file limits. It only calls `setrlimit` and reads `errno`,
/// so it may also run between `fork` and `exec` (a child's `pre_exec`).
#[allow(clippy::unnecessary_cast)]
pub fn set_nofile_limit(soft: u64, hard: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads one rlimit from the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard limit (when the hard limit is
/// unlimited, to the kernel's `fs.nr_open`, the most a process may have).
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile_limit() -> std::io::Result<NofileLimit> {
    let (before, hard) = nofile_limit()?;
    let mut target = hard;
    if hard == libc::RLIM_INFINITY as u64 {
        target = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20);
    }
    if target > before {
        set_nofile_limit(target, hard)?;
    }
    let (soft, hard) = nofile_limit()?;
    Ok(NofileLimit { before, soft, hard })
}

/// [`raise_nofile_limit`] once per process (daemons embedded in one process
/// share the limit), logging what happened; the outcome, or `None` when the
/// limit could not be read or raised.
pub fn raise_nofile_limit_once() -> Option<NofileLimit> {
    static DONE: OnceLock<Option<NofileLimit>> = OnceLock::new();
    *DONE.get_or_init(|| match raise_nofile_limit() {
        Ok(l) => {
            if l.soft > l.before {
                tracing::info!(
                    "open-file limit (RLIMIT_NOFILE) raised from {} to {} (the hard limit)",
                    l.before,
                    l.soft
                );
            } else {
                tracing::debug!(
                    "open-file limit (RLIMIT_NOFILE) is {} (hard {})",
                    l.soft,
                    l.hard
                );
            }
            if l.soft < LOW_NOFILE {
                tracing::warn!(
                    "open-file limit (RLIMIT_NOFILE) is only {} (hard limit {}): connections, \
                     executors and their files compete for descriptors; raise the hard limit \
                     (ulimit -Hn, LimitNOFILE= in a systemd unit, /etc/security/limits.conf)",
                    l.soft,
                    l.hard
                );
            }
            Some(l)
        }
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit (RLIMIT_NOFILE): {e}");
            None
        }
    })
}
