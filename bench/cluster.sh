#!/usr/bin/env bash
# bench/cluster.sh — flint's cluster daemons beside Apache Spark's standalone
# mode, measured in the same run on the same machine.
#
#   bash bench/cluster.sh [options]
#
# Measures, for flint (release build) and Spark (pip's pyspark, Java 17+):
#   daemon     master ready after spawn (RPC port accepting; status JSON says
#              ALIVE), worker registered after spawn (ALIVE in the master's
#              JSON), idle RSS of master and worker after 2 s (VmRSS summed
#              over the process tree);
#   placement  one application, 1 core per executor, 100 executors across 4
#              workers x 25 cores: time to registration, to the last
#              ExecutorAdded at the driver, to the last executor RUNNING
#              (Spark: also to the last executor registered with the driver);
#   scale      flint only: one master, 10,000 simulated workers over real TCP
#              heartbeating every worker.timeout/4 (crates/cluster-bench).
# Writes JSON lines (one per measurement) to --out and prints a summary table
# of medians. Every process it starts runs in its own session and is killed on
# exit (trap), executors included.
#
# Options (environment variables of the same name in capitals work too):
#   --reps N                 daemon repetitions per system (5)
#   --spark-reps N           daemon repetitions for Spark (5)
#   --placement-reps N       flint placement repetitions (5)
#   --spark-placement-reps N Spark placement repetitions (1: ~100 JVMs each)
#   --executors N            executors to place (100)
#   --spark-executor-memory M  spark.executor.memory (512m; Spark's minimum is
#                            450m). Placement stops early, reporting the count
#                            reached, if MemAvailable drops under 1.5 GiB.
#   --scale-workers N        simulated workers (10000)
#   --scale-duration S       steady-state seconds (60)
#   --scale-timeout T        the master's worker.timeout there (20s)
#   --scale-concurrency N    registrations in flight at once (256)
#   --no-spark | --no-scale | --no-placement | --no-daemon   skip parts
#   --wait-load L            wait (up to 10 min) for the 1-minute load average
#                            to fall under L before measuring (default 1.0;
#                            0 = do not wait)
#   --out FILE               JSON lines (default: a new file under /tmp)
#
# Builds with cargo into $CARGO_TARGET_DIR (default: <repo>/target).
# Installs pyspark with pip when it is missing; JAVA_HOME is derived from the
# java on PATH when unset.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${REPS:-5}
SPARK_REPS=${SPARK_REPS:-5}
PLACEMENT_REPS=${PLACEMENT_REPS:-5}
SPARK_PLACEMENT_REPS=${SPARK_PLACEMENT_REPS:-1}
EXECUTORS=${EXECUTORS:-100}
SPARK_EXECUTOR_MEMORY=${SPARK_EXECUTOR_MEMORY:-512m}
SCALE_WORKERS=${SCALE_WORKERS:-10000}
SCALE_DURATION=${SCALE_DURATION:-60}
SCALE_TIMEOUT=${SCALE_TIMEOUT:-20s}
SCALE_CONCURRENCY=${SCALE_CONCURRENCY:-256}
WAIT_LOAD=${WAIT_LOAD:-1.0}
NO_SPARK=${NO_SPARK:-0}
NO_SCALE=${NO_SCALE:-0}
NO_PLACEMENT=${NO_PLACEMENT:-0}
NO_DAEMON=${NO_DAEMON:-0}
OUT=${OUT:-}

while [ $# -gt 0 ]; do
  case "$1" in
    --reps) REPS=$2; shift 2 ;;
    --spark-reps) SPARK_REPS=$2; shift 2 ;;
    --placement-reps) PLACEMENT_REPS=$2; shift 2 ;;
    --spark-placement-reps) SPARK_PLACEMENT_REPS=$2; shift 2 ;;
    --executors) EXECUTORS=$2; shift 2 ;;
    --spark-executor-memory) SPARK_EXECUTOR_MEMORY=$2; shift 2 ;;
    --scale-workers) SCALE_WORKERS=$2; shift 2 ;;
    --scale-duration) SCALE_DURATION=$2; shift 2 ;;
    --scale-timeout) SCALE_TIMEOUT=$2; shift 2 ;;
    --scale-concurrency) SCALE_CONCURRENCY=$2; shift 2 ;;
    --wait-load) WAIT_LOAD=$2; shift 2 ;;
    --no-spark) NO_SPARK=1; shift ;;
    --no-scale) NO_SCALE=1; shift ;;
    --no-placement) NO_PLACEMENT=1; shift ;;
    --no-daemon) NO_DAEMON=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/flint-cluster-bench.XXXXXX")
