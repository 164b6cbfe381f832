//! `flint status <driver-id|app-id>` and `flint kill <driver-id|app-id>`: a
//! cluster-mode driver's or an application's state and its kill, asked of the
//! master(s) over authenticated RPC, the same connection `flint status` makes.
//!
//! Drivers: `RequestDriverAttempt` (Spark's `DriverStatusRequest`, but following a
//! supervised driver the master relaunched under a new id to its newest attempt) and
//! `RequestKillDriver` (Spark's `KillDriver`), sent to that newest attempt.
//! Applications: the master's status document (`RequestMasterState`) and
//! `KillApplication` (the web UI's kill: the master kills the executors and the
//! application ends KILLED).
//!
//! A standby master refuses; each master is asked in turn and the first that knows
//! the id answers. `flint kill` waits (bounded) until the driver or application is
//! in a final state and prints it. [`follow`] is how `flint submit` follows its
//! driver.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use flint_proto::messages::{
    DriverAttemptResponse, DriverWatchMsg, KillApplication, MasterMsg, RequestDriverAttempt,
    RequestKillDriver, RequestMasterState, WatchDriver, MASTER_ENDPOINT,
};
use flint_proto::status::AppStatusJson;
use flint_proto::{AppId, DriverId, DriverState};
use flint_rpc::{EndpointRef, RpcAddress, RpcConf, RpcEnv};

use crate::settings::{self, CommonArgs};
use crate::submit_cluster::{exit_for, Reporter, EXIT_LOST};

/// Arguments of `flint kill`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
A driver (driver-…) is killed on its worker and, supervised or not, not relaunched;
an application (app-…) has its executors killed and ends KILLED.
Exit status: 0 killed (the final state is printed); 1 unknown id, nothing to kill,
no master answered, or not final within --wait.")]
pub struct KillArgs {
    /// The master(s), flint://host:port[,host2:port2].
    #[arg(long, env = "FLINT_MASTER", value_name = "URL")]
    pub master: String,
    /// The driver (`driver-…`, as `flint submit` printed it) or application (`app-…`).
    #[arg(value_name = "DRIVER_ID|APP_ID")]
    pub driver_id: String,
    /// How long to wait for the driver to reach a final state.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub wait: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// What a `driver-…` / `app-…` argument names.
pub enum Target {
    /// A cluster-mode driver.
    Driver(DriverId),
    /// An application.
    App(AppId),
}

/// Parses a driver or application id, naming both forms when it is neither.
pub fn target(text: &str) -> anyhow::Result<Target> {
    if text.starts_with("app-") {
        return text
            .parse()
            .map(Target::App)
            .with_context(|| format!("{text:?} is not an application id (app-<date>-<number>)"));
    }
    text.parse().map(Target::Driver).with_context(|| {
        format!(
            "{text:?} is not a driver id (driver-<date>-<number>) nor an application id \
             (app-<date>-<number>)"
        )
    })
}

/// Masters and a client env to ask them from.
pub struct Masters {
    env: RpcEnv,
    addrs: Vec<RpcAddress>,
}

impl Masters {
    /// A client env for the masters in `master` (`flint://h:p[,h2:p2]`).
    pub fn connect(master: &str, common: &CommonArgs) -> anyhow::Result<Masters> {
        let addrs = RpcAddress::parse_list(master)?;
        let conf = settings::load(common, &crate::known_keys())?;
        let env = RpcEnv::client(RpcConf::from_conf(&conf)?)?;
        Ok(Masters { env, addrs })
    }

    /// The client env.
    pub fn env(&self) -> &RpcEnv {
        &self.env
    }

