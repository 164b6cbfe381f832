//! Keeps `rpc-bench` from rotting: a `--quick` run (tiny counts, an 8 MiB stream)
//! must finish end to end — raw TCP, plain and sealed flint, one-way series in their
//! own processes — and print one JSON object with every field of the report. Nothing
//! here looks at the timings, and no target has to be met.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

/// Every field the report promises, as JSON pointers.
const FIELDS: &[&str] = &[
    "/benchmark",
    "/command",
    "/topology/mode",
    "/topology/detail",
    "/runtime/flavor",
    "/runtime/worker_threads",
    "/machine/nproc",
    "/machine/cpu_model",
    "/machine/kernel",
    "/machine/rustc",
    "/machine/profile",
    "/machine/cpuidle",
    "/idle/poll_idle_requested",
    "/idle/poll_idle_in_effect",
    "/idle/error",
    "/machine/loadavg_start",
    "/machine/loadavg_end",
    "/machine/own_cpu_seconds",
    "/machine/other_cpu_seconds",
    "/params/quick",
    "/params/rounds",
    "/params/iterations",
    "/params/warmup",
    "/params/latency_payload_bytes",
    "/params/messages",
    "/params/payload_bytes",
    "/params/asks",
    "/params/in_flight",
    "/params/stream_bytes",
    "/sealing/what",
    "/sealing/flint",
    "/sealing/flint_sealed",
    "/memory/what",
    "/memory/peak_reset_per_series",
    "/memory/driver_peak_rss_mib",
    "/memory/server_peak_rss_mib",
    "/latency/what",
    "/one_way/what",
    "/one_way/client_process",
    "/pipelined_ask/what",
    "/pipelined_ask/in_flight",
    "/pipelined_ask/api",
    "/pipelined_ask/plain_ask_what",
    "/stream/what",
    "/stream/bytes",
    "/stream/chunk_bytes",
    "/stream/window_chunks",
    "/targets",
    "/all_targets_met",
    "/elapsed_seconds",
];

const SIDES: &[&str] = &["raw_tcp", "flint", "flint_sealed"];
const FLINT: &[&str] = &["flint", "flint_sealed"];

const LATENCY: &[&str] = &[
    "samples", "p50_us", "p90_us", "p99_us", "p999_us", "mean_us", "min_us", "max_us",
];

const RATE: &[&str] = &["count", "seconds", "per_sec", "rounds_per_sec/0"];

const THROUGHPUT: &[&str] = &[
    "bytes",
    "seconds",
    "gb_per_sec",
    "gib_per_sec",
    "rounds_gb_per_sec/0",
];

/// The figures with targets, in the order `targets` lists them.
const TARGETS: &[&str] = &[
    "latency.flint.ratio_p50",
    "latency.flint_sealed.ratio_p50",
    "one_way.flint.rate.per_sec",
    "one_way.flint_sealed.rate.per_sec",
    "one_way.flint.client_peak_rss_mib",
    "one_way.flint_sealed.client_peak_rss_mib",
    "pipelined_ask.flint.ratio",
    "pipelined_ask.flint_sealed.ratio",
    "stream.flint.ratio",
    "stream.flint_sealed.throughput.gb_per_sec",
];

fn run(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_rpc-bench"))
        .args(args)
        .output()
        .expect("rpc-bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rpc-bench {args:?} failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{stdout}\n{stderr}"))
}

fn number(report: &Value, pointer: &str) -> f64 {
    report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} missing or not a number"))
}

fn boolean(report: &Value, pointer: &str) -> bool {
    report
        .pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or_else(|| panic!("{pointer} missing or not a boolean"))
}

