//! The local backend: the [`Backend`] shell with one in-process executor (id `driver`)
//! whose N task threads run [`run_task`](crate::executor::run_task) on the encoded
//! tasks the shell launches and hand back encoded results — the bytes a cluster sends,
//! through a channel instead of flint-rpc, so what works locally works on a cluster.

use std::sync::Arc;

use crate::executor::{ExecutorEnv, TaskPool};
use crate::scheduler::{Event, SchedulerConf};
use crate::shell::{Accumulators, Backend, Executors, ResultSink};

/// The in-process executor as the shell sees it.
struct LocalExecutors {
    pool: TaskPool,
    env: Arc<ExecutorEnv>,
}

impl Executors for LocalExecutors {
    fn launch(&mut self, _executor: &str, task: Vec<u8>) {
        self.pool.submit(task);
    }

    fn kill(&mut self, _executor: &str, task: u64) {
        // A running task stops at its next element; a queued one runs (its result is
        // ignored). Either way its core is freed when it ends.
        self.env.kill(task);
    }

    fn remove_blocks(&mut self, _executor: &str, cache: u64) {
        self.env.remove_cache(cache);
    }

    fn remove_shuffle(&mut self, shuffle: u64) {
        self.env.remove_shuffle(shuffle);
    }

    fn kill_executor(&mut self, executor: &str, reason: &str) {
        tracing::error!(
            executor,
            "{reason}; the in-process executor cannot be replaced"
        );
    }
}

/// Starts a shell whose executor is `threads` task threads of this process.
pub(crate) fn start(
    threads: u32,
    conf: SchedulerConf,
    env: Arc<ExecutorEnv>,
    accumulators: Arc<Accumulators>,
    app_id: &str,
) -> std::io::Result<Backend> {
    let id = env.id.clone();
    let backend = Backend::start(conf, accumulators, app_id, |results: ResultSink| {
        let pool = TaskPool::start(threads, env.clone(), Arc::new(move |r| results.send(r)))?;
        Ok(LocalExecutors { pool, env })
    })?;
    backend.scheduler_event(Event::ExecutorAdded {
        id,
        host: "localhost".into(),
        cores: threads,
    });
    Ok(backend)
}
