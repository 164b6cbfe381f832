//! Data types shared by flint's master, worker and application client.
//!
//! Everything here is plain data: typed ids ([`WorkerId`], [`AppId`],
//! [`ExecutorId`], [`DriverId`]) with Spark-style formats, the state enums of
//! the standalone cluster ([`WorkerState`], [`ApplicationState`],
//! [`ExecutorState`], [`DriverState`], [`MasterStatus`]), the descriptions an
//! application or driver submits ([`ApplicationDescription`],
//! [`DriverDescription`]), the JSON documents the daemons serve
//! ([`status`]) and the deploy messages master, workers and application
//! clients exchange over RPC ([`messages`]).
//!
//! The types derive `serde` traits and stay friendly to both `postcard` (the
//! RPC wire format) and `serde_json` (status pages): no untagged enums, no
//! flattening, no skipped fields. Nothing in this crate reads a clock or
//! touches the network (the messages hold `flint_rpc::EndpointRef`s, which
//! only an `RpcEnv` decodes); functions that build time-stamped ids take the
//! timestamp as an argument.

mod desc;
mod ids;
pub mod messages;
mod states;
pub mod status;

pub use desc::{
    ApplicationDescription, DescriptionError, DriverDescription, ExecutorCommand,
    ExecutorDescription, PlaceholderValues, APP_ID_PLACEHOLDER, CORES_PLACEHOLDER,
    DEFAULT_DRIVER_CORES, DEFAULT_DRIVER_MEMORY_MB, DEFAULT_EXECUTOR_MEMORY_MB,
    EXECUTOR_ID_PLACEHOLDER, HOSTNAME_PLACEHOLDER, WORKER_URL_PLACEHOLDER,
};
pub use ids::{compact_timestamp, AppId, DriverId, ExecutorId, IdError, WorkerId, MAX_ID_LEN};
pub use states::{
    ApplicationState, DriverState, ExecutorState, MasterStatus, UnknownState, WorkerState,
};
