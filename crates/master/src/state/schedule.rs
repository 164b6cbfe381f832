//! Spark's `schedule()`: drivers first, then executors for each app in FIFO
//! order, spread out over workers or packed; and the human reason an app is
//! still waiting.

use flint_proto::{AppId, ExecutorState, MasterStatus, WorkerId, WorkerState};
use flint_types::log::Logs as _;

use super::model::{AppInfo, Resources, WorkerInfo};
use super::{Effect, MasterState, Now, WorkerSelectionPolicy};

/// What one application still wants, as [`assign_cores`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppDemand {
    /// Cores the app may still be granted (max cores − cores granted).
    pub cores_left: u32,
    /// Cores per executor; `None` = one executor per worker that takes all
    /// the cores it is assigned there.
    pub cores_per_executor: Option<u32>,
    /// Memory per executor, in MB.
    pub memory_per_executor_mb: u64,
    /// Executors the app has now.
    pub executors: u32,
    /// The most executors it may have.
    pub executor_limit: u32,
}

/// What one usable worker has free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeResources {
    /// Free cores.
    pub cores: u32,
    /// Free memory, in MB.
    pub memory_mb: u64,
}

/// Spark's `scheduleExecutorsOnWorkers`: how many cores to give the app on
/// each worker (in the given order). Cores go out `cores_per_executor` at a
/// time (1 when unset, growing the single executor on that worker); spread
/// out moves to the next worker after each grant, packed fills a worker
/// before moving on. New executors need the memory and must stay under the
/// executor limit.
pub fn assign_cores(demand: &AppDemand, workers: &[FreeResources], spread_out: bool) -> Vec<u32> {
    let free_cores: u64 = workers.iter().map(|w| u64::from(w.cores)).sum();
    let mut a = Assigner {
        demand,
        workers,
        one_per_worker: demand.cores_per_executor.is_none(),
        min_cores: demand.cores_per_executor.unwrap_or(1).max(1),
        cores_to_assign: u64::from(demand.cores_left).min(free_cores),
        assigned_cores: vec![0; workers.len()],
        assigned_executors: vec![0; workers.len()],
        new_executors: 0,
    };
    let mut usable: Vec<usize> = (0..workers.len()).filter(|&p| a.can_launch(p)).collect();
    while !usable.is_empty() {
        for &pos in &usable {
            let mut keep_scheduling = true;
            while keep_scheduling && a.can_launch(pos) {
                a.grant(pos);
                if spread_out {
                    keep_scheduling = false;
                }
            }
        }
        usable.retain(|&p| a.can_launch(p));
    }
    a.assigned_cores
}

struct Assigner<'a> {
    demand: &'a AppDemand,
    workers: &'a [FreeResources],
    one_per_worker: bool,
    min_cores: u32,
    cores_to_assign: u64,
    assigned_cores: Vec<u32>,
    assigned_executors: Vec<u32>,
    new_executors: u64,
}

impl Assigner<'_> {
    fn can_launch(&self, pos: usize) -> bool {
        let worker = self.workers[pos];
        let keep_scheduling = self.cores_to_assign >= u64::from(self.min_cores);
        let enough_cores = worker.cores.saturating_sub(self.assigned_cores[pos]) >= self.min_cores;
        let executors_here = self.assigned_executors[pos];
        let launching_new = !self.one_per_worker || executors_here == 0;
        if launching_new {
            let mem = self.demand.memory_per_executor_mb;
            let assigned_mem = u64::from(executors_here).saturating_mul(mem);
            let enough_memory = worker
                .memory_mb
                .checked_sub(assigned_mem)
                .is_some_and(|left| left >= mem);
            let under_limit = self.new_executors + u64::from(self.demand.executors)
                < u64::from(self.demand.executor_limit);
            keep_scheduling && enough_cores && enough_memory && under_limit
        } else {
            // Growing the worker's single executor: no memory or limit check.
            keep_scheduling && enough_cores
        }
    }

    fn grant(&mut self, pos: usize) {
        self.cores_to_assign -= u64::from(self.min_cores);
        self.assigned_cores[pos] += self.min_cores;
        if self.one_per_worker {
            if self.assigned_executors[pos] == 0 {
                self.new_executors += 1;
            }
            self.assigned_executors[pos] = 1;
        } else {
            self.assigned_executors[pos] += 1;
            self.new_executors += 1;
        }
    }
}

