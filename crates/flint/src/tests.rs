//! Unit tests of the task path that look inside: `run_task` on hand-made task bytes
//! (good, tampered, garbage, panicking) and the executor's broadcast cache.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use crate::entry::{entry_point, EntryPoint};
use crate::executor::{run_task, ExecutorEnv};
use crate::ops::{CountAction, RangeSource};
use crate::prelude::*;
use crate::shared::BroadcastStore;
use crate::wire::{decode, encode, PlanNode, TaskDescription, TaskError, TaskOutcome, TaskResult};

fn env() -> Arc<ExecutorEnv> {
    Arc::new(ExecutorEnv::new(
        "test",
        1 << 20,
        Arc::new(BroadcastStore::default()),
    ))
}

fn task(plan: PlanNode, action: EntryPoint) -> Vec<u8> {
    encode(&TaskDescription {
        task_id: 42,
        job_id: 1,
        stage_id: 2,
        partition: 0,
        attempt: 0,
        plan,
        action,
        action_captures: vec![],
    })
    .unwrap()
}

fn range(a: u64, b: u64) -> PlanNode {
    PlanNode::Op {
        entry: entry_point::<RangeSource>(),
        captures: encode(&(a, b)).unwrap(),
        inputs: vec![],
    }
}

fn result(bytes: &[u8]) -> TaskResult {
    decode(bytes).unwrap()
}

#[test]
fn a_task_round_trips_as_bytes() {
    let r = result(&run_task(
        &task(range(0, 10), entry_point::<CountAction<u64>>()),
        &env(),
    ));
    assert_eq!(r.task_id, 42);
    let TaskOutcome::Success(out) = r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert_eq!(decode::<u64>(&out).unwrap(), 10);
    // The task's context is gone with the task.
    assert!(crate::executor::with_task(|_| ()).is_none());
}

#[test]
fn a_killed_task_stops_with_killed() {
    let env = env();
    let runner = {
        let env = env.clone();
        std::thread::spawn(move || {
            run_task(
                &task(range(0, u64::MAX), entry_point::<CountAction<u64>>()),
                &env,
            )
        })
    };
    let start = std::time::Instant::now();
    while env.running_tasks() == 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the task never started"
        );
        std::thread::yield_now();
    }
    env.kill(42);
    let r = result(&runner.join().unwrap());
    assert!(
        matches!(r.outcome, TaskOutcome::Failed(TaskError::Killed)),
        "{:?}",
        r.outcome
    );
    assert_eq!(env.running_tasks(), 0);
}

#[test]
fn a_tampered_entry_point_fails_the_task_without_running_it() {
    let mut action = entry_point::<CountAction<u64>>();
    action.fingerprint ^= 0xff;
    let r = result(&run_task(&task(range(0, 10), action), &env()));
    assert_eq!(r.task_id, 42);
    let TaskOutcome::Failed(TaskError::Entry(e)) = r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert!(e.contains("entry point refused"), "{e}");
    // The count entry's offset with the range source's fingerprint: refused too.
    let forged = EntryPoint {
        offset: entry_point::<CountAction<u64>>().offset,
        fingerprint: entry_point::<RangeSource>().fingerprint,
    };
    let r = result(&run_task(&task(range(0, 10), forged), &env()));
    assert!(
        matches!(r.outcome, TaskOutcome::Failed(TaskError::Entry(_))),
        "{:?}",
        r.outcome
    );
}

#[test]
fn garbage_bytes_fail_with_a_codec_error() {
    let r = result(&run_task(&[0xff; 3], &env()));
    assert!(
        matches!(r.outcome, TaskOutcome::Failed(TaskError::Codec(_))),
        "{:?}",
        r.outcome
    );
    // A good header and a broken body keep the task id.
    let mut t = task(range(0, 1), entry_point::<CountAction<u64>>());
    t.truncate(4);
    let r = result(&run_task(&t, &env()));
    assert_eq!(r.task_id, 42);
    assert!(
        matches!(r.outcome, TaskOutcome::Failed(TaskError::Codec(_))),
        "{:?}",
        r.outcome
    );
}

