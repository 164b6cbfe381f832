//! [`Context`]: the driver's entry to flint — settings, the master, the backend that
//! runs jobs, and the sources of datasets, broadcasts and accumulators.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flint_conf::{Conf, SizeUnit, TimeUnit};
use flint_proto::ApplicationState;

use crate::dataset::{slice, Dataset, Kind, Node};
use crate::entry::{entry_point, EntryPoint};
use crate::executor::{ExecutorEnv, ShuffleEnv};
use crate::local;
use crate::master::{self, Master};
use crate::ops::{RangeSource, TextSource, VecSource};
use crate::scheduler::{JobFailure, SchedulerConf, ShuffleId, StageId, StageSpec};
use crate::shared::{Accumulator, Broadcast, BroadcastStore};
use crate::shell::{Accumulators, Backend, JobEvent, JobRequest, StageWork};
use crate::text;
use crate::{Data, Error, Result};
use flint_shuffle::{Layout, ShuffleConf};

/// Set in the environment of an executor process a worker starts for a flint driver:
/// the driver to serve. A program with work of its own before its first
/// [`ContextBuilder::get_or_create`] can test it and call `get_or_create` first.
pub const EXECUTOR_ENV: &str = "FLINT_EXECUTOR_DRIVER_URL";

/// The process's active context, for [`ContextBuilder::get_or_create`].
static ACTIVE: Mutex<Option<Weak<Inner>>> = Mutex::new(None);

/// The contexts alive in this process, for the signal thread.
static LIVE: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

/// SIGINT/SIGTERM in a driver: every running job is cancelled (its action returns
/// [`Error::JobCancelled`]) and every context ends KILLED — its shuffle files removed,
/// a cluster application unregistered, a launcher told; the signal thread then exits
/// the process (130 / 143).
fn on_signal(sig: i32) {
    let name = crate::cluster::signals::name(sig);
    let live: Vec<Arc<Inner>> = LIVE
        .lock()
        .map(|l| l.iter().filter_map(Weak::upgrade).collect())
        .unwrap_or_default();
    for inner in &live {
        inner.stopping.store(true, Ordering::SeqCst);
        tracing::warn!(app = %inner.app_id, "{name}: cancelling the running jobs; the application ends KILLED");
        let running: Vec<u64> = inner
            .running
            .lock()
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default();
        for job in running {
            inner
                .backend
                .cancel(job, format!("the driver received {name}"));
        }
    }
    // Let the cancelled jobs return their error before everything stops (bounded:
    // a job's thread may be busy in the program's own code).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && live
            .iter()
            .any(|i| i.running.lock().map(|r| !r.is_empty()).unwrap_or(false))
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    for inner in &live {
        inner.finish(ApplicationState::Killed);
    }
}

/// Builds a [`Context`]: `Context::builder().app_name(..).master(..).conf(k, v)`.
///
/// Settings are layered, later winning: defaults, `$FLINT_CONF_DIR/flint.toml` (when
/// the variable is set), `FLINT_*` environment variables (`FLINT_TASK_MAX_FAILURES`),
/// then [`conf`](Self::conf). All are checked against flint's registry of settings.
///
/// ```
/// use flint::prelude::*;
/// # fn main() -> flint::Result<()> {
/// let ctx = Context::builder()
///     .app_name("demo")
///     .master("local[2]")
///     .conf("executor.memory", "512m")
///     .create()?;
/// assert_eq!(ctx.app_name(), "demo");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ContextBuilder {
    app_name: Option<String>,
    master: Option<String>,
    conf: Vec<(String, String)>,
}

impl ContextBuilder {
    /// The application's name (default: the executable's file name).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().app_name("pi").master("local").create()?;
    /// assert_eq!(ctx.app_name(), "pi");
    /// # Ok(()) }
    /// ```
    pub fn app_name(mut self, name: impl Into<String>) -> Self {
        self.app_name = Some(name.into());
        self
    }

    /// The master URL: `local`, `local[N]`, `local[*]`, `local[N,F]` (F: task
    /// attempts), `local-cluster[W,C,M]` or `flint://host:port[,host2:port]`. Default:
    /// `FLINT_MASTER`, else `local[*]`.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[3]").create()?;
    /// assert_eq!((ctx.master(), ctx.default_parallelism()), ("local[3]", 3));
    /// # Ok(()) }
    /// ```
    pub fn master(mut self, url: impl Into<String>) -> Self {
        self.master = Some(url.into());
        self
    }