/// splitmix64 step: a small deterministic generator for shuffling workers.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Statistics about the ALIVE workers that explain why an app waits.
struct Capacity {
    alive: usize,
    largest_cores: u32,
    largest_memory_mb: u64,
}

impl MasterState {
    /// Spark's `schedule()`: nothing unless ALIVE; drivers first, then
    /// executors; then refresh the apps' waiting reasons. `now` decides
    /// which back-offs still hold.
    pub(super) fn schedule(&mut self, now: Now, out: &mut Vec<Effect>) {
        if self.status != MasterStatus::Alive {
            return;
        }
        self.schedule_drivers(out);
        self.start_executors_on_workers(now, out);
        self.update_waiting_reasons(now, out);
    }

    /// Places waiting drivers: round-robin over shuffled ALIVE workers
    /// (spread out) or first fit in worker-id order, up to `max_drivers`
    /// running.
    fn schedule_drivers(&mut self, out: &mut Vec<Effect>) {
        if self.waiting_drivers.is_empty() {
            return;
        }
        let mut alive: Vec<WorkerId> = self
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Alive)
            .map(|w| w.id.clone())
            .collect();
        let spread = self.config.spread_out_drivers;
        if spread {
            for i in (1..alive.len()).rev() {
                let bound = u64::try_from(i + 1).unwrap_or(u64::MAX);
                let j = usize::try_from(next_random(&mut self.rng) % bound).unwrap_or(0);
                alive.swap(i, j);
            }
        }
        let n = alive.len();
        let mut cur = 0;
        for driver_id in self.waiting_drivers.clone() {
            let Some(need) = self.drivers.get(&driver_id).map(|d| d.resources()) else {
                continue;
            };
            let running = self
                .drivers
                .len()
                .saturating_sub(self.waiting_drivers.len());
            if u64::try_from(running).unwrap_or(u64::MAX) >= u64::from(self.config.max_drivers) {
                continue;
            }
            let mut target = None;
            if spread {
                for _ in 0..n {
                    let id = &alive[cur];
                    cur = (cur + 1) % n;
                    if self.workers.get(id).is_some_and(|w| w.fits(need)) {
                        target = Some(id.clone());
                        break;
                    }
                }
            } else {
                target = alive
                    .iter()
                    .find(|id| self.workers.get(*id).is_some_and(|w| w.fits(need)))
                    .cloned();
            }
            match target {
                Some(worker_id) => self.launch_driver(&worker_id, &driver_id, out),
                None => {
                    let could_ever_fit = self.workers.values().any(|w| {
                        w.state == WorkerState::Alive
                            && w.cores >= need.cores
                            && w.memory_mb >= need.memory_mb
                    });
                    if !could_ever_fit {
                        out.warn(format!("Driver {driver_id} requires more resource than any of Workers could have."),
                        );
                    }
                }
            }
        }
    }

    /// Spark's `startExecutorsOnWorkers`: FIFO over apps; for each, the
    /// ALIVE workers with room for one executor, ordered by the selection
    /// policy, get the cores [`assign_cores`] decides.
    ///
    /// Flint skips an app in its relaunch back-off, and workers the app
    /// excludes or that are in an unhealthy worker's back-off; workers where
    /// the app failed fewer times come first (the policy orders the rest),
    /// and where it failed, it gets one executor per round.
    fn start_executors_on_workers(&mut self, now: Now, out: &mut Vec<Effect>) {
        let spread = self.config.spread_out_apps;
        let policy = self.config.worker_selection_policy;
        let max_failures = self.config.max_failures_per_worker;
        for app_id in self.app_order.clone() {
            let Some(app) = self.apps.get(&app_id) else {
                continue;
            };
            let min_cores = app.min_cores_per_executor();
            if app.cores_left() < min_cores || now.mono_ms < app.relaunch_at_mono_ms {
                continue;
            }
            let memory = app.desc.memory_per_executor_mb;
            let mut usable: Vec<&WorkerInfo> = self
                .workers
                .values()
                .filter(|w| {
                    w.accepts_executors(now)
                        && !app.excludes(&w.id, max_failures)
                        && w.memory_free() >= memory
                        && w.cores_free() >= min_cores
                })
                .collect();
            sort_workers(&mut usable, policy);
            if !app.worker_failures.is_empty() {
                usable.sort_by_key(|w| app.failures_on(&w.id));
            }
            // A worker where the app's executors failed gets one at a time
            // until the app stops failing or excludes it.
            let probe_cores = app.desc.cores_per_executor;
            let free: Vec<FreeResources> = usable
                .iter()
                .map(|w| FreeResources {
                    cores: match probe_cores {
                        Some(c) if app.failures_on(&w.id) > 0 => w.cores_free().min(c),
                        _ => w.cores_free(),
                    },
                    memory_mb: w.memory_free(),
                })
                .collect();
            let ids: Vec<WorkerId> = usable.iter().map(|w| w.id.clone()).collect();
            let demand = AppDemand {
                cores_left: app.cores_left(),
                cores_per_executor: app.desc.cores_per_executor,
                memory_per_executor_mb: memory,
                executors: u32::try_from(app.executors.len()).unwrap_or(u32::MAX),
                executor_limit: app.executor_limit,
            };
            let assigned = assign_cores(&demand, &free, spread);
            for (worker_id, cores) in ids.iter().zip(assigned) {
                if cores > 0 {
                    self.allocate_executors(now, &app_id, cores, worker_id, out);
                }
            }
        }
    }

    /// Spark's `allocateWorkerResourceToExecutors`: `cores / cores_per_executor`
    /// executors, or one executor with all `cores` when unset.
    fn allocate_executors(
        &mut self,
        now: Now,
        app_id: &AppId,
        cores: u32,
        worker_id: &WorkerId,
        out: &mut Vec<Effect>,
    ) {
        let Some(app) = self.apps.get_mut(app_id) else {
            return;
        };
        let Some(worker) = self.workers.get_mut(worker_id) else {
            return;
        };
        let per_executor = app.desc.cores_per_executor;
        let count = per_executor.map_or(1, |c| cores / c.max(1));
        let res = Resources {
            cores: per_executor.unwrap_or(cores),
            memory_mb: app.desc.memory_per_executor_mb,
        };
        for _ in 0..count {
            let exec_id = app.add_executor(worker_id.clone(), res, ExecutorState::Launching, None);
            if let Some(exec) = app.executors.get_mut(&exec_id) {
                exec.launched_mono_ms = now.mono_ms;
            }
            worker.add_executor(app_id.clone(), exec_id, res);
            app.state = flint_proto::ApplicationState::Running;
            out.push(Effect::Log {
                level: super::LogLevel::Info,
                message: format!("Launching executor {app_id}/{exec_id} on worker {worker_id}"),
            });
            out.push(Effect::LaunchExecutor {
                worker_id: worker_id.clone(),
                app_id: app_id.clone(),
                exec_id,
                cores: res.cores,
                memory_mb: res.memory_mb,
                desc: Box::new(app.desc.clone()),
            });
            out.push(Effect::ExecutorAdded {
                app_id: app_id.clone(),
                exec_id,
                worker_id: worker_id.clone(),
                host_port: worker.host_port(),
                cores: res.cores,
                memory_mb: res.memory_mb,
            });
        }
    }

    /// Sets `waiting_reason` on every active app without executors, and
    /// clears it on the others; a new reason is logged once.
    fn update_waiting_reasons(&mut self, now: Now, out: &mut Vec<Effect>) {
        let mut capacity = Capacity {
            alive: 0,
            largest_cores: 0,
            largest_memory_mb: 0,
        };
        for w in self
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Alive)
        {
            capacity.alive += 1;
            capacity.largest_cores = capacity.largest_cores.max(w.cores);
            capacity.largest_memory_mb = capacity.largest_memory_mb.max(w.memory_mb);
        }
        let max_failures = self.config.max_failures_per_worker;
        let mut changed = Vec::new();
        for app in self.apps.values() {
            let reason = if app.executors.is_empty() {
                let min_cores = app.min_cores_per_executor();
                let capable: Vec<&WorkerInfo> = self
                    .workers
                    .values()
                    .filter(|w| {
                        w.state == WorkerState::Alive
                            && w.cores >= min_cores
                            && w.memory_mb >= app.desc.memory_per_executor_mb
                    })
                    .collect();
                let isolation = Isolation {
                    backing_off: now.mono_ms < app.relaunch_at_mono_ms,
                    excluded: capable
                        .iter()
                        .filter(|w| app.excludes(&w.id, max_failures))
                        .map(|w| w.id.clone())
                        .collect(),
                    unhealthy: capable
                        .iter()
                        .filter(|w| !app.excludes(&w.id, max_failures) && w.health.backing_off(now))
                        .map(|w| w.id.clone())
                        .collect(),
                    capable: capable.len(),
                };
                Some(waiting_reason(app, &capacity, &isolation))
            } else {
                None
            };
            if reason != app.waiting_reason {
                changed.push((app.id.clone(), reason));
            }
        }
        for (app_id, reason) in changed {
            if let Some(r) = &reason {
                out.warn(format!("App {app_id} has no executors: {r}"));
            }
            if let Some(app) = self.apps.get_mut(&app_id) {
                app.waiting_reason = reason;
            }
        }
    }
}

