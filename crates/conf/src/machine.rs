//! What this machine has — online CPUs and total memory, read from `/sys` and
//! `/proc/meminfo` — so that an offer of more (`--cores 100000`, `--memory 100t`) can be
//! warned about.

use crate::{Resource, Warning};

/// CPUs online on this machine (`/sys/devices/system/cpu/online`; else what the
/// process may use).
pub fn cores() -> Option<u64> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|text| count_cpu_list(&text))
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .and_then(|n| u64::try_from(n.get()).ok())
        })
}

/// Total memory of this machine in bytes (`MemTotal` of `/proc/meminfo`).
pub fn memory_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text))
}

/// A warning when `cores` (asked for by `what`, e.g. `--cores 100000`) is more than
/// this machine has.
pub fn check_cores(what: &str, cores: u64) -> Option<Warning> {
    more_than(what, cores, self::cores()?, Resource::Cores)
}

/// A warning when `bytes` of memory (asked for by `what`) is more than this machine has.
pub fn check_memory(what: &str, bytes: u64) -> Option<Warning> {
    more_than(what, bytes, memory_bytes()?, Resource::Memory)
}

/// A warning when `asked` exceeds `machine`.
pub fn more_than(what: &str, asked: u64, machine: u64, resource: Resource) -> Option<Warning> {
    (asked > machine).then(|| Warning::MoreThanMachine {
        what: what.to_string(),
        asked,
        machine,
        resource,
    })
}

/// Counts a kernel CPU list such as `0-3,8,10-11`.
fn count_cpu_list(text: &str) -> Option<u64> {
    let mut n = 0;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<u64>().ok()?.checked_sub(a.parse().ok()?)? + 1,
            None => {
                part.parse::<u64>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// `MemTotal:  24684084 kB` → bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_and_meminfo_parse() {
        assert_eq!(count_cpu_list("0-3,8,10-11\n"), Some(7));
        assert_eq!(count_cpu_list("0\n"), Some(1));
        assert_eq!(count_cpu_list("x"), None);
        assert_eq!(
            mem_total("MemTotal:       24684084 kB\nMemFree: 1 kB\n"),
            Some(24_684_084 * 1024)
        );
        assert!(cores().is_some_and(|n| n >= 1));
        assert!(memory_bytes().is_some_and(|n| n > 1 << 20));
    }

    #[test]
    fn more_than_the_machine_warns() {
        let w = more_than("--cores 100000", 100_000, 8, Resource::Cores).unwrap();
        assert_eq!(
            w.to_string(),
            "--cores 100000: 100000 cores is more than the 8 this machine has"
        );
        assert!(more_than("--cores 8", 8, 8, Resource::Cores).is_none());
        let w = more_than("--memory 100t", 100 << 40, 16 << 30, Resource::Memory).unwrap();
        assert_eq!(
            w.to_string(),
            "--memory 100t: 102400.0 GiB is more than the 16.0 GiB of memory this machine has"
        );
        assert!(check_cores("--cores 100000", 100_000).is_some());
        assert!(check_memory("--memory 100t", 100 << 40).is_some());
    }
}
