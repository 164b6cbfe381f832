//! What an application or a driver asks the cluster for, and how a worker
//! reports the executors it runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{AppId, ExecutorId, ExecutorState};

/// Spark's default executor memory (`spark.executor.memory` = 1g), in MB.
pub const DEFAULT_EXECUTOR_MEMORY_MB: u64 = 1024;
/// Spark's default cluster-mode driver memory (`spark.driver.memory`), in MB.
pub const DEFAULT_DRIVER_MEMORY_MB: u64 = 1024;
/// Spark's default cluster-mode driver cores (`spark.driver.cores`).
pub const DEFAULT_DRIVER_CORES: u32 = 1;

/// Replaced by the executor id (`3`).
pub const EXECUTOR_ID_PLACEHOLDER: &str = "{{EXECUTOR_ID}}";
/// Replaced by the worker's host name.
pub const HOSTNAME_PLACEHOLDER: &str = "{{HOSTNAME}}";
/// Replaced by the executor's core count.
pub const CORES_PLACEHOLDER: &str = "{{CORES}}";
/// Replaced by the application id.
pub const APP_ID_PLACEHOLDER: &str = "{{APP_ID}}";
/// Replaced by the worker's endpoint URL.
pub const WORKER_URL_PLACEHOLDER: &str = "{{WORKER_URL}}";

/// A description that cannot be scheduled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptionError {
    /// `cores_per_executor` is `Some(0)`.
    #[error("cores per executor must be at least 1")]
    ZeroCoresPerExecutor,
    /// The command names no program.
    #[error("the command has an empty program")]
    EmptyProgram,
}

/// The command a worker runs to start a child process (an executor, or a
/// cluster-mode driver).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExecutorCommand {
    /// The program to run (a path or a name looked up on `PATH`).
    pub program: String,
    /// Its arguments. An argument that is exactly one of the placeholders
    /// (`{{EXECUTOR_ID}}`, `{{HOSTNAME}}`, `{{CORES}}`, `{{APP_ID}}`,
    /// `{{WORKER_URL}}`) is replaced by the worker, as Spark's
    /// `ExecutorRunner` does.
    pub args: Vec<String>,
    /// Extra environment variables for the child.
    pub env: BTreeMap<String, String>,
}

/// The values a worker substitutes into an executor command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaceholderValues<'a> {
    /// For `{{EXECUTOR_ID}}`.
    pub executor_id: ExecutorId,
    /// For `{{HOSTNAME}}`.
    pub hostname: &'a str,
    /// For `{{CORES}}`.
    pub cores: u32,
    /// For `{{APP_ID}}`.
    pub app_id: &'a AppId,
    /// For `{{WORKER_URL}}`.
    pub worker_url: &'a str,
}

impl ExecutorCommand {
    /// A command running `program` with no arguments and no extra environment.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
        }
    }

    /// The arguments with every argument that is exactly a placeholder
    /// replaced; other arguments are kept as they are (Spark replaces whole
    /// arguments only).
    pub fn substituted_args(&self, values: &PlaceholderValues<'_>) -> Vec<String> {
        self.args
            .iter()
            .map(|arg| match arg.as_str() {
                EXECUTOR_ID_PLACEHOLDER => values.executor_id.to_string(),
                HOSTNAME_PLACEHOLDER => values.hostname.to_owned(),
                CORES_PLACEHOLDER => values.cores.to_string(),
                APP_ID_PLACEHOLDER => values.app_id.to_string(),
                WORKER_URL_PLACEHOLDER => values.worker_url.to_owned(),
                _ => arg.clone(),
            })
            .collect()
    }
}

/// What an application asks the master for (Spark's `ApplicationDescription`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationDescription {
    /// The application's name, for display.
    pub name: String,
    /// The most cores the application may hold across the cluster
    /// (`spark.cores.max`); `None` means the master's `deploy.default_cores`.
    pub max_cores: Option<u32>,
    /// Cores per executor (`spark.executor.cores`); `None` means one
    /// executor per worker taking all the cores it can get there.
    pub cores_per_executor: Option<u32>,
    /// Memory per executor in MB (`spark.executor.memory`).
    pub memory_per_executor_mb: u64,
    /// How a worker starts one executor.
    pub command: ExecutorCommand,
    /// The application's own web UI, if it serves one.
    pub app_ui_url: Option<String>,
    /// The starting executor limit (dynamic allocation); `None` = unlimited.
    pub initial_executor_limit: Option<u32>,
}

