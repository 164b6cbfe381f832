//! The driver side of the cluster backend: an RPC server in the driver process whose
//! `flint-driver` endpoint takes executor registrations (refusing a binary whose
//! SHA-256 is not the driver's, naming both), results, result chunks, heartbeats and
//! broadcast fetches; the [`Executors`] transport that batches launches per executor
//! into one `Launch` message; and the application registered with the master(s)
//! through flint-client, whose executor command runs this very binary (`{{BINARY}}`,
//! fetched by the worker from this process's file server and verified by hash).
//!
//! Executor loss reaches the scheduler from two sides: the executor's connection to
//! the driver closing, and the master reporting the executor removed. An executor the
//! scheduler gives up on for silence (its heartbeats stopped: frozen, or cut off) is
//! told to stop and, since it may not hear that, the master is asked to kill it
//! (Spark's `killAndReplaceExecutor`): its worker kills the process and frees its
//! cores, and the master starts a replacement where the application still wants one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flint_client::{AppClient, AppClientHandle, AppEvent, ChannelListener};
use flint_conf::{Conf, SizeUnit, TimeUnit};
use flint_proto::{ApplicationDescription, BinarySource, ExecutorCommand};
use flint_rpc::{Context as RpcContext, Endpoint, EndpointRef, Reply, RpcAddress, RpcConf, RpcEnv};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::proto::{DriverMsg, ExecutorMsg, Registered, ResultChunk};
use super::{ClusterError, EXECUTOR_ID_PARAM};
use crate::scheduler::Event;
use crate::shared::{BroadcastSource, BroadcastStore};
use crate::shell::{Executors, ResultSink};
use crate::wire::{TaskError, TaskOutcome, TaskResult};

/// The registered executors' endpoints, by executor id.
pub(crate) type Refs = Arc<Mutex<HashMap<String, EndpointRef<ExecutorMsg>>>>;

/// What the shell asks of the executors, for the sender task.
enum Out {
    Launch(String, Vec<u8>),
    Kill(String, u64),
    RemoveBlocks(String, u64),
    RemoveShuffle(u64),
    Stop(String, String),
}

/// The application's client once it is registered, for asking the master to kill an
/// executor (set after the transport starts).
pub(crate) type ClientSlot = Arc<std::sync::OnceLock<AppClientHandle>>;

/// [`Executors`] over flint-rpc: every call queues for the sender task, which sends
/// each executor one message per batch of launches.
pub(crate) struct RpcExecutors {
    tx: UnboundedSender<Out>,
}

impl Executors for RpcExecutors {
    fn launch(&mut self, executor: &str, task: Vec<u8>) {
        let _ = self.tx.send(Out::Launch(executor.to_string(), task));
    }
    fn kill(&mut self, executor: &str, task: u64) {
        let _ = self.tx.send(Out::Kill(executor.to_string(), task));
    }
    fn remove_blocks(&mut self, executor: &str, cache: u64) {
        let _ = self.tx.send(Out::RemoveBlocks(executor.to_string(), cache));
    }
    fn remove_shuffle(&mut self, shuffle: u64) {
        let _ = self.tx.send(Out::RemoveShuffle(shuffle));
    }
    fn kill_executor(&mut self, executor: &str, reason: &str) {
        let _ = self
            .tx
            .send(Out::Stop(executor.to_string(), reason.to_string()));
    }
}

impl RpcExecutors {
    /// The transport and the task that carries out what it queues (spawn it).
    pub fn new(
        refs: Refs,
        sink: ResultSink,
        max_batch_bytes: usize,
        client: ClientSlot,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Self { tx }, sender(rx, refs, sink, max_batch_bytes, client))
    }
}

/// Most queued shell requests folded into one round of messages.
const MAX_ROUND: usize = 4096;

