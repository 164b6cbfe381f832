#!/usr/bin/env bash
# bench/jobs.sh — flint's job path beside Apache Spark's, measured in the same
# run on the same machine (issue 8, "Benchmark").
#
#   bash bench/jobs.sh [options]
#
# Measures, for flint (release build of crates/flint/examples/tiny_tasks.rs and
# bench_start.rs) and Spark (pip's pyspark, Java 17+):
#   tiny tasks  jobs of 10,000 and 100,000 no-op tasks on 2 cores, tasks/s:
#               flint range(0, n, n).count() on local[2] and local-cluster[1,2,1024];
#               Spark SparkContext.range(0, n, 1, n).count() called through py4j
#               (JVM tasks, no Python workers) on local[2] and on a standalone
#               master + worker with one 2-core executor;
#   round trip  one-task jobs range(0, 1, 1).count() timed one by one in a
#               running app, median;
#   start/exit  a trivial program (context, one 2-task job, stop) from spawn
#               to exit: flint bench_start binary vs spark-submit --master local[2];
#   start phases  app start -> first / all executors registered, first job, one
#               one-task job, executor idle RSS: flint on local-cluster[2,1,512]
#               and on a flint:// master + 2 workers (cluster_daemon processes),
#               the binary as built and stripped; Spark standalone SparkContext()
#               -> executor registered;
#   memory      flint: peak RSS (VmHWM) of the driver process after one job of
#               1,000,000 tasks, per task; Spark: driver JVM VmHWM after its
#               100,000-task job, executor idle RSS (standalone).
# flint's cluster rows run on local-cluster[1,2,1024]; a row whose program fails
# is recorded as "unavailable" with its error.
# Writes JSON lines to --out and prints a table of medians. Every process it
# starts runs in its own session and is killed on exit (trap).
#
# Options (environment variables of the same name in capitals work too):
#   --reps N            flint repetitions of the tiny-task/round-trip run (5)
#   --spark-reps N      Spark repetitions of the same (1)
#   --tasks LIST        task counts (10000,100000)
#   --rounds N          one-task jobs per round-trip measurement (flint 1000; Spark 200)
#   --spark-rounds N
#   --memory-tasks N    tasks of the memory job (1000000)
#   --start-reps N      flint start -> exit repetitions (20)
#   --phase-reps N      flint start-phase runs per master and binary (10)
#   --spark-start-reps N  spark-submit repetitions (3)
#   --wait-load L       wait for the 1-minute load average to fall under L (1.0)
#   --max-wait S        but at most S seconds, then run anyway and record the
#                       load (300); each phase also waits (--phase-wait) for
#                       the CPUs to be under 25 % busy
#   --phase-wait S      how long each phase waits for quiet CPUs (60)
#   --spark-job-budget S  a Spark tiny-task job still running after S seconds
#                       is cancelled and its rate so far recorded (180; the row
#                       says completed_tasks and cut_at_budget_s)
#   --no-spark          flint only
#   --out FILE          JSON lines (default: a new file under /tmp)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${REPS:-5}
SPARK_REPS=${SPARK_REPS:-1}
TASKS=${TASKS:-10000,100000}
ROUNDS=${ROUNDS:-1000}
SPARK_ROUNDS=${SPARK_ROUNDS:-200}
MEMORY_TASKS=${MEMORY_TASKS:-1000000}
START_REPS=${START_REPS:-20}
SPARK_START_REPS=${SPARK_START_REPS:-3}
WAIT_LOAD=${WAIT_LOAD:-1.0}
MAX_WAIT=${MAX_WAIT:-300}
PHASE_WAIT=${PHASE_WAIT:-60}
SPARK_JOB_BUDGET=${SPARK_JOB_BUDGET:-180}
NO_SPARK=${NO_SPARK:-0}
OUT=${OUT:-}
CLUSTER_MASTER='local-cluster[1,2,1024]'
START_CLUSTER_MASTER='local-cluster[2,1,512]'
PHASE_REPS=${PHASE_REPS:-10}

while [ $# -gt 0 ]; do
  case "$1" in
    --reps) REPS=$2; shift 2 ;;
    --spark-reps) SPARK_REPS=$2; shift 2 ;;
    --tasks) TASKS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --spark-rounds) SPARK_ROUNDS=$2; shift 2 ;;
    --memory-tasks) MEMORY_TASKS=$2; shift 2 ;;
    --start-reps) START_REPS=$2; shift 2 ;;
    --phase-reps) PHASE_REPS=$2; shift 2 ;;
    --spark-start-reps) SPARK_START_REPS=$2; shift 2 ;;
    --wait-load) WAIT_LOAD=$2; shift 2 ;;
    --max-wait) MAX_WAIT=$2; shift 2 ;;
    --phase-wait) PHASE_WAIT=$2; shift 2 ;;
    --spark-job-budget) SPARK_JOB_BUDGET=$2; shift 2 ;;
    --no-spark) NO_SPARK=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/flint-jobs-bench.XXXXXX")
