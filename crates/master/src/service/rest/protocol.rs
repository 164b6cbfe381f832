//! The REST server's JSON, in the shape of Spark's `SubmitRestProtocolMessage`s:
//! every response has `action` (the message's class name), `message` and
//! `serverSparkVersion` (here flint's version); properties sorted by name, absent
//! ones omitted, pretty-printed (Spark's Jackson settings).
//!
//! [`parse_create`] checks a `CreateSubmissionRequest` field by field; a mistake is
//! a [`Malformed`] naming the field, what it holds and what it must hold. [`plan`]
//! turns the checked request into flint's [`DriverDescription`]:
//!
//! - `appResource`: `sha256:<hash>` of a binary uploaded to the master's binary
//!   store (`POST /v1/submissions/upload`), which the chosen worker fetches by hash;
//!   or an absolute path (optionally `file://`) of a program present on the workers.
//!   Other URLs are refused: nothing here fetches them.
//! - `mainClass`: accepted and ignored (a flint program is its own entry point).
//! - `appArgs`: the program's arguments; `environmentVariables`: its environment,
//!   less `SPARK_LOCAL_IP`/`SPARK_LOCAL_HOSTNAME` (as Spark) and `FLINT_AUTH_*`
//!   (the worker hands its drivers the cluster secret itself).
//! - `sparkProperties`: `spark.driver.memory` / `spark.driver.cores` /
//!   `spark.driver.supervise` become the description's memory, cores and supervise
//!   flag (checked as Spark checks them); `spark.app.name`, `spark.executor.memory`,
//!   `spark.executor.cores`, `spark.cores.max`, `spark.task.maxFailures` and
//!   `spark.default.parallelism` become the flint settings `driver.app_name`,
//!   `executor.memory`, `executor.cores`, `cores.max`, `task.max_failures` and
//!   `default.parallelism`; a key that is itself a flint setting passes through;
//!   each setting reaches the driver as its `FLINT_*` variable, as `flint submit`
//!   hands them. `spark.master` and `spark.submit.*` are the submitter's business
//!   and ignored; any other key is ignored and named in the response's message.

use std::collections::BTreeMap;

use flint_proto::{BinarySource, DriverDescription, ExecutorCommand};
use serde::Serialize;
use serde_json::{Map, Value};

/// The protocol version of the routes (`/v1/submissions/...`).
pub const PROTOCOL_VERSION: &str = "v1";
/// What `serverSparkVersion` says: flint's version.
pub const SERVER_VERSION: &str = concat!("flint ", env!("CARGO_PKG_VERSION"));

/// A response, every field of every kind of Spark response (and the upload's);
/// those a kind does not have stay `None` and are omitted.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestResponse {
    /// The message's kind: `CreateSubmissionResponse`, `ErrorResponse`, ….
    pub action: &'static str,
    /// Upload: what to give `appResource` (`sha256:<hash>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_resource: Option<String>,
    /// Status: the driver's state (`RUNNING`, `FINISHED`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_state: Option<String>,
    /// Errors for an unknown protocol version: the one this server speaks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub highest_protocol_version: Option<String>,
    /// What happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// flint's version.
    pub server_spark_version: String,
    /// Upload: the binary's SHA-256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Upload: the binary's size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The driver the response is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submission_id: Option<String>,
    /// Whether the request did what it asked (status: whether the driver is known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    /// Request fields the server does not know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_fields: Option<Vec<String>>,
    /// Status: the driver's worker's `host:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_host_port: Option<String>,
    /// Status: the driver's worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
}

impl RestResponse {
    /// A response of kind `action` with `message`.
    pub fn new(action: &'static str, message: impl Into<String>) -> Self {
        RestResponse {
            action,
            message: Some(message.into()),
            server_spark_version: SERVER_VERSION.to_string(),
            ..Default::default()
        }
    }

    /// An `ErrorResponse`.
    pub fn error(message: impl Into<String>) -> Self {
        RestResponse::new("ErrorResponse", message)
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            format!(
                "{{\"action\":\"ErrorResponse\",\"message\":\"cannot encode the response: {e}\"}}"
            )
        })
    }
}

