//! What `/proc` says about a process: CPU time, resident memory, threads and
//! open files. Linux only, as the benchmarks are.

use std::fs;

/// A process's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcSample {
    /// User plus system CPU time, in clock ticks (`/proc/<pid>/stat` fields
    /// 14 and 15).
    pub cpu_ticks: u64,
    /// Resident memory now (`VmRSS`), in KiB.
    pub rss_kib: u64,
    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub hwm_kib: u64,
    /// Threads (`Threads`).
    pub threads: u64,
    /// Private data and heap mappings, resident or not (`VmData`), in KiB.
    pub data_kib: u64,
}

/// Clock ticks per second, for turning [`ProcSample::cpu_ticks`] into
/// seconds.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a constant of the C library; it takes no
    // pointers and has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(100)
}

/// Reads `pid`'s counters; `None` when the process is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces; fields after
    // it start at field 3 (state), so utime (14) and stime (15) are the
    // 12th and 13th after the parenthesis.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_ticks: utime + stime,
        rss_kib: status_field(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: status_field(&status, "VmHWM:").unwrap_or(0),
        threads: status_field(&status, "Threads:").unwrap_or(0),
        data_kib: status_field(&status, "VmData:").unwrap_or(0),
    })
}

/// How many file descriptors `pid` has open; `None` when unreadable.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The number after `key` in a `/proc/<pid>/status` text (`VmRSS:  7724 kB`).
fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A counter of the kernel's `TcpExt` statistics (`/proc/net/netstat`,
/// e.g. `ListenOverflows`, `TCPSynRetrans`) for this network namespace:
/// machine-wide, not per process. `None` when unreadable.
pub fn tcp_ext_counter(name: &str) -> Option<u64> {
    let text = fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines();
    while let (Some(head), Some(values)) = (lines.next(), lines.next()) {
        if !head.starts_with("TcpExt:") {
            continue;
        }
        let i = head.split_whitespace().position(|h| h == name)?;
        return values.split_whitespace().nth(i)?.parse().ok();
    }
    None
}

/// Raises this process's soft limit on open files to its hard limit, so
/// thousands of connections fit (children inherit it). Returns the new
/// `(soft, hard)` limits.
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the hard
    // limit needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib && s.threads >= 1);
        assert!(open_fds(std::process::id()).expect("own fds") >= 3);
        assert!(clock_ticks_per_second() >= 1);
        assert!(tcp_ext_counter("ListenOverflows").is_some());
        assert!(tcp_ext_counter("NoSuchCounter").is_none());
    }

    #[test]
    fn parses_status_fields() {
        let text = "Name:\tx\nVmHWM:\t  900 kB\nVmRSS:\t  812 kB\nThreads:\t3\n";
        assert_eq!(status_field(text, "VmRSS:"), Some(812));
        assert_eq!(status_field(text, "VmHWM:"), Some(900));
        assert_eq!(status_field(text, "Threads:"), Some(3));
        assert_eq!(status_field(text, "VmSwap:"), None);
    }
}
