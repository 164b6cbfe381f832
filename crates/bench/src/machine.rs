//! What the report says about where it ran: cores, CPU, kernel, compiler, build
//! profile and the load average (to tell a quiet machine from a busy one).

use serde::Serialize;

/// The machine and build a report came from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores available to this process.
    pub nproc: usize,
    /// `model name` from `/proc/cpuinfo`, if readable.
    pub cpu_model: Option<String>,
    /// Kernel release, if readable.
    pub kernel: Option<String>,
    /// The compiler that built this binary (`rustc --version`), if known.
    pub rustc: Option<String>,
    /// The cpuidle driver and governor (`haltpoll/haltpoll` on this kind of VM), if
    /// readable: they decide how long an idle CPU takes to wake up.
    pub cpuidle: Option<String>,
    /// `release` or `debug`: figures from a debug build mean little.
    pub profile: &'static str,
    /// 1-, 5- and 15-minute load averages when the run started.
    pub loadavg_start: Option<[f64; 3]>,
    /// The same when the run ended (filled in by [`Machine::finish`]).
    pub loadavg_end: Option<[f64; 3]>,
    /// CPU seconds this process and its waited-for children (the server process) used
    /// during the run (filled in by [`Machine::finish`]).
    pub own_cpu_seconds: Option<f64>,
    /// CPU seconds every other process on the machine used during the run: near zero
    /// means the figures were taken on an otherwise quiet machine.
    pub other_cpu_seconds: Option<f64>,
    #[serde(skip)]
    start: Option<CpuTicks>,
}

/// Clock ticks of CPU time: busy on the whole machine, and used by this process tree.
#[derive(Debug, Clone, Copy)]
struct CpuTicks {
    busy: u64,
    own: u64,
}

impl CpuTicks {
    fn now() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| cpu.get(i)).sum();
        let me = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields: Vec<u64> = me
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // utime stime cutime cstime are fields 14-17, i.e. 11-14 after the `)`.
        let own = fields.get(11..15)?.iter().sum();
        Some(CpuTicks { busy, own })
    }
}

/// Clock ticks per second of `/proc` times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

impl Machine {
    /// Describes this machine now.
    pub fn probe() -> Machine {
        Machine {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model: std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            }),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            cpuidle: read_trimmed("/sys/devices/system/cpu/cpuidle/current_driver").map(|d| {
                match read_trimmed("/sys/devices/system/cpu/cpuidle/current_governor") {
                    Some(g) => format!("{d}/{g}"),
                    None => d,
                }
            }),
            rustc: Some(env!("FLINT_BENCH_RUSTC").to_string()).filter(|s| !s.is_empty()),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            loadavg_start: loadavg(),
            loadavg_end: None,
            own_cpu_seconds: None,
            other_cpu_seconds: None,
            start: CpuTicks::now(),
        }
    }

    /// Records the load average and the CPU time used at the end of the run (call it
    /// after the server process has been waited for).
    pub fn finish(&mut self) {
        self.loadavg_end = loadavg();
        if let (Some(a), Some(b)) = (self.start, CpuTicks::now()) {
            let own = b.own.saturating_sub(a.own);
            let other = b.busy.saturating_sub(a.busy).saturating_sub(own);
            self.own_cpu_seconds = Some(own as f64 / TICKS_PER_SEC);
            self.other_cpu_seconds = Some(other as f64 / TICKS_PER_SEC);
        }
    }
}

/// This process's peak resident memory (`VmHWM`) since it started or since the last
/// [`reset_peak_rss`], in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    status_mib("VmHWM:")
}

/// This process's resident memory now (`VmRSS`), in MiB.
pub fn rss_mib() -> Option<f64> {
    status_mib("VmRSS:")
}

/// Resets this process's `VmHWM` to its current resident memory (writing `5` to
/// `/proc/self/clear_refs`, Linux 4.0 and later), so that [`peak_rss_mib`] then gives
/// the peak of what runs after. False if the kernel refused.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Holds the kernel's CPU wake-up latency limit (PM QoS, `/dev/cpu_dma_latency`) at
/// zero while alive, so idle CPUs poll instead of halting. On a VM whose idle vCPUs
/// halt, a halted vCPU takes tens of microseconds to wake, which then dominates every
/// loopback round trip. Needs root; dropping it lifts the limit.
pub struct PollIdle {
    _qos: std::fs::File,
}

impl PollIdle {
    /// Sets the limit to zero, or says why it could not.
    pub fn hold() -> Result<PollIdle, String> {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/cpu_dma_latency")
            .map_err(|e| format!("cannot open /dev/cpu_dma_latency: {e}"))?;
        f.write_all(&0i32.to_ne_bytes())
            .map_err(|e| format!("cannot write /dev/cpu_dma_latency: {e}"))?;
        Ok(PollIdle { _qos: f })
    }
}

fn loadavg() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_can_be_reset() {
        let Some(before) = peak_rss_mib() else {
            return; // no /proc here
        };
        let v = vec![1u8; 64 << 20];
        std::hint::black_box(&v);
        drop(v);
        let high = peak_rss_mib().unwrap();
        assert!(high >= before + 32.0, "{before} -> {high}");
        assert!(reset_peak_rss());
        let after = peak_rss_mib().unwrap();
        assert!(after < high - 32.0, "{high} -> {after}");
        assert!(rss_mib().unwrap() <= after + 1.0);
    }
}