async fn sender(
    mut rx: UnboundedReceiver<Out>,
    refs: Refs,
    sink: ResultSink,
    max_batch_bytes: usize,
    client: ClientSlot,
) {
    let lost = |exec: &str, why: String| {
        if let Ok(mut r) = refs.lock() {
            r.remove(exec);
        }
        sink.scheduler_event(Event::ExecutorLost {
            id: exec.to_string(),
            reason: why,
        });
    };
    while let Some(first) = rx.recv().await {
        let mut round = vec![first];
        while round.len() < MAX_ROUND {
            match rx.try_recv() {
                Ok(m) => round.push(m),
                Err(_) => break,
            }
        }
        // Launches grouped per executor, in order, split so a message stays bounded.
        let mut batches: Vec<(String, Vec<Vec<u8>>, usize)> = Vec::new();
        let mut rest = Vec::new();
        for m in round {
            match m {
                Out::Launch(exec, task) => {
                    let open = batches
                        .iter_mut()
                        .rev()
                        .find(|(e, _, size)| *e == exec && size + task.len() <= max_batch_bytes);
                    match open {
                        Some((_, tasks, size)) => {
                            *size += task.len();
                            tasks.push(task);
                        }
                        None => {
                            let size = task.len();
                            batches.push((exec, vec![task], size));
                        }
                    }
                }
                other => rest.push(other),
            }
        }
        for (exec, tasks, _) in batches {
            let r = refs.lock().ok().and_then(|r| r.get(&exec).cloned());
            match r {
                Some(r) => {
                    if let Err(e) = r.send(ExecutorMsg::Launch(tasks)) {
                        lost(&exec, format!("sending it tasks failed: {e}"));
                    }
                }
                None => lost(&exec, "it is no longer registered".into()),
            }
        }
        for m in rest {
            let (exec, msg) = match m {
                Out::RemoveShuffle(s) => {
                    let all: Vec<_> = refs
                        .lock()
                        .map(|r| r.values().cloned().collect())
                        .unwrap_or_default();
                    for r in all {
                        let _ = r.send(ExecutorMsg::RemoveShuffle(s));
                    }
                    continue;
                }
                Out::Kill(e, t) => (e, ExecutorMsg::Kill(t)),
                Out::RemoveBlocks(e, c) => (e, ExecutorMsg::RemoveBlocks(c)),
                Out::Stop(e, why) => {
                    lost(&e, why.clone());
                    kill_through_master(&client, &e, &why);
                    (e, ExecutorMsg::Stop(why))
                }
                Out::Launch(..) => continue,
            };
            let r = refs.lock().ok().and_then(|r| r.get(&exec).cloned());
            if let Some(r) = r {
                let _ = r.send(msg);
            }
        }
    }
}

/// Asks the master to kill executor `exec` (which the scheduler gave up on: `why`),
/// in the background; logs the outcome.
fn kill_through_master(client: &ClientSlot, exec: &str, why: &str) {
    let Some(client) = client.get().cloned() else {
        tracing::warn!(
            executor = exec,
            "{why}; the application is not registered with a master, so it cannot be killed there"
        );
        return;
    };
    let Ok(id) = exec.parse::<u32>() else {
        tracing::warn!(
            executor = exec,
            "{why}; not an executor id the master gave, so it cannot be killed there"
        );
        return;
    };
    let exec = exec.to_string();
    tokio::spawn(async move {
        match client
            .kill_executors(vec![flint_proto::ExecutorId(id)])
            .await
        {
            Ok(true) => {
                tracing::info!(executor = %exec, "asked the master to kill the executor and replace it")
            }
            Ok(false) => {
                tracing::warn!(executor = %exec, "the master does not know this application; the executor was not killed there")
            }
            Err(e) => {
                tracing::warn!(executor = %exec, "asking the master to kill the executor failed: {e}")
            }
        }
    });
}

