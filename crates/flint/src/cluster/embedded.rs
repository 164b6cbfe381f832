//! `local-cluster[W,C,M]`: a master and W workers of C cores and M MiB in this
//! process, bound to 127.0.0.1 on free ports, sharing a secret that exists only in
//! this process and in its executors' environments. The workers' work dirs (executor
//! logs) live in a temporary directory removed when the cluster stops.

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
    let dir = tempfile::Builder::new()
        .prefix("flint-local-cluster-")
        .tempdir()
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