/// Orders usable workers as Spark's `workerSelectionPolicy` does (the
/// descending orders reverse an ascending sort on `(free, id)`).
fn sort_workers(workers: &mut [&WorkerInfo], policy: WorkerSelectionPolicy) {
    match policy {
        WorkerSelectionPolicy::CoresFreeAsc => {
            workers.sort_by(|a, b| (a.cores_free(), &a.id).cmp(&(b.cores_free(), &b.id)))
        }
        WorkerSelectionPolicy::CoresFreeDesc => {
            workers.sort_by(|a, b| (b.cores_free(), &b.id).cmp(&(a.cores_free(), &a.id)))
        }
        WorkerSelectionPolicy::MemoryFreeAsc => {
            workers.sort_by(|a, b| (a.memory_free(), &a.id).cmp(&(b.memory_free(), &b.id)))
        }
        WorkerSelectionPolicy::MemoryFreeDesc => {
            workers.sort_by(|a, b| (b.memory_free(), &b.id).cmp(&(a.memory_free(), &a.id)))
        }
        WorkerSelectionPolicy::WorkerId => workers.sort_by(|a, b| a.id.cmp(&b.id)),
    }
}

/// Which of the workers big enough for one of an app's executors it may not
/// use now, and whether it waits for its relaunch back-off.
struct Isolation {
    backing_off: bool,
    /// ALIVE workers big enough for one executor.
    capable: usize,
    /// Those the app excludes.
    excluded: Vec<WorkerId>,
    /// The others that are in an unhealthy worker's back-off.
    unhealthy: Vec<WorkerId>,
}