/// The driver endpoint's view of the application.
pub(crate) struct DriverState {
    /// SHA-256 of this binary.
    pub sha256: String,
    /// The application id once the master gave it.
    pub app_id: Arc<Mutex<String>>,
    /// executor.memory, bytes.
    pub memory: u64,
    /// executor.heartbeat_interval, ms.
    pub heartbeat_ms: u64,
    /// Results above this go in chunks.
    pub inline_limit: u64,
    /// driver.max_result_size (0: no limit): the most bytes of one result assembled.
    pub max_result: u64,
    /// Executors' endpoints.
    pub refs: Refs,
    /// The scheduler's shell.
    pub sink: ResultSink,
    /// Broadcast values.
    pub broadcasts: Arc<BroadcastStore>,
    /// When the application started (for the registration log line).
    pub started: Instant,
    /// Executors registered so far.
    pub registered: Arc<AtomicU32>,
    /// Cores of the executors registered so far, and a wake-up for whoever waits for
    /// enough of them (`scheduler.min_registered_resources_percent`).
    pub registered_cores: Arc<RegisteredCores>,
    /// Set when the application is being stopped: executors leaving then are expected.
    pub stopping: Arc<AtomicBool>,
    /// The application's shuffle settings for its executors.
    pub shuffle_conf: Vec<(String, String)>,
}

/// Cores of the executors registered with the driver so far (never decreases: it is
/// what the start-up wait counts, as Spark's `sufficientResourcesRegistered` does).
#[derive(Default)]
pub(crate) struct RegisteredCores {
    cores: AtomicU32,
    changed: tokio::sync::Notify,
}

impl RegisteredCores {
    fn add(&self, cores: u32) {
        self.cores.fetch_add(cores, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Waits until at least `wanted` cores have registered or `deadline` passes;
    /// returns the cores registered then.
    pub async fn wait_for(&self, wanted: u32, deadline: tokio::time::Instant) -> u32 {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = self.cores.load(Ordering::SeqCst);
            if now >= wanted {
                return now;
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(deadline) => return self.cores.load(Ordering::SeqCst),
            }
        }
    }
}

/// The settings an application's executors take from its driver for their shuffles.
pub(crate) fn shuffle_conf(conf: &flint_conf::Conf) -> Vec<(String, String)> {
    [
        "executor.memory",
        "shuffle.compress",
        "shuffle.memory_percent",
        "shuffle.spill.memory_budget",
        "shuffle.max_bytes_in_flight",
        "shuffle.file_buffer",
        "shuffle.sync",
        "shuffle.service.enabled",
    ]
    .iter()
    .filter_map(|k| Some((k.to_string(), conf.get(k)?.to_string())))
    .collect()
}

/// The `flint-driver` endpoint.
pub(crate) struct DriverEndpoint {
    st: DriverState,
    by_addr: HashMap<RpcAddress, String>,
    /// Large results being reassembled: task id → (its executor, bytes so far).
    partial: HashMap<u64, (String, Vec<u8>)>,
    partial_bytes: u64,
}

impl DriverEndpoint {
    pub fn new(st: DriverState) -> Self {
        Self {
            st,
            by_addr: HashMap::new(),
            partial: HashMap::new(),
            partial_bytes: 0,
        }
    }

    fn fail_task(&self, task_id: u64, why: String) {
        let r = TaskResult {
            shuffle: Default::default(),
            task_id,
            outcome: TaskOutcome::Failed(TaskError::Io(why)),
            accumulators: vec![],
            blocks_added: vec![],
            blocks_evicted: vec![],
        };
        if let Ok(b) = postcard::to_allocvec(&r) {
            self.st.sink.send(b);
        }
    }