#[test]
fn a_broadcast_is_fetched_once_per_executor() {
    let ctx = Context::builder().master("local[2]").create().unwrap();
    let b = ctx.broadcast((0..1000u64).collect::<Vec<_>>()).unwrap();
    for _ in 0..3 {
        let s = ctx
            .range(0, 1000, 8)
            .map_with(b.clone(), |b, i| b.value()[i as usize])
            .reduce(|x, y| x + y)
            .unwrap();
        assert_eq!(s, Some((0..1000).sum()));
    }
    assert_eq!(ctx.local_env().broadcasts.fetches(), 1);
    let other = ctx.broadcast(1u8).unwrap();
    ctx.range(0, 4, 4)
        .foreach_with(other, |o, _| assert_eq!(*o.value(), 1))
        .unwrap();
    assert_eq!(ctx.local_env().broadcasts.fetches(), 2);
}

#[test]
fn cached_partitions_are_counted_as_misses_only_when_computed() {
    let ctx = Context::builder().master("local[2]").create().unwrap();
    let d = ctx.range(0, 100, 5).cache();
    d.count().unwrap();
    d.count().unwrap();
    assert_eq!(
        ctx.local_env()
            .cache_misses
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );
    let used = || ctx.local_env().cache.lock().unwrap().used();
    assert!(used() > 0);
    d.unpersist();
    // The blocks go (the shell drops them where the scheduler says they are).
    let start = std::time::Instant::now();
    while used() > 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "blocks kept after unpersist"
        );
        std::thread::yield_now();
    }
    // Unpersisted: the plan has no cache node, nothing is read or stored.
    d.count().unwrap();
    assert_eq!(used(), 0);
    assert_eq!(
        ctx.local_env()
            .cache_misses
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );
}

#[test]
fn decoding_shared_variables_outside_a_task_is_an_error() {
    let ctx = Context::builder().master("local").create().unwrap();
    let a = ctx.accumulator("a");
    let bytes = postcard::to_allocvec(&a).unwrap();
    let e = postcard::from_bytes::<Accumulator>(&bytes).unwrap_err();
    assert!(matches!(e, postcard::Error::SerdeDeCustom), "{e}");
    let b = ctx.broadcast(5u32).unwrap();
    let bytes = postcard::to_allocvec(&b).unwrap();
    assert!(postcard::from_bytes::<Broadcast<u32>>(&bytes).is_err());
}

#[test]
fn the_tasks_of_a_failed_job_are_killed() {
    let ctx = Context::builder().master("local[2,1]").create().unwrap();
    // Partition 0 fails at once; partition 1 would count 2^39 elements.
    let e = ctx
        .range(0, 1 << 40, 2)
        .map(|x| if x == 0 { panic!("zero") } else { x })
        .count()
        .unwrap_err();
    assert!(e.to_string().contains("zero"), "{e}");
    let env = ctx.local_env().clone();
    let start = std::time::Instant::now();
    while env.running_tasks() > 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the long task was not killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(ctx.range(0, 10, 2).count().unwrap(), 10);
}

#[test]
fn a_task_that_overtakes_the_shuffle_set_up_waits_for_it() {
    let e = env();
    let waiting = {
        let e = e.clone();
        std::thread::spawn(move || e.shuffle().map(|s| s.server.clone()))
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = flint_conf::Conf::new().set("local.dir", dir.path().to_str().unwrap());
    let sc = flint_shuffle::ShuffleConf::from_conf(&conf, u64::from(1u8)).unwrap();
    let layout = flint_shuffle::Layout::new(&sc.local_dirs, "app-test").unwrap();
    e.set_shuffle(crate::executor::ShuffleEnv {
        conf: sc,
        layout,
        server: "set-later".into(),
        remote: None,
    });
    assert_eq!(waiting.join().unwrap().unwrap(), "set-later");
}
