//! Failing tasks, bad input and limits: errors, not panics, and the context carries on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use flint::prelude::*;

fn ctx(master: &str) -> Context {
    Context::builder()
        .app_name("failures")
        .master(master)
        .create()
        .unwrap()
}

#[test]
fn a_task_that_always_panics_fails_its_job_after_4_attempts_and_the_next_job_runs() {
    let ctx = ctx("local[2]");
    let d = ctx.range(0, 100, 4).map(|x| {
        if x == 60 {
            panic!("no sixty, please");
        }
        x
    });
    let e = d.count().unwrap_err();
    let Error::JobFailed {
        stage,
        partition,
        attempts,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(*partition, 2, "{e}");
    assert_eq!(attempts.len(), 4, "{e}");
    for (i, a) in attempts.iter().enumerate() {
        assert!(
            a.starts_with(&format!("attempt {} on executor driver", i + 1)),
            "{a}"
        );
        assert!(a.contains("task panicked: no sixty, please"), "{a}");
    }
    let text = e.to_string();
    assert!(
        text.contains(&format!("stage {stage}, partition 2 failed 4 times")),
        "{text}"
    );
    assert!(text.contains("no sixty, please"), "{text}");
    // The context runs the next job fine.
    assert_eq!(ctx.range(0, 100, 4).count().unwrap(), 100);
}

#[test]
fn local_n_f_sets_the_attempts_and_task_max_failures_too() {
    let e = ctx("local[2,1]")
        .range(0, 4, 2)
        .map(|x| -> u64 { panic!("bad {x}") })
        .count()
        .unwrap_err();
    assert!(
        matches!(&e, Error::JobFailed { attempts, .. } if attempts.len() == 1),
        "{e}"
    );
    let ctx = Context::builder()
        .master("local[1]")
        .conf("task.max_failures", "2")
        .create()
        .unwrap();
    let e = ctx
        .range(0, 4, 2)
        .map(|x| -> u64 { panic!("bad {x}") })
        .count()
        .unwrap_err();
    assert!(
        matches!(&e, Error::JobFailed { attempts, .. } if attempts.len() == 2),
        "{e}"
    );
}

#[test]
fn a_task_that_panics_once_succeeds_on_retry_and_its_accumulator_counts_once() {
    let ctx = ctx("local[2]");
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("failed-once").display().to_string();
    let seen = ctx.accumulator("seen");
    let d = ctx.range(0, 1000, 8);
    d.foreach_with((seen.clone(), marker.clone()), |(seen, marker), x| {
        seen.add(1);
        if x == 400 && !Path::new(marker).exists() {
            std::fs::write(marker, b"").unwrap();
            panic!("the first attempt of this partition fails");
        }
    })
    .unwrap();
    assert!(Path::new(&marker).exists(), "the task never failed");
    // The failed attempt had added for 375..=400 before it panicked: not counted.
    assert_eq!(seen.value(), 1000);
}

#[test]
fn text_file_on_a_missing_path_names_it() {
    let ctx = ctx("local[1]");
    let e = ctx.text_file("/no/such/dir/input.txt", 2).unwrap_err();
    assert!(matches!(e, Error::PathNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("/no/such/dir/input.txt"), "{e}");
    let e = ctx.text_file("/no/such/dir/*.txt", 2).unwrap_err();
    assert!(e.to_string().contains("/no/such/dir/*.txt"), "{e}");
}

#[test]
fn save_as_text_file_refuses_an_existing_directory_and_writes_nothing_there() {
    let ctx = ctx("local[2]");
    let tmp = tempfile::tempdir().unwrap();
    let e = ctx
        .range(0, 10, 2)
        .save_as_text_file(tmp.path())
        .unwrap_err();
    assert!(matches!(e, Error::OutputExists { .. }), "{e:?}");
    assert!(
        e.to_string().contains(&tmp.path().display().to_string()),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn a_failed_save_leaves_no_temporary_files_and_no_success_marker() {
    let ctx = ctx("local[2,1]");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let e = ctx
        .range(0, 10, 2)
        .map(|x| if x == 7 { panic!("seven") } else { x })
        .save_as_text_file(&out)
        .unwrap_err();
    assert!(e.to_string().contains("seven"), "{e}");
    assert!(!out.join("_temporary").exists() && !out.join("_SUCCESS").exists());
}

#[test]
fn results_over_driver_max_result_size_fail_the_job_clearly() {
    let ctx = Context::builder()
        .master("local[2]")
        .conf("driver.max_result_size", "10k")
        .create()
        .unwrap();
    let e = ctx.range(0, 100_000, 4).collect().unwrap_err();
    assert!(
        matches!(e, Error::ResultTooLarge { limit: 10240, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("driver.max_result_size"), "{e}");
    // Small results still pass.
    assert_eq!(ctx.range(0, 100_000, 4).count().unwrap(), 100_000);
}

#[test]
fn bad_masters_and_settings_fail_get_or_create_naming_them() {
    for bad in [
        "lokal[2]",
        "local[0]",
        "spark://h:7077",
        "local-cluster[2,1]",
    ] {
        let e = Context::builder().master(bad).get_or_create().unwrap_err();
        assert!(matches!(e, Error::BadMaster { .. }), "{bad}: {e:?}");
        assert!(
            e.to_string().contains(bad) && e.to_string().contains("local[N]"),
            "{e}"
        );
    }
    // A cluster master nobody answers at (or whose secret is missing) fails clearly.
    // (local-cluster is tested by tests/cluster_program.rs: a libtest binary started
    // again as an executor would run its tests.)
    let e = Context::builder()
        .master("flint://127.0.0.1:1")
        .conf("client.registration.timeout", "1s")
        .conf("client.registration.retries", "1")
        .create()
        .unwrap_err();
    assert!(matches!(e, Error::MasterNotSupported { .. }), "{e:?}");
    assert!(e.to_string().contains("flint://127.0.0.1:1"), "{e}");
    let e = Context::builder()
        .master("local")
        .conf("task.max_failures", "0")
        .create()
        .unwrap_err();
    assert!(e.to_string().contains("task.max_failures"), "{e}");
    let e = Context::builder()
        .master("local")
        .conf("locality.wait", "soon")
        .create()
        .unwrap_err();
    assert!(e.to_string().contains("locality.wait"), "{e}");
}

#[test]
fn a_stopped_context_refuses_jobs() {
    let ctx = ctx("local[1]");
    let d = ctx.range(0, 10, 1);
    ctx.stop().unwrap();
    ctx.stop().unwrap();
    assert!(matches!(d.collect(), Err(Error::Stopped)));
}

#[test]
fn jobs_from_several_threads_run_concurrently_on_one_context() {
    let ctx = ctx("local[2]");
    let handles: Vec<_> = (0..4u64)
        .map(|i| {
            let ctx = ctx.clone();
            std::thread::spawn(move || {
                ctx.range(0, 10_000 * (i + 1), 5)
                    .map_with(i, |i, x| x + i)
                    .reduce(|a, b| a + b)
                    .unwrap()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let i = i as u64;
        let n = 10_000 * (i + 1);
        assert_eq!(h.join().unwrap(), Some((0..n).sum::<u64>() + n * i));
    }
}

/// A value whose serialization always fails.
#[derive(Clone, Debug, serde::Deserialize)]
struct Unserializable;

impl serde::Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be serialized",
        ))
    }
}

#[test]
fn captures_that_cannot_be_serialized_fail_the_action_naming_the_type() {
    let ctx = ctx("local[1]");
    let e = ctx
        .range(0, 3, 1)
        .map_with(Unserializable, |_, x| x)
        .count()
        .unwrap_err();
    assert!(matches!(e, Error::Serialization(_)), "{e:?}");
    assert!(e.to_string().contains("Unserializable"), "{e}");
    let e = ctx
        .parallelize(vec![Unserializable], 1)
        .count()
        .unwrap_err();
    assert!(e.to_string().contains("Unserializable"), "{e}");
    let e = ctx.broadcast(Unserializable).unwrap_err();
    assert!(
        e.to_string()
            .contains("broadcast of failures::Unserializable"),
        "{e}"
    );
    assert_eq!(ctx.range(0, 3, 1).count().unwrap(), 3);
}