    fn chunk(&mut self, c: ResultChunk) {
        let limit = if self.st.max_result == 0 {
            u64::MAX
        } else {
            self.st.max_result
        };
        let have = self.partial.get(&c.task_id).map_or(0, |p| p.1.len() as u64);
        let new_len = have + c.bytes.len() as u64;
        if c.total > limit || new_len > c.total || self.partial_bytes + c.bytes.len() as u64 > limit
        {
            if let Some((_, p)) = self.partial.remove(&c.task_id) {
                self.partial_bytes -= p.len() as u64;
            }
            self.fail_task(
                c.task_id,
                format!(
                    "the task's result ({} bytes) does not fit in driver.max_result_size ({limit} bytes) \
                     with the results being received; raise it or return less to the driver",
                    c.total
                ),
            );
            return;
        }
        self.partial_bytes += c.bytes.len() as u64;
        let (_, buf) = self
            .partial
            .entry(c.task_id)
            .or_insert_with(|| (c.executor_id.clone(), Vec::new()));
        buf.extend_from_slice(&c.bytes);
        if buf.len() as u64 == c.total {
            if let Some((_, done)) = self.partial.remove(&c.task_id) {
                self.partial_bytes -= done.len() as u64;
                self.st.sink.send(done);
            }
        }
    }
}

impl Endpoint for DriverEndpoint {
    type Msg = DriverMsg;

    fn receive(&mut self, _ctx: &RpcContext<DriverMsg>, msg: DriverMsg) {
        match msg {
            DriverMsg::Status(s) => {
                if !self.known(&s.executor_id) {
                    tracing::warn!(executor = %s.executor_id, "results from an executor that is not registered; dropped");
                    return;
                }
                for r in s.results {
                    self.st.sink.send(r);
                }
            }
            DriverMsg::ResultChunk(c) => {
                if self.known(&c.executor_id) {
                    self.chunk(c);
                }
            }
            other => tracing::warn!("driver: a one-way {:?} is not expected", kind(&other)),
        }
    }

    fn receive_and_reply(&mut self, ctx: &RpcContext<DriverMsg>, msg: DriverMsg, reply: Reply) {
        match msg {
            DriverMsg::Register(r) => {
                if r.binary_sha256 != self.st.sha256 {
                    let why = format!(
                        "executor {} on {} runs a binary with SHA-256 {}, but the driver's binary has SHA-256 {}: \
                         executors must run the driver's own build (let the worker fetch it with {{{{BINARY}}}})",
                        r.executor_id, r.host, r.binary_sha256, self.st.sha256
                    );
                    tracing::warn!("refused an executor: {why}");
                    reply.send::<Result<Registered, String>>(Err(why));
                    return;
                }
                if self.known(&r.executor_id) {
                    reply.send::<Result<Registered, String>>(Err(format!(
                        "executor {} is already registered",
                        r.executor_id
                    )));
                    return;
                }
                if let Some(a) = ctx.sender() {
                    self.by_addr.insert(a.clone(), r.executor_id.clone());
                }
                if let Ok(mut refs) = self.st.refs.lock() {
                    refs.insert(r.executor_id.clone(), r.endpoint);
                }
                let n = self.st.registered.fetch_add(1, Ordering::SeqCst) + 1;
                self.st.registered_cores.add(r.cores.max(1));
                tracing::info!(
                    executor = %r.executor_id, host = %r.host, cores = r.cores,
                    "executor registered ({n} so far, {:.0} ms after the application started)",
                    self.st.started.elapsed().as_secs_f64() * 1000.0
                );
                self.st.sink.scheduler_event(Event::ExecutorAdded {
                    id: r.executor_id,
                    host: r.host,
                    cores: r.cores.max(1),
                });
                let app_id = self.st.app_id.lock().map(|a| a.clone()).unwrap_or_default();
                reply.send::<Result<Registered, String>>(Ok(Registered {
                    app_id,
                    memory: self.st.memory,
                    heartbeat_ms: self.st.heartbeat_ms,
                    inline_limit: self.st.inline_limit,
                    shuffle_conf: self.st.shuffle_conf.clone(),
                }));
            }
            DriverMsg::Heartbeat(h) => {
                let known = self.known(&h.executor_id);
                if known {
                    self.st
                        .sink
                        .scheduler_event(Event::Heartbeat { id: h.executor_id });
                }
                reply.send(known);
            }
            DriverMsg::FetchBroadcast(f) => {
                let v = self.st.broadcasts.fetch(f.id).map(|b| (*b).clone());
                reply.send(v);
            }
            other => reply.fail(format!("driver: {} is one-way", kind(&other))),
        }
    }

