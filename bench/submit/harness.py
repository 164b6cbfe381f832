"""Timing harness of bench/submit.sh: starts a flint master + worker (and a Spark
standalone master + worker), times submissions from spawn to exit, samples the memory
of a waiting submitter. Prints one JSON object per measurement on stdout."""
import json, os, re, shutil, signal, statistics, subprocess, sys, time, urllib.request

WORK = os.environ["BENCH_WORK"]
FLINT = os.environ["FLINT"]
APP = os.environ["APP"]
LAUNCH_BENCH = os.environ["LAUNCH_BENCH"]
SPARK_HOME = os.environ.get("SPARK_HOME", "")
REPS = int(os.environ.get("REPS", "10"))
SPARK_REPS = int(os.environ.get("SPARK_REPS", "3"))
HOLD_MS = int(os.environ.get("HOLD_MS", "3000"))
procs = []


def emit(obj):
    print(json.dumps(obj), flush=True)


def note(msg):
    print(f"   {msg}", file=sys.stderr, flush=True)


signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(SystemExit(128 + s)))


def spawn(cmd, name, env=None, stdout=None):
    log = open(os.path.join(WORK, f"{name}.log"), "ab")
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen(cmd, stdout=stdout or log, stderr=log, stdin=subprocess.DEVNULL,
                         env=e, start_new_session=True, cwd=WORK)
    procs.append(p)
    return p


