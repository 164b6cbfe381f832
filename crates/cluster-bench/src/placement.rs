//! `placement`: how long a running cluster takes to place an application's
//! executors.
//!
//! The benchmark plays a driver: it registers one application through
//! `flint-client` (`cores_per_executor` cores each, `max_cores` = executors ×
//! cores, an executor command that only sleeps) and times, from the moment
//! it calls `AppClient::start`:
//!
//! - `registered_ms`: the `Connected` event (lookup, `RegisterApplication`,
//!   `RegisteredApplication`);
//! - `all_added_ms`: the last of the `ExecutorAdded` events (the master
//!   decided the placement and told the driver);
//! - `all_running_ms`: the first poll of the master's state
//!   (`RequestMasterState`, every `--poll-ms`) that shows every executor
//!   RUNNING — the workers forked the processes and reported back. The
//!   client's listener does not report RUNNING, hence the poll; it adds at
//!   most one poll interval.
//!
//! Then it stops the application and waits until the master shows no core
//! in use, so runs can follow each other on the same cluster. It prints one
//! JSON line on stdout and exits non-zero if the executors did not all run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use flint_client::{AppClient, AppEvent, ChannelListener};
use flint_proto::messages::{MasterMsg, RequestMasterState, MASTER_ENDPOINT};
use flint_proto::status::MasterStatusJson;
use flint_proto::{AppId, ApplicationDescription, ExecutorCommand, ExecutorState};
use flint_rpc::{EndpointRef, RpcAddress, RpcConf, RpcEnv};
use serde_json::json;
use tokio::sync::mpsc;

/// Arguments of `flint-cluster-bench placement`.
#[derive(clap::Args, Debug, Clone)]
pub struct PlacementArgs {
    /// The master: flint://host:port.
    #[arg(long)]
    pub master: String,
    /// Executors to place (the application's `max_cores` is this times
    /// `--cores-per-executor`).
    #[arg(long, default_value_t = 100)]
    pub executors: u32,
    /// Cores per executor (`spark.executor.cores`).
    #[arg(long, default_value_t = 1)]
    pub cores_per_executor: u32,
    /// Memory per executor in MB (only accounted; the executor is `sleep`).
    #[arg(long, default_value_t = 64)]
    pub executor_memory_mb: u64,
    /// The executor, as a `/bin/sh -c` script.
    #[arg(long, default_value = "exec sleep 600")]
    pub executor_script: String,
    /// How often to poll the master for RUNNING executors, in ms.
    #[arg(long, default_value_t = 5)]
    pub poll_ms: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// A label copied into the JSON line (e.g. the repetition number).
    #[arg(long, default_value = "")]
    pub label: String,
}

/// What one run measured.
#[derive(Debug, Default)]
struct Timings {
    registered: Option<Duration>,
    all_added: Option<Duration>,
    all_running: Option<Duration>,
    added: u32,
    removed: Vec<String>,
    per_worker: BTreeMap<String, u32>,
}