    fn on_disconnected(&mut self, _ctx: &RpcContext<DriverMsg>, remote: &RpcAddress) {
        if let Some(id) = self.by_addr.remove(remote) {
            if let Ok(mut refs) = self.st.refs.lock() {
                refs.remove(&id);
            }
            // Its half-received results will not be completed (the tasks re-run).
            let partial_bytes = &mut self.partial_bytes;
            self.partial.retain(|_, (exec, bytes)| {
                let keep = *exec != id;
                if !keep {
                    *partial_bytes -= bytes.len() as u64;
                }
                keep
            });
            if self.st.stopping.load(Ordering::SeqCst) {
                tracing::debug!(executor = %id, "executor left as the application stopped");
            } else {
                tracing::warn!(executor = %id, "executor lost: its connection to the driver closed");
            }
            self.st.sink.scheduler_event(Event::ExecutorLost {
                id,
                reason: "its connection to the driver closed".into(),
            });
        }
    }
}

impl DriverEndpoint {
    fn known(&self, id: &str) -> bool {
        self.st.refs.lock().is_ok_and(|r| r.contains_key(id))
    }
}

fn kind(m: &DriverMsg) -> &'static str {
    match m {
        DriverMsg::Register(_) => "Register",
        DriverMsg::Status(_) => "Status",
        DriverMsg::ResultChunk(_) => "ResultChunk",
        DriverMsg::Heartbeat(_) => "Heartbeat",
        DriverMsg::FetchBroadcast(_) => "FetchBroadcast",
    }
}

/// SHA-256 (lowercase hex) and size of a file (ring's digest: fast even in debug
/// builds, whose binaries are large).
pub(crate) fn sha256_file(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 18];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finish()), size))
}

/// What the application registration needs.
pub(crate) struct AppSpec<'a> {
    pub name: &'a str,
    pub conf: &'a Conf,
    pub masters: Vec<RpcAddress>,
    pub driver_url: String,
    pub binary: BinarySource,
}

/// The executor command: this binary (`{{BINARY}}`) with this process's arguments, and
/// the driver to serve (with the executor's id, cores and host) in its environment.
/// Settings under this prefix become environment variables of the executors.
pub(crate) const EXECUTOR_ENV_PREFIX: &str = "executor.env.";

pub(crate) fn app_description(spec: &AppSpec<'_>) -> Result<ApplicationDescription, ClusterError> {
    let mut cmd = ExecutorCommand::new("{{BINARY}}");
    cmd.args = std::env::args().skip(1).collect();
    cmd.env.insert(
        crate::context::EXECUTOR_ENV.to_string(),
        format!(
            "{}?{EXECUTOR_ID_PARAM}={{{{EXECUTOR_ID}}}}&cores={{{{CORES}}}}&host={{{{HOSTNAME}}}}&app={{{{APP_ID}}}}",
            spec.driver_url
        ),
    );
    cmd.binary = Some(spec.binary.clone());
    let conf = spec.conf;
    // `executor.env.NAME = value`: the executors' environment (Spark's
    // spark.executorEnv.NAME); flint's own variable above is not replaced.
    for (key, value) in conf.iter() {
        if let Some(name) = key.strip_prefix(EXECUTOR_ENV_PREFIX) {
            if name == crate::context::EXECUTOR_ENV {
                tracing::warn!("{key} is ignored: flint sets {name} itself");
            } else if !name.is_empty() {
                cmd.env.insert(name.to_string(), value.to_string());
            }
        }
    }
    let mut desc = ApplicationDescription::new(spec.name, cmd);
    if conf.get("executor.cores").is_some() {
        desc.cores_per_executor =
            Some(u32::try_from(conf.u64("executor.cores", 1)?).unwrap_or(u32::MAX));
    }
    if conf.get("cores.max").is_some() {
        desc.max_cores = Some(u32::try_from(conf.u64("cores.max", 1)?).unwrap_or(u32::MAX));
    }
    desc.app_ui_url = conf.get(crate::ui::ADVERTISED_URL).map(str::to_string);
    desc.memory_per_executor_mb =
        (conf.bytes("executor.memory", 1 << 30, SizeUnit::Mebibytes)? >> 20).max(1);
    Ok(desc)
}

