"""Timing harness of bench/jobs.sh: flint's example binaries and Spark apps,
one JSON object per line on stdout, notes on stderr.

  harness.py quiet BEFORE LIMIT_PCT MAX_WAIT_S
  harness.py meta
  harness.py flint-jobs MASTER REPS TASKS_CSV ROUNDS
  harness.py flint-memory MASTER TASKS
  harness.py flint-start MASTER REPS [BINARY LABEL]
  harness.py flint-phases MASTER REPS [BINARY LABEL]   (MASTER "cluster": a flint://
                                  master + 2 workers of cluster_daemon, started here)
  harness.py spark-jobs local|standalone TASKS_CSV ROUNDS REPS
  harness.py spark-start REPS
  harness.py spark-app ...        (the Spark driver; run by spark-jobs)
  harness.py summary RESULTS.jsonl
"""
import json, os, signal, socket, statistics, subprocess, sys, time

WORK = os.environ.get("BENCH_WORK", "/tmp")
PGIDS = os.environ.get("BENCH_PGIDS", os.path.join(WORK, "pgids"))
TINY = os.environ.get("TINY", "")
START = os.environ.get("START", "")
DAEMON = os.environ.get("DAEMON", "")
SPARK_HOME = os.environ.get("SPARK_HOME", "")
HERE = os.path.abspath(__file__)
procs = []


def emit(obj):
    obj.setdefault("load1", round(os.getloadavg()[0], 2))
    print(json.dumps(obj), flush=True)


def note(msg):
    print(f"   {msg}", file=sys.stderr, flush=True)


signal.signal(signal.SIGTERM, lambda s, _f: (_ for _ in ()).throw(SystemExit(128 + s)))


def spawn(cmd, name, env=None, out=None, stdin=subprocess.DEVNULL, err=None):
    """Starts cmd in its own session, recorded in PGIDS so the script's trap kills it."""
    logf = open(os.path.join(WORK, f"{name}.log"), "ab")
    full_env = dict(os.environ)
    full_env.update(env or {})
    p = subprocess.Popen(cmd, stdout=out or logf, stderr=err or logf, stdin=stdin,
                         env=full_env, start_new_session=True, cwd=WORK)
    with open(PGIDS, "a") as f:
        f.write(f"{p.pid}\n")
    procs.append(p)
    return p


def stop(p, grace=15.0):
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
        os.killpg(p.pid, signal.SIGKILL)
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


def status_field(pid, name):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


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


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def cpu_busy(seconds=2.0):
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t1, i1 = read()
    time.sleep(seconds)
    t2, i2 = read()
    return 100.0 * (1 - (i2 - i1) / max(1, t2 - t1))


def quiet(before, limit, max_wait):
    """Waits (bounded) until the CPUs are mostly idle; records how busy they were."""
    t0 = time.monotonic()
    busy = cpu_busy()
    while busy > limit and time.monotonic() - t0 < max_wait:
        note(f"CPUs {busy:.0f}% busy before {before}; waiting")
        busy = cpu_busy(5.0)
    emit({"bench": "quiet", "before": before, "cpu_busy_pct": round(busy, 1),
          "waited_s": round(time.monotonic() - t0, 1), "quiet": busy <= limit})


# ------------------------------------------------------------------ flint

def flint_json(args, name):
    """Runs the tiny_tasks example; returns its JSON lines, or raises with its stderr."""
    r = subprocess.run([TINY, "--json"] + args, capture_output=True, text=True, timeout=900, cwd=WORK)
    if r.returncode != 0:
        raise RuntimeError((r.stderr.strip() or r.stdout.strip() or f"exit {r.returncode}").splitlines()[-1])
    return [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]


def flint_jobs(master, reps, tasks, rounds):
    for rep in range(1, reps + 1):
        try:
            rows = flint_json(["--master", master, "--tasks", tasks, "--rounds", str(rounds)], "flint")
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            emit({"bench": "unavailable", "system": "flint", "master": master, "what": "jobs",
                  "reason": str(e)})
            note(f"flint {master}: not available: {e}")
            return
        for r in rows:
            r["rep"] = rep
            emit(r)
        note(f"flint {master} rep {rep}: " + ", ".join(
            f"{r['tasks']} tasks {r['tasks_per_s']:,.0f}/s" if r["bench"] == "tiny_tasks"
            else f"round trip {r['median_ms']:.3f} ms" for r in rows))


