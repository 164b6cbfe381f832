//! The driver UI's JSON over real HTTP on `local[2]`: a retried task's attempts with
//! the first one's error, jobs SUCCEEDED / FAILED with reasons, the port retrying
//! upward when taken, the retained-jobs bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../daemon/tests/http_client/mod.rs"]
mod http_client;

use std::net::TcpListener;

use flint::prelude::*;
use serde_json::Value;

fn get(url: &str) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (code, body) = rt.block_on(http_client::get_url(url));
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"));
    (code, json)
}

fn context(conf: &[(&str, &str)]) -> Context {
    let mut b = Context::builder()
        .app_name("ui-test")
        .master("local[2]")
        .conf("ui.port", "0")
        .conf("task.max_failures", "2");
    for (k, v) in conf {
        b = b.conf(*k, *v);
    }
    b.create().unwrap()
}

fn api(ctx: &Context, path: &str) -> (u16, Value) {
    let url = ctx.ui_url().expect("the UI is on");
    get(&format!("{url}/api/v1/applications/{}{path}", ctx.app_id()))
}

#[test]
fn a_task_failing_once_shows_both_attempts_with_the_first_error() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("failed-once").display().to_string();
    let ctx = context(&[]);
    let n = ctx
        .range(0, 40, 4)
        .map_with(marker, |marker, x| {
            if x == 25 && std::fs::File::create_new(marker).is_ok() {
                panic!("first attempt of partition 2 fails");
            }
            x
        })
        .count()
        .unwrap();
    assert_eq!(n, 40);

    let (code, apps) = get(&format!("{}/api/v1/applications", ctx.ui_url().unwrap()));
    assert_eq!(code, 200);
    assert_eq!(apps[0]["id"], ctx.app_id());
    assert_eq!(apps[0]["name"], "ui-test");

    let (code, jobs) = api(&ctx, "/jobs");
    assert_eq!(code, 200, "{jobs}");
    let job = &jobs[0];
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    assert_eq!(job["numTasks"], 4, "{job}");
    assert_eq!(job["numCompletedTasks"], 4, "{job}");
    assert_eq!(job["numFailedTasks"], 1, "{job}");
    assert!(job["completionTime"].as_u64().unwrap() >= job["submissionTime"].as_u64().unwrap());
    let stage_id = job["stageIds"][0].as_u64().unwrap();

    let (_, stages) = api(&ctx, "/stages");
    assert_eq!(stages[0]["stageId"], stage_id, "{stages}");
    assert_eq!(stages[0]["status"], "SUCCEEDED", "{stages}");
    assert_eq!(stages[0]["numCompleteTasks"], 4, "{stages}");
    assert_eq!(stages[0]["numFailedTasks"], 1, "{stages}");

    let (code, stage) = api(&ctx, &format!("/stages/{stage_id}"));
    assert_eq!(code, 200, "{stage}");
    let tasks: Vec<&Value> = stage[0]["tasks"].as_object().unwrap().values().collect();
    assert_eq!(tasks.len(), 5, "{stage}");
    let mut p2: Vec<&Value> = tasks.iter().copied().filter(|t| t["index"] == 2).collect();
    p2.sort_by_key(|t| t["attempt"].as_u64());
    assert_eq!(p2.len(), 2, "{stage}");
    assert_eq!(p2[0]["attempt"], 0);
    assert_eq!(p2[0]["status"], "FAILED");
    assert_eq!(p2[0]["executorId"], "driver");
    let err = p2[0]["errorMessage"].as_str().unwrap();
    assert!(err.contains("first attempt of partition 2 fails"), "{err}");
    assert_eq!(p2[1]["attempt"], 1);
    assert_eq!(p2[1]["status"], "SUCCEEDED");
    assert!(p2[1]["errorMessage"].is_null());

    // Unknown ids are 404s that say what exists.
    let (code, body) = get(&format!(
        "{}/api/v1/applications/nope/jobs",
        ctx.ui_url().unwrap()
    ));
    assert_eq!(code, 404);
    assert!(body["message"].as_str().unwrap().contains(ctx.app_id()));
    assert_eq!(api(&ctx, "/stages/999999").0, 404);
}