fn id_list(ids: &[WorkerId]) -> String {
    ids.iter()
        .map(WorkerId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why an app that has no executors has none.
fn waiting_reason(app: &AppInfo, capacity: &Capacity, isolation: &Isolation) -> String {
    let fits_somewhere = isolation.capable > 0;
    let min_cores = app.min_cores_per_executor();
    let memory = app.desc.memory_per_executor_mb;
    let per_executor = match app.desc.cores_per_executor {
        Some(1) => "1 core per executor".to_owned(),
        Some(c) => format!("{c} cores per executor"),
        None => "at least 1 core per executor".to_owned(),
    };
    if app.executor_limit == 0 {
        return "its executor limit is 0 (it requested no executors)".to_owned();
    }
    if app.requested_cores() < min_cores {
        return format!(
            "its max cores ({}) is less than the {per_executor} it needs",
            app.requested_cores()
        );
    }
    if capacity.alive == 0 {
        return "no alive workers".to_owned();
    }
    if min_cores > capacity.largest_cores {
        return format!(
            "needs {per_executor} but the largest worker has {}",
            capacity.largest_cores
        );
    }
    if memory > capacity.largest_memory_mb {
        return format!(
            "needs {memory} MB per executor but the largest worker has {} MB",
            capacity.largest_memory_mb
        );
    }
    if !fits_somewhere {
        return format!(
            "needs {min_cores} cores and {memory} MB on one worker but no alive worker has both"
        );
    }
    if isolation.excluded.len() == isolation.capable {
        return format!(
            "its executors failed repeatedly on every worker that can run them ({})",
            id_list(&isolation.excluded)
        );
    }
    if isolation.backing_off {
        return format!(
            "relaunching after {} executor failure(s) in a row, waiting for the back-off",
            app.retry_count
        );
    }
    if isolation.excluded.len() + isolation.unhealthy.len() == isolation.capable {
        let mut why = format!(
            "the workers that can run it are unhealthy and get no new executors for now ({})",
            id_list(&isolation.unhealthy)
        );
        if !isolation.excluded.is_empty() {
            why.push_str(&format!(
                "; on the others its executors failed repeatedly ({})",
                id_list(&isolation.excluded)
            ));
        }
        return why;
    }
    let mut why = format!(
        "waiting for a worker with {min_cores} free cores and {memory} MB free memory; other applications or drivers hold them"
    );
    if !isolation.unhealthy.is_empty() {
        why.push_str(&format!(
            "; unhealthy workers get no new executors for now ({})",
            id_list(&isolation.unhealthy)
        ));
    }
    if !isolation.excluded.is_empty() {
        why.push_str(&format!(
            "; its executors failed repeatedly on {}",
            id_list(&isolation.excluded)
        ));
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(cores_left: u32, per: Option<u32>, mem: u64) -> AppDemand {
        AppDemand {
            cores_left,
            cores_per_executor: per,
            memory_per_executor_mb: mem,
            executors: 0,
            executor_limit: u32::MAX,
        }
    }

    fn workers(n: usize, cores: u32, mem: u64) -> Vec<FreeResources> {
        vec![
            FreeResources {
                cores,
                memory_mb: mem
            };
            n
        ]
    }

    #[test]
    fn spread_out_gives_each_worker_one_executor() {
        let a = assign_cores(&demand(6, Some(2), 1024), &workers(3, 4, 4096), true);
        assert_eq!(a, [2, 2, 2]);
    }

    #[test]
    fn packed_fills_the_first_worker_first() {
        let a = assign_cores(&demand(6, Some(2), 1024), &workers(3, 4, 4096), false);
        assert_eq!(a, [4, 2, 0]);
    }

    #[test]
    fn without_cores_per_executor_one_core_at_a_time() {
        // Spark's round robin hands out single cores: 5 cores over 3 workers.
        let a = assign_cores(&demand(5, None, 1024), &workers(3, 4, 4096), true);
        assert_eq!(a, [2, 2, 1]);
        let a = assign_cores(&demand(5, None, 1024), &workers(3, 4, 4096), false);
        assert_eq!(a, [4, 1, 0]);
    }

    #[test]
    fn memory_limits_executors_per_worker() {
        // 16 cores but memory for only 2 executors of 2 cores.
        let a = assign_cores(&demand(100, Some(2), 1000), &workers(1, 16, 2500), false);
        assert_eq!(a, [4]);
    }

    #[test]
    fn whole_executors_only_spark_8881() {
        // 4 workers × 16 cores, 3 executors of 16: never 12 + 12 + 12 + 12.
        let a = assign_cores(&demand(48, Some(16), 1), &workers(4, 16, 100), true);
        assert_eq!(a, [16, 16, 16, 0]);
    }

    #[test]
    fn executor_limit_caps_new_executors() {
        let mut d = demand(100, Some(1), 1);
        d.executors = 1;
        d.executor_limit = 3;
        let a = assign_cores(&d, &workers(4, 4, 100), true);
        assert_eq!(a, [1, 1, 0, 0]);
        // One executor per worker: the limit counts workers, cores keep growing.
        let mut d = demand(100, None, 1);
        d.executor_limit = 2;
        let a = assign_cores(&d, &workers(3, 4, 100), true);
        assert_eq!(a, [4, 4, 0]);
    }

    #[test]
    fn nothing_when_cores_left_is_below_one_executor() {
        let a = assign_cores(&demand(1, Some(2), 1), &workers(2, 4, 100), true);
        assert_eq!(a, [0, 0]);
    }
}
