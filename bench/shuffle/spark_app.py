"""Spark side of bench/shuffle.sh: word count and sort on the files the flint runs read.

    python3 spark_app.py wc-df PATH PARTITIONS     DataFrame read.text -> split -> explode -> groupBy.count
    python3 spark_app.py wc-rdd PATH PARTITIONS    RDD textFile -> flatMap -> map -> reduceByKey (PySpark)
    python3 spark_app.py sort-df PATH PARTITIONS   DataFrame key = substring(0,10) -> orderBy -> checked
    python3 spark_app.py sort-rdd PATH PARTITIONS  RDD textFile -> (line[:10], line[10:]) -> sortByKey

Runs on local[2] (SPARK_MASTER overrides). Prints one JSON line; secs is the job only
(from before the first action to its result), not the JVM start.
"""
import json
import os
import sys
import time


def main():
    what, path, parts = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from pyspark.sql import SparkSession, functions as F
    spark = (SparkSession.builder.master(os.environ.get("SPARK_MASTER", "local[2]"))
             .appName(f"shuffle-bench-{what}")
             .config("spark.ui.enabled", "false")
             .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.driver.memory", os.environ.get("SPARK_DRIVER_MEMORY", "2g"))
             .config("spark.sql.shuffle.partitions", str(parts))
             .config("spark.default.parallelism", str(parts))
             .config("spark.sql.files.maxPartitionBytes", str(max(1, os.path.getsize(path) // parts + 1)))
             .getOrCreate())
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    out = {"system": "spark", "what": what, "partitions": parts}
    t = time.monotonic()
    if what == "wc-df":
        rows = (spark.read.text(path)
                .select(F.explode(F.split(F.col("value"), " ")).alias("w"))
                .where(F.col("w") != "")
                .groupBy("w").count().collect())
        out.update(words=sum(r["count"] for r in rows), distinct=len(rows))
    elif what == "wc-rdd":
        rows = (sc.textFile(path, parts).flatMap(lambda l: l.split())
                .map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b, parts).collect())
        out.update(words=sum(n for _, n in rows), distinct=len(rows))
    elif what == "sort-df":
        df = (spark.read.text(path)
              .select(F.substring("value", 1, 10).alias("k"), F.substring("value", 11, 89).alias("v"))
              .orderBy("k"))
        # Validation inside the job: each partition's count, first and last key, sortedness.
        def summary(idx, it):
            n, first, last, ok = 0, None, None, True
            for r in it:
                k = r[0]
                if last is not None and last > k:
                    ok = False
                if first is None:
                    first = k
                last = k
                n += 1
            yield (idx, n, first, last, ok)
        # Spark's sort is JVM code; the summary walks the sorted rows in Python, so the
        # noop write is timed alone first and the checked pass afterwards.
        df.write.format("noop").mode("overwrite").save()
        out["secs"] = round(time.monotonic() - t, 3)
        s = sorted(df.rdd.mapPartitionsWithIndex(summary).collect())
        prev, ok, total = None, True, 0
        for _, n, first, last, pok in s:
            ok &= pok and (prev is None or first is None or prev <= first)
            prev = last if last is not None else prev
            total += n
        out.update(records=total, validated=ok and total == os.path.getsize(path) // 100)
    elif what == "sort-rdd":
        rdd = sc.textFile(path, parts).map(lambda l: (l[:10], l[10:])).sortByKey(True, parts)
        n = rdd.count()  # runs the sample job, the shuffle and the sorted read
        out["secs"] = round(time.monotonic() - t, 3)
        out.update(records=n)
    else:
        raise SystemExit(f"unknown job {what}")
    out.setdefault("secs", round(time.monotonic() - t, 3))
    print(json.dumps(out), flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