OUT=${OUT:-$WORK/results.jsonl}
: > "$OUT"
PGIDS=$WORK/pgids
: > "$PGIDS"

# Kill every process group the harness started (TERM, then KILL); only groups
# recorded in $PGIDS are touched.
cleanup() {
  local rc=$?
  if [ -s "$PGIDS" ]; then
    while read -r g; do kill -TERM -- "-$g" 2>/dev/null || true; done < "$PGIDS"
    sleep 1
    while read -r g; do kill -KILL -- "-$g" 2>/dev/null || true; done < "$PGIDS"
  fi
  echo "work dir: $WORK (results: $OUT)" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "== $*" >&2; }

log "building flint examples (release) into $CARGO_TARGET_DIR"
(cd "$ROOT" && cargo build --release -q -p flint --example tiny_tasks --example bench_start --example cluster_daemon)
TINY=$CARGO_TARGET_DIR/release/examples/tiny_tasks
START=$CARGO_TARGET_DIR/release/examples/bench_start
DAEMON=$CARGO_TARGET_DIR/release/examples/cluster_daemon
# The start figures depend on the binary's size (it is hashed by the driver, fetched
# by each worker and hashed by each executor): also measured on a stripped copy.
STRIPPED=$WORK/bench_start.stripped
strip -o "$STRIPPED" "$START" 2>/dev/null || STRIPPED=

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

export BENCH_WORK=$WORK BENCH_PGIDS=$PGIDS TINY START DAEMON ROOT SPARK_JOB_BUDGET
harness() { python3 "$ROOT/bench/jobs/harness.py" "$@"; }
record() { harness "$@" | tee -a "$OUT"; }
quiet() { record quiet "$1" 25 "$PHASE_WAIT"; }

# Bounded wait for a quiet machine: after MAX_WAIT seconds run anyway; the load
# is recorded with every figure (load1) and before every phase.
waited=0
while [ "$WAIT_LOAD" != 0 ] && [ "$waited" -lt "$MAX_WAIT" ]; do
  load=$(cut -d' ' -f1 /proc/loadavg)
  if python3 -c "import sys; sys.exit(0 if $load < $WAIT_LOAD else 1)"; then break; fi
  log "load average $load >= $WAIT_LOAD; waiting (${waited}s of at most ${MAX_WAIT}s)"
  sleep 10; waited=$((waited + 10))
done
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

record meta

for m in 'local[2]' "$CLUSTER_MASTER"; do
  quiet "flint jobs $m"
  log "flint $m: tiny tasks ($TASKS) and $ROUNDS one-task jobs, x $REPS"
  record flint-jobs "$m" "$REPS" "$TASKS" "$ROUNDS"
  quiet "flint start $m"
  log "flint $m: trivial program start -> exit, x $START_REPS"
  record flint-start "$m" "$START_REPS"
  quiet "flint memory $m"
  log "flint $m: driver memory for one job of $MEMORY_TASKS tasks"
  record flint-memory "$m" "$MEMORY_TASKS"
done

# App start -> executors registered, on local-cluster and on a flint:// cluster of
# its own processes (a master and 2 workers of 1 core each), as built and stripped.
for m in "$START_CLUSTER_MASTER" cluster; do
  for b in "$START:as built" ${STRIPPED:+"$STRIPPED:stripped"}; do
    quiet "flint start phases $m ${b#*:}"
    log "flint $m (${b#*:} binary): start phases, x $PHASE_REPS; start -> exit, x $START_REPS"
    record flint-phases "$m" "$PHASE_REPS" "${b%%:*}" "${b#*:}"
    record flint-start "$m" "$START_REPS" "${b%%:*}" "${b#*:}"
  done
done

if [ "$NO_SPARK" != 1 ]; then
  for mode in local standalone; do
    quiet "spark $mode"
    log "Spark $mode: tiny tasks ($TASKS) and $SPARK_ROUNDS one-task jobs, x $SPARK_REPS"
    record spark-jobs "$mode" "$TASKS" "$SPARK_ROUNDS" "$SPARK_REPS"
  done
  quiet "spark start"
  log "Spark: spark-submit --master local[2] of a trivial app, x $SPARK_START_REPS"
  record spark-start "$SPARK_START_REPS"
fi

harness summary "$OUT"
