#!/usr/bin/env bash
# bench/submit.sh — submitting a trivial application: `flint submit` beside Spark's
# `spark-submit`, measured in the same run on the same machine (issue 10, "Benchmark").
#
#   bash bench/submit.sh [--reps N] [--spark-reps N] [--hold-ms MS] [--no-spark] [--out FILE]
#
# The trivial application is crates/flint/examples/bench_start.rs (a context, one
# 2-task job, stop), release build; Spark's is a PySpark script doing the same
# (`parallelize(range(2), 2).count()`). Each system gets a master and one 2-core
# worker on 127.0.0.1 started as their own processes. Rows (spawn of the submitter →
# its exit, median of --reps):
#   flint  client submit -> exit; cluster submit -> FINISHED with the binary uploaded
#          (a copy with 16 random bytes appended each time: a hash the master has not
#          seen); the same with a binary the master already holds; the peak RSS of a
#          cluster-mode `flint submit` waiting for a driver that holds --hold-ms;
#          the launcher library (crates/launcher/examples/launch_bench.rs):
#          start_application -> CONNECTED and -> FINISHED, client and cluster mode.
#   Spark  spark-submit client mode -> exit (standalone cluster mode does not run
#          Python applications); the peak RSS of spark-submit's process tree (the
#          driver JVM and Python) while its app holds --hold-ms.
# Writes JSON lines to --out (default: a new file under /tmp) and prints them.
# Installs pyspark with pip when it is missing; JAVA_HOME from the java on PATH.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export REPS=${REPS:-10} SPARK_REPS=${SPARK_REPS:-3} HOLD_MS=${HOLD_MS:-3000}
NO_SPARK=${NO_SPARK:-0}
OUT=${OUT:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) REPS=$2; shift 2 ;;
    --spark-reps) SPARK_REPS=$2; shift 2 ;;
    --hold-ms) HOLD_MS=$2; shift 2 ;;
    --no-spark) NO_SPARK=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH_WORK=$(mktemp -d "${TMPDIR:-/tmp}/flint-submit-bench.XXXXXX")
export BENCH_WORK
OUT=${OUT:-$BENCH_WORK/results.jsonl}
trap 'echo "work dir: $BENCH_WORK (results: $OUT)" >&2' EXIT

echo "== building flint-cli and the bench_start and launch_bench examples (release)" >&2
(cd "$ROOT" && cargo build --release -q -p flint-cli --bin flint && cargo build --release -q -p flint --example bench_start \
  && cargo build --release -q -p flint-launcher --example launch_bench)
export FLINT=$CARGO_TARGET_DIR/release/flint APP=$CARGO_TARGET_DIR/release/examples/bench_start
export LAUNCH_BENCH=$CARGO_TARGET_DIR/release/examples/launch_bench

{
  echo "{\"machine\":{\"date\":\"$(date -u +%FT%TZ)\",\"nproc\":$(nproc),\"load\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}}"
  python3 "$ROOT/bench/submit/harness.py" flint
  if [ "$NO_SPARK" != 1 ] && command -v java >/dev/null; then
    if [ -z "${JAVA_HOME:-}" ]; then
      JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")
      export JAVA_HOME
    fi
    python3 -c 'import pyspark' 2>/dev/null || python3 -m pip install -q pyspark >&2
    SPARK_HOME=$(python3 -c 'import pyspark, os; print(os.path.dirname(pyspark.__file__))')
    export SPARK_HOME
    python3 "$ROOT/bench/submit/harness.py" spark
  fi
} | tee "$OUT"