/// Runs the benchmark once; see the module docs.
pub async fn run(args: PlacementArgs) -> anyhow::Result<()> {
    let masters = RpcAddress::parse_list(&args.master)
        .with_context(|| format!("--master {:?} is not a flint:// URL", args.master))?;
    if args.executors == 0 || args.cores_per_executor == 0 {
        bail!("--executors and --cores-per-executor must be at least 1");
    }
    let rpc = RpcConf::from_conf(&flint_conf::Conf::new())
        .context("cannot find the cluster secret (the master's secret file, FLINT_AUTH_SECRET or FLINT_AUTH_SECRET_FILE)")?;
    let env = RpcEnv::server(rpc, "127.0.0.1", 0)
        .await
        .context("cannot start the driver's RPC environment")?;

    let mut command = ExecutorCommand::new("/bin/sh");
    command.args = vec!["-c".into(), args.executor_script.clone()];
    let mut desc = ApplicationDescription::new("placement-bench", command);
    desc.cores_per_executor = Some(args.cores_per_executor);
    desc.max_cores = Some(args.executors.saturating_mul(args.cores_per_executor));
    desc.memory_per_executor_mb = args.executor_memory_mb;

    let (listener, mut events) = ChannelListener::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_s);
    let t0 = Instant::now();
    let client = AppClient::start(
        env.clone(),
        masters,
        desc,
        listener,
        &flint_conf::Conf::new(),
    )
    .context("cannot start the application client")?;

    let mut t = Timings::default();
    let (running_tx, mut running_rx) = mpsc::unbounded_channel::<Duration>();
    let mut app: Option<(AppId, EndpointRef<MasterMsg>)> = None;
    let mut outcome: anyhow::Result<()> = Ok(());
    while t.all_added.is_none() || t.all_running.is_none() {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                outcome = Err(anyhow::anyhow!(
                    "timed out after {} s: {} of {} executors added, all running: {}",
                    args.timeout_s, t.added, args.executors, t.all_running.is_some()
                ));
                break;
            }
            Some(at) = running_rx.recv() => t.all_running = Some(at),
            event = events.recv() => match event {
                Some(AppEvent::Connected(app_id)) => {
                    t.registered = Some(t0.elapsed());
                    let address = client.master_address().context("registered without a master")?;
                    let master = env
                        .setup_endpoint_ref::<MasterMsg>(&address, MASTER_ENDPOINT)
                        .await
                        .context("cannot look up the master to poll its state")?;
                    tokio::spawn(poll_running(
                        master.clone(),
                        app_id.clone(),
                        args.executors,
                        Duration::from_millis(args.poll_ms.max(1)),
                        t0,
                        running_tx.clone(),
                        env.clone(),
                    ));
                    app = Some((app_id, master));
                }
                Some(AppEvent::ExecutorAdded { worker_id, .. }) => {
                    t.added += 1;
                    *t.per_worker.entry(worker_id.to_string()).or_default() += 1;
                    if t.added == args.executors {
                        t.all_added = Some(t0.elapsed());
                    }
                }
                Some(AppEvent::ExecutorRemoved { exec_id, message, exit_status, .. }) => {
                    t.removed.push(format!("{exec_id}: {message} (exit {exit_status:?})"));
                }
                Some(AppEvent::Dead(reason)) => {
                    outcome = Err(anyhow::anyhow!("the application died: {reason}"));
                    break;
                }
                Some(_) => {}
                None => {
                    outcome = Err(anyhow::anyhow!("the application client's events ended"));
                    break;
                }
            }
        }
    }

    // Stop the application; wait until its cores are free so the next run
    // finds an idle cluster.
    let stop_started = Instant::now();
    client.stop().await;
    let mut released = None;
    let mut workers = None;
    if let Some((_, master)) = &app {
        let free_deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < free_deadline {
            if let Ok(status) = master.ask(RequestMasterState).await {
                workers = Some(status.alive_workers);
                if status.cores_used == 0 {
                    released = Some(stop_started.elapsed());
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(args.poll_ms.max(1))).await;
        }
    }
    env.shutdown();
    env.await_termination().await;

    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    let after_reg = |d: Option<Duration>| match (d, t.registered) {
        (Some(d), Some(r)) => Some(d.saturating_sub(r).as_secs_f64() * 1e3),
        _ => None,
    };
    let line = json!({
        "bench": "placement",
        "system": "flint",
        "label": args.label,
        "executors": args.executors,
        "cores_per_executor": args.cores_per_executor,
        "alive_workers": workers,
        "registered_ms": ms(t.registered),
        "all_added_ms": ms(t.all_added),
        "all_running_ms": ms(t.all_running),
        "added_after_registration_ms": after_reg(t.all_added),
        "running_after_registration_ms": after_reg(t.all_running),
        "released_after_stop_ms": ms(released),
        "executors_added": t.added,
        "executors_per_worker": t.per_worker,
        "executors_removed": t.removed,
        "ok": outcome.is_ok() && t.removed.is_empty(),
    });
    println!("{line}");
    outcome?;
    if !t.removed.is_empty() {
        bail!(
            "{} executor(s) ended while placing: {}",
            t.removed.len(),
            t.removed.join("; ")
        );
    }
    if released.is_none() {
        bail!("the master still showed cores in use 30 s after the application stopped");
    }
    Ok(())
}

/// Asks the master for its state every `every` until application `app_id`
/// shows `want` RUNNING executors, then sends the elapsed time since `t0`.
async fn poll_running(
    master: EndpointRef<MasterMsg>,
    app_id: AppId,
    want: u32,
    every: Duration,
    t0: Instant,
    tx: mpsc::UnboundedSender<Duration>,
    env: RpcEnv,
) {
    loop {
        tokio::select! {
            _ = env.cancelled() => return,
            _ = tx.closed() => return,
            status = master.ask(RequestMasterState) => {
                if let Ok(status) = status {
                    if running(&status, &app_id) >= want {
                        let _ = tx.send(t0.elapsed());
                        return;
                    }
                }
            }
        }
        tokio::select! {
            _ = env.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// How many of `app_id`'s executors the master shows RUNNING.
fn running(status: &MasterStatusJson, app_id: &AppId) -> u32 {
    status
        .active_apps
        .iter()
        .filter(|a| a.id == *app_id)
        .flat_map(|a| &a.executors)
        .filter(|e| e.state == ExecutorState::Running)
        .count()
        .try_into()
        .unwrap_or(u32::MAX)
}