#[test]
fn jobs_list_succeeded_and_failed_with_the_reason() {
    let ctx = context(&[]);
    assert_eq!(ctx.range(0, 10, 2).count().unwrap(), 10);
    let e = ctx
        .range(0, 10, 2)
        .map(|x| -> u64 { panic!("never {x}") })
        .count()
        .unwrap_err();
    assert!(matches!(e, Error::JobFailed { .. }), "{e}");
    let (_, jobs) = api(&ctx, "/jobs");
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    // Newest first, as Spark lists them.
    assert_eq!(jobs[0]["status"], "FAILED", "{jobs:?}");
    let reason = jobs[0]["failureReason"].as_str().unwrap();
    assert!(
        reason.contains("failed 2 times") && reason.contains("never"),
        "{reason}"
    );
    assert_eq!(jobs[1]["status"], "SUCCEEDED");
    assert!(jobs[1]["failureReason"].is_null());
    let failed_job = jobs[0]["jobId"].as_u64().unwrap();
    let (code, one) = api(&ctx, &format!("/jobs/{failed_job}"));
    assert_eq!(code, 200);
    assert_eq!(one["status"], "FAILED");
    let stage = jobs[0]["stageIds"][0].as_u64().unwrap();
    let (_, stage) = api(&ctx, &format!("/stages/{stage}"));
    assert_eq!(stage[0]["status"], "FAILED", "{stage}");
}

#[test]
fn a_taken_port_makes_the_ui_use_the_next() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    if port > u16::MAX - 20 {
        return; // no room above it to retry into
    }
    let ctx = context(&[("ui.port", &port.to_string())]);
    let url = ctx.ui_url().unwrap();
    let got: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert!(got > port && got <= port + 16, "{url} after {port}");
    let (code, _) = get(&format!("{url}/api/v1/applications"));
    assert_eq!(code, 200);

    // The default port, 4040, when taken: one of the next 16.
    if let Ok(_held) = TcpListener::bind("127.0.0.1:4040") {
        let ctx = Context::builder().master("local[1]").create().unwrap();
        let url = ctx.ui_url().unwrap();
        let got: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        assert!((4041..=4056).contains(&got), "{url}");
    }

    // Disabled: no URL.
    let off = context(&[("ui.enabled", "false")]);
    assert_eq!(off.ui_url(), None);
    assert_eq!(off.range(0, 4, 2).count().unwrap(), 4);
}

#[test]
fn the_retained_jobs_bound_drops_the_oldest_jobs() {
    let ctx = context(&[("ui.retained_jobs", "3"), ("ui.retained_tasks", "2")]);
    for _ in 0..6 {
        assert_eq!(ctx.range(0, 8, 4).count().unwrap(), 8);
    }
    let (_, jobs) = api(&ctx, "/jobs");
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    let ids: Vec<u64> = jobs.iter().map(|j| j["jobId"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let (_, stages) = api(&ctx, "/stages");
    assert_eq!(stages.as_array().unwrap().len(), 3, "{stages}");
    // Two task records of four are kept; the counts stay exact.
    let stage = stages[0]["stageId"].as_u64().unwrap();
    let (_, stage) = api(&ctx, &format!("/stages/{stage}"));
    assert_eq!(stage[0]["tasks"].as_object().unwrap().len(), 2, "{stage}");
    assert_eq!(stage[0]["numCompleteTasks"], 4);
    assert_eq!(stage[0]["numDroppedTasks"], 2);
    let (_, status) = get(&format!("{}/api/v1/status", ctx.ui_url().unwrap()));
    assert_eq!(status["droppedJobs"], 3, "{status}");
}
