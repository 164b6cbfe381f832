//! `flint submit --deploy-mode cluster`: the binary goes to the master, a worker runs
//! it as the driver.
//!
//! 1. The binary's SHA-256 is computed here; the master's binary store is asked for
//!    it (`LookupBinary`); only a binary it does not hold is sent, as a bulk push
//!    stream (`flint.binary-upload/1`), after which the store is asked again until it
//!    has stored and verified it (or says why not).
//! 2. `RequestSubmitDriver` with the command `{{BINARY}} args…`, the binary's source
//!    (the master's file server, by hash) and the settings as `FLINT_*` variables,
//!    as in client mode (secrets excepted: the worker hands its drivers the
//!    cluster secret itself). The master picks a worker with the driver's cores and
//!    memory; that worker fetches the binary by hash into its binary cache, checks
//!    it and runs it under its driver runner. No shared file system is involved.
//! 3. Unless `--no-wait`, the driver's state is followed (pushed by the master,
//!    asked as a fallback: `submit_driver::follow`; each change printed) until it
//!    is final, and the exit status says which ([`exit_for`]).
//!
//! Under a launcher (`FLINT_LAUNCHER_*` set, see `flint-launcher`), submit is the
//! application's reporter: it connects before it uploads (CONNECTED), reports the
//! driver id and SUBMITTED once a master accepted the driver, then every state the
//! master reports (RUNNING, RELAUNCHING, SUBMITTED again, the final one, ERROR as
//! FAILED), following the driver by id; a `stop` from the launcher asks the master to
//! kill the driver, whose KILLED is then relayed like any state.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use flint_launcher::backend::Backend;
use flint_launcher::State as AppState;
use flint_proto::messages::{
    BinaryLookup, BinaryStoreMsg, LookupBinary, MasterMsg, RequestSubmitDriver,
    BINARY_STORE_ENDPOINT, BINARY_UPLOAD_STREAM, MASTER_ENDPOINT,
};
use flint_proto::{BinarySource, DriverDescription, DriverState, ExecutorCommand};
use flint_rpc::{RpcAddress, RpcConf, RpcEnv};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use tokio::io::AsyncReadExt as _;
use tokio::sync::Notify;

use crate::settings::{self, CommonArgs};
use crate::submit::{usage, Plan};

/// Exit status after a driver that FAILED (exited non-zero).
pub const EXIT_FAILED: u8 = 1;
/// Exit status after a driver that was KILLED.
pub const EXIT_KILLED: u8 = 3;
/// Exit status after a driver in ERROR (could not be prepared or run, or lost
/// with its worker).
pub const EXIT_ERROR: u8 = 4;
/// Exit status when the driver's end is not known (RELAUNCHING under a new id,
/// UNKNOWN, or no master answers about it any more).
pub const EXIT_LOST: u8 = 5;

/// The exit status for a driver's final state: FINISHED 0, FAILED 1, KILLED 3,
/// ERROR 4, anything else 5.
pub fn exit_for(state: DriverState) -> u8 {
    match state {
        DriverState::Finished => 0,
        DriverState::Failed => EXIT_FAILED,
        DriverState::Killed => EXIT_KILLED,
        DriverState::Error => EXIT_ERROR,
        _ => EXIT_LOST,
    }
}

async fn sha256_of(path: &std::path::Path) -> anyhow::Result<(String, u64)> {
    let mut f = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((
        h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        size,
    ))
}

