//! The wire protocol of flint's master, worker and application client, and
//! (re-exported from `flint-types`) the plain data types it carries.
//!
//! The plain data — typed ids ([`WorkerId`], [`AppId`], [`ExecutorId`],
//! [`DriverId`]), the state enums ([`WorkerState`], [`ApplicationState`],
//! [`ExecutorState`], [`DriverState`], [`MasterStatus`]), the descriptions
//! ([`ApplicationDescription`], [`DriverDescription`], [`ExecutorCommand`]),
//! the [`placeholders`] and the status JSON of master ([`status`]) and worker
//! ([`worker_status`]) — lives in `flint-types`, a serde-only crate, and is
//! re-exported here so `flint_proto::AppId` and friends keep working. What
//! stays here is what needs the RPC layer: the deploy messages master,
//! workers and application clients exchange ([`messages`]), which hold
//! `flint_rpc::EndpointRef`s that only an `RpcEnv` decodes.
//!
//! The messages derive `serde` traits and stay friendly to `postcard` (the
//! RPC wire format): no untagged enums, no flattening, no skipped fields.

pub mod messages;

pub use flint_types::{
    compact_timestamp, AppId, ApplicationDescription, ApplicationState, BinarySource,
    DescriptionError, DriverDescription, DriverId, DriverState, ExecutorCommand,
    ExecutorDescription, ExecutorId, ExecutorState, IdError, MasterStatus, Placeholders,
    UnknownState, WorkerId, WorkerState, APP_ID_PLACEHOLDER, BINARY_PLACEHOLDER, CORES_PLACEHOLDER,
    DEFAULT_DRIVER_CORES, DEFAULT_DRIVER_MEMORY_MB, DEFAULT_EXECUTOR_MEMORY_MB,
    EXECUTOR_ID_PLACEHOLDER, HOSTNAME_PLACEHOLDER, MAX_ID_LEN, PLACEHOLDERS,
    WORKER_URL_PLACEHOLDER,
};
pub use flint_types::{placeholders, status, worker_status};