def flint_memory(master, tasks):
    try:
        rows = flint_json(["--master", master, "--rounds", "0", "--memory-tasks", tasks], "flint")
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        emit({"bench": "unavailable", "system": "flint", "master": master, "what": "memory", "reason": str(e)})
        return
    for r in rows:
        emit(r)
        note(f"flint {master}: {r['tasks']} tasks, peak RSS {r['hwm_after_kib'] / 1024:.1f} MiB, "
             f"{r['peak_bytes_per_task']:.0f} B/task")


def time_exit(cmd, name, env=None, timeout=300):
    t0 = time.monotonic()
    p = spawn(cmd, name, env, out=subprocess.DEVNULL)
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        stop(p)
        rc = "timeout"
    return time.monotonic() - t0, rc


def flint_start(master, reps, binary=None, label="as built"):
    binary = binary or START
    url, env = master, {"FLINT_EXECUTOR_MEMORY": "512m"}
    if master == "cluster":
        try:
            url, cenv = start_flint_cluster(2)
        except RuntimeError as e:
            emit({"bench": "unavailable", "system": "flint", "master": master, "what": "start", "reason": str(e)})
            return
        env.update(cenv)
    for rep in range(1, reps + 1):
        secs, rc = time_exit([binary, "--master", url], "flint-start", env)
        if rc != 0:
            with open(os.path.join(WORK, "flint-start.log")) as f:
                last = (f.read().strip().splitlines() or [f"exit {rc}"])[-1]
            emit({"bench": "unavailable", "system": "flint", "master": master, "what": "start", "reason": last})
            note(f"flint start on {master}: not available: {last}")
            return
        emit({"bench": "start_exit", "system": "flint", "master": master, "rep": rep, "ms": round(secs * 1e3, 2),
              "binary": label, "binary_mb": round(os.path.getsize(binary) / 1e6, 1)})
    note(f"flint start -> exit on {master} ({label}): {reps} reps done")
    stop_all()


def start_flint_cluster(workers=2, cores=1, mib=1024):
    """A flint master and `workers` workers as their own processes (the cluster_daemon
    example); returns (master URL, env with FLINT_HOME). Stopped by stop_all()."""
    import threading
    home = os.path.join(WORK, "flint-home")
    os.makedirs(home, exist_ok=True)
    env = {"FLINT_HOME": home}

    def daemon(args, name):
        p = spawn([DAEMON] + args, name, env, out=subprocess.PIPE, stdin=subprocess.PIPE)
        box = []
        t = threading.Thread(target=lambda: box.append(p.stdout.readline().decode()), daemon=True)
        t.start()
        t.join(60)
        if not box or not box[0].startswith("url "):
            raise RuntimeError(f"{name} did not start; see {WORK}/{name}.log")
        return box[0].split()[1]

    url = daemon(["master"], "flint-master")
    for i in range(workers):
        daemon(["worker", url, os.path.join(WORK, f"flint-work-{i}"), str(cores), str(mib)], f"flint-worker-{i}")
    return url, env