    /// A setting (`flint conf` lists them); wins over the config file and `FLINT_*`.
    /// Unknown keys are refused naming the nearest one; keys of your own go under `app.`.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// let e = Context::builder().master("local").conf("executor.memroy", "1g").create().unwrap_err();
    /// assert!(e.to_string().contains("did you mean `executor.memory`?"), "{e}");
    /// ```
    pub fn conf(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.conf.push((key.into(), value.into()));
        self
    }

    /// The process's active context if there is one (settings given here are then
    /// ignored, as Spark's `getOrCreate` does), else a new one.
    ///
    /// In a process that a worker started as an executor, this is where it turns into
    /// an executor and serves tasks instead of returning.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let a = Context::builder().master("local[2]").get_or_create()?;
    /// let b = Context::builder().get_or_create()?;
    /// assert_eq!(a.app_id(), b.app_id());
    /// # Ok(()) }
    /// ```
    pub fn get_or_create(self) -> Result<Context> {
        executor_hook()?;
        let mut active = ACTIVE.lock().map_err(|_| Error::Stopped)?;
        if let Some(inner) = active.as_ref().and_then(Weak::upgrade) {
            if !inner.stopped.load(Ordering::SeqCst) {
                if self.master.is_some() || !self.conf.is_empty() {
                    tracing::warn!(app = %inner.app_id, "using the existing flint context; the master and settings given to this builder do not take effect");
                }
                return Ok(Context { inner });
            }
        }
        let ctx = self.create()?;
        *active = Some(Arc::downgrade(&ctx.inner));
        Ok(ctx)
    }

    /// A new context, whether or not another one is active (several may run in one
    /// process, each with its own task threads).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let a = Context::builder().master("local[1]").create()?;
    /// let b = Context::builder().master("local[1]").create()?;
    /// assert_ne!(a.app_id(), b.app_id());
    /// # Ok(()) }
    /// ```
    pub fn create(self) -> Result<Context> {
        executor_hook()?;
        let overrides: Vec<String> = self.conf.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let file = std::env::var_os("FLINT_CONF_DIR")
            .map(|d| PathBuf::from(d).join("flint.toml"))
            .filter(|p| p.is_file());
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        let loaded = flint_conf::load(file.as_deref(), vars, overrides.iter().map(String::as_str))?;
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        let master_url = self
            .master
            .or_else(|| {
                std::env::var("FLINT_MASTER")
                    .ok()
                    .filter(|m| !m.trim().is_empty())
            })
            .unwrap_or_else(|| "local[*]".to_string());
        let master = master::parse(&master_url)?;
        let app_name = self
            .app_name
            .or_else(|| loaded.conf.get("driver.app_name").map(str::to_string))
            .unwrap_or_else(default_app_name);
        Context::start(app_name, master_url, master, loaded.conf)
    }
}

/// Where a process started by a worker as an executor turns into one. The worker
/// sets [`EXECUTOR_ENV`]; the executor backend (`cluster::executor`) serves tasks
/// there and exits, never returning to the program's `main`.
fn executor_hook() -> Result<()> {
    crate::cluster::executor_hook();
    Ok(())
}

fn default_app_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "flint-app".to_string())
}