/// A request that is not what it must be: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Malformed request: {0}")]
pub struct Malformed(pub String);

fn malformed(msg: impl Into<String>) -> Malformed {
    Malformed(msg.into())
}

/// A checked `CreateSubmissionRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateRequest {
    /// `appResource`.
    pub app_resource: String,
    /// `appArgs`.
    pub app_args: Vec<String>,
    /// `environmentVariables`.
    pub environment: BTreeMap<String, String>,
    /// `sparkProperties`.
    pub properties: BTreeMap<String, String>,
    /// Fields the server does not know.
    pub unknown_fields: Vec<String>,
}

const CREATE_FIELDS: &[&str] = &[
    "action",
    "appArgs",
    "appResource",
    "clientSparkVersion",
    "environmentVariables",
    "mainClass",
    "message",
    "sparkProperties",
];

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string_field(
    obj: &Map<String, Value>,
    name: &str,
    required: bool,
) -> Result<Option<String>, Malformed> {
    match obj.get(name) {
        None | Some(Value::Null) if required => Err(malformed(format!(
            "field {name} is missing; it must be a string"
        ))),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(malformed(format!(
            "field {name} must be a string, not {}",
            kind(v)
        ))),
    }
}

fn string_map(
    obj: &Map<String, Value>,
    name: &str,
    required: bool,
) -> Result<BTreeMap<String, String>, Malformed> {
    match obj.get(name) {
        None | Some(Value::Null) if required => Err(malformed(format!(
            "field {name} is missing; it must be an object of strings (it may be empty: {{}})"
        ))),
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(malformed(format!(
                    "field {name}.{k} must be a string, not {}",
                    kind(other)
                ))),
            })
            .collect(),
        Some(v) => Err(malformed(format!(
            "field {name} must be an object of strings, not {}",
            kind(v)
        ))),
    }
}

/// Checks a `CreateSubmissionRequest` body: JSON, an object, `action`
/// `CreateSubmissionRequest`, `clientSparkVersion`, `appResource` and
/// `sparkProperties` present (as Spark requires), every field of its type.
pub fn parse_create(body: &[u8]) -> Result<CreateRequest, Malformed> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("the body is not JSON ({e})")))?;
    let Value::Object(obj) = v else {
        return Err(malformed(format!(
            "the body must be a JSON object, not {}",
            kind(&v)
        )));
    };
    let action = string_field(&obj, "action", true)?.unwrap_or_default();
    if action != "CreateSubmissionRequest" {
        return Err(malformed(format!(
            "field action is {action:?}; this route takes \"CreateSubmissionRequest\""
        )));
    }
    string_field(&obj, "clientSparkVersion", true)?;
    string_field(&obj, "mainClass", false)?;
    string_field(&obj, "message", false)?;
    let app_resource = string_field(&obj, "appResource", true)?.unwrap_or_default();
    let app_args = match obj.get("appArgs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(malformed(format!(
                    "field appArgs[{i}] must be a string, not {}",
                    kind(other)
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(malformed(format!(
                "field appArgs must be an array of strings, not {}",
                kind(v)
            )))
        }
    };
    let environment = string_map(&obj, "environmentVariables", false)?;
    let properties = string_map(&obj, "sparkProperties", true)?;
    let unknown_fields = obj
        .keys()
        .filter(|k| !CREATE_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();
    Ok(CreateRequest {
        app_resource,
        app_args,
        environment,
        properties,
        unknown_fields,
    })
}

/// How an `appResource` names the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// An uploaded binary, by SHA-256 (64 lowercase hex digits).
    Uploaded(String),
    /// A program on the workers.
    Path(String),
}

/// Reads `appResource`.
pub fn resource(text: &str) -> Result<Resource, Malformed> {
    let t = text.trim();
    if let Some(h) = t.strip_prefix("sha256:") {
        if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Resource::Uploaded(h.to_ascii_lowercase()));
        }
        return Err(malformed(format!(
            "field appResource {t:?}: after sha256: come the 64 hex digits the upload route answered"
        )));
    }
    let path = t.strip_prefix("file://").unwrap_or(t);
    if path.starts_with('/') {
        return Ok(Resource::Path(path.to_string()));
    }
    if t.is_empty() {
        return Err(malformed(
            "field appResource is empty; give sha256:<hash> of a binary uploaded with \
             POST /v1/submissions/upload, or the absolute path of a program on the workers",
        ));
    }
    Err(malformed(format!(
        "field appResource {t:?} is neither sha256:<hash> of a binary uploaded with \
         POST /v1/submissions/upload nor an absolute path of a program on the workers \
         (URLs are not fetched)"
    )))
}

