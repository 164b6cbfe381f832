//! What an application or a driver asks the cluster for, and how a worker
//! reports the executors it runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{AppId, ExecutorId, ExecutorState, Placeholders};

/// Spark's default executor memory (`spark.executor.memory` = 1g), in MB.
pub const DEFAULT_EXECUTOR_MEMORY_MB: u64 = 1024;
/// Spark's default cluster-mode driver memory (`spark.driver.memory`), in MB.
pub const DEFAULT_DRIVER_MEMORY_MB: u64 = 1024;
/// Spark's default cluster-mode driver cores (`spark.driver.cores`).
pub const DEFAULT_DRIVER_CORES: u32 = 1;

/// A description that cannot be scheduled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptionError {
    /// `cores_per_executor` is `Some(0)`.
    #[error("cores per executor must be at least 1")]
    ZeroCoresPerExecutor,
    /// The command names no program.
    #[error("the command has an empty program")]
    EmptyProgram,
    /// The command uses `{{BINARY}}` but names no binary.
    #[error("the command uses {{{{BINARY}}}} but has no binary source")]
    BinaryPlaceholderWithoutBinary,
    /// The command's [`BinarySource`] cannot be fetched as given.
    #[error("the command's binary {uri:?} is unusable: {reason}")]
    BadBinary {
        /// The binary's URI.
        uri: String,
        /// What is wrong (e.g. the sha256 is not 64 lowercase hex digits).
        reason: String,
    },
}

/// Where a worker fetches the binary a command runs (the driver's own
/// executable, served by its RPC file server), and what it must be.
///
/// The worker keeps fetched binaries in a cache shared by applications,
/// `<work_dir>/binaries/<sha256>`, and substitutes that path for
/// `{{BINARY}}` (see [`BINARY_PLACEHOLDER`](crate::BINARY_PLACEHOLDER)) in
/// the command's program, arguments and environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinarySource {
    /// `flint://host:port/files/<name>`, on the serving process's file server.
    pub uri: String,
    /// SHA-256 of the binary, 64 lowercase hex digits.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

impl BinarySource {
    /// Checks the fields a worker relies on: a `flint://` URI and a sha256
    /// of 64 lowercase hex digits (it names the cached file).
    pub fn validate(&self) -> Result<(), DescriptionError> {
        let bad = |reason: &str| DescriptionError::BadBinary {
            uri: self.uri.clone(),
            reason: reason.to_owned(),
        };
        if !self.uri.starts_with("flint://") || !self.uri.contains("/files/") {
            return Err(bad("the URI must be flint://host:port/files/<name>"));
        }
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if self.sha256.len() != 64 || !self.sha256.chars().all(hex) {
            return Err(bad(&format!(
                "sha256 {:?} is not 64 lowercase hex digits",
                self.sha256
            )));
        }
        Ok(())
    }
}

/// The command a worker runs to start a child process (an executor, or a
/// cluster-mode driver).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExecutorCommand {
    /// The program to run (a path or a name looked up on `PATH`).
    pub program: String,
    /// Its arguments. The worker replaces the [placeholders](crate::placeholders)
    /// (`{{EXECUTOR_ID}}`, `{{HOSTNAME}}`, `{{CORES}}`, `{{APP_ID}}`,
    /// `{{WORKER_URL}}`, `{{BINARY}}`) in them, in the program and in the
    /// environment's values, as Spark's `ExecutorRunner` does.
    pub args: Vec<String>,
    /// Extra environment variables for the child (placeholders substituted
    /// in the values).
    pub env: BTreeMap<String, String>,
    /// The binary the worker fetches (once per content hash) before starting
    /// the child; its cached path replaces `{{BINARY}}`. `None`: the program
    /// must be runnable on the worker as given.
    pub binary: Option<BinarySource>,
}

impl ExecutorCommand {
    /// A command running `program` with no arguments and no extra environment.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            binary: None,
        }
    }

    /// Checks the program and the binary source, if any.
    pub fn validate(&self) -> Result<(), DescriptionError> {
        if self.program.is_empty() {
            return Err(DescriptionError::EmptyProgram);
        }
        match &self.binary {
            Some(b) => b.validate(),
            None => {
                let uses = |t: &String| t.contains(crate::BINARY_PLACEHOLDER);
                if uses(&self.program) || self.args.iter().any(uses) || self.env.values().any(uses)
                {
                    Err(DescriptionError::BinaryPlaceholderWithoutBinary)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The program with the placeholders substituted (see
    /// [`Placeholders::substitute`]); `{{BINARY}}` is the usual program of a
    /// command that ships its binary.
    pub fn substituted_program(&self, values: &Placeholders) -> String {
        values.substitute(&self.program)
    }

    /// The arguments with the placeholders substituted, also inside longer
    /// arguments (`--cores={{CORES}}`); see [`Placeholders::substitute`].
    pub fn substituted_args(&self, values: &Placeholders) -> Vec<String> {
        self.args.iter().map(|arg| values.substitute(arg)).collect()
    }

    /// The environment with the placeholders substituted in the values.
    pub fn substituted_env(&self, values: &Placeholders) -> BTreeMap<String, String> {
        self.env
            .iter()
            .map(|(k, v)| (k.clone(), values.substitute(v)))
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
        self.command.validate()
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
        c.binary = Some(BinarySource {
            uri: "flint://h:1/files/app".into(),
            sha256: "0f".repeat(32),
            size: 12,
        });
        c
    }

    #[test]
    fn placeholders_are_substituted() {
        let app = AppId::generate(0, 0);
        let values = Placeholders {
            executor_id: ExecutorId(3).to_string(),
            hostname: "h1".into(),
            cores: 2,
            app_id: app.to_string(),
            worker_url: "flint://Worker@h1:7078".into(),
            binary: None,
        };
        let args = command().substituted_args(&values);
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
                "x2",
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
        desc.command.program = "{{BINARY}}".into();
        desc.command.binary = None;
        assert_eq!(
            desc.validate(),
            Err(DescriptionError::BinaryPlaceholderWithoutBinary)
        );
        assert_eq!(
            DescriptionError::BinaryPlaceholderWithoutBinary.to_string(),
            "the command uses {{BINARY}} but has no binary source"
        );
        let good = BinarySource {
            uri: "flint://127.0.0.1:9/files/app".into(),
            sha256: "ab".repeat(32),
            size: 3,
        };
        desc.command.binary = Some(good.clone());
        assert_eq!(desc.validate(), Ok(()));
        for bad in [
            BinarySource {
                sha256: "AB".repeat(32),
                ..good.clone()
            },
            BinarySource {
                sha256: "../x".into(),
                ..good.clone()
            },
            BinarySource {
                uri: "/tmp/app".into(),
                ..good.clone()
            },
        ] {
            desc.command.binary = Some(bad.clone());
            let err = desc.validate().expect_err("refused");
            assert!(
                matches!(&err, DescriptionError::BadBinary { uri, .. } if *uri == bad.uri),
                "{err}"
            );
        }
    }
}
