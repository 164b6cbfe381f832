"""Table of bench/shuffle.sh's JSON lines: medians per run, ratios against the targets."""
import json
import statistics
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
meta = next((r for r in rows if r.get("bench") == "meta"), {})
by = {}
for r in rows:
    if "run" in r:
        by.setdefault(r["run"], []).append(r)


def med(name, key="secs"):
    xs = [r[key] for r in by.get(name, []) if key in r]
    return statistics.median(xs) if xs else None


print(f"input {meta.get('mib')} MiB per job, {meta.get('partitions')} partitions; {meta.get('uptime')}")
print(f"{'run':<24}{'median s':>10}{'CPU s':>8}{'runs':>6}{'peak RSS MiB':>14}")
for name, rs in by.items():
    # Spark's JVM is not a waited-for child of the Python driver: its RSS and CPU are
    # not counted.
    spark = name.startswith("spark")
    rss = "-" if spark else f"{max(r.get('peak_rss_kib', 0) for r in rs) / 1024:.0f}"
    cpu = med(name, "cpu_s")
    cpu = "-" if spark or cpu is None else f"{cpu:.2f}"
    print(f"{name:<24}{med(name):>10.2f}{cpu:>8}{len(rs):>6}{rss:>14}")


def ratio(a, b):
    return None if a is None or b is None else a / b


spark_wc = [x for x in (med("spark-wc-df"), med("spark-wc-rdd")) if x is not None]
anchor = min(spark_wc) if spark_wc else None
fc, fm, ser, cost = med("flint-closures"), med("flint-map-partitions"), med("serial-closures"), med("cost")
cost_fast = med("cost-fast")
checks = [
    ("word count: Spark's faster form / flint closures (target >= 3)", ratio(anchor, fc), lambda v: v >= 3),
    ("word count: Spark's faster form / flint map_partitions", ratio(anchor, fm), None),
    ("COST: flint closures / hand-written thread (target <= 1 on 2 cores)", ratio(fc, cost), lambda v: v <= 1),
    ("COST: flint map_partitions / hand-written thread", ratio(fm, cost), None),
    ("COST: flint closures / hand-written thread, foldhash (target <= 1 on 2 cores)", ratio(fc, cost_fast),
     lambda v: v <= 1),
    ("COST: flint map_partitions / hand-written thread, foldhash", ratio(fm, cost_fast), None),
    ("same closures on one thread / flint closures (target >= 1.6)", ratio(ser, fc), lambda v: v >= 1.6),
    ("sort: Spark's faster form / flint sort_by_key (target >= 5)",
     ratio(min([x for x in (med("spark-sort-df"), med("spark-sort-rdd")) if x is not None], default=None),
           med("flint-sort")), lambda v: v >= 5),
]
for what, v, ok in checks:
    if v is None:
        print(f"{what}: n/a")
    else:
        print(f"{what}: {v:.2f}" + ("" if ok is None else (" MET" if ok(v) else " MISSED")))