/// Spark properties with a flint setting behind them.
const MAPPED: &[(&str, &str)] = &[
    ("spark.app.name", "driver.app_name"),
    ("spark.executor.memory", "executor.memory"),
    ("spark.executor.cores", "executor.cores"),
    ("spark.cores.max", "cores.max"),
    ("spark.task.maxFailures", "task.max_failures"),
    ("spark.default.parallelism", "default.parallelism"),
];

/// The driver to submit, from a checked request, and the properties ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What to run; its command's `binary` is filled in by the caller for an
    /// uploaded resource.
    pub desc: DriverDescription,
    /// The resource.
    pub resource: Resource,
    /// Spark properties that mean nothing to flint.
    pub ignored: Vec<String>,
}

/// Builds the driver (see the [module docs](self)); `master_url` is what the
/// driver gets as `FLINT_MASTER`.
pub fn plan(req: &CreateRequest, master_url: &str) -> Result<Plan, Malformed> {
    let resource = resource(&req.app_resource)?;
    let mut settings: Vec<(String, String)> = Vec::new();
    let mut ignored = Vec::new();
    let mut memory_mb = None;
    let mut cores = None;
    let mut supervise = false;
    for (k, v) in &req.properties {
        let field = format!("sparkProperties.{k}");
        match k.as_str() {
            "spark.driver.memory" => {
                let bytes =
                    flint_conf::parse_size(v, flint_conf::SizeUnit::Mebibytes).map_err(|e| {
                        malformed(format!(
                            "field {field} {v:?} is not a memory size ({e}); e.g. 1g or 512m"
                        ))
                    })?;
                let mb = bytes >> 20;
                if mb == 0 {
                    return Err(malformed(format!("field {field} {v:?} is less than 1m")));
                }
                memory_mb = Some(mb);
            }
            "spark.driver.cores" => {
                let n = v
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        malformed(format!(
                            "field {field} {v:?} is not a positive whole number"
                        ))
                    })?;
                cores = Some(n);
            }
            "spark.driver.supervise" => {
                supervise = flint_conf::parse_bool(v).ok_or_else(|| {
                    malformed(format!(
                        "field {field} {v:?} is not a boolean (true or false)"
                    ))
                })?;
            }
            "spark.master" => {}
            _ if k.starts_with("spark.submit.") => {}
            _ => {
                if let Some((_, key)) = MAPPED.iter().find(|(s, _)| s == k) {
                    settings.push(((*key).to_string(), v.clone()));
                } else if flint_conf::registry::setting(k).is_some() {
                    if k.starts_with("auth.") {
                        return Err(malformed(format!(
                            "field {field}: the worker hands its drivers the cluster secret; \
                             auth.* settings cannot be submitted"
                        )));
                    }
                    settings.push((k.clone(), v.clone()));
                } else {
                    ignored.push(k.clone());
                }
            }
        }
    }
    // Every setting as the driver will check it.
    for (k, v) in &settings {
        let pair = format!("{k}={v}");
        if let Err(e) = flint_conf::load(
            None,
            std::iter::empty::<(String, String)>(),
            std::iter::once(pair.as_str()),
        ) {
            let spark = MAPPED
                .iter()
                .find(|(_, f)| f == k)
                .map(|(s, _)| *s)
                .unwrap_or(k.as_str());
            return Err(malformed(format!("field sparkProperties.{spark}: {e}")));
        }
    }
    let mut cmd = match &resource {
        Resource::Uploaded(_) => ExecutorCommand::new("{{BINARY}}"),
        Resource::Path(p) => ExecutorCommand::new(p.clone()),
    };
    cmd.args = req.app_args.clone();
    cmd.env = req
        .environment
        .iter()
        .filter(|(k, _)| {
            k.as_str() != "SPARK_LOCAL_IP"
                && k.as_str() != "SPARK_LOCAL_HOSTNAME"
                && !k.starts_with("FLINT_AUTH_")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    cmd.env
        .insert("FLINT_MASTER".to_string(), master_url.to_string());
    for (k, v) in &settings {
        cmd.env.insert(flint_conf::registry::env_name(k), v.clone());
    }
    if let Some(mb) = memory_mb {
        cmd.env
            .insert("FLINT_DRIVER_MEMORY_MB".to_string(), mb.to_string());
    }
    let binary_url = match &resource {
        Resource::Uploaded(h) => format!("sha256:{h}"),
        Resource::Path(p) => format!("file://{p}"),
    };
    let mut desc = DriverDescription::new(binary_url, cmd);
    if let Some(mb) = memory_mb {
        desc.memory_mb = mb;
    }
    if let Some(c) = cores {
        desc.cores = c;
    }
    desc.supervise = supervise;
    Ok(Plan {
        desc,
        resource,
        ignored,
    })
}

/// Puts an uploaded binary's source into the plan's command.
pub fn with_binary(mut desc: DriverDescription, source: BinarySource) -> DriverDescription {
    desc.binary_url = source.uri.clone();
    desc.command.binary = Some(source);
    desc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(extra: &str) -> String {
        format!(
            r#"{{"action":"CreateSubmissionRequest","clientSparkVersion":"4.0.0",
                "appResource":"/bin/true","mainClass":"ignored","sparkProperties":{{}}{extra}}}"#
        )
    }

    #[test]
    fn a_minimal_request_parses_and_unknown_fields_are_listed() {
        let r = parse_create(body(r#","zzz":1"#).as_bytes()).unwrap();
        assert_eq!(r.app_resource, "/bin/true");
        assert_eq!(r.unknown_fields, vec!["zzz".to_string()]);
        let p = plan(&r, "flint://m:7077").unwrap();
        assert_eq!(p.resource, Resource::Path("/bin/true".into()));
        assert_eq!(p.desc.command.program, "/bin/true");
        assert_eq!(p.desc.memory_mb, 1024);
        assert_eq!(p.desc.cores, 1);
        assert!(!p.desc.supervise);
        assert_eq!(p.desc.command.env["FLINT_MASTER"], "flint://m:7077");
    }

    #[test]
    fn each_malformed_field_is_named() {
        for (b, want) in [
            ("nope".to_string(), "the body is not JSON"),
            ("[1]".to_string(), "must be a JSON object, not an array"),
            (r#"{"clientSparkVersion":"4"}"#.to_string(), "field action is missing"),
            (
                r#"{"action":"KillSubmissionRequest"}"#.to_string(),
                "field action is \"KillSubmissionRequest\"",
            ),
            (
                r#"{"action":"CreateSubmissionRequest","appResource":"/x","sparkProperties":{}}"#
                    .to_string(),
                "field clientSparkVersion is missing",
            ),
            (
                r#"{"action":"CreateSubmissionRequest","clientSparkVersion":"4","sparkProperties":{}}"#
                    .to_string(),
                "field appResource is missing",
            ),
            (
                r#"{"action":"CreateSubmissionRequest","clientSparkVersion":"4","appResource":"/x"}"#
                    .to_string(),
                "field sparkProperties is missing",
            ),
            (body(r#","appArgs":"a b""#), "field appArgs must be an array of strings, not a string"),
            (body(r#","appArgs":["a",2]"#), "field appArgs[1] must be a string, not a number"),
            (
                body(r#","environmentVariables":{"A":1}"#),
                "field environmentVariables.A must be a string, not a number",
            ),
            (body(r#","mainClass":5"#).replace(r#""mainClass":"ignored","#, ""), "field mainClass must be a string"),
        ] {
            let e = parse_create(b.as_bytes()).unwrap_err().to_string();
            assert!(e.starts_with("Malformed request: "), "{e}");
            assert!(e.contains(want), "{b}: {e}");
        }
    }

    fn plan_of(props: &str, resource: &str) -> Result<Plan, Malformed> {
        let b = format!(
            r#"{{"action":"CreateSubmissionRequest","clientSparkVersion":"4.0.0",
                "appResource":"{resource}","sparkProperties":{props},
                "appArgs":["x","y z"],"environmentVariables":{{"A":"1","SPARK_LOCAL_IP":"h","FLINT_AUTH_SECRET":"s"}}}}"#
        );
        plan(&parse_create(b.as_bytes())?, "flint://m:1")
    }

    #[test]
    fn spark_properties_map_onto_the_driver() {
        let hash = "AB".repeat(32);
        let p = plan_of(
            r#"{"spark.driver.memory":"2g","spark.driver.cores":"3","spark.driver.supervise":"true",
                "spark.app.name":"named","spark.executor.memory":"512m","spark.cores.max":"4",
                "task.max_failures":"7","spark.master":"spark://x:6066","spark.eventLog.enabled":"true"}"#,
            &format!("sha256:{hash}"),
        )
        .unwrap();
        assert_eq!(p.resource, Resource::Uploaded("ab".repeat(32)));
        assert_eq!(p.desc.memory_mb, 2048);
        assert_eq!(p.desc.cores, 3);
        assert!(p.desc.supervise);
        let env = &p.desc.command.env;
        assert_eq!(env["FLINT_DRIVER_APP_NAME"], "named");
        assert_eq!(env["FLINT_EXECUTOR_MEMORY"], "512m");
        assert_eq!(env["FLINT_CORES_MAX"], "4");
        assert_eq!(env["FLINT_TASK_MAX_FAILURES"], "7");
        assert_eq!(env["FLINT_DRIVER_MEMORY_MB"], "2048");
        assert_eq!(env["A"], "1");
        assert!(!env.contains_key("SPARK_LOCAL_IP"));
        assert!(!env.contains_key("FLINT_AUTH_SECRET"));
        assert_eq!(p.desc.command.program, "{{BINARY}}");
        assert_eq!(p.desc.command.args, vec!["x", "y z"]);
        assert_eq!(p.ignored, vec!["spark.eventLog.enabled".to_string()]);
    }

    #[test]
    fn bad_properties_and_resources_are_named() {
        for (props, res, want) in [
            (
                r#"{"spark.driver.memory":"lots"}"#,
                "/x",
                "sparkProperties.spark.driver.memory",
            ),
            (
                r#"{"spark.driver.cores":"0"}"#,
                "/x",
                "sparkProperties.spark.driver.cores",
            ),
            (
                r#"{"spark.driver.supervise":"maybe"}"#,
                "/x",
                "sparkProperties.spark.driver.supervise",
            ),
            (
                r#"{"spark.executor.memory":"2x"}"#,
                "/x",
                "sparkProperties.spark.executor.memory",
            ),
            (
                r#"{"auth.secret":"s"}"#,
                "/x",
                "auth.* settings cannot be submitted",
            ),
            ("{}", "", "field appResource is empty"),
            ("{}", "sha256:abc", "64 hex digits"),
            ("{}", "hdfs://nn/app.jar", "URLs are not fetched"),
            ("{}", "relative/app", "absolute path"),
        ] {
            let e = plan_of(props, res).unwrap_err().to_string();
            assert!(e.contains(want), "{props} {res}: {e}");
        }
        assert_eq!(
            plan_of("{}", "file:///opt/app").unwrap().resource,
            Resource::Path("/opt/app".into())
        );
    }

    #[test]
    fn responses_are_sorted_and_omit_what_is_absent() {
        let mut r = RestResponse::new("CreateSubmissionResponse", "ok");
        r.success = Some(true);
        r.submission_id = Some("driver-1".into());
        let j = r.to_json();
        let keys: Vec<&str> = j
            .lines()
            .filter_map(|l| l.trim().strip_prefix('"')?.split('"').next())
            .collect();
        assert_eq!(
            keys,
            [
                "action",
                "message",
                "serverSparkVersion",
                "submissionId",
                "success"
            ]
        );
        assert!(j.contains(&format!("\"serverSparkVersion\": \"{SERVER_VERSION}\"")));
    }
}