def sha256_of(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def flint_phases(master, reps, binary=None, label="as built"):
    """bench_start --log --executors 2, timed from spawn: the first and the last executor
    registered with the driver (its log lines, stamped as they arrive), the first job's
    answer, one one-task job in the running app, exit; and the idle executors' RSS
    (2 s after the last registered, before the one-task job)."""
    import threading
    binary = binary or START
    executors = 2
    env = {"FLINT_EXECUTOR_MEMORY": "512m"}
    url = master
    if master == "cluster":
        try:
            url, cenv = start_flint_cluster(executors)
        except RuntimeError as e:
            emit({"bench": "unavailable", "system": "flint", "master": master, "what": "phases", "reason": str(e)})
            return
        env.update(cenv)
    sha = sha256_of(binary)
    size_mb = round(os.path.getsize(binary) / 1e6, 1)
    for rep in range(1, reps + 1):
        t0 = time.monotonic()
        p = spawn([binary, "--master", url, "--log", "--executors", str(executors)], "flint-phases", env,
                  out=subprocess.PIPE, stdin=subprocess.PIPE, err=subprocess.PIPE)
        ev = {}
        lock = threading.Lock()

        def mark(k, v=None):
            with lock:
                ev.setdefault(k, v if v is not None else (time.monotonic() - t0) * 1e3)

        def read_err():
            for line in p.stderr:
                line = line.decode(errors="replace")
                if "executor registered (1 so far" in line:
                    mark("first_executor_ms")
                if f"executor registered ({executors} so far" in line:
                    mark("all_executors_ms")
                if "application registered" in line:
                    mark("app_registered_ms")

        def read_out():
            for line in p.stdout:
                line = line.decode(errors="replace").strip()
                if line == "2":
                    mark("first_job_ms")
                elif line.startswith("executors "):
                    mark("idle_ms")
                    time.sleep(2.0)  # idle executors, as Spark's row is measured
                    ex = pids_matching(f"binaries/{sha}")
                    mark("executor_idle_rss_kib", sum(status_field(x, "VmRSS") for x in ex))
                    mark("executor_count", len(ex))
                    try:
                        p.stdin.write(b"\n")
                        p.stdin.flush()
                    except OSError:
                        pass
                elif line.startswith("one-task-job-ms "):
                    mark("one_task_job_ms", float(line.split()[1]))

        ts = [threading.Thread(target=f, daemon=True) for f in (read_err, read_out)]
        for t in ts:
            t.start()
        try:
            rc = p.wait(120)
        except subprocess.TimeoutExpired:
            stop(p)
            rc = "timeout"
        exit_ms = (time.monotonic() - t0) * 1e3
        for t in ts:
            t.join(5)
        if rc != 0:
            emit({"bench": "unavailable", "system": "flint", "master": master, "what": "phases",
                  "reason": f"bench_start exited {rc}; see {WORK}/flint-phases.log"})
            return
        row = {"bench": "start_phases", "system": "flint", "master": master, "binary": label,
               "binary_mb": size_mb, "rep": rep, "binary_cached_on_workers": master == "cluster" and rep > 1,
               "exit_ms": round(exit_ms, 2)}
        row.update({k: (round(v, 2) if isinstance(v, float) else v) for k, v in ev.items()})
        row["exit_ms_incl_idle_wait"] = row.pop("exit_ms")
        emit(row)
    note(f"flint phases on {master} ({label}, {size_mb} MB): {reps} reps done")
    stop_all()


# ------------------------------------------------------------------ spark

def spark_env():
    return {"SPARK_HOME": SPARK_HOME, "SPARK_LOG_DIR": os.path.join(WORK, "spark-logs"),
            "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}


def http_json(port, path):
    import http.client
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        return json.loads(body) if r.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None


def wait_for(cond, what, timeout=120, poll=0.05):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{what} not within {timeout} s; see {WORK}")
        time.sleep(poll)


def spark_jobs(mode, tasks, rounds, reps):
    env = spark_env()
    master = "local[2]"
    if mode == "standalone":
        port, ui = free_port(), free_port()
        cls = os.path.join(SPARK_HOME, "bin", "spark-class")
        spawn([cls, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
               "--webui-port", str(ui)], "spark-master", env)
        wait_for(lambda: (http_json(ui, "/json/") or {}).get("status") == "ALIVE", "Spark master ALIVE")
        spawn([cls, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", "--host", "127.0.0.1",
               "--cores", "2", "--memory", "2g", "--webui-port", str(free_port()),
               "--work-dir", os.path.join(WORK, "spark-work")], "spark-worker", env)
        wait_for(lambda: any(w.get("state") == "ALIVE" for w in (http_json(ui, "/json/") or {}).get("workers", [])),
                 "Spark worker ALIVE")
        master = f"spark://127.0.0.1:{port}"
    for rep in range(1, reps + 1):
        out = os.path.join(WORK, f"spark-app-{mode}-{rep}.jsonl")
        with open(out, "wb") as f:
            p = spawn([sys.executable, HERE, "spark-app", mode, master, tasks, str(rounds), str(rep)],
                      f"spark-app-{mode}", env, out=f)
            try:
                rc = p.wait(1200)
            except subprocess.TimeoutExpired:
                stop(p)
                rc = "timeout"
        with open(out) as f:
            for line in f:
                if line.startswith("{"):
                    print(line.strip(), flush=True)
        if rc != 0:
            emit({"bench": "unavailable", "system": "spark", "master": mode, "what": "jobs",
                  "reason": f"spark app exited {rc}; see {WORK}/spark-app-{mode}.log"})
    stop_all()


def spark_app(mode, master, tasks, rounds, rep):
    """The Spark driver. Every job is JVM-side: SparkContext.range(0, n, 1, n).count()
    through py4j (an RDD[Long] of n partitions, one element each; no Python workers)."""
    from pyspark import SparkConf, SparkContext
    conf = (SparkConf().setMaster(master).setAppName(f"jobs-bench-{mode}")
            .set("spark.ui.enabled", "false").set("spark.driver.host", "127.0.0.1")
            .set("spark.driver.bindAddress", "127.0.0.1"))
    if mode == "standalone":
        conf = conf.set("spark.executor.cores", "2").set("spark.cores.max", "2").set("spark.executor.memory", "1g")
    t_start = time.monotonic()
    sc = SparkContext(conf=conf)
    sc.setLogLevel("WARN")
    jsc = sc._jsc.sc()
    system = f"spark-{mode}"
    if mode == "standalone":  # one executor with 2 cores registered with the driver
        wait_for(lambda: jsc.getExecutorMemoryStatus().size() - 1 >= 1, "Spark executor registered", poll=0.005)
        emit({"bench": "spark_executor_registered", "system": system, "rep": int(rep),
              "ms": round((time.monotonic() - t_start) * 1e3, 1),
              "note": "SparkContext() (JVM start included) to the executor registered, polled every 5 ms"})
        time.sleep(2.0)
        ex = pids_matching("CoarseGrainedExecutorBackend")
        emit({"bench": "executor_idle", "system": system, "rep": int(rep), "executors": len(ex),
              "rss_kib": sum(status_field(p, "VmRSS") for p in ex)})
    for _ in range(3):  # warm up
        jsc.range(0, 100, 1, 10).count()
    import threading
    budget = float(os.environ.get("SPARK_JOB_BUDGET", "180"))
    tracker = sc.statusTracker()
    for n in [int(x) for x in tasks.split(",")]:
        res = {}
        t0 = time.monotonic()

        def run():
            try:
                res["count"] = jsc.range(0, n, 1, n).count()
            except Exception as e:  # cancelled by the budget below
                res["error"] = str(e).splitlines()[0]
            res["secs"] = time.monotonic() - t0

        th = threading.Thread(target=run, daemon=True)
        th.start()
        done_tasks = 0
        while th.is_alive() and time.monotonic() - t0 < budget:
            th.join(1.0)
            for sid in tracker.getActiveStageIds():
                info = tracker.getStageInfo(sid)
                if info and info.numTasks == n:
                    done_tasks = max(done_tasks, info.numCompletedTasks)
        row = {"bench": "tiny_tasks", "system": system, "master": master, "tasks": n, "rep": int(rep)}
        if th.is_alive():  # over budget: the rate of the tasks done so far, the job cancelled
            secs = time.monotonic() - t0
            jsc.cancelAllJobs()
            th.join(60)
            row.update({"secs": round(secs, 3), "completed_tasks": done_tasks, "cut_at_budget_s": budget,
                        "tasks_per_s": round(done_tasks / secs, 1)})
            note(f"{system} rep {rep}: {n} tasks: cut after {secs:.0f} s with {done_tasks} done, "
                 f"{done_tasks / secs:,.0f}/s")
        else:
            secs = res["secs"]
            assert res.get("count") == n, res
            row.update({"secs": round(secs, 6), "tasks_per_s": round(n / secs, 1)})
            note(f"{system} rep {rep}: {n} tasks {n / secs:,.0f}/s")
        emit(row)
    ms = []
    for _ in range(rounds):
        t0 = time.monotonic()
        jsc.range(0, 1, 1, 1).count()
        ms.append((time.monotonic() - t0) * 1e3)
    ms.sort()
    q = lambda p: ms[round((len(ms) - 1) * p)]
    emit({"bench": "round_trip", "system": system, "master": master, "rep": int(rep), "jobs": len(ms),
          "median_ms": round(q(0.5), 4), "p10_ms": round(q(0.1), 4), "p90_ms": round(q(0.9), 4),
          "p99_ms": round(q(0.99), 4), "mean_ms": round(sum(ms) / len(ms), 4)})
    note(f"{system} rep {rep}: round trip {q(0.5):.2f} ms")
    jvm = [c for c in children(os.getpid()) if "java" in open(f"/proc/{c}/comm").read()]
    emit({"bench": "driver_hwm", "system": system, "rep": int(rep), "after_tasks": max(int(x) for x in tasks.split(",")),
          "driver_jvm_hwm_kib": sum(status_field(p, "VmHWM") for p in jvm),
          "driver_jvm_rss_kib": sum(status_field(p, "VmRSS") for p in jvm)})
    sc.stop()


TRIVIAL = """
from pyspark import SparkConf, SparkContext
sc = SparkContext(conf=SparkConf().setAppName("start-bench").set("spark.ui.enabled", "false")
                  .set("spark.driver.host", "127.0.0.1").set("spark.driver.bindAddress", "127.0.0.1"))
print(sc._jsc.sc().range(0, 2, 1, 2).count())
sc.stop()
"""


def spark_start(reps):
    app = os.path.join(WORK, "trivial_spark_app.py")
    with open(app, "w") as f:
        f.write(TRIVIAL)
    submit = os.path.join(SPARK_HOME, "bin", "spark-submit")
    for rep in range(1, reps + 1):
        secs, rc = time_exit([submit, "--master", "local[2]", app], "spark-start", spark_env())
        if rc != 0:
            emit({"bench": "unavailable", "system": "spark", "master": "local[2]", "what": "start",
                  "reason": f"spark-submit exited {rc}"})
            return
        emit({"bench": "start_exit", "system": "spark-submit", "master": "local[2]", "rep": rep,
              "ms": round(secs * 1e3, 1)})
        note(f"spark-submit local[2] start -> exit: {secs:.2f} s")


# ------------------------------------------------------------------ report

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
    emit({"bench": "meta", "cpus": os.cpu_count(), "loadavg": open("/proc/loadavg").read().split()[:3],
          "rustc": cmd(["rustc", "--version"]), "java": cmd(["java", "-version"]) if SPARK_HOME else None,
          "pyspark": pyspark, "flint_commit": cmd(["git", "-C", os.environ.get("ROOT", "."), "rev-parse", "--short", "HEAD"]),
          "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def med(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(xs) if xs else None


def fmt(x, unit="", digits=1):
    return "n/a" if x is None else f"{x:,.{digits}f}{unit}"


def summary(path):
    rows = [json.loads(l) for l in open(path) if l.startswith("{")]
    meta_row = next((r for r in rows if r.get("bench") == "meta"), {})
    print(f"\n## Results ({path})\n")
    if meta_row:
        print(f"commit {meta_row.get('flint_commit')}, {meta_row.get('time')}; {meta_row.get('cpus')} CPUs; "
              f"load average at start {' '.join(meta_row.get('loadavg') or [])}; {meta_row.get('rustc')}; "
              f"{meta_row.get('java')}; pyspark {meta_row.get('pyspark')}\n")
    q = [r for r in rows if r.get("bench") == "quiet"]
    if q:
        print("CPU busy before each phase: " + "; ".join(
            f"{r['before']} {r['cpu_busy_pct']}% (load {r['load1']})" for r in q))
        if not all(r.get("quiet") for r in q):
            print("\n**The machine never got quiet: these figures were taken under load; re-measure them.**")
        print()
    cols = [("flint", "local[2]", "flint local[2]"), ("flint", "local-cluster[1,2,1024]", "flint local-cluster"),
            ("spark-local", None, "Spark local[2]"), ("spark-standalone", None, "Spark standalone")]

    def pick(bench, system, master, key, **kw):
        return med([r.get(key) for r in rows if r.get("bench") == bench and r.get("system") == system
                    and (master is None or r.get("master") == master)
                    and all(r.get(k) == v for k, v in kw.items())])

    def avail(system, master):
        u = [r for r in rows if r.get("bench") == "unavailable" and r.get("system") == system
             and (master is None or r.get("master") == master)]
        return "not yet available" if u else "n/a"

    print("| median | target | " + " | ".join(c[2] for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    tasks = sorted({r["tasks"] for r in rows if r.get("bench") == "tiny_tasks"})
    for n in tasks:
        cells = []
        for s, m, _ in cols:
            v = pick("tiny_tasks", s, m, "tasks_per_s", tasks=n)
            cut = [r for r in rows if r.get("bench") == "tiny_tasks" and r.get("system") == s
                   and r.get("tasks") == n and r.get("cut_at_budget_s")]
            mark = f" (cut at {cut[0]['cut_at_budget_s']:.0f} s, {cut[0]['completed_tasks']:,} done)" if cut else ""
            cells.append(fmt(v, "/s", 0) + mark if v is not None else avail(s, m))
        print(f"| tiny tasks, {n:,} no-op tasks, 2 cores | ≥ 100,000/s | " + " | ".join(cells) + " |")
    cells = []
    for s, m, _ in cols:
        v = pick("round_trip", s, m, "median_ms")
        cells.append(fmt(v, " ms", 3) if v is not None else avail(s, m))
    print("| one-task job round trip | ≤ 1 ms | " + " | ".join(cells) + " |")
    fs = pick("start_exit", "flint", "local[2]", "ms")
    ss = pick("start_exit", "spark-submit", "local[2]", "ms")
    fc = pick("start_exit", "flint", "local-cluster[1,2,1024]", "ms")
    print(f"| trivial program start → exit | ≤ 200 ms | {fmt(fs, ' ms')} | "
          f"{fmt(fc, ' ms') if fc is not None else avail('flint', 'local-cluster[1,2,1024]')} | "
          f"{fmt(ss, ' ms', 0)} (spark-submit) | |")
    mem = [r for r in rows if r.get("bench") == "driver_memory"]
    for r in mem:
        print(f"| driver peak RSS, one job of {r['tasks']:,} tasks ({r['master']}) | ≤ 1 KiB/task | "
              f"{r['hwm_after_kib'] / 1024:,.1f} MiB = {r['peak_bytes_per_task']:,.0f} B/task "
              f"({r['growth_bytes_per_task']:,.0f} B/task above the {r['rss_before_kib'] / 1024:.1f} MiB before; "
              f"job {r['secs']:.1f} s) | | | |")
    h = {s: [r for r in rows if r.get("bench") == "driver_hwm" and r.get("system") == s]
         for s in ("spark-local", "spark-standalone")}
    if any(h.values()):
        after = max(r["after_tasks"] for v in h.values() for r in v)
        cells = [fmt(med([r["driver_jvm_hwm_kib"] for r in v]) / 1024 if v else None, " MiB", 0) for v in h.values()]
        print(f"| Spark: driver JVM peak RSS after its {after:,}-task job | | | | {cells[0]} | {cells[1]} |")
    e = [r for r in rows if r.get("bench") == "executor_idle"]
    fr = med([r["executor_idle_rss_kib"] / max(1, r.get("executor_count", 1)) for r in rows
              if r.get("bench") == "start_phases" and r.get("executor_idle_rss_kib")])
    fe = fmt(fr / 1024, " MiB (start phases, local-cluster[2,1,512] and flint://)") if fr else "not yet available"
    print(f"| executor idle RSS | | | {fe} | | "
          f"{fmt(med([r['rss_kib'] for r in e]) / 1024 if e else None, ' MiB', 0)} |")
    ph = [r for r in rows if r.get("bench") == "start_phases"]
    if ph:
        print("\nStart phases, from spawn (`bench_start --log --executors 2`; medians):\n")
        print("| master | binary | binary cached on workers | runs | app registered | first executor registered "
              "| both registered | first job done | one-task job in the running app | executor idle RSS |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        keys = []
        for r in ph:
            k = (r["master"], f"{r['binary']} ({r['binary_mb']} MB)", r.get("binary_cached_on_workers"))
            if k not in keys:
                keys.append(k)
        for k in keys:
            g = [r for r in ph if (r["master"], f"{r['binary']} ({r['binary_mb']} MB)",
                                   r.get("binary_cached_on_workers")) == k]
            m = lambda f: med([r.get(f) for r in g])
            rss = med([r["executor_idle_rss_kib"] / max(1, r.get("executor_count", 1)) for r in g
                       if r.get("executor_idle_rss_kib")])
            master = "flint:// (master + 2 workers, own processes)" if k[0] == "cluster" else k[0]
            print(f"| {master} | {k[1]} | {'yes' if k[2] else 'no'} | {len(g)} | {fmt(m('app_registered_ms'), ' ms')} "
                  f"| {fmt(m('first_executor_ms'), ' ms')} | {fmt(m('all_executors_ms'), ' ms')} "
                  f"| {fmt(m('first_job_ms'), ' ms')} | {fmt(m('one_task_job_ms'), ' ms', 2)} "
                  f"| {fmt(rss / 1024 if rss else None, ' MiB')} |")
        se = [r for r in rows if r.get("bench") == "start_exit" and r.get("system") == "flint"]
        skeys = []
        for r in se:
            k = (r["master"], f"{r.get('binary', 'as built')} ({r.get('binary_mb', '?')} MB)")
            if k not in skeys:
                skeys.append(k)
        print("\nTrivial program start → exit (`bench_start`; medians):\n")
        print("| master | binary | runs | start → exit |")
        print("|---|---|---|---|")
        for k in skeys:
            g = [r["ms"] for r in se if (r["master"], f"{r.get('binary', 'as built')} ({r.get('binary_mb', '?')} MB)") == k]
            master = "flint:// (master + 2 workers, own processes)" if k[0] == "cluster" else k[0]
            print(f"| {master} | {k[1]} | {len(g)} | {fmt(med(g), ' ms')} |")
        sr = [r["ms"] for r in rows if r.get("bench") == "spark_executor_registered"]
        if sr:
            print(f"\nSpark standalone, SparkContext() → its executor registered: {fmt(med(sr), ' ms', 0)} "
                  f"({len(sr)} run(s)).")
    un = [r for r in rows if r.get("bench") == "unavailable"]
    if un:
        print()
        for r in un:
            print(f"- {r['system']} {r['master']} {r['what']}: not available: {r['reason']}")
    print()


if __name__ == "__main__":
    what, a = sys.argv[1], sys.argv[2:]
    try:
        if what == "quiet":
            quiet(a[0], float(a[1]), float(a[2]))
        elif what == "meta":
            meta()
        elif what == "flint-jobs":
            flint_jobs(a[0], int(a[1]), a[2], int(a[3]))
        elif what == "flint-memory":
            flint_memory(a[0], a[1])
        elif what == "flint-start":
            flint_start(a[0], int(a[1]), *(a[2:4]))
        elif what == "flint-phases":
            flint_phases(a[0], int(a[1]), *(a[2:4]))
        elif what == "spark-jobs":
            spark_jobs(a[0], a[1], int(a[2]), int(a[3]))
        elif what == "spark-app":
            spark_app(a[0], a[1], a[2], int(a[3]), a[4])
        elif what == "spark-start":
            spark_start(int(a[0]))
        elif what == "summary":
            summary(a[0])
        else:
            sys.exit(f"harness.py: unknown command {what}")
    finally:
        stop_all()
