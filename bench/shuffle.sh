#!/usr/bin/env bash
# bench/shuffle.sh — flint's shuffle jobs beside Apache Spark's (issue 9, "Benchmark"),
# on the same generated input files, the same machine, the same run.
#
#   bash bench/shuffle.sh [--mib N] [--partitions P] [--reps R] [--no-spark] [--no-flint] [--out FILE]
#
# --no-flint skips flint's rows and the one-thread baselines (Spark only).
#
# Generates into a temp dir (removed on exit):
#   words.txt  N MiB of text, Zipf-distributed 50,000-word vocabulary
#              (crates/flint/examples/word_count.rs --generate)
#   sort.txt   N MiB of 100-byte records, 10-byte random printable keys
#              (crates/flint/examples/bench_sort.rs --generate)
# and runs, each R times (median reported; Spark once per form unless --spark-reps):
#   word count  flint local[2] closures (api.md shape: flat_map -> map -> reduce_by_key),
#               flint local[2] map_partitions (per-partition HashMap, then reduce_by_key),
#               the same closures on one thread (bench_word_count serial),
#               hand-written single-threaded Rust over byte slices (cost_word_count),
#               with std's SipHash HashMap and with foldhash (cost_word_count fast),
#               Spark local[2] DataFrame and PySpark RDD forms (bench/shuffle/spark_app.py);
#   sort        flint local[2] sort_by_key, output validated (bench_sort),
#               Spark local[2] DataFrame orderBy (noop write; validated in a second pass)
#               and PySpark RDD sortByKey.
# flint rows carry the process's peak RSS and CPU time (user + sys of the whole process,
# /usr/bin/time -v). Times are of the job (from before the first dataset to the
# result), not process start.
# Writes JSON lines to --out and prints a table.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MIB=${MIB:-256}
PARTS=${PARTS:-8}
REPS=${REPS:-3}
SPARK_REPS=${SPARK_REPS:-1}
NO_SPARK=${NO_SPARK:-0}
NO_FLINT=${NO_FLINT:-0}
NO_SPARK_RDD=${NO_SPARK_RDD:-0}
OUT=${OUT:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --mib) MIB=$2; shift 2 ;;
    --partitions) PARTS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --spark-reps) SPARK_REPS=$2; shift 2 ;;
    --no-spark) NO_SPARK=1; shift ;;
    --no-flint) NO_FLINT=1; shift ;;
    --no-spark-rdd) NO_SPARK_RDD=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/flint-shuffle-bench.XXXXXX")
RESULTS=${OUT:-$WORK/results.jsonl}
: > "$RESULTS"
cleanup() {
  local rc=$?
  if [ -n "$OUT" ]; then rm -rf "$WORK"; else cp "$RESULTS" "${TMPDIR:-/tmp}/flint-shuffle-bench-results.jsonl"; rm -rf "$WORK";
    echo "results: ${TMPDIR:-/tmp}/flint-shuffle-bench-results.jsonl" >&2; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "== $*" >&2; }

log "building flint examples (release)"
(cd "$ROOT" && cargo build --release -q -p flint --example word_count --example bench_word_count \
  --example bench_sort --example cost_word_count)
EX=$CARGO_TARGET_DIR/release/examples

log "generating $MIB MiB of words and $MIB MiB of sort records into $WORK"
"$EX/word_count" --generate "$WORK/words.txt" "$MIB"
"$EX/bench_sort" --generate "$WORK/sort.txt" "$MIB"

python3 - "$RESULTS" "$MIB" "$PARTS" <<'PY'
import json, os, subprocess, sys
print(json.dumps({"bench": "meta", "mib": int(sys.argv[2]), "partitions": int(sys.argv[3]),
    "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    "nproc": os.cpu_count(),
    "rustc": subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()}),
    file=open(sys.argv[1], "a"))
PY

# warm FILE: reads FILE into the page cache before a timed run, so that every system
# reads its input from memory (this VM's page cache is dropped from outside at times:
# a cold 1 GiB read takes ~5 s here, a warm one 0.2 s).
warm() { cat "$1" > /dev/null; }

# run NAME CMD...: one JSON line from the command's stdout, plus peak RSS and the load.
run() {
  local name=$1; shift
  local tv=$WORK/time.txt
  local line
  line=$(/usr/bin/time -v -o "$tv" "$@" | tail -n 1)
  local rss load cpu
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv")
  # CPU seconds (user + sys) of the whole process, start and exit included.
  cpu=$(awk -F': ' '/User time \(seconds\)|System time \(seconds\)/ {s += $2} END {print s}' "$tv")
  load=$(cut -d' ' -f1 /proc/loadavg)
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(run=sys.argv[2], peak_rss_kib=int(sys.argv[3]), cpu_s=float(sys.argv[4]), load1=float(sys.argv[5])); print(json.dumps(d))' \
    "$line" "$name" "$rss" "$cpu" "$load" | tee -a "$RESULTS" >&2
}

[ "$NO_FLINT" = 1 ] && REPS=0
for _ in $(seq "$REPS"); do
  log "word count: flint"
  warm "$WORK/words.txt"
  FLINT_MASTER='local[2]' run flint-closures "$EX/bench_word_count" closures "$WORK/words.txt" "$PARTS"
  warm "$WORK/words.txt"
  FLINT_MASTER='local[2]' run flint-map-partitions "$EX/bench_word_count" map_partitions "$WORK/words.txt" "$PARTS"
  warm "$WORK/words.txt"
  run serial-closures "$EX/bench_word_count" serial "$WORK/words.txt"
  warm "$WORK/words.txt"
  run cost "$EX/cost_word_count" "$WORK/words.txt" std
  warm "$WORK/words.txt"
  run cost-fast "$EX/cost_word_count" "$WORK/words.txt" fast
  log "sort: flint"
  warm "$WORK/sort.txt"
  FLINT_MASTER='local[2]' run flint-sort "$EX/bench_sort" "$WORK/sort.txt" "$PARTS"
done

if [ "$NO_SPARK" != 1 ]; then
  if [ -z "${JAVA_HOME:-}" ] && command -v java >/dev/null; then
    JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")"); export JAVA_HOME
  fi
  python3 -c 'import pyspark' 2>/dev/null || { log "installing pyspark with pip"; python3 -m pip install -q pyspark; }
  SPARK_HOME=$(python3 -c 'import pyspark, os; print(os.path.dirname(pyspark.__file__))'); export SPARK_HOME
  export PYSPARK_PYTHON=python3
  forms="wc-df sort-df"
  [ "$NO_SPARK_RDD" = 1 ] || forms="$forms wc-rdd sort-rdd"
  for _ in $(seq "$SPARK_REPS"); do
    for f in $forms; do
      input=$WORK/words.txt; case $f in sort-*) input=$WORK/sort.txt ;; esac
      log "Spark local[2]: $f"
      warm "$input"
      run "spark-$f" python3 "$ROOT/bench/shuffle/spark_app.py" "$f" "$input" "$PARTS"
    done
  done
fi

python3 "$ROOT/bench/shuffle/summary.py" "$RESULTS"
