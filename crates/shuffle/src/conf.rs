//! The shuffle's settings, read once by its users (the executor, the worker's shuffle
//! service) from flint's settings and passed down as a plain struct.

use std::path::PathBuf;

use flint_conf::{Conf, ConfError, SizeUnit};

/// Settings of shuffle writers, readers, the block server and the fetcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShuffleConf {
    /// Directories for map output and spill runs (`local.dir`); map outputs spread over
    /// them by a hash of the map id.
    pub local_dirs: Vec<PathBuf>,
    /// Compress blocks and spill runs with LZ4 (`shuffle.compress`).
    pub compress: bool,
    /// Bytes one writer or reduce-side aggregator keeps in memory before it spills
    /// (`shuffle.spill.memory_budget`, else `shuffle.memory_percent` of
    /// `executor.memory` shared by the task slots).
    pub memory_budget: u64,
    /// Most bytes of blocks one fetcher has requested or holds unconsumed
    /// (`shuffle.max_bytes_in_flight`).
    pub max_bytes_in_flight: u64,
    /// Buffer of each file written or read (`shuffle.file_buffer`).
    pub file_buffer: usize,
    /// fsync data and index before committing them (`shuffle.sync`).
    pub sync: bool,
    /// Whether map output is served by the worker's shuffle service
    /// (`shuffle.service.enabled`).
    pub service_enabled: bool,
}

impl Default for ShuffleConf {
    fn default() -> Self {
        ShuffleConf {
            local_dirs: vec![std::env::temp_dir()],
            compress: true,
            memory_budget: 64 << 20,
            max_bytes_in_flight: 48 << 20,
            file_buffer: 32 << 10,
            sync: false,
            service_enabled: false,
        }
    }
}

/// Parses a `local.dir` value: comma-separated, blanks ignored.
pub fn parse_local_dirs(value: &str) -> Vec<PathBuf> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

impl ShuffleConf {
    /// Reads the settings; `task_slots` is the number of tasks the executor runs at once
    /// (its cores), which share the memory budget.
    pub fn from_conf(conf: &Conf, task_slots: u64) -> Result<ShuffleConf, ConfError> {
        let d = ShuffleConf::default();
        let local_dirs = match conf.get("local.dir") {
            None => d.local_dirs,
            Some(v) => {
                let dirs = parse_local_dirs(v);
                if dirs.is_empty() {
                    return Err(ConfError::Invalid {
                        key: "local.dir".into(),
                        value: v.into(),
                        reason: "expected one or more comma-separated directories".into(),
                    });
                }
                dirs
            }
        };
        let executor_memory = conf.bytes("executor.memory", 1 << 30, SizeUnit::Mebibytes)?;
        let percent = conf.u64("shuffle.memory_percent", 60)?.clamp(1, 100);
        let derived = executor_memory / 100 * percent / task_slots.max(1);
        let memory_budget = conf.bytes("shuffle.spill.memory_budget", derived, SizeUnit::Bytes)?;
        let file_buffer = conf.bytes("shuffle.file_buffer", 32 << 10, SizeUnit::Bytes)?;
        Ok(ShuffleConf {
            local_dirs,
            compress: conf.bool("shuffle.compress", true)?,
            memory_budget,
            max_bytes_in_flight: conf
                .bytes("shuffle.max_bytes_in_flight", 48 << 20, SizeUnit::Mebibytes)?
                .max(1),
            file_buffer: file_buffer.clamp(512, 64 << 20) as usize,
            sync: conf.bool("shuffle.sync", false)?,
            service_enabled: conf.bool("shuffle.service.enabled", false)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_and_budget_is_shared_by_slots() {
        let c = ShuffleConf::from_conf(
            &Conf::new()
                .set("local.dir", "/a, /b,,")
                .set("executor.memory", "1000m")
                .set("shuffle.memory_percent", "50")
                .set("shuffle.compress", "false"),
            4,
        )
        .unwrap();
        assert_eq!(c.local_dirs, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(c.memory_budget, (1000u64 << 20) / 100 * 50 / 4);
        assert!(!c.compress);
        assert_eq!(c.max_bytes_in_flight, 48 << 20);
        let c = ShuffleConf::from_conf(&Conf::new().set("shuffle.spill.memory_budget", "4k"), 2)
            .unwrap();
        assert_eq!(c.memory_budget, 4096);
        let e = ShuffleConf::from_conf(&Conf::new().set("local.dir", " , "), 1).unwrap_err();
        assert!(e.to_string().contains("local.dir"), "{e}");
    }
}
