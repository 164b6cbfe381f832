//! Keeps `rpc-bench` from rotting: a `--quick` run must finish and print one JSON
//! object with every field of the report. Nothing here looks at the timings.

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
    "/memory/what",
    "/memory/client_peak_rss_mib",
    "/memory/server_peak_rss_mib",
    "/latency/what",
    "/latency/ratio_p50",
    "/latency/ratio_p99",
    "/latency/ratio_mean",
    "/latency/target_ratio_p50",
    "/latency/meets_target",
    "/one_way/what",
    "/one_way/raw_tcp",
    "/one_way/flint_send",
    "/one_way/ratio",
    "/one_way/target_per_sec",
    "/one_way/meets_target",
    "/one_way/raw_write_loop_seconds",
    "/one_way/flint_send_loop_seconds",
    "/one_way/flint_send_yielding/what",
    "/one_way/flint_send_yielding/yield_every",
    "/one_way/flint_send_yielding/send_loop_seconds",
    "/pipelined_ask/what",
    "/pipelined_ask/in_flight",
    "/pipelined_ask/raw_tcp",
    "/pipelined_ask/flint_ask",
    "/pipelined_ask/ratio",
    "/elapsed_seconds",
];

const LATENCY: &[&str] = &[
    "samples", "p50_us", "p90_us", "p99_us", "p999_us", "mean_us", "min_us", "max_us",
];

const RATE: &[&str] = &["count", "seconds", "per_sec", "rounds_per_sec/0"];

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

fn check(report: &Value, mode: &str) {
    for f in FIELDS {
        assert!(report.pointer(f).is_some(), "report lacks {f}: {report:#}");
    }
    for series in ["/latency/raw_tcp", "/latency/flint_ask"] {
        for k in LATENCY {
            let v = report.pointer(&format!("{series}/{k}"));
            assert!(
                v.is_some_and(Value::is_number),
                "{series}/{k} missing or not a number"
            );
        }
    }
    for series in [
        "/one_way/raw_tcp",
        "/one_way/flint_send",
        "/one_way/flint_send_yielding/rate",
        "/pipelined_ask/raw_tcp",
        "/pipelined_ask/flint_ask",
    ] {
        for k in RATE {
            let v = report.pointer(&format!("{series}/{k}"));
            assert!(
                v.is_some_and(Value::is_number),
                "{series}/{k} missing or not a number"
            );
        }
    }
    assert_eq!(report["topology"]["mode"], mode);
    assert_eq!(report["params"]["quick"], true);
    assert_eq!(report["params"]["payload_bytes"], 64);
    let rounds = report["params"]["rounds"].as_u64().expect("rounds");
    for series in [
        "/one_way/raw_tcp",
        "/one_way/flint_send",
        "/one_way/flint_send_yielding/rate",
        "/pipelined_ask/raw_tcp",
        "/pipelined_ask/flint_ask",
    ] {
        let all = report
            .pointer(&format!("{series}/rounds_per_sec"))
            .and_then(Value::as_array)
            .expect("rounds_per_sec");
        assert_eq!(all.len() as u64, rounds, "{series}: one rate per round");
    }
    // Every message and ask was accounted for (counts, not timings).
    assert_eq!(
        report["one_way"]["flint_send"]["count"],
        report["params"]["messages"]
    );
    assert_eq!(
        report["one_way"]["raw_tcp"]["count"],
        report["params"]["messages"]
    );
    assert_eq!(
        report["one_way"]["flint_send_yielding"]["rate"]["count"],
        report["params"]["messages"]
    );
    assert_eq!(
        report["pipelined_ask"]["flint_ask"]["count"],
        report["params"]["asks"]
    );
    assert_eq!(
        report["pipelined_ask"]["raw_tcp"]["count"],
        report["params"]["asks"]
    );
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