def kill_all():
    for p in reversed(procs):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def wait_for(cond, what, limit=120.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise SystemExit(f"timed out after {limit:.0f} s waiting for {what}")


def log_line(name, pattern):
    path = os.path.join(WORK, f"{name}.log")
    def find():
        try:
            with open(path, errors="replace") as f:
                m = re.search(pattern, f.read())
                return m and m.group(1)
        except FileNotFoundError:
            return None
    return find


def tree(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def timed(cmd, env=None, sample_tree=False):
    """Runs cmd to its end: (seconds, exit code, peak RSS KiB of the process (or its
    tree) sampled every 50 ms)."""
    e = dict(os.environ)
    e.update(env or {})
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=e, cwd=WORK)
    peak = 0
    while p.poll() is None:
        pids = tree(p.pid) if sample_tree else [p.pid]
        peak = max(peak, sum(status_kib(x, "VmRSS") for x in pids))
        try:
            p.wait(0.05)
        except subprocess.TimeoutExpired:
            pass
    secs = time.monotonic() - t0
    out = p.stdout.read().decode(errors="replace")
    return secs, p.returncode, peak, out


def med(xs):
    return round(statistics.median(xs), 4) if xs else None


def flint_rows():
    home = os.path.join(WORK, "flint-home")
    os.makedirs(home, mode=0o700, exist_ok=True)
    env = {"FLINT_HOME": home}
    os.environ.update(env)
    spawn([FLINT, "master", "--host", "127.0.0.1", "--port", "0", "--webui-port", "0"], "flint-master")
    url = wait_for(log_line("flint-master", r"flint master listening on (flint://[0-9.:]+)"),
                   "the flint master's listening line")
    spawn([FLINT, "worker", url, "--cores", "2", "--memory", "2g", "--work-dir",
           os.path.join(WORK, "flint-work"), "--port", "0", "--webui-port", "0"], "flint-worker")
    wait_for(log_line("flint-worker", r"(Successfully registered|registered with)"),
             "the flint worker's registration", 60)
    note(f"flint master {url}, one worker (2 cores)")

    def run(kind, cmd, n, **kw):
        secs, peaks = [], []
        for i in range(n):
            s, rc, peak, out = timed(cmd(i), **kw)
            if rc != 0:
                raise SystemExit(f"{kind}: exit {rc}:\n{out}")
            secs.append(s)
            peaks.append(peak)
        emit({"system": "flint", "row": kind, "reps": n, "secs": [round(s, 4) for s in secs],
              "median_s": med(secs), "peak_rss_kib_median": med(peaks)})
        note(f"flint {kind}: median {med(secs) * 1000:.0f} ms over {n}")

    run("client submit -> exit", lambda i: [FLINT, "submit", "--master", url, APP], REPS)

    # Each upload row's binary is a copy with a few bytes appended: a new hash, so
    # the master has not seen it and the whole binary is uploaded.
    def fresh(i):
        path = os.path.join(WORK, f"app-{i}")
        shutil.copyfile(APP, path)
        with open(path, "ab") as f:
            f.write(os.urandom(16))
        os.chmod(path, 0o755)
        return [FLINT, "submit", "--master", url, "--deploy-mode", "cluster", path]

    run("cluster submit -> FINISHED, binary uploaded", fresh, REPS)

    # The same with the binary stripped of its symbols and line tables, as a shipped
    # release binary usually is (`strip`; a new hash each time, as above).
    def fresh_stripped(i):
        path = os.path.join(WORK, f"app-stripped-{i}")
        shutil.copyfile(APP, path)
        subprocess.run(["strip", path], check=True)
        with open(path, "ab") as f:
            f.write(os.urandom(16))
        os.chmod(path, 0o755)
        return [FLINT, "submit", "--master", url, "--deploy-mode", "cluster", path]

    if shutil.which("strip"):
        size = os.path.getsize(APP)
        note(f"binary {size / 2**20:.0f} MiB; stripped copies for the next row")
        run("cluster submit -> FINISHED, stripped binary uploaded", fresh_stripped, REPS)
    known = fresh(REPS)
    timed(known)  # the master learns this one
    run("cluster submit -> FINISHED, binary known", lambda i: known, REPS)
    # The launcher library: start_application -> CONNECTED and -> FINISHED, both modes.
    for mode, app in (("client", APP), ("cluster", known[-1])):
        r = subprocess.run([LAUNCH_BENCH, FLINT, url, app, str(REPS), mode], cwd=WORK,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
        if r.returncode != 0:
            raise SystemExit(f"launch_bench {mode}: exit {r.returncode}:\n{r.stderr.decode()}")
        row = json.loads(r.stdout.decode().strip().splitlines()[-1])
        emit(row)
        note(f"flint launcher {mode}: CONNECTED {row['to_connected_median_s'] * 1000:.0f} ms, "
             f"FINISHED {row['median_s'] * 1000:.0f} ms (medians of {REPS})")
    # A submit waiting for a driver that holds for HOLD_MS: its own memory.
    run(f"cluster submit waiting ({HOLD_MS} ms driver): peak RSS",
        lambda i: known[:-1] + [known[-1], "--hold-ms", str(HOLD_MS)], 3)


def spark_rows():
    env = {"SPARK_HOME": SPARK_HOME, "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_LOG_DIR": os.path.join(WORK, "spark-logs"),
           "PYSPARK_PYTHON": sys.executable}
    os.environ.update(env)
    cls = os.path.join(SPARK_HOME, "bin", "spark-class")
    spawn([cls, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
           "--port", "0", "--webui-port", "0"], "spark-master")
    url = wait_for(log_line("spark-master", r"Starting Spark master at (spark://[0-9.:]+)"),
                   "the Spark master's start line")
    spawn([cls, "org.apache.spark.deploy.worker.Worker", url, "--cores", "2", "--memory", "2g",
           "--port", "0", "--webui-port", "0", "--work-dir", os.path.join(WORK, "spark-work")],
          "spark-worker")
    wait_for(log_line("spark-worker", r"(Successfully registered with master)"),
             "the Spark worker's registration", 120)
    note(f"Spark master {url}, one worker (2 cores)")
    app = os.path.join(WORK, "trivial.py")
    with open(app, "w") as f:
        f.write("import sys, time\nfrom pyspark import SparkContext\n"
                "sc = SparkContext(appName='bench_submit')\n"
                "print(sc.parallelize(range(2), 2).count())\n"
                "hold = int(sys.argv[1]) if len(sys.argv) > 1 else 0\n"
                "time.sleep(hold / 1000)\nsc.stop()\n")
    submit = [os.path.join(SPARK_HOME, "bin", "spark-submit"), "--master", url,
              "--conf", "spark.ui.enabled=false", "--conf", "spark.executor.memory=512m"]
    for kind, args, n in (("client submit -> exit", [app], SPARK_REPS),
                          (f"client submit waiting ({HOLD_MS} ms app): peak RSS of its tree",
                           [app, str(HOLD_MS)], 1)):
        secs, peaks = [], []
        for _ in range(n):
            s, rc, peak, out = timed(submit + args, sample_tree=True)
            if rc != 0:
                raise SystemExit(f"spark {kind}: exit {rc}:\n{out[-3000:]}")
            secs.append(s)
            peaks.append(peak)
        emit({"system": "spark", "row": kind, "reps": n, "secs": [round(s, 4) for s in secs],
              "median_s": med(secs), "peak_rss_kib_median": med(peaks)})
        note(f"spark {kind}: median {med(secs):.1f} s")


try:
    which = sys.argv[1]
    if which == "flint":
        flint_rows()
    elif which == "spark":
        spark_rows()
finally:
    kill_all()