/// Starts the application client and waits (within the registration rounds) for the
/// master's answer: the app id, or why it is dead.
pub(crate) async fn register_app(
    env: &RpcEnv,
    spec: &AppSpec<'_>,
    refs: Refs,
    sink: ResultSink,
    stopping: Arc<AtomicBool>,
) -> Result<(AppClientHandle, String), ClusterError> {
    let desc = app_description(spec)?;
    let (listener, mut events) = ChannelListener::new();
    let client = AppClient::start(env.clone(), spec.masters.clone(), desc, listener, spec.conf)
        .map_err(|e| ClusterError::App(e.to_string()))?;
    let app_id = loop {
        match events.recv().await {
            Some(AppEvent::Connected(id)) => break id.to_string(),
            Some(AppEvent::Dead(reason)) => {
                client.stop().await;
                return Err(ClusterError::App(reason));
            }
            Some(_) => {}
            None => return Err(ClusterError::App("the application client stopped".into())),
        }
    };
    tokio::spawn(async move {
        // Which worker each granted executor is on (kept after the executor goes: with
        // the shuffle service its outputs stay on that worker). Bounded by the
        // executors the master granted; a worker's entries go with the worker.
        let mut placed: HashMap<String, Vec<String>> = HashMap::new();
        while let Some(ev) = events.recv().await {
            match ev {
                AppEvent::ExecutorAdded {
                    exec_id,
                    worker_id,
                    cores,
                    ..
                } => {
                    tracing::info!(executor = %exec_id, worker = %worker_id, cores, "executor granted by the master");
                    placed
                        .entry(worker_id.to_string())
                        .or_default()
                        .push(exec_id.to_string());
                }
                AppEvent::ExecutorRemoved {
                    exec_id,
                    message,
                    exit_status,
                    ..
                } => {
                    let id = exec_id.to_string();
                    if let Ok(mut r) = refs.lock() {
                        r.remove(&id);
                    }
                    let reason =
                        format!("the master removed it ({message}; exit status {exit_status:?})");
                    if stopping.load(Ordering::SeqCst) {
                        tracing::debug!(executor = %id, "executor removed as the application stopped: {reason}");
                    } else {
                        tracing::warn!(executor = %id, "executor lost: {reason}");
                    }
                    sink.scheduler_event(Event::ExecutorLost { id, reason });
                }
                AppEvent::WorkerRemoved {
                    worker_id,
                    host,
                    message,
                } => {
                    // Its shuffle service is gone with it: every map output its
                    // executors wrote is lost, whoever served it (Spark's
                    // `workerRemoved`, by worker rather than host).
                    tracing::warn!(worker = %worker_id, %host, "worker removed by the master: {message}; its map outputs are lost");
                    let executors = placed
                        .remove(worker_id.as_ref() as &str)
                        .unwrap_or_default();
                    sink.scheduler_event(Event::WorkerLost { executors });
                }
                AppEvent::Dead(reason) if stopping.load(Ordering::SeqCst) => {
                    tracing::debug!("the application ended: {reason}")
                }
                AppEvent::Dead(reason) => tracing::error!("the application is dead: {reason}"),
                _ => {}
            }
        }
    });
    Ok((client, app_id))
}

/// RPC settings of the driver and how often executors heartbeat.
pub(crate) fn rpc_conf(conf: &Conf) -> Result<RpcConf, ClusterError> {
    RpcConf::from_conf(conf).map_err(|e| ClusterError::Rpc(e.to_string()))
}

/// `executor.heartbeat_interval` in ms.
pub(crate) fn heartbeat_ms(conf: &Conf) -> Result<u64, ClusterError> {
    let d = conf.duration(
        "executor.heartbeat_interval",
        Duration::from_secs(10),
        TimeUnit::Seconds,
    )?;
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1))
}