# A private flint home: the master creates its cluster secret there, and the
# benchmark clients find it there.
export FLINT_HOME=$WORK/home
OUT=${OUT:-$WORK/results.jsonl}
: > "$OUT"
PGIDS=$WORK/pgids

# Kill every process group the harness started (TERM, then KILL), even when
# the script is interrupted. Only groups recorded in $PGIDS are touched.
cleanup() {
  local rc=$?
  if [ -s "$PGIDS" ]; then
    while read -r g; do kill -TERM -- "-$g" 2>/dev/null || true; done < "$PGIDS"
    sleep 1
    while read -r g; do kill -KILL -- "-$g" 2>/dev/null || true; done < "$PGIDS"
  fi
  if [ -n "${SCALE_PID:-}" ]; then kill -TERM "$SCALE_PID" 2>/dev/null || true; fi
  echo "work dir: $WORK (results: $OUT)" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "== $*" >&2; }

# ---------------------------------------------------------------- build
log "building flint (release) into $CARGO_TARGET_DIR"
(cd "$ROOT" && cargo build --release -q -p flint-cli -p flint-cluster-bench)
FLINT=$CARGO_TARGET_DIR/release/flint
CBENCH=$CARGO_TARGET_DIR/release/flint-cluster-bench

# ---------------------------------------------------------------- spark
SPARK_HOME=""
if [ "$NO_SPARK" != 1 ]; then
  if ! command -v java >/dev/null; then
    log "no java on PATH: Spark is skipped"; NO_SPARK=1
  else
    if [ -z "${JAVA_HOME:-}" ]; then
      JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")
      export JAVA_HOME
    fi
    if ! python3 -c 'import pyspark' 2>/dev/null; then
      log "installing pyspark with pip"
      python3 -m pip install -q pyspark
    fi
    SPARK_HOME=$(python3 -c 'import pyspark, os; print(os.path.dirname(pyspark.__file__))')
    export SPARK_HOME
  fi
fi

# ---------------------------------------------------------------- harness
HARNESS=$WORK/harness.py
cat > "$HARNESS" <<'PY'
"""Timing harness of bench/cluster.sh: spawns daemons, polls, reads /proc."""
import http.client, json, os, re, signal, socket, statistics, subprocess, sys, time

WORK = os.environ["BENCH_WORK"]
PGIDS = os.environ["BENCH_PGIDS"]
FLINT = os.environ.get("FLINT", "")
CBENCH = os.environ.get("CBENCH", "")
SPARK_HOME = os.environ.get("SPARK_HOME", "")
procs = []


def emit(obj):
    print(json.dumps(obj), flush=True)


def note(msg):
    print(f"   {msg}", file=sys.stderr, flush=True)


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, on_signal)


def spawn(cmd, name, env=None):
    """Starts cmd in its own session (its own process group), logging to a file."""
    logf = open(os.path.join(WORK, f"{name}.log"), "ab")
    full_env = dict(os.environ)
    full_env.update(env or {})
    p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=full_env, start_new_session=True, cwd=WORK)
    with open(PGIDS, "a") as f:
        f.write(f"{p.pid}\n")
    procs.append(p)
    return p


def stop(p, grace=15.0):
    """SIGTERM to the process group, SIGKILL after grace seconds."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)  # children left in the group
    except ProcessLookupError:
        pass
    p.wait()


def stop_all():
    for p in reversed(procs):
        stop(p)
    procs.clear()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def http_json(port, path, timeout=1.0):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        c.close()
        return json.loads(body) if r.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None


def pause(t0):
    """Poll interval: 2% of the time waited so far, between 1 and 20 ms, so
    fast starts are timed to ~1 ms and slow ones are not flooded with polls."""
    time.sleep(min(0.02, max(0.001, (time.monotonic() - t0) * 0.02)))


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def tree(pid):
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += children(p)
    return seen


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def comms(pid):
    """Names of the processes in pid's tree."""
    out = []
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/comm") as f:
                out.append(f.read().strip())
        except OSError:
            pass
    return out


def tree_rss_kib(pid):
    return sum(rss_kib(p) for p in tree(pid))