impl ApplicationDescription {
    /// A description with Spark's defaults: no core limit, one executor per
    /// worker, 1024 MB per executor, no UI, no executor limit.
    pub fn new(name: impl Into<String>, command: ExecutorCommand) -> Self {
        Self {
            name: name.into(),
            max_cores: None,
            cores_per_executor: None,
            memory_per_executor_mb: DEFAULT_EXECUTOR_MEMORY_MB,
            command,
            app_ui_url: None,
            initial_executor_limit: None,
        }
    }

    /// Checks what the master needs to schedule the application.
    pub fn validate(&self) -> Result<(), DescriptionError> {
        if self.cores_per_executor == Some(0) {
            return Err(DescriptionError::ZeroCoresPerExecutor);
        }
        if self.command.program.is_empty() {
            return Err(DescriptionError::EmptyProgram);
        }
        Ok(())
    }
}

/// What a cluster-mode driver submission asks for (Spark's
/// `DriverDescription`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverDescription {
    /// Where the worker fetches the driver binary from.
    pub binary_url: String,
    /// Memory for the driver in MB.
    pub memory_mb: u64,
    /// Cores for the driver.
    pub cores: u32,
    /// Restart the driver when it exits non-zero, and relaunch it elsewhere
    /// when its worker is lost.
    pub supervise: bool,
    /// How the worker starts the driver.
    pub command: ExecutorCommand,
}

impl DriverDescription {
    /// A description with Spark's defaults: 1024 MB, 1 core, not supervised.
    pub fn new(binary_url: impl Into<String>, command: ExecutorCommand) -> Self {
        Self {
            binary_url: binary_url.into(),
            memory_mb: DEFAULT_DRIVER_MEMORY_MB,
            cores: DEFAULT_DRIVER_CORES,
            supervise: false,
            command,
        }
    }
}

/// One executor as a worker reports it to the master after (re)registering
/// (Spark's `ExecutorDescription`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorDescription {
    /// The executor's application.
    pub app_id: AppId,
    /// The executor's id within the application.
    pub exec_id: ExecutorId,
    /// Cores it holds.
    pub cores: u32,
    /// Memory it holds, in MB.
    pub memory_mb: u64,
    /// Its state on the worker.
    pub state: ExecutorState,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> ExecutorCommand {
        let mut c = ExecutorCommand::new("/bin/app");
        c.args = [
            "--executor-id",
            "{{EXECUTOR_ID}}",
            "--hostname",
            "{{HOSTNAME}}",
            "--cores",
            "{{CORES}}",
            "--app-id",
            "{{APP_ID}}",
            "--worker-url",
            "{{WORKER_URL}}",
            "x{{CORES}}",
        ]
        .map(String::from)
        .to_vec();
        c.env.insert("K".into(), "V".into());
        c
    }

    #[test]
    fn whole_argument_placeholders_are_substituted() {
        let app = AppId::generate(0, 0);
        let args = command().substituted_args(&PlaceholderValues {
            executor_id: ExecutorId(3),
            hostname: "h1",
            cores: 2,
            app_id: &app,
            worker_url: "flint://Worker@h1:7078",
        });
        assert_eq!(
            args,
            [
                "--executor-id",
                "3",
                "--hostname",
                "h1",
                "--cores",
                "2",
                "--app-id",
                "app-19700101000000-0000",
                "--worker-url",
                "flint://Worker@h1:7078",
                "x{{CORES}}",
            ]
        );
    }

    #[test]
    fn descriptions_round_trip_through_postcard_and_json() {
        let mut desc = ApplicationDescription::new("pi", command());
        desc.max_cores = Some(6);
        desc.cores_per_executor = Some(2);
        desc.app_ui_url = Some("http://h:4040".into());
        let bytes = postcard::to_allocvec(&desc).expect("postcard");
        assert_eq!(
            postcard::from_bytes::<ApplicationDescription>(&bytes).ok(),
            Some(desc.clone())
        );
        let json = serde_json::to_string(&desc).expect("json");
        assert_eq!(
            serde_json::from_str::<ApplicationDescription>(&json).ok(),
            Some(desc)
        );

        let d = DriverDescription::new("flint://h:1/files/app", command());
        let bytes = postcard::to_allocvec(&d).expect("postcard");
        assert_eq!(
            postcard::from_bytes::<DriverDescription>(&bytes).ok(),
            Some(d)
        );
    }

    #[test]
    fn validation_catches_unschedulable_descriptions() {
        let mut desc = ApplicationDescription::new("a", command());
        assert_eq!(desc.validate(), Ok(()));
        desc.cores_per_executor = Some(0);
        assert_eq!(desc.validate(), Err(DescriptionError::ZeroCoresPerExecutor));
        desc.cores_per_executor = None;
        desc.command.program.clear();
        assert_eq!(desc.validate(), Err(DescriptionError::EmptyProgram));
    }
}