    /// The newest attempt of the driver, from the first master that knows it.
    pub async fn attempt(&self, id: &DriverId) -> anyhow::Result<DriverAttemptResponse> {
        let mut errors = Vec::new();
        let mut first = None;
        for m in &self.addrs {
            let r = self.env.endpoint_ref::<MasterMsg>(m, MASTER_ENDPOINT);
            match r
                .ask(RequestDriverAttempt {
                    driver_id: id.clone(),
                })
                .await
            {
                Ok(a) if a.status.found => return Ok(a),
                Ok(a) => {
                    first.get_or_insert(a);
                }
                Err(e) => errors.push(format!("cannot reach the master at {m}: {e}")),
            }
        }
        match first {
            Some(a) => bail!(
                "no master knows driver {id}{}",
                a.status
                    .exception
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
            None => bail!("no master answered: {}", errors.join("; ")),
        }
    }

    /// The status of the first ALIVE master (else the first that answers).
    pub async fn master_state(&self) -> anyhow::Result<flint_proto::status::MasterStatusJson> {
        let mut errors = Vec::new();
        let mut first = None;
        for m in &self.addrs {
            let r = self.env.endpoint_ref::<MasterMsg>(m, MASTER_ENDPOINT);
            match r.ask(RequestMasterState).await {
                Ok(s) if s.status == flint_proto::MasterStatus::Alive => return Ok(s),
                Ok(s) => {
                    first.get_or_insert(s);
                }
                Err(e) => errors.push(format!("cannot reach the master at {m}: {e}")),
            }
        }
        first.ok_or_else(|| anyhow::anyhow!("no master answered: {}", errors.join("; ")))
    }

    /// The application, active or completed, from the first master that knows it.
    pub async fn app(&self, id: &AppId) -> anyhow::Result<AppStatusJson> {
        let mut errors = Vec::new();
        let mut answered = false;
        for m in &self.addrs {
            let r = self.env.endpoint_ref::<MasterMsg>(m, MASTER_ENDPOINT);
            match r.ask(RequestMasterState).await {
                Ok(s) => {
                    answered = true;
                    if let Some(a) = s
                        .active_apps
                        .into_iter()
                        .chain(s.completed_apps)
                        .find(|a| &a.id == id)
                    {
                        return Ok(a);
                    }
                }
                Err(e) => errors.push(format!("cannot reach the master at {m}: {e}")),
            }
        }
        if answered {
            bail!("no master knows application {id}; `flint status` lists the applications")
        }
        bail!("no master answered: {}", errors.join("; "))
    }
}

impl Drop for Masters {
    fn drop(&mut self) {
        self.env.shutdown();
    }
}

/// A followed state is final: a driver record ends RELAUNCHING only when the
/// master relaunched it under a new id, which [`RequestDriverAttempt`] follows, so
/// RELAUNCHING here means "waiting out its back-off".
fn is_final(state: Option<DriverState>) -> bool {
    state.is_some_and(DriverState::is_final)
}

/// One line: `driver-… RUNNING on worker-… (host:port)[ (relaunch N)]: why`.
pub fn line(a: &DriverAttemptResponse, asked: &DriverId) -> String {
    render(a, asked, true)
}

fn render(a: &DriverAttemptResponse, asked: &DriverId, host_port: bool) -> String {
    let s = &a.status;
    let id = a.driver_id.as_ref().unwrap_or(asked);
    let state = s.state.map_or("UNKNOWN".to_string(), |s| s.to_string());
    let mut out = format!("{id} {state}");
    if let Some(w) = &s.worker_id {
        out.push_str(&format!(" on {w}"));
        if let Some(hp) = s.worker_host_port.as_ref().filter(|_| host_port) {
            out.push_str(&format!(" ({hp})"));
        }
    }
    if a.relaunches > 0 {
        out.push_str(&format!(" (relaunch {})", a.relaunches));
    }
    if id != asked {
        out.push_str(&format!(" (relaunched from {asked})"));
    }
    if let Some(e) = &s.exception {
        out.push_str(&format!(": {e}"));
    }
    out
}

fn app_line(a: &AppStatusJson) -> String {
    let running = a
        .executors
        .iter()
        .filter(|e| e.state == flint_proto::ExecutorState::Running)
        .count();
    format!(
        "{} {} name={} cores={} executors={running}/{}",
        a.id,
        a.state,
        a.name,
        a.cores,
        a.executors.len()
    )
}

/// `flint status <driver-id|app-id>`: prints the state as a line, or as JSON.
pub async fn status(master: &str, id: &str, json: bool, common: &CommonArgs) -> anyhow::Result<()> {
    let target = target(id)?;
    let masters = Masters::connect(master, common)?;
    match target {
        Target::Driver(id) => {
            let a = masters.attempt(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a).context("encoding")?);
            } else {
                println!("{}", line(&a, &id));
            }
        }
        Target::App(id) => {
            let a = masters.app(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a).context("encoding")?);
            } else {
                println!("{}", app_line(&a));
            }
        }
    }
    Ok(())
}

