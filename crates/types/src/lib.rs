//! flint's plain data types, shared by the master, the worker, the
//! application client and the driver library.
//!
//! Typed ids ([`WorkerId`], [`AppId`], [`ExecutorId`], [`DriverId`]) with
//! Spark-style formats, the state enums of the standalone cluster
//! ([`WorkerState`], [`ApplicationState`], [`ExecutorState`], [`DriverState`],
//! [`MasterStatus`]), the descriptions an application or driver submits
//! ([`ApplicationDescription`], [`DriverDescription`], [`ExecutorCommand`]),
//! the [`placeholders`] a worker fills into a child's command, and the JSON
//! documents the daemons serve: the master's ([`status`]) and the worker's
//! ([`worker_status`]).
//!
//! This crate depends on `serde` and `thiserror` only: no tokio, no RPC
//! layer (`.ci/run` checks it with `cargo tree`), so tools and tests that
//! only read status documents stay light. Protocol messages that carry
//! endpoint references live in `flint-proto`, which re-exports everything
//! here.
//!
//! The types derive `serde` traits and stay friendly to both `postcard` (the
//! RPC wire format) and `serde_json` (status pages): no untagged enums, no
//! flattening, no skipped fields. Nothing here reads a clock or touches the
//! network; functions that build time-stamped ids take the timestamp as an
//! argument.

mod desc;
mod ids;
pub mod log;
pub mod placeholders;
mod states;
pub mod status;
pub mod worker_status;

pub use desc::{
    ApplicationDescription, BinarySource, DescriptionError, DriverDescription, ExecutorCommand,
    ExecutorDescription, DEFAULT_DRIVER_CORES, DEFAULT_DRIVER_MEMORY_MB,
    DEFAULT_EXECUTOR_MEMORY_MB,
};
pub use ids::{compact_timestamp, AppId, DriverId, ExecutorId, IdError, WorkerId, MAX_ID_LEN};
pub use placeholders::{
    Placeholders, APP_ID_PLACEHOLDER, BINARY_PLACEHOLDER, CORES_PLACEHOLDER,
    EXECUTOR_ID_PLACEHOLDER, HOSTNAME_PLACEHOLDER, PLACEHOLDERS, WORKER_URL_PLACEHOLDER,
};
pub use states::{
    ApplicationState, DriverState, ExecutorState, MasterStatus, UnknownState, WorkerState,
};