fn conf_u32(conf: &Conf, key: &str, default: u32) -> Result<u32> {
    let v = conf.u64(key, u64::from(default))?;
    u32::try_from(v).map_err(|_| {
        Error::Conf(flint_conf::ConfError::Invalid {
            key: key.to_string(),
            value: v.to_string(),
            reason: "too large".into(),
        })
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long a caller that found the context stopped waits for the stop to complete
/// (the launcher's flush alone may take 5 s).
const FINISH_WAIT: Duration = Duration::from_secs(15);

pub(crate) struct Inner {
    app_name: String,
    app_id: String,
    master: String,
    default_parallelism: u32,
    backend: Backend,
    cluster: Option<crate::cluster::Cluster>,
    local_env: Arc<ExecutorEnv>,
    /// This application's shuffle files under this host's `local.dir`, removed when it ends.
    shuffle_layout: Option<Layout>,
    ids: AtomicU64,
    accumulators: Arc<Accumulators>,
    broadcasts: Arc<BroadcastStore>,
    stopped: AtomicBool,
    /// A stop has begun (a launcher's `stop` or a signal, before they cancel the
    /// running jobs; [`finish`](Inner::finish)).
    stopping: AtomicBool,
    /// Set once [`finish`](Inner::finish) has run to its end (cluster, UI and launcher
    /// told). A job that fails once a stop has begun waits for it
    /// ([`wait_finished`](Inner::wait_finished)) before it returns: a program that
    /// returns from `main` on seeing its job cancelled or the context stopped would
    /// otherwise end the process while another thread is still reporting the final
    /// state, and the launcher would see the connection drop (LOST), not KILLED.
    finished: (Mutex<bool>, Condvar),
    /// Jobs being run (cancelled on SIGINT/SIGTERM).
    running: Mutex<HashSet<u64>>,
    /// Whether the last job ended in an error: a context dropped after that
    /// without [`Context::stop`] ends FAILED (the program gave up, `?` in `main`).
    last_job_failed: AtomicBool,
    ui: Option<crate::ui::Ui>,
    _progress: Option<crate::ui::progress::Progress>,
    /// The launcher this driver reports to (client mode under `flint-launcher`).
    launcher: Option<crate::launcher_backend::Link>,
}

impl Inner {
    /// Stops the shell and the cluster, the application ending in `state` (KILLED
    /// whatever `state` says once a signal interrupted the process).
    fn finish(&self, state: ApplicationState) {
        let state = if crate::cluster::signals::received().is_some() {
            ApplicationState::Killed
        } else {
            state
        };
        self.stopping.store(true, Ordering::SeqCst);
        self.stopped.store(true, Ordering::SeqCst);
        self.backend.stop();
        // The in-process executor's map outputs go with the application.
        self.local_env.remove_all_shuffles();
        if let Some(c) = &self.cluster {
            c.stop(state);
        }
        // Executors on this host that could not remove their application's shuffle
        // files (SIGKILLed, or stopped by their worker) left them under this host's
        // local.dir; the worker's shuffle service removes them on the others.
        if let Some(layout) = &self.shuffle_layout {
            if let Err(e) = layout.remove_app() {
                tracing::warn!(app = %self.app_id, "removing the application's shuffle files: {e}");
            }
        }
        if let Some(ui) = &self.ui {
            ui.stop();
        }
        if let Some(l) = &self.launcher {
            l.finish(state);
        }
        let (done, cv) = &self.finished;
        if let Ok(mut d) = done.lock() {
            *d = true;
        }
        cv.notify_all();
    }

    /// Once a stop has begun, waits (at most [`FINISH_WAIT`]) until
    /// [`finish`](Self::finish) has run to its end; see `finished`.
    fn wait_finished(&self) {
        if !self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let (done, cv) = &self.finished;
        let Ok(d) = done.lock() else { return };
        let _ = cv.wait_timeout_while(d, FINISH_WAIT, |d| !*d);
    }

    /// The launcher asked the application to stop: its jobs are cancelled and it
    /// ends KILLED.
    fn stop_for_launcher(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let running: Vec<u64> = self
            .running
            .lock()
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default();
        for job in running {
            self.backend
                .cancel(job, "the launcher asked the application to stop".into());
        }
        self.finish(ApplicationState::Killed);
    }
}

impl Drop for Inner {
    /// A context dropped without [`Context::stop`]: FAILED while the thread
    /// unwinds from a panic or when its last job failed, else FINISHED.
    fn drop(&mut self) {
        let state = if std::thread::panicking() || self.last_job_failed.load(Ordering::SeqCst) {
            ApplicationState::Failed
        } else {
            ApplicationState::Finished
        };
        self.finish(state);
    }
}

/// The driver's handle on an application: makes datasets, broadcasts and accumulators
/// and runs the jobs their actions start. Cheap to clone; jobs may run from several
/// threads at once (first in, first served).
///
/// ```
/// use flint::prelude::*;
/// # fn main() -> flint::Result<()> {
/// let ctx = Context::builder().app_name("squares").master("local[2]").create()?;
/// let squares: Vec<u64> = ctx.parallelize((1..=10u64).collect(), 4).map(|x| x * x).collect()?;
/// assert_eq!(squares[9], 100);
/// ctx.stop()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

impl Drop for Context {
    /// After SIGINT/SIGTERM, a program thread dropping its context waits for the
    /// signal thread to finish the clean-up and exit the process (130 / 143).
    fn drop(&mut self) {
        crate::cluster::signals::hold_if_interrupted();
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("app_id", &self.inner.app_id)
            .field("master", &self.inner.master)
            .finish()
    }
}

impl Context {
    /// A builder: `Context::builder().master("local[2]").get_or_create()`.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local").create()?;
    /// assert_eq!(ctx.default_parallelism(), 1);
    /// # Ok(()) }
    /// ```
    pub fn builder() -> ContextBuilder {
        ContextBuilder::default()
    }

    fn start(app_name: String, master_url: String, master: Master, conf: Conf) -> Result<Context> {
        // The driver UI first, so that the master's app entry can name its URL.
        let ui_conf = crate::ui::UiConf::from_conf(&conf)?;
        let ui_status = crate::ui::StatusCell::new(crate::ui::status::AppStatus::new(
            &app_name,
            crate::ui::wall_ms(),
            ui_conf.retained_jobs,
            ui_conf.retained_tasks,
        ));
        let ui = match ui_conf.enabled {
            true => crate::ui::Ui::start(&ui_conf, ui_status.clone())?,
            false => None,
        };
        let mut conf = conf;
        if let (Some(ui), None) = (&ui, conf.get(crate::ui::ADVERTISED_URL)) {
            conf.insert(
                crate::ui::ADVERTISED_URL,
                ui.url(),
                flint_conf::Source::Code,
            );
        }
        let (threads, url_failures) = match master {
            Master::Local {
                threads,
                max_failures,
            } => (threads, max_failures),
            Master::LocalCluster { workers, cores, .. } => ((workers * cores).max(2), None),
            Master::Cluster { .. } => (2, None),
        };
        let is_local = matches!(master, Master::Local { .. });
        let max_failures = match url_failures {
            Some(f) => f,
            None => conf_u32(&conf, "task.max_failures", 4)?,
        };
        let sched = SchedulerConf {
            max_failures,
            locality_wait_ms: millis(conf.duration(
                "locality.wait",
                Duration::from_secs(3),
                TimeUnit::Seconds,
            )?),
            starvation_timeout_ms: millis(conf.duration(
                "starvation.timeout",
                Duration::from_secs(15),
                TimeUnit::Seconds,
            )?),
            max_result_size: conf.bytes("driver.max_result_size", 1 << 30, SizeUnit::Bytes)?,
            // The in-process executor cannot go silent; cluster executors expire after
            // network.timeout without a heartbeat.
            shuffle_service: conf.bool("shuffle.service.enabled", false)?,
            max_stage_attempts: conf_u32(&conf, "stage.max_consecutive_attempts", 4)?,
            executor_timeout_ms: if is_local {
                0
            } else {
                millis(conf.duration(
                    "network.timeout",
                    Duration::from_secs(120),
                    TimeUnit::Seconds,
                )?)
            },
        };
        let memory = conf.bytes("executor.memory", 1 << 30, SizeUnit::Mebibytes)?;
        let default_parallelism = conf_u32(&conf, "default.parallelism", threads)?.max(1);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        static APPS: AtomicU64 = AtomicU64::new(0);
        let n = APPS.fetch_add(1, Ordering::Relaxed);
        let app_id = if n == 0 {
            format!("local-{}", wall.as_millis())
        } else {
            format!("local-{}-{n}", wall.as_millis())
        };
        let broadcasts = Arc::new(BroadcastStore::default());
        let accumulators: Arc<Accumulators> = Arc::new(Mutex::new(HashMap::new()));
        let env = Arc::new(ExecutorEnv::new("driver", memory, broadcasts.clone()));
        if is_local {
            let conf = ShuffleConf::from_conf(&conf, u64::from(threads))?;
            let layout = Layout::new(&conf.local_dirs, &app_id).map_err(|e| Error::Io {
                path: "local.dir".into(),
                reason: e.to_string(),
            })?;
            env.set_shuffle(ShuffleEnv {
                conf,
                layout,
                server: crate::shuffle::LOCAL.into(),
                remote: None,
            });
        }
        let launcher = crate::launcher_backend::connect();
        let (backend, app_id, cluster) = if is_local {
            let backend = local::start(threads, sched, env.clone(), accumulators.clone(), &app_id)
                .map_err(|e| Error::Io {
                    path: "task threads".into(),
                    reason: e.to_string(),
                })?;
            (backend, app_id, None)
        } else {
            let s = crate::cluster::start(
                &app_name,
                &master,
                &conf,
                sched,
                broadcasts.clone(),
                accumulators.clone(),
            )
            .map_err(|e| Error::MasterNotSupported {
                master: master_url.clone(),
                reason: e.to_string(),
            })?;
            (s.backend, s.app_id, Some(s.cluster))
        };
        tracing::info!(app = %app_id, name = %app_name, master = %master_url, threads, "flint context started");
        if let Ok(mut s) = ui_status.lock() {
            s.app_id = app_id.clone();
        }
        let progress = match ui_conf.show_progress {
            true => crate::ui::progress::Progress::start(ui_status.clone()),
            false => None,
        };
        if ui.is_some() || progress.is_some() {
            backend.set_recorder(crate::ui::Recorder::new(ui_status));
        }
        if let Some(ui) = &ui {
            tracing::info!(app = %app_id, "driver UI at {}", ui.url());
        }
        let shuffle_layout = ShuffleConf::from_conf(&conf, u64::from(threads))
            .ok()
            .and_then(|c| Layout::new(&c.local_dirs, &app_id).ok());
        let ctx = Context {
            inner: Arc::new(Inner {
                app_name,
                app_id,
                master: master_url,
                default_parallelism,
                backend,
                cluster,
                local_env: env,
                shuffle_layout,
                ids: AtomicU64::new(0),
                accumulators,
                broadcasts,
                stopped: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                finished: (Mutex::new(false), Condvar::new()),
                running: Mutex::new(HashSet::new()),
                last_job_failed: AtomicBool::new(false),
                ui,
                _progress: progress,
                launcher,
            }),
        };
        if let Some(l) = &ctx.inner.launcher {
            let inner = Arc::downgrade(&ctx.inner);
            l.on_stop(move || {
                if let Some(i) = inner.upgrade() {
                    i.stop_for_launcher();
                }
            });
            l.running(&ctx.inner.app_id);
        }
        // Every context, `local[N]` too: an interrupted local program would otherwise
        // leave its map outputs under `local.dir`.
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|w| w.strong_count() > 0);
            live.push(Arc::downgrade(&ctx.inner));
        }
        crate::cluster::signals::install(on_signal);
        Ok(ctx)
    }

    /// A new id, unique in this context (jobs, stages, caches, broadcasts, accumulators).
    pub(crate) fn next_id(&self) -> u64 {
        self.inner.ids.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn unpersist(&self, cache: u64) {
        self.inner.backend.unpersist(cache);
    }

    /// The in-process executor (tests look at its caches).
    #[cfg(test)]
    pub(crate) fn local_env(&self) -> &Arc<ExecutorEnv> {
        &self.inner.local_env
    }

    /// The application's id (`local-<millis>` for local masters).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local").create()?;
    /// assert!(ctx.app_id().starts_with("local-"));
    /// # Ok(()) }
    /// ```
    pub fn app_id(&self) -> &str {
        &self.inner.app_id
    }

    /// The application's name.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().app_name("n").master("local").create()?;
    /// assert_eq!(ctx.app_name(), "n");
    /// # Ok(()) }
    /// ```
    pub fn app_name(&self) -> &str {
        &self.inner.app_name
    }

    /// The master URL as given.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// assert_eq!(ctx.master(), "local[2]");
    /// # Ok(()) }
    /// ```
    pub fn master(&self) -> &str {
        &self.inner.master
    }

    /// The driver UI's URL (`http://127.0.0.1:4040` or the next free port), serving
    /// JSON of the jobs, stages and tasks at `/api/v1/applications/<app id>/jobs`;
    /// `None` when `ui.enabled` is false.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local").conf("ui.port", "0").create()?;
    /// assert!(ctx.ui_url().unwrap().starts_with("http://127.0.0.1:"));
    /// let quiet = Context::builder().master("local").conf("ui.enabled", "false").create()?;
    /// assert_eq!(quiet.ui_url(), None);
    /// # Ok(()) }
    /// ```
    pub fn ui_url(&self) -> Option<String> {
        self.inner.ui.as_ref().map(|u| u.url().to_string())
    }

    /// Partitions used when an operation is given 0: `default.parallelism`, else the
    /// number of task threads.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[4]").conf("default.parallelism", "6").create()?;
    /// assert_eq!(ctx.parallelize(vec![1, 2, 3], 0).num_partitions(), 6);
    /// # Ok(()) }
    /// ```
    pub fn default_parallelism(&self) -> u32 {
        self.inner.default_parallelism
    }

    pub(crate) fn partitions_or_default(&self, n: u32) -> u32 {
        if n == 0 {
            self.inner.default_parallelism
        } else {
            n
        }
    }

    /// A dataset of `data` in `partitions` slices (0: the default parallelism), each
    /// serialized now on the driver.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let d = ctx.parallelize(vec!["a", "b", "c"].into_iter().map(String::from).collect(), 2);
    /// assert_eq!(d.num_partitions(), 2);
    /// # Ok(()) }
    /// ```
    pub fn parallelize<T: Data>(&self, data: Vec<T>, partitions: u32) -> Dataset<T> {
        let n = self.partitions_or_default(partitions);
        let len = data.len() as u64;
        let mut splits = Vec::with_capacity(n as usize);
        let mut failed = None;
        for i in 0..n {
            let (a, b) = slice(len, n, i);
            match postcard::to_allocvec(&data[a as usize..b as usize]) {
                Ok(bytes) => splits.push(bytes),
                Err(e) => {
                    failed = Some(format!("parallelize: {}: {e}", std::any::type_name::<T>()));
                    break;
                }
            }
        }
        let splits = match failed {
            Some(e) => Err(e),
            None => Ok(splits),
        };
        Dataset::source(self, entry_point::<VecSource<T>>(), splits)
    }

    /// The numbers `start..end` in `partitions` slices (0: the default parallelism).
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// assert_eq!(ctx.range(0, 1_000_000, 8).reduce(|a, b| a + b)?, Some(499_999_500_000));
    /// # Ok(()) }
    /// ```
    pub fn range(&self, start: u64, end: u64, partitions: u32) -> Dataset<u64> {
        let n = self.partitions_or_default(partitions);
        let len = end.saturating_sub(start);
        let splits = (0..n)
            .map(|i| {
                let (a, b) = slice(len, n, i);
                postcard::to_allocvec(&(start + a, start + b)).map_err(|e| e.to_string())
            })
            .collect();
        Dataset::source(self, entry_point::<RangeSource>(), splits)
    }

    /// The lines of a text file, of the visible files of a directory, or of the files a
    /// glob matches, split by byte ranges into about `min_partitions` partitions (0:
    /// `min(default parallelism, 2)`), as Hadoop's text input does. Fails now, naming
    /// the path, when nothing is there.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let path = std::env::temp_dir().join(format!("flint-doc-text-{}.txt", std::process::id()));
    /// std::fs::write(&path, "one\ntwo\n\nthree\n").unwrap();
    /// let lines = ctx.text_file(path.to_str().unwrap(), 3)?;
    /// assert_eq!(lines.collect()?, vec!["one", "two", "", "three"]);
    /// assert!(ctx.text_file("/no/such/file", 1).unwrap_err().to_string().contains("/no/such/file"));
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok(()) }
    /// ```
    pub fn text_file(&self, path: &str, min_partitions: u32) -> Result<Dataset<String>> {
        let min = if min_partitions == 0 {
            self.inner.default_parallelism.min(2)
        } else {
            min_partitions
        };
        let absolute = std::path::absolute(path).map_err(|e| Error::PathNotFound {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        let splits = text::splits(&absolute.display().to_string(), min).map_err(|e| match e {
            Error::PathNotFound { reason, .. } => Error::PathNotFound {
                path: path.to_string(),
                reason,
            },
            other => other,
        })?;
        let encoded = splits
            .iter()
            .map(|s| postcard::to_allocvec(s).map_err(|e| e.to_string()))
            .collect();
        Ok(Dataset::source(self, entry_point::<TextSource>(), encoded))
    }

    /// A read-only value sent to each executor once (when a task first needs it) and
    /// kept there; pass it to a `_with` operation and read it with `.value()`.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let table = ctx.broadcast(vec![10u64, 20, 30])?;
    /// let looked_up = ctx.range(0, 3, 3).map_with(table, |t, i| t.value()[i as usize]);
    /// assert_eq!(looked_up.collect()?, vec![10, 20, 30]);
    /// # Ok(()) }
    /// ```
    pub fn broadcast<T: Data>(&self, value: T) -> Result<Broadcast<T>> {
        let bytes = postcard::to_allocvec(&value).map_err(|e| {
            Error::Serialization(format!("broadcast of {}: {e}", std::any::type_name::<T>()))
        })?;
        let id = self.next_id();
        self.inner.broadcasts.insert(id, bytes);
        Ok(Broadcast::new(id, Arc::new(value)))
    }

    /// A new `u64` sum named `name`, starting at 0.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// let seen = ctx.accumulator("seen");
    /// ctx.range(0, 10, 2).foreach_with(seen.clone(), |a, _| a.add(1))?;
    /// assert_eq!(seen.value(), 10);
    /// # Ok(()) }
    /// ```
    pub fn accumulator(&self, name: &str) -> Accumulator {
        let id = self.next_id();
        let cell = Arc::new(AtomicU64::new(0));
        if let Ok(mut m) = self.inner.accumulators.lock() {
            m.retain(|_, w| w.strong_count() > 0);
            m.insert(id, Arc::downgrade(&cell));
        }
        Accumulator::new(id, name, cell)
    }

    /// Stops the context: running jobs fail with [`Error::Stopped`], later calls too.
    /// On a cluster the application ends FINISHED at the master and its executors
    /// are killed.
    ///
    /// The other endings: a context dropped without `stop` ends FAILED while its
    /// thread unwinds from a panic or when its last job failed (a program giving up
    /// with `?` in `main`), FINISHED otherwise; SIGINT or SIGTERM cancels the
    /// running jobs (they return [`Error::JobCancelled`]), ends the application
    /// KILLED and exits the process with 130 or 143. (An `Err` from `main` not
    /// caused by a job is seen only in the exit status: the library cannot see
    /// `main` return.)
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local").create()?;
    /// let d = ctx.range(0, 3, 1);
    /// ctx.stop()?;
    /// assert!(matches!(d.count(), Err(Error::Stopped)));
    /// # Ok(()) }
    /// ```
    pub fn stop(&self) -> Result<()> {
        if !self.inner.stopped.load(Ordering::SeqCst) {
            self.inner.finish(ApplicationState::Finished);
            tracing::info!(app = %self.inner.app_id, "flint context stopped");
        } else {
            // Stopped by another thread (the launcher, a signal): return once it is done.
            self.inner.wait_finished();
        }
        Ok(())
    }

    /// Runs a job computing `partitions` of `node` with the action `action`, handing
    /// each partition's output to `each` as it arrives.
    pub(crate) fn run_job(
        &self,
        node: &Arc<Node>,
        action: EntryPoint,
        action_captures: Vec<u8>,
        partitions: Vec<u32>,
        each: impl FnMut(u32, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let r = self.run_job_inner(node, action, action_captures, partitions, each);
        if r.is_err() {
            // Outside `run_job_inner`: its job no longer counts as running, which a
            // signal's stop waits for before it finishes.
            self.inner.wait_finished();
        }
        self.inner
            .last_job_failed
            .store(r.is_err(), Ordering::SeqCst);
        r
    }

    fn run_job_inner(
        &self,
        node: &Arc<Node>,
        action: EntryPoint,
        action_captures: Vec<u8>,
        partitions: Vec<u32>,
        mut each: impl FnMut(u32, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        if self.inner.stopped.load(Ordering::SeqCst) {
            return Err(Error::Stopped);
        }
        node.check()?;
        if partitions.is_empty() {
            return Ok(());
        }
        let job = self.next_id();
        let _running = Running::new(&self.inner, job);
        let mut stages = Vec::new();
        let mut work = HashMap::new();
        let mut memo = HashMap::new();
        let parents = self.map_stages(node, &mut stages, &mut work, &mut memo);
        let stage = self.next_id();
        stages.push(StageSpec {
            id: stage,
            parents,
            blocks: blocks_of(node, &partitions),
            partitions: partitions.clone(),
            shuffle: None,
        });
        work.insert(
            stage,
            StageWork {
                node: node.clone(),
                action,
                action_captures,
            },
        );
        let (tx, rx) = mpsc::channel();
        let started = Instant::now();
        let submitted = self.inner.backend.submit(JobRequest {
            job,
            stages,
            work,
            events: tx,
        });
        if !submitted {
            return Err(Error::Stopped);
        }
        let span = tracing::info_span!("job", app = %self.inner.app_id, job);
        let _g = span.enter();
        tracing::info!("job {job} submitted: {} partitions", partitions.len());
        let mut failed: Option<Error> = None;
        loop {
            let Ok(event) = rx.recv() else {
                return Err(Error::Stopped);
            };
            match event {
                JobEvent::Result { partition, bytes } => {
                    if failed.is_none() {
                        if let Err(e) = each(partition, bytes) {
                            self.inner.backend.cancel(job, e.to_string());
                            failed = Some(e);
                        }
                    }
                }
                JobEvent::Succeeded => {
                    tracing::info!(
                        "job {job} finished: {} partitions in {:.3} s",
                        partitions.len(),
                        started.elapsed().as_secs_f64()
                    );
                    return match failed {
                        Some(e) => Err(e),
                        None => Ok(()),
                    };
                }
                JobEvent::Failed(f) => {
                    if let Some(e) = failed {
                        return Err(e);
                    }
                    let e = match f {
                        JobFailure::Task {
                            stage,
                            partition,
                            attempts,
                        } => Error::JobFailed {
                            job,
                            stage,
                            partition,
                            attempts,
                        },
                        JobFailure::ResultTooLarge { size, limit } => {
                            Error::ResultTooLarge { job, size, limit }
                        }
                        JobFailure::Cancelled(reason) => Error::JobCancelled { job, reason },
                    };
                    tracing::warn!(
                        "job {job} failed after {:.3} s: {e}",
                        started.elapsed().as_secs_f64()
                    );
                    return Err(e);
                }
                JobEvent::Stopped => return Err(Error::Stopped),
            }
        }
    }
}

/// The cached blocks each of `partitions` of `node` reads.
fn blocks_of(node: &Arc<Node>, partitions: &[u32]) -> Vec<Vec<crate::wire::BlockId>> {
    partitions
        .iter()
        .map(|p| {
            let mut b = Vec::new();
            node.blocks(*p, &mut b);
            b
        })
        .collect()
}

impl Context {
    /// Adds the shuffle map stages `node` needs (parents first, one per shuffle) and
    /// returns the ids of those it reads directly.
    fn map_stages(
        &self,
        node: &Arc<Node>,
        stages: &mut Vec<StageSpec>,
        work: &mut HashMap<StageId, StageWork>,
        memo: &mut HashMap<ShuffleId, StageId>,
    ) -> Vec<StageId> {
        let mut deps = Vec::new();
        node.shuffles(&mut deps);
        let mut ids = Vec::new();
        for d in deps {
            let Kind::Shuffle { dep, parent } = &d.kind else {
                continue;
            };
            if let Some(id) = memo.get(&dep.id) {
                ids.push(*id);
                continue;
            }
            let parents = self.map_stages(parent, stages, work, memo);
            let id = self.next_id();
            let partitions: Vec<u32> = (0..parent.partitions).collect();
            stages.push(StageSpec {
                id,
                parents,
                blocks: blocks_of(parent, &partitions),
                partitions,
                shuffle: Some(dep.id),
            });
            work.insert(
                id,
                StageWork {
                    node: parent.clone(),
                    action: dep.write,
                    action_captures: dep.write_captures.clone(),
                },
            );
            memo.insert(dep.id, id);
            ids.push(id);
        }
        ids
    }

    /// What this application's tasks did in shuffles so far (map outputs, records and
    /// bytes written and read, spills), summed over every task attempt that reported.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[2]").create()?;
    /// ctx.range(0, 1000, 4).map(|x| (x % 10, x)).reduce_by_key(|a, b| a + b, 2).count()?;
    /// let m = ctx.shuffle_metrics();
    /// assert_eq!(m.map_outputs, 4);
    /// assert_eq!(m.records_written, 40); // combined on the map side: 10 keys x 4 maps
    /// # Ok(()) }
    /// ```
    pub fn shuffle_metrics(&self) -> crate::ShuffleMetrics {
        self.inner.backend.shuffle_metrics()
    }

    /// Where a shuffle dependency says it is no longer reachable.
    pub(crate) fn shuffle_cleaner(&self) -> crate::shell::ShuffleCleaner {
        self.inner.backend.cleaner()
    }
}

/// A job in [`Inner::running`] while it runs.
struct Running<'a> {
    inner: &'a Inner,
    job: u64,
}

impl<'a> Running<'a> {
    fn new(inner: &'a Inner, job: u64) -> Self {
        if let Ok(mut r) = inner.running.lock() {
            r.insert(job);
        }
        Running { inner, job }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(mut r) = self.inner.running.lock() {
            r.remove(&self.job);
        }
    }
}
