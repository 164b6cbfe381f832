//! `local-cluster[W,C,M]`: a master and W workers of C cores and M MiB in this
//! process, bound to 127.0.0.1 on free ports, sharing a secret that exists only in
//! this process and in its executors' environments. The workers' work dirs (executor
//! logs) live in a temporary directory removed when the cluster stops.

use std::fs::Metadata;
use std::path::{Path, PathBuf};

use flint_conf::Conf;
use flint_master::{MasterHandle, MasterOptions};
use flint_rpc::RpcAddress;
use flint_worker::service::{WorkerHandle, WorkerOptions};

use super::ClusterError;

/// A running embedded cluster.
pub(crate) struct Embedded {
    master: MasterHandle,
    workers: Vec<WorkerHandle>,
    dir: Option<tempfile::TempDir>,
}

/// `conf` with the secret the embedded cluster and its executors share: the one
/// configured (`auth.secret` or `FLINT_AUTH_SECRET`), else a fresh ephemeral one.
pub(crate) fn with_secret(conf: Conf) -> Conf {
    if conf.get("auth.secret").is_some() {
        return conf;
    }
    match std::env::var(flint_rpc::secret::SECRET_ENV) {
        Ok(s) if !s.is_empty() => conf.set("auth.secret", s),
        _ => flint_rpc::secret::with_ephemeral(conf),
    }
}

/// `conf` with `executor.memory` fitting a local-cluster worker of `memory_mb` MiB:
/// the worker's memory when unset (the default 1g would never fit a smaller worker and
/// the app would starve), an error when set larger (as Spark's local-cluster refuses).
pub(crate) fn executor_memory(conf: Conf, memory_mb: u32) -> Result<Conf, ClusterError> {
    match conf.get("executor.memory") {
        None => Ok(conf.set("executor.memory", format!("{memory_mb}m"))),
        Some(v) => {
            let asked = conf
                .bytes("executor.memory", 0, flint_conf::SizeUnit::Mebibytes)
                .map_err(|e| ClusterError::App(e.to_string()))?;
            if asked > u64::from(memory_mb) << 20 {
                Err(ClusterError::App(format!(
                    "executor.memory = {v} does not fit a local-cluster worker of {memory_mb} MiB: \
                     lower executor.memory or raise M in local-cluster[W,C,M]"
                )))
            } else {
                Ok(conf)
            }
        }
    }
}

/// Starts the master and the workers; executors get the secret from the workers.
pub(crate) async fn start(
    conf: &Conf,
    workers: u32,
    cores: u32,
    memory_mb: u32,
) -> Result<Embedded, ClusterError> {
    let secret = conf
        .get("auth.secret")
        .map(|s| flint_rpc::Secret::new(s.as_bytes().to_vec()));
    flint_worker::runner::set_child_secret(secret);
    // Work dirs of local clusters whose driver was killed (SIGKILL) go first.
    let parent = std::env::temp_dir();
    let removed = flint_daemon::scratch::remove_stale(&parent, "flint-local-cluster-");
    if removed > 0 {
        tracing::info!(
            "removed {removed} local-cluster work dir(s) left in {} by drivers that were killed",
            parent.display()
        );
    }
    let dir = flint_daemon::scratch::create(&parent, "flint-local-cluster-")
        .map_err(|e| ClusterError::Embedded(format!("creating the work dirs: {e}")))?;
    let master = flint_master::start(MasterOptions {
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        conf: conf.clone(),
    })
    .await
    .map_err(|e| ClusterError::Embedded(format!("starting the master: {e}")))?;
    let mut handles = Vec::new();
    for i in 0..workers {
        let w = flint_worker::service::start(WorkerOptions {
            masters: vec![master.rpc_address().clone()],
            host: "127.0.0.1".into(),
            port: 0,
            webui_port: 0,
            cores: Some(cores),
            memory_mb: Some(u64::from(memory_mb)),
            work_dir: dir.path().join(format!("worker-{i}")),
            conf: conf.clone(),
        })
        .await;
        match w {
            Ok(w) => handles.push(w),
            Err(e) => {
                let emb = Embedded {
                    master,
                    workers: handles,
                    dir: Some(dir),
                };
                emb.stop().await;
                return Err(ClusterError::Embedded(format!("starting worker {i}: {e}")));
            }
        }
    }
    tracing::info!(master = %master.rpc_address(), workers, cores, memory_mb, work_dir = %dir.path().display(), "local cluster started");
    Ok(Embedded {
        master,
        workers: handles,
        dir: Some(dir),
    })
}

impl Embedded {
    /// The master's address.
    pub fn master_address(&self) -> RpcAddress {
        self.master.rpc_address().clone()
    }

    /// Puts the driver's binary (`exe`, hashed by this process: `sha256`, `size`,
    /// `hashed` its metadata from before hashing) into every worker's binary cache,
    /// so their first launches run it without fetching and hashing it again. The
    /// first worker links (or copies) the file, the others link the first's copy.
    /// A worker that cannot be seeded fetches as usual (logged, not an error).
    pub async fn seed_binary(&self, exe: &Path, sha256: &str, size: u64, hashed: &Metadata) {
        let mut src: (PathBuf, Metadata) = (exe.to_owned(), hashed.clone());
        for w in &self.workers {
            match w.seed_binary(&src.0, sha256, size, &src.1).await {
                Ok(cached) => {
                    if let Ok(m) = std::fs::metadata(&cached) {
                        src = (cached, m);
                    }
                }
                Err(e) => {
                    tracing::warn!(worker = %w.id(), "not seeding the binary cache ({e}); its executors fetch the binary");
                }
            }
        }
    }

    /// Stops the workers (they kill and reap their executors), then the master, and
    /// removes the work dirs.
    pub async fn stop(mut self) {
        for w in &self.workers {
            w.shutdown();
        }
        for w in &self.workers {
            let _ = w.wait().await;
        }
        self.master.shutdown();
        self.master.wait().await;
        if let Some(d) = self.dir.take() {
            let _ = d.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executor_memory_defaults_to_the_workers_and_refuses_more() {
        let c = executor_memory(Conf::new(), 512).unwrap();
        assert_eq!(c.get("executor.memory"), Some("512m"));
        let c = executor_memory(Conf::new().set("executor.memory", "256m"), 512).unwrap();
        assert_eq!(c.get("executor.memory"), Some("256m"));
        let e = executor_memory(Conf::new().set("executor.memory", "1g"), 512)
            .expect_err("1g does not fit 512 MiB")
            .to_string();
        assert!(
            e.contains("executor.memory = 1g") && e.contains("local-cluster[W,C,M]"),
            "{e}"
        );
        let e = executor_memory(Conf::new().set("executor.memory", "lots"), 512)
            .expect_err("not a size")
            .to_string();
        assert!(e.contains("executor.memory"), "{e}");
    }
}
