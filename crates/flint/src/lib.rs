//! flint's driver library: Spark-style datasets in an ordinary Rust `main`.
//!
//! ```
//! use flint::prelude::*;
//!
//! fn main() -> flint::Result<()> {
//!     let ctx = Context::builder().app_name("demo").master("local[2]").get_or_create()?;
//!     let squares: Vec<u64> = ctx.parallelize((1..=10u64).collect(), 4).map(|x| x * x).collect()?;
//!     let total = ctx.range(0, 1_000_000, 8).map_with(3u64, |k, x| x * k).reduce(|a, b| a + b)?;
//!     assert_eq!(squares[3], 16);
//!     assert_eq!(total, Some(3 * 499_999_500_000));
//!     Ok(())
//! }
//! ```
//!
//! # Closures are code, not values
//!
//! `map`, `filter`, `reduce`, ... take closures that capture nothing: a capturing
//! closure fails the build (`cargo build`; the check runs after monomorphization, so
//! `cargo check` may not show it) with a message naming the `_with` form, which takes
//! the value explicitly and serializes it: `map_with(value, |v, x| ...)`.
//!
//! ```compile_fail,E0080
//! # use flint::prelude::*;
//! # fn main() -> flint::Result<()> {
//! let ctx = Context::builder().master("local").create()?;
//! let k = 3u64;
//! ctx.range(0, 10, 2).map(move |x| x * k).collect()?; // error: use map_with
//! # Ok(()) }
//! ```
//!
//! # How a job runs
//!
//! A [`Dataset`] is a lineage of nodes on the driver. An action makes a job: a DAG of
//! stages (a shuffle map stage per shuffle it crosses, then the result stage) whose
//! tasks are partitions. The scheduler (a
//! pure state machine, `scheduler`) offers executor cores to tasks, first job first,
//! preferring executors that cache a task's input, and retries failed tasks up to
//! `task.max_failures`. A task travels as bytes: for its partition, the plan of the
//! stage's nodes as *entry points* (offsets of monomorphized functions from one base
//! function of this binary, with type fingerprints; module `entry`, flint's only
//! `unsafe`) and serialized captures, plus the action's entry point. The executor
//! (`executor::run_task`) evaluates the plan lazily, runs the action's half on it and
//! returns the serialized output with accumulator updates and the blocks it cached;
//! the driver combines the outputs. The scheduler runs inside a shell thread that does
//! not know where executors are (`shell::Executors`); with `local[N]` the executor is a
//! pool of N threads of this process fed through exactly that encoding, so what runs
//! locally runs on a cluster.
//!
//! Modules: `context` (Context, builder, settings, jobs), `dataset` (lineage nodes,
//! transformations, actions), `keyed` (operations on pairs, `distinct`,
//! `repartition`), `shuffle` (partitioners, combiners, the shuffle's writer and reader
//! entry points), `ops` (every other operation as an entry-point type), `entry`
//! (entry points, the only `unsafe`), `wire` (task and result encoding), `scheduler`
//! (the pure state machine), `shell` (its thread and the `Executors` transport),
//! `local` (the in-process executor), `executor` (`run_task`, the task pool, the
//! task context), `block_cache`, `shared` (broadcasts, accumulators), `text` (splits,
//! lines, output names), `master` (master URLs), `cluster` (the cluster backend:
//! `local-cluster` and `flint://`, executors as processes of this binary).
//!
//! # Allocator
//!
//! With the `mimalloc` feature (on by default) flint makes mimalloc the process's
//! global allocator: the driver, its `local[N]` task threads, and the executors (the
//! same binary) all allocate through it. The api.md closures allocate for every record
//! (`String` lines and words, a `Vec` per `flat_map` call) and free most of it a moment
//! later on the same thread; with glibc's allocator that was ~19% of a word count's
//! CPU (BENCHMARKS.md, "Shuffle jobs"). Requests aligned to 8 bytes or less go to
//! mimalloc's plain entry points, not its aligned ones (`src/alloc.rs`). A program
//! that sets its own
//! `#[global_allocator]` (the build then fails naming both) depends on flint with
//! `default-features = false` and keeps its own.
//!
//! # Departures from Spark, and why
//!
//! - `local[N]` retries tasks up to `task.max_failures` (Spark's local mode does not
//!   retry unless given `local[N,F]`); a retried task is what a cluster does, and the
//!   same behaviour locally keeps one code path.
//! - `save_as_text_file` commits on the driver (the first successful attempt's
//!   temporary file is renamed into place), which needs a file system the driver and
//!   the executors share on a cluster, as Hadoop's committer does.
//! - Fingerprints hash the operation's type name *and* its `TypeId`: two closures of one
//!   function have the same type name, and the `TypeId` (the same in every process of
//!   one binary) tells them apart.
//! - `fold_by_key` and `aggregate_by_key` apply the zero to every value, then merge
//!   (Spark applies it once per key and map partition); their contract (a zero
//!   neutral for the functions, added any number of times) makes the answers equal.
//! - A fetch failure of a block found missing or corrupt loses only that map output,
//!   not every output of its executor as Spark does; an unreachable server loses all.

/// See "Allocator" in the crate doc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: alloc::Mimalloc = alloc::Mimalloc;

#[cfg(feature = "mimalloc")]
mod alloc;

#[cfg(all(test, feature = "mimalloc"))]
mod allocator_tests {
    #![allow(clippy::unwrap_used)]

    /// A process of a binary that links flint initializes mimalloc (which, asked to be
    /// verbose, says so on stderr): this test binary, re-run to list its tests.
    #[test]
    fn a_flint_binary_allocates_with_mimalloc() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--list", "--format", "terse"])
            .env("MIMALLOC_VERBOSE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("mimalloc: process init"), "stderr: {err}");
    }
}

mod block_cache;
mod cluster;
mod context;
mod data;
mod dataset;
mod entry;
mod error;
mod executor;
mod keyed;
mod launcher_backend;
mod local;
mod master;
mod ops;
mod partition;
mod scheduler;
mod shared;
mod shell;
mod shuffle;
mod text;
mod ui;
mod wire;

pub use context::{Context, ContextBuilder, EXECUTOR_ENV};
pub use data::Data;
pub use dataset::Dataset;
pub use entry::Partition;
pub use error::{Error, Result};
pub use keyed::CoGrouped;
pub use shared::{Accumulator, Broadcast};
pub use wire::ShuffleMetrics;

/// Everything a flint program needs: `use flint::prelude::*;`.
///
/// ```
/// use flint::prelude::*;
/// fn run() -> Result<u64> {
///     let ctx = Context::builder().master("local").create()?;
///     ctx.range(0, 10, 1).count()
/// }
/// assert_eq!(run().unwrap(), 10);
/// ```
pub mod prelude {
    pub use crate::{
        Accumulator, Broadcast, Context, ContextBuilder, Data, Dataset, Error, Result,
    };
}

#[cfg(test)]
mod tests;