fn check(report: &Value, mode: &str) {
    for f in FIELDS {
        assert!(report.pointer(f).is_some(), "report lacks {f}: {report:#}");
    }
    assert_eq!(report["topology"]["mode"], mode);
    assert_eq!(report["params"]["quick"], true);
    assert_eq!(report["params"]["payload_bytes"], 64);
    let rounds = report["params"]["rounds"].as_u64().expect("rounds");
    let messages = number(report, "/params/messages");
    let asks = number(report, "/params/asks");
    let bytes = number(report, "/params/stream_bytes");

    for side in SIDES {
        for k in LATENCY {
            number(report, &format!("/latency/{side}/latency/{k}"));
        }
        number(report, &format!("/latency/{side}/client_peak_rss_mib"));
        for k in RATE {
            number(report, &format!("/one_way/{side}/rate/{k}"));
            number(report, &format!("/pipelined_ask/{side}/rate/{k}"));
        }
        for k in THROUGHPUT {
            number(report, &format!("/stream/{side}/throughput/{k}"));
        }
        for series in ["one_way", "pipelined_ask"] {
            let all = report
                .pointer(&format!("/{series}/{side}/rate/rounds_per_sec"))
                .and_then(Value::as_array)
                .expect("rounds_per_sec");
            assert_eq!(
                all.len() as u64,
                rounds,
                "{series}/{side}: one rate per round"
            );
        }
        let all = report
            .pointer(&format!("/stream/{side}/throughput/rounds_gb_per_sec"))
            .and_then(Value::as_array)
            .expect("rounds_gb_per_sec");
        assert_eq!(
            all.len() as u64,
            rounds,
            "stream/{side}: one rate per round"
        );

        // Every message, ask and byte was accounted for (counts, not timings).
        assert_eq!(number(report, &format!("/one_way/{side}/sent")), messages);
        assert_eq!(number(report, &format!("/one_way/{side}/dropped")), 0.0);
        assert_eq!(
            number(report, &format!("/one_way/{side}/rate/count")),
            messages
        );
        assert_eq!(
            number(report, &format!("/pipelined_ask/{side}/rate/count")),
            asks
        );
        assert_eq!(
            number(report, &format!("/stream/{side}/throughput/bytes")),
            bytes
        );
        // A one-way series reports the peak RSS of its client in every round.
        let peaks = report
            .pointer(&format!("/one_way/{side}/client_peak_rss_mib_rounds"))
            .and_then(Value::as_array)
            .expect("client_peak_rss_mib_rounds");
        assert_eq!(peaks.len() as u64, rounds);
        assert!(peaks.iter().all(Value::is_number), "{side}: {peaks:?}");
        number(report, &format!("/one_way/{side}/client_peak_rss_mib"));
    }

    // Each flint figure with a target carries it and a flag.
    for side in FLINT {
        for k in ["ratio_p50", "ratio_p99", "ratio_mean", "target_ratio_p50"] {
            number(report, &format!("/latency/{side}/{k}"));
        }
        boolean(report, &format!("/latency/{side}/meets_target"));
        for k in ["ratio", "target_per_sec", "target_peak_rss_mib"] {
            number(report, &format!("/one_way/{side}/{k}"));
        }
        boolean(report, &format!("/one_way/{side}/meets_rate_target"));
        boolean(report, &format!("/one_way/{side}/meets_rss_target"));
        number(report, &format!("/pipelined_ask/{side}/ratio"));
        number(report, &format!("/pipelined_ask/{side}/target_ratio"));
        boolean(report, &format!("/pipelined_ask/{side}/meets_target"));
        // The plain-ask form of the same workload: every ask answered, a ratio, no target.
        let plain = format!("/pipelined_ask/{side}_plain_ask");
        assert_eq!(number(report, &format!("{plain}/rate/count")), asks);
        number(report, &format!("{plain}/ratio"));
        assert!(report.pointer(&format!("{plain}/target_ratio")).is_none());
        number(report, &format!("/stream/{side}/ratio"));
        boolean(report, &format!("/stream/{side}/meets_target"));
        // The stream arrived in chunks of at most the chunk size.
        let chunk = number(report, "/stream/chunk_bytes");
        let chunks = number(report, &format!("/stream/{side}/chunks"));
        assert!(chunks >= (bytes / chunk).ceil(), "{side}: {chunks} chunks");
    }
    number(report, "/stream/flint/target_ratio");
    number(report, "/stream/flint_sealed/target_gb_per_sec");

    let targets = report["targets"].as_array().expect("targets");
    let names: Vec<&str> = targets
        .iter()
        .map(|t| t["figure"].as_str().expect("figure"))
        .collect();
    assert_eq!(names, TARGETS);
    for t in targets {
        assert!(t["target"].is_number() && t["pass"].is_boolean(), "{t}");
        assert!(t["op"] == "<=" || t["op"] == ">=", "{t}");
    }
    let all = targets.iter().all(|t| t["pass"] == true);
    assert_eq!(report["all_targets_met"], all);
}

#[test]
fn quick_run_prints_a_complete_report() {
    let report = run(&["--quick"]);
    check(&report, "two-processes");
}

#[test]
fn quick_run_in_one_process_prints_a_complete_report() {
    let report = run(&["--quick", "--in-process"]);
    check(&report, "one-process");
}

/// `--pipelined-only` prints one line per side and round and a summary with a rate and
/// CPU time per ask for each side (no timing is asserted).
#[test]
fn a_pipelined_only_run_reports_every_side() {
    let out = Command::new(env!("CARGO_BIN_EXE_rpc-bench"))
        .args(["--pipelined-only", "--asks", "2000", "--rounds", "2"])
        .output()
        .expect("running rpc-bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 3 * 2 + 1, "{text}");
    let summary = &lines[6]["summary"];
    for side in ["raw TCP", "flint", "flint sealed"] {
        for field in [
            "asks_per_sec",
            "ratio_to_raw",
            "client_cpu_us_per_ask",
            "server_cpu_us_per_ask",
            "cpu_us_per_ask",
        ] {
            let v = summary[side][field].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite() && v > 0.0, "{side}.{field} = {v} in {text}");
        }
    }
}