class System:
    """How to start and read one system's daemons."""

    def __init__(self, name):
        self.name = name
        self.spark = name == "spark"
        self.status_path = "/json/" if self.spark else "/api/v1/status"
        self.env = {"SPARK_HOME": SPARK_HOME, "SPARK_LOG_DIR": os.path.join(WORK, "spark-logs"),
                    "SPARK_LOCAL_IP": "127.0.0.1"} if self.spark else {}

    def master_cmd(self, port, ui):
        if self.spark:
            return [os.path.join(SPARK_HOME, "bin", "spark-class"), "org.apache.spark.deploy.master.Master",
                    "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)]
        return [FLINT, "master", "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)]

    def worker_cmd(self, port, cores, memory, work_dir):
        ui = str(free_port())
        if self.spark:
            return [os.path.join(SPARK_HOME, "bin", "spark-class"), "org.apache.spark.deploy.worker.Worker",
                    f"spark://127.0.0.1:{port}", "--host", "127.0.0.1", "--cores", str(cores),
                    "--memory", memory, "--webui-port", ui, "--work-dir", work_dir]
        return [FLINT, "worker", f"flint://127.0.0.1:{port}", "--host", "127.0.0.1", "--cores", str(cores),
                "--memory", memory, "--webui-port", ui, "--work-dir", work_dir]

    def status(self, ui):
        return http_json(ui, self.status_path)

    def alive_workers(self, ui):
        j = self.status(ui)
        if not j:
            return 0
        return sum(1 for w in j.get("workers", []) if w.get("state") == "ALIVE")

    def start_master(self, tag, timeout=90):
        """Spawns a master; returns (proc, port, ui, port_s, ready_s)."""
        port, ui = free_port(), free_port()
        t0 = time.monotonic()
        p = spawn(self.master_cmd(port, ui), f"{self.name}-master-{tag}", self.env)
        t_port = t_ready = None
        while t_port is None or t_ready is None:
            if p.poll() is not None:
                raise RuntimeError(f"{self.name} master exited with {p.returncode}; see {WORK}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{self.name} master not ready within {timeout} s")
            if t_port is None and port_open(port):
                t_port = time.monotonic() - t0
            if t_ready is None:
                j = self.status(ui)
                if j and j.get("status") == "ALIVE":
                    t_ready = time.monotonic() - t0
            if t_port is None or t_ready is None:
                pause(t0)
        return p, port, ui, t_port, t_ready

    def start_worker(self, port, ui, tag, cores, memory, want_alive, timeout=90):
        """Spawns a worker; returns (proc, seconds until the master lists want_alive ALIVE workers)."""
        wd = os.path.join(WORK, f"{self.name}-work-{tag}")
        t0 = time.monotonic()
        p = spawn(self.worker_cmd(port, cores, memory, wd), f"{self.name}-worker-{tag}", self.env)
        while self.alive_workers(ui) < want_alive:
            if p.poll() is not None:
                raise RuntimeError(f"{self.name} worker exited with {p.returncode}; see {WORK}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{self.name} worker not registered within {timeout} s")
            pause(t0)
        return p, time.monotonic() - t0


def daemon(system_name, reps):
    s = System(system_name)
    for rep in range(1, reps + 1):
        try:
            m, port, ui, t_port, t_ready = s.start_master(f"d{rep}")
            w, t_reg = s.start_worker(port, ui, f"d{rep}", 4, "4g", 1)
            time.sleep(2.0)
            m_rss, w_rss = tree_rss_kib(m.pid), tree_rss_kib(w.pid)
            row = {"bench": "daemon", "system": system_name, "rep": rep,
                   "master_port_ms": round(t_port * 1e3, 2), "master_ready_ms": round(t_ready * 1e3, 2),
                   "worker_registered_ms": round(t_reg * 1e3, 2),
                   "master_idle_rss_kib": m_rss, "worker_idle_rss_kib": w_rss,
                   "master_processes": comms(m.pid), "worker_processes": comms(w.pid),
                   "load1": os.getloadavg()[0]}
            emit(row)
            note(f"{system_name} daemon rep {rep}: ready {row['master_ready_ms']} ms, worker "
                 f"{row['worker_registered_ms']} ms, RSS {m_rss // 1024}/{w_rss // 1024} MiB")
        finally:
            stop_all()


def placement_cluster(s, tag, workers, cores, memory):
    m, port, ui, _, _ = s.start_master(tag)
    for i in range(workers):
        s.start_worker(port, ui, f"{tag}-w{i}", cores, memory, i + 1)
    return port, ui


def placement(system_name, reps, executors, spark_mem):
    s = System(system_name)
    workers = 4
    cores = -(-executors // workers)
    for rep in range(1, reps + 1):
        try:
            if s.spark:
                mem_mb = int(spark_mem[:-1]) * (1024 if spark_mem[-1] in "gG" else 1)
                port, ui = placement_cluster(s, f"p{rep}", workers, cores, f"{mem_mb * cores + 1024}m")
                cmd = [sys.executable, __file__, "spark-app", str(port), str(ui), str(executors), spark_mem, str(rep)]
                app = spawn(cmd, f"spark-app-{rep}", s.env)
                app.wait()
                with open(os.path.join(WORK, f"spark-app-{rep}.log")) as f:
                    lines = [l for l in f if l.startswith("{")]
                if not lines:
                    raise RuntimeError(f"the Spark placement app printed no result; see {WORK}/spark-app-{rep}.log")
                row = json.loads(lines[-1])
            else:
                port, ui = placement_cluster(s, f"p{rep}", workers, cores, "4g")
                out = subprocess.run([CBENCH, "placement", "--master", f"flint://127.0.0.1:{port}",
                                      "--executors", str(executors), "--label", str(rep)],
                                     capture_output=True, text=True, timeout=300)
                if out.returncode != 0:
                    note(out.stderr[-2000:])
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row.pop("executors_per_worker", None)
            row["rep"] = rep
            row["workers"] = workers
            row["load1"] = os.getloadavg()[0]
            emit(row)
            note(f"{system_name} placement rep {rep}: registered {row.get('registered_ms')} ms, "
                 f"all added {row.get('all_added_ms')} ms, all running {row.get('all_running_ms')} ms"
                 + (f", all registered with the driver {row.get('all_driver_registered_ms')} ms" if s.spark else ""))
        finally:
            stop_all()


LOG4J = """rootLogger.level = warn
rootLogger.appenderRef.console.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss.SSS} %p %c{1}: %m%n
appender.events.type = File
appender.events.name = events
appender.events.fileName = EVENTS
appender.events.layout.type = PatternLayout
appender.events.layout.pattern = %d{UNIX_MILLIS} %m%n
logger.appclient.name = org.apache.spark.deploy.client.StandaloneAppClient$ClientEndpoint
logger.appclient.level = info
logger.appclient.additivity = false
logger.appclient.appenderRef.events.ref = events
logger.backend.name = org.apache.spark.scheduler.cluster.StandaloneSchedulerBackend
logger.backend.level = info
logger.backend.additivity = false
logger.backend.appenderRef.events.ref = events
"""


def mem_available_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def spark_app(port, ui, n, mem, rep):
    """The Spark driver: times placement of n one-core executors. Times are
    epoch ms: the driver's log lines (custom log4j2 layout) and this
    process's polls share the system clock. The origin, like flint's
    AppClient::start, is the app client's "Connecting to master" line."""
    import threading
    from pyspark import SparkConf, SparkContext
    events = os.path.join(WORK, f"spark-app-{rep}.events")
    log4j = os.path.join(WORK, f"spark-app-{rep}.log4j2.properties")
    with open(log4j, "w") as f:
        f.write(LOG4J.replace("EVENTS", events))
    # Leaner executor JVMs so 100 fit in RAM (see BENCHMARKS-cluster.md).
    exec_opts = ("-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:CICompilerCount=1 -Xss512k -Xms32m -Xmn8m "
                 "-XX:ReservedCodeCacheSize=24m")
    conf = (SparkConf().setMaster(f"spark://127.0.0.1:{port}").setAppName("placement-bench")
            .set("spark.executor.cores", "1").set("spark.cores.max", str(n))
            .set("spark.executor.memory", mem).set("spark.executor.extraJavaOptions", exec_opts)
            .set("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log4j}")
            .set("spark.ui.enabled", "false").set("spark.driver.host", "127.0.0.1")
            .set("spark.driver.bindAddress", "127.0.0.1"))
    SparkContext._ensure_initialized(conf=conf)  # the driver JVM starts here, untimed
    now_ms = lambda: time.time() * 1e3
    granted = {}
    done = threading.Event()

    def watch_master():  # when does the master's JSON show every core granted?
        while not done.is_set():
            j = http_json(ui, "/json/") or {}
            if sum(a.get("cores", 0) for a in j.get("activeapps", [])) >= n:
                granted["at"] = now_ms()
                return
            time.sleep(0.02)

    threading.Thread(target=watch_master, daemon=True).start()
    ctx_call = now_ms()
    sc = SparkContext(conf=conf)
    ctx_ready = now_ms()
    t_driver = None
    stopped_early = None
    most = 0
    deadline = time.monotonic() + 400
    while t_driver is None:
        registered = sc._jsc.sc().getExecutorMemoryStatus().size() - 1
        most = max(most, registered)
        if registered >= n:
            t_driver = now_ms()
            break
        if mem_available_kib() < 1536 * 1024:
            stopped_early = f"MemAvailable under 1.5 GiB with {registered} executors registered"
            break
        if time.monotonic() > deadline:
            stopped_early = f"timed out after 400 s with {registered} executors registered"
            break
        time.sleep(0.02)
    done.set()
    n_exec = len(pids_matching("CoarseGrainedExecutorBackend"))
    rss = sum(rss_kib(p) for p in pids_matching("CoarseGrainedExecutorBackend"))
    sc.stop()
    connecting = connected = None
    added, running = [], []
    try:
        with open(events) as f:
            for line in f:
                ts, _, msg = line.partition(" ")
                ts = int(ts)
                if msg.startswith("Connecting to master") and connecting is None:
                    connecting = ts
                elif msg.startswith("Connected to Spark cluster") and connected is None:
                    connected = ts
                elif msg.startswith("Executor added:"):
                    added.append(ts)
                elif re.search(r"Executor updated: .* is now RUNNING", msg):
                    running.append(ts)
    except OSError:
        pass
    added.sort()
    running.sort()
    since = lambda t, origin=connecting: None if t is None or origin is None else round(t - origin, 1)
    nth = lambda xs: xs[n - 1] if len(xs) >= n else None
    emit({"bench": "placement", "system": "spark", "label": str(rep), "executors": n,
          "cores_per_executor": 1, "executor_memory": mem,
          "driver_init_ms": since(connecting, ctx_call),
          "registered_ms": since(connected), "all_added_ms": since(nth(added)),
          "all_running_ms": since(nth(running)),
          "master_cores_granted_ms": since(granted.get("at")),
          "context_ready_ms": since(ctx_ready),
          "all_driver_registered_ms": since(t_driver),
          "added_after_registration_ms": since(nth(added), connected),
          "running_after_registration_ms": since(nth(running), connected),
          "executors_added": len(added), "executors_running": len(running),
          "executors_registered_with_driver": most, "executor_processes": n_exec,
          "executor_rss_kib_total": rss, "executor_rss_kib_mean": rss // max(1, n_exec),
          "stopped_early": stopped_early, "ok": stopped_early is None})


def pids_matching(needle):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if needle.encode() in f.read():
                        out.append(int(d))
            except OSError:
                pass
    return out


def cpu_busy(seconds=2.0):
    """Share of all CPUs busy over the next `seconds`, from /proc/stat."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return sum(v), idle
    t1, i1 = read()
    time.sleep(seconds)
    t2, i2 = read()
    return 100.0 * (1 - (i2 - i1) / max(1, t2 - t1))


def quiet(before, limit=25.0, max_wait=180):
    """Waits until the machine's CPUs are mostly idle (the load average lags
    by minutes after a burst such as 100 JVMs), and records how busy it was."""
    t0 = time.monotonic()
    busy = cpu_busy()
    while busy > limit and time.monotonic() - t0 < max_wait:
        note(f"CPUs {busy:.0f}% busy before {before}; waiting")
        busy = cpu_busy(5.0)
    emit({"bench": "quiet", "before": before, "cpu_busy_pct": round(busy, 1),
          "waited_s": round(time.monotonic() - t0, 1), "load1": os.getloadavg()[0]})


def med(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(xs) if xs else None


def fmt(x, unit="", digits=1):
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}{unit}"


def summary(path):
    rows = [json.loads(l) for l in open(path) if l.startswith("{")]
    by = lambda bench, system: [r for r in rows if r.get("bench") == bench and r.get("system") == system]
    meta = next((r for r in rows if r.get("bench") == "meta"), {})
    print(f"\n## Results ({path})\n")
    q = [r for r in rows if r.get("bench") == "quiet"]
    if q:
        print("CPU busy before each phase: " + "; ".join(f"{r['before']} {r['cpu_busy_pct']}%" for r in q) + "\n")
    if meta:
        print(f"machine: {meta.get('cpus')} CPUs, {meta.get('mem_gib')} GiB; load at start {meta.get('load')}; "
              f"{meta.get('rustc')}; {meta.get('java')}; pyspark {meta.get('pyspark')}\n")
    d = {s: by("daemon", s) for s in ("flint", "spark")}
    if any(d.values()):
        print("| daemon (median) | target | flint | Spark |")
        print("|---|---|---|---|")
        for key, label, target, div, unit, dg in [
            ("master_port_ms", "master RPC port accepting after spawn", "", 1, " ms", 1),
            ("master_ready_ms", "master status JSON ALIVE after spawn", "≤ 20 ms", 1, " ms", 1),
            ("worker_registered_ms", "worker ALIVE in master JSON after spawn", "≤ 50 ms", 1, " ms", 1),
            ("master_idle_rss_kib", "master idle RSS", "≤ 15 MiB", 1024, " MiB", 1),
            ("worker_idle_rss_kib", "worker idle RSS", "≤ 15 MiB", 1024, " MiB", 1)]:
            cells = []
            for s in ("flint", "spark"):
                v = med([r.get(key) for r in d[s]])
                cells.append(fmt(None if v is None else v / div, unit, dg) + (f" (n={len(d[s])})" if d[s] else ""))
            print(f"| {label} | {target} | {cells[0]} | {cells[1]} |")
        print()
    p = {s: by("placement", s) for s in ("flint", "spark")}
    if any(p.values()):
        print("| placement of executors, 1 core each, 4 workers (median, ms from start of registration) | flint | Spark |")
        print("|---|---|---|")
        for key, label in [("driver_init_ms", "(Spark: SparkContext() call to registration start)"),
                           ("registered_ms", "application registered"),
                           ("all_added_ms", "last ExecutorAdded at the driver"),
                           ("all_running_ms", "last executor RUNNING"),
                           ("master_cores_granted_ms", "master JSON shows all cores granted"),
                           ("all_driver_registered_ms", "last executor registered with the driver"),
                           ("added_after_registration_ms", "last ExecutorAdded, after registration"),
                           ("running_after_registration_ms", "last RUNNING, after registration"),
                           ("executors", "executors")]:
            cells = [fmt(med([r.get(key) for r in p[s]]), "", 1 if key != "executors" else 0) for s in ("flint", "spark")]
            print(f"| {label} | {cells[0]} | {cells[1]} |")
        print()
    sc = [r for r in rows if r.get("bench") == "scale"]
    if sc:
        reg = next((r for r in sc if r.get("phase") == "registration"), {})
        st = next((r for r in sc if r.get("phase") == "steady"), {})
        print("| scale: flint master, simulated workers | value |")
        print("|---|---|")
        print(f"| workers registered | {reg.get('registered')} of {reg.get('workers')} |")
        print(f"| registration throughput | {fmt(reg.get('registrations_per_s'), '/s', 0)} "
              f"(p50 {fmt(reg.get('latency_ms_p50'), ' ms')}, p99 {fmt(reg.get('latency_ms_p99'), ' ms')}; "
              f"{reg.get('tcp_listen_overflows')} listen-queue overflows) |")
        print(f"| heartbeats | {fmt(st.get('heartbeats_per_s'), '/s', 0)} (every {st.get('heartbeat_interval_ms')} ms) |")
        print(f"| master CPU, steady state | {fmt(st.get('master_cpu_pct'), '% of one core', 2)} over {fmt(st.get('window_s'), ' s', 0)} |")
        print(f"| master RSS | {fmt((st.get('master_rss_kib_end') or 0) / 1024, ' MiB')} (peak {fmt((st.get('master_hwm_kib') or 0) / 1024, ' MiB')}; "
              f"every 10 s: {', '.join(str(round(k / 1024)) for k in st.get('master_rss_kib_every_10s') or [])} MiB) |")
        print(f"| ALIVE / DEAD at the end | {st.get('final_alive')} / {st.get('final_dead')} |")
        print(f"| verdict | {'ok' if st.get('ok') else 'FAILED'} |")
        print()


def meta():
    def cmd(c):
        try:
            r = subprocess.run(c, capture_output=True, text=True, timeout=30)
            return (r.stdout.strip() or r.stderr.strip()).split("\n")[0]
        except OSError:
            return None
    pyspark = None
    if SPARK_HOME:
        try:
            import pyspark as ps
            pyspark = ps.__version__
        except ImportError:
            pass
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1])
    emit({"bench": "meta", "cpus": os.cpu_count(), "mem_gib": round(mem / 2**20, 1),
          "load": os.getloadavg()[0], "rustc": cmd(["rustc", "--version"]),
          "java": cmd(["java", "-version"]) if SPARK_HOME else None, "pyspark": pyspark,
          "flint_commit": cmd(["git", "-C", os.environ.get("ROOT", "."), "rev-parse", "--short", "HEAD"]),
          "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


if __name__ == "__main__":
    what = sys.argv[1]
    try:
        if what == "daemon":
            daemon(sys.argv[2], int(sys.argv[3]))
        elif what == "placement":
            placement(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        elif what == "spark-app":
            spark_app(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6])
        elif what == "summary":
            summary(sys.argv[2])
        elif what == "meta":
            meta()
        elif what == "quiet":
            quiet(sys.argv[2])
    finally:
        stop_all()
PY

export BENCH_WORK=$WORK BENCH_PGIDS=$PGIDS FLINT CBENCH ROOT
harness() { python3 "$HARNESS" "$@"; }
record() { harness "$@" | tee -a "$OUT"; }

# ---------------------------------------------------------------- quiet machine
if [ "$WAIT_LOAD" != 0 ]; then
  for _ in $(seq 1 60); do
    load=$(cut -d' ' -f1 /proc/loadavg)
    if python3 -c "import sys; sys.exit(0 if $load < $WAIT_LOAD else 1)"; then break; fi
    log "load average $load >= $WAIT_LOAD; waiting"
    sleep 10
  done
fi
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

record meta

if [ "$NO_DAEMON" != 1 ]; then
  record quiet "daemon flint"
  log "daemon start-up and idle memory: flint x $REPS"
  record daemon flint "$REPS"
  if [ "$NO_SPARK" != 1 ]; then
    record quiet "daemon spark"
    log "daemon start-up and idle memory: Spark x $SPARK_REPS"
    record daemon spark "$SPARK_REPS"
  fi
fi

if [ "$NO_PLACEMENT" != 1 ]; then
  record quiet "placement flint"
  log "placement of $EXECUTORS executors on 4 workers: flint x $PLACEMENT_REPS"
  record placement flint "$PLACEMENT_REPS" "$EXECUTORS" "$SPARK_EXECUTOR_MEMORY"
fi

if [ "$NO_SCALE" != 1 ]; then
  record quiet "scale"
  log "scale: one flint master, $SCALE_WORKERS simulated workers, worker.timeout=$SCALE_TIMEOUT, ${SCALE_DURATION}s steady"
  log "open files: soft $(ulimit -Sn), hard $(ulimit -Hn)"
  # Bounded: registration (at most 90 s) + steady state + tear-down. timeout
  # signals its whole process group, so the master child goes too.
  timeout -k 10 $((SCALE_DURATION + 120)) "$CBENCH" scale --flint-bin "$FLINT" \
    --workers "$SCALE_WORKERS" --duration-s "$SCALE_DURATION" --worker-timeout "$SCALE_TIMEOUT" \
    --concurrency "$SCALE_CONCURRENCY" --master-log "$WORK/scale-master.log" > "$WORK/scale.jsonl" &
  SCALE_PID=$!
  scale_rc=0
  wait "$SCALE_PID" || scale_rc=$?
  SCALE_PID=""
  tee -a "$OUT" < "$WORK/scale.jsonl"
  [ "$scale_rc" = 0 ] || log "the scale benchmark failed (exit $scale_rc); see $WORK/scale-master.log"
fi

# Last: ~100 executor JVMs load the machine for minutes.
if [ "$NO_PLACEMENT" != 1 ] && [ "$NO_SPARK" != 1 ]; then
  record quiet "placement spark"
  log "placement of $EXECUTORS executors on 4 workers: Spark x $SPARK_PLACEMENT_REPS (executor memory $SPARK_EXECUTOR_MEMORY)"
  record placement spark "$SPARK_PLACEMENT_REPS" "$EXECUTORS" "$SPARK_EXECUTOR_MEMORY"
fi

harness summary "$OUT"