/// Makes sure the master's store holds the binary; returns where workers fetch it.
async fn upload(env: &RpcEnv, master: &RpcAddress, plan: &Plan) -> anyhow::Result<BinarySource> {
    let (sha256, size) = sha256_of(&plan.binary).await?;
    let store = env.endpoint_ref::<BinaryStoreMsg>(master, BINARY_STORE_ENDPOINT);
    let ask = || async {
        store
            .ask(LookupBinary {
                sha256: sha256.clone(),
            })
            .await
            .with_context(|| format!("cannot ask the master at {master} for binary {sha256}"))
    };
    let first: BinaryLookup = ask().await?;
    if let Some(uri) = first.uri {
        println!(
            "binary {} ({size} bytes) already on the master; not sent",
            &sha256[..12]
        );
        return Ok(BinarySource { uri, sha256, size });
    }
    if !first.uploading {
        let mut sink = env
            .push_stream(
                master,
                BINARY_UPLOAD_STREAM,
                Bytes::from(format!("{sha256} {size}")),
            )
            .await
            .with_context(|| format!("cannot upload to the master at {master}"))?;
        let mut f = tokio::fs::File::open(&plan.binary)
            .await
            .with_context(|| format!("cannot read {}", plan.binary.display()))?;
        let mut buf = vec![0u8; sink.chunk_size().max(1)];
        loop {
            let n = f
                .read(&mut buf)
                .await
                .with_context(|| format!("cannot read {}", plan.binary.display()))?;
            if n == 0 {
                break;
            }
            sink.send(Bytes::copy_from_slice(&buf[..n]))
                .await
                .context("the upload to the master broke off")?;
        }
        sink.finish()
            .await
            .context("the upload to the master broke off")?;
    }
    // The store answers once it has checked and stored the bytes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = ask().await?;
        if let Some(uri) = a.uri {
            if !first.uploading {
                println!(
                    "binary {} ({size} bytes) uploaded to the master",
                    &sha256[..12]
                );
            }
            return Ok(BinarySource { uri, sha256, size });
        }
        if !a.uploading {
            if let Some(e) = a.error {
                bail!("the master refused the binary: {e}");
            }
        }
        if Instant::now() >= deadline {
            bail!("the master has not stored binary {sha256} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The launcher that started this submit, when there is one.
pub(crate) struct Reporter {
    backend: Arc<Backend>,
    /// Notified when the launcher asks the application to stop.
    stop: Arc<Notify>,
}

impl Reporter {
    /// Connects when the launcher variables are set; a failure is a warning only.
    async fn connect() -> Option<Reporter> {
        let stop = Arc::new(Notify::new());
        let on_stop = stop.clone();
        let connected = tokio::task::spawn_blocking(move || {
            Backend::connect_from_env(move || on_stop.notify_one())
        })
        .await;
        match connected {
            Ok(Ok(Some(b))) => Some(Reporter {
                backend: Arc::new(b),
                stop,
            }),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                eprintln!("flint submit: not reporting to the launcher: {e}");
                None
            }
            Err(e) => {
                eprintln!("flint submit: not reporting to the launcher: {e}");
                None
            }
        }
    }

    /// Relays a driver state the master reported: a final one with [`Self::finish`],
    /// others as they come.
    pub(crate) async fn relay(&self, state: DriverState) {
        match app_state(state) {
            Some(a) if state.is_final() => self.finish(a).await,
            Some(a) => self.backend.set_state(a),
            None => {}
        }
    }

    /// The driver is now known under `id` (a supervised relaunch gets a new one).
    pub(crate) fn set_driver_id(&self, id: &str) {
        self.backend.set_driver_id(id);
    }

    /// Waits until the launcher asks the application to stop.
    pub(crate) async fn stop_asked(&self) {
        self.stop.notified().await;
    }

    /// Reports the final state and waits (bounded) until the launcher has it.
    async fn finish(&self, state: AppState) {
        let b = self.backend.clone();
        let _ = tokio::task::spawn_blocking(move || b.finish(state)).await;
    }
}

/// The launcher's view of a driver state (ERROR is FAILED; UNKNOWN says nothing).
fn app_state(s: DriverState) -> Option<AppState> {
    Some(match s {
        DriverState::Submitted => AppState::Submitted,
        DriverState::Running => AppState::Running,
        DriverState::Relaunching => AppState::Relaunching,
        DriverState::Finished => AppState::Finished,
        DriverState::Failed | DriverState::Error => AppState::Failed,
        DriverState::Killed => AppState::Killed,
        DriverState::Unknown => return None,
    })
}

/// Cluster mode: upload, submit, and follow the driver unless `no_wait`.
pub async fn run(plan: &Plan, args: &[OsString], no_wait: bool) -> anyhow::Result<u8> {
    let reporter = Reporter::connect().await;
    let masters = RpcAddress::parse_list(&plan.master)?;
    let conf = settings::load(&CommonArgs::default(), &crate::known_keys())?;
    let env = RpcEnv::client(RpcConf::from_conf(&conf)?)?;
    let result = submit(&env, &masters, plan, args, no_wait, reporter.as_ref()).await;
    env.shutdown();
    if let Some(r) = &reporter {
        match &result {
            Err(_) => r.finish(AppState::Failed).await,
            // --no-wait: the handle stops hearing here (and ends LOST).
            Ok(_) => r.finish(AppState::Lost).await,
        }
    }
    result
}

async fn submit(
    env: &RpcEnv,
    masters: &[RpcAddress],
    plan: &Plan,
    args: &[OsString],
    no_wait: bool,
    reporter: Option<&Reporter>,
) -> anyhow::Result<u8> {
    let mut program_args = Vec::new();
    for a in args {
        match a.to_str() {
            Some(s) => program_args.push(s.to_string()),
            None => {
                return Err(usage(format!(
                    "argument {a:?} is not UTF-8; cluster mode passes arguments as text"
                )))
            }
        }
    }
    if masters.is_empty() {
        bail!("no master given");
    }
    // The binary goes to the first master that takes it (with several masters, one
    // that is down does not stop the submission).
    let mut upload_errors = Vec::new();
    let mut uploaded = None;
    for m in masters {
        match upload(env, m, plan).await {
            Ok(s) => {
                uploaded = Some(s);
                break;
            }
            Err(e) => upload_errors.push(format!("{e:#}")),
        }
    }
    let Some(source) = uploaded else {
        bail!("no master took the binary: {}", upload_errors.join("; "));
    };
    let mut cmd = ExecutorCommand::new("{{BINARY}}");
    cmd.args = program_args;
    cmd.env = plan
        .env()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("FLINT_AUTH_"))
        .collect();
    cmd.binary = Some(source.clone());
    let mut desc = DriverDescription::new(source.uri.clone(), cmd);
    if let Some(mb) = plan.driver_memory_mb {
        desc.memory_mb = mb;
    }
    if let Some(c) = plan.driver_cores {
        desc.cores = c;
    }
    desc.supervise = plan.supervise;
    let mut refusals = Vec::new();
    let mut submitted = None;
    for m in masters {
        let r = env.endpoint_ref::<MasterMsg>(m, MASTER_ENDPOINT);
        match r.ask(RequestSubmitDriver { desc: desc.clone() }).await {
            Ok(a) if a.success => {
                submitted = a.driver_id.map(|id| (id, m.clone()));
                break;
            }
            Ok(a) => refusals.push(format!("{m}: {}", a.message)),
            Err(e) => refusals.push(format!("cannot reach the master at {m}: {e}")),
        }
    }
    let Some((id, master)) = submitted else {
        bail!("no master accepted the driver: {}", refusals.join("; "));
    };
    if let Some(r) = reporter {
        r.backend.set_driver_id(id.as_ref());
        r.backend.set_state(AppState::Submitted);
    }
    if no_wait {
        println!("{id}");
        return Ok(0);
    }
    println!("{id} SUBMITTED");
    let r = env.endpoint_ref::<MasterMsg>(&master, MASTER_ENDPOINT);
    Ok(crate::submit_driver::follow(env, &r, &id, reporter).await)
}