/// `flint kill <driver-id|app-id>`: asks the master to kill it, then waits until it
/// is in a final state and prints it.
pub async fn kill(args: KillArgs) -> anyhow::Result<()> {
    let target = target(&args.driver_id)?;
    let wait = flint_conf::parse_duration(&args.wait, flint_conf::TimeUnit::Seconds)
        .map_err(|e| anyhow::anyhow!("--wait {} is not a duration ({e}), e.g. 30s", args.wait))?;
    let masters = Masters::connect(&args.master, &args.common)?;
    let deadline = Instant::now() + wait;
    match target {
        Target::Driver(id) => kill_driver(&masters, &id, deadline, &args.wait).await,
        Target::App(id) => kill_app(&masters, &id, deadline, &args.wait).await,
    }
}

async fn kill_driver(
    masters: &Masters,
    asked: &DriverId,
    deadline: Instant,
    wait: &str,
) -> anyhow::Result<()> {
    // The newest attempt is the one to kill (an older one ended RELAUNCHING).
    let current = match masters.attempt(asked).await {
        Ok(a) => a.driver_id.unwrap_or_else(|| asked.clone()),
        Err(_) => asked.clone(),
    };
    let mut refusals = Vec::new();
    let mut killed = false;
    for m in &masters.addrs {
        let r = masters.env.endpoint_ref::<MasterMsg>(m, MASTER_ENDPOINT);
        match r
            .ask(RequestKillDriver {
                driver_id: current.clone(),
            })
            .await
        {
            Ok(a) if a.success => {
                killed = true;
                break;
            }
            Ok(a) => refusals.push(format!("{m}: {}", a.message)),
            Err(e) => refusals.push(format!("cannot reach the master at {m}: {e}")),
        }
    }
    if !killed {
        bail!("cannot kill driver {current}: {}", refusals.join("; "));
    }
    loop {
        let a = masters.attempt(asked).await?;
        if is_final(a.status.state) {
            println!("{}", line(&a, asked));
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "driver {current} is still {} after {wait}; see `flint status {current}`",
                a.status
                    .state
                    .map_or("UNKNOWN".to_string(), |s| s.to_string()),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn kill_app(
    masters: &Masters,
    id: &AppId,
    deadline: Instant,
    wait: &str,
) -> anyhow::Result<()> {
    let mut refusals = Vec::new();
    let mut killed = false;
    for m in &masters.addrs {
        let r = masters.env.endpoint_ref::<MasterMsg>(m, MASTER_ENDPOINT);
        match r.ask(KillApplication { app_id: id.clone() }).await {
            Ok(true) => {
                killed = true;
                break;
            }
            Ok(false) => refusals.push(format!("{m}: not an active application there")),
            Err(e) => refusals.push(format!("cannot reach the master at {m}: {e}")),
        }
    }
    if !killed {
        bail!(
            "cannot kill application {id}: {}; `flint status` lists the running ones",
            refusals.join("; ")
        );
    }
    loop {
        let a = masters.app(id).await?;
        if a.state.is_finished() {
            println!("{}", app_line(&a));
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("application {id} is still {} after {wait}", a.state);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What [`follow`] has printed so far, and the exit status once the driver ended.
struct Follower {
    shown_id: DriverId,
    last: Option<DriverState>,
    relaunches: u32,
}

impl Follower {
    /// Prints (and relays to the launcher) what changed in `a`; the exit status
    /// when its state is final.
    async fn observe(
        &mut self,
        a: &DriverAttemptResponse,
        reporter: Option<&Reporter>,
    ) -> Option<u8> {
        if !a.status.found {
            return None;
        }
        let current = a.driver_id.clone().unwrap_or_else(|| self.shown_id.clone());
        let relaunched = a.relaunches > self.relaunches;
        let state = a.status.state;
        if relaunched && state != Some(DriverState::Relaunching) {
            println!("{} RELAUNCHING (relaunch {})", self.shown_id, a.relaunches);
            if let Some(r) = reporter {
                r.relay(DriverState::Relaunching).await;
            }
        }
        if current != self.shown_id {
            println!("{} relaunched as {current}", self.shown_id);
            self.shown_id = current.clone();
            self.last = None;
            if let Some(r) = reporter {
                r.set_driver_id(current.as_ref());
            }
        }
        if state != self.last || (relaunched && state == Some(DriverState::Relaunching)) {
            println!("{}", render(a, &current, false));
            self.last = state;
            if let (Some(r), Some(s)) = (reporter, state) {
                r.relay(s).await;
            }
        }
        self.relaunches = a.relaunches;
        state.filter(|_| is_final(state)).map(exit_for)
    }
}

/// Where the master pushes a watched driver's changes in this process.
struct WatchEndpoint {
    tx: tokio::sync::mpsc::Sender<DriverAttemptResponse>,
}

impl flint_rpc::Endpoint for WatchEndpoint {
    type Msg = DriverWatchMsg;

    fn receive(&mut self, _ctx: &flint_rpc::Context<DriverWatchMsg>, msg: DriverWatchMsg) {
        let DriverWatchMsg::DriverUpdate(u) = msg;
        // Full only if this process stalls; the poll then catches up.
        let _ = self.tx.try_send(u.attempt);
    }
}

/// How often [`follow`] asks while pushes arrive (a liveness check), and while they
/// do not (the master refused the watch, or it was lost with a connection).
const POLL_WATCHED: Duration = Duration::from_secs(1);
const POLL_UNWATCHED: Duration = Duration::from_millis(100);
/// A poll's answer is used only when no push came for this long (so an answer
/// overtaken by a push never undoes it).
const PUSH_QUIET: Duration = Duration::from_secs(2);

/// `flint submit`'s wait: follows the driver's newest attempt and prints each
/// change — RELAUNCHING (with the relaunch count), a relaunch under a new id, the
/// new attempt's states — until a final state; returns the exit status for it
/// ([`exit_for`]), or [`EXIT_LOST`] after 30 s without an answer.
///
/// The master pushes every change (`WatchDriver`), so a state that lasts a few
/// milliseconds is still seen; asking (`RequestDriverAttempt`) is the fallback,
/// every 100 ms without pushes, every second as a liveness check with them.
///
/// Under a launcher, `reporter` hears every state printed (the final one waited
/// for), and a stop from the launcher asks the master to kill the newest attempt,
/// whose KILLED is then followed like any state.
pub(crate) async fn follow(
    env: &RpcEnv,
    master: &EndpointRef<MasterMsg>,
    id: &DriverId,
    reporter: Option<&Reporter>,
) -> u8 {
    let mut f = Follower {
        shown_id: id.clone(),
        last: Some(DriverState::Submitted),
        relaunches: 0,
    };
    let (tx, mut pushed) = tokio::sync::mpsc::channel(64);
    let watching = match env.setup_endpoint(&format!("driver-watch-{id}"), WatchEndpoint { tx }) {
        Ok(me) => master
            .send(WatchDriver {
                driver_id: id.clone(),
                watcher: me,
            })
            .is_ok(),
        Err(e) => {
            tracing::debug!("cannot watch {id}, polling: {e}");
            false
        }
    };
    let mut last_push: Option<Instant> = None;
    let mut unanswered_since: Option<Instant> = None;
    let mut kill_asked = false;
    let mut next_poll = Instant::now();
    loop {
        let poll_in = next_poll.saturating_duration_since(Instant::now());
        let stop = async {
            match reporter {
                Some(r) if !kill_asked => r.stop_asked().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(a) = pushed.recv(), if watching => {
                last_push = Some(Instant::now());
                unanswered_since = None;
                if let Some(code) = f.observe(&a, reporter).await {
                    return code;
                }
            }
            _ = tokio::time::sleep(poll_in) => {
                let pushes_flow = last_push.is_some_and(|t| t.elapsed() < PUSH_QUIET);
                next_poll = Instant::now() + if pushes_flow { POLL_WATCHED } else { POLL_UNWATCHED };
                match master.ask(RequestDriverAttempt { driver_id: id.clone() }).await {
                    Ok(a) if a.status.found => {
                        unanswered_since = None;
                        let quiet = last_push.is_none_or(|t| t.elapsed() >= PUSH_QUIET);
                        if quiet {
                            if let Some(code) = f.observe(&a, reporter).await {
                                return code;
                            }
                        }
                    }
                    other => {
                        let since = *unanswered_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_secs(30) {
                            eprintln!(
                                "flint submit: no answer about {} for 30 s ({other:?}); see \
                                 `flint status {}`",
                                f.shown_id, f.shown_id
                            );
                            return EXIT_LOST;
                        }
                    }
                }
            }
            _ = stop => {
                kill_asked = true;
                let target = f.shown_id.clone();
                println!("{target}: the launcher asked to stop; asking the master to kill it");
                match master.ask(RequestKillDriver { driver_id: target.clone() }).await {
                    Ok(k) if k.success => {}
                    Ok(k) => eprintln!("flint submit: the master did not kill {target}: {}", k.message),
                    Err(e) => eprintln!("flint submit: cannot ask the master to kill {target}: {e}"),
                }
            }
        }
    }
}
