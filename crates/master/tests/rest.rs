//! The master's REST submission server over real HTTP on 127.0.0.1: off by default
//! (nothing listens), refuses to run open without being told, answers 401 to every
//! request without a valid bearer token (none, expired, another secret's, `alg:
//! none`, not a JWS) and then runs nothing; with a valid token an uploaded binary is
//! created as a driver that a real in-process worker runs as a real child process,
//! followed by status to RUNNING and killed to KILLED; a program path on the workers
//! runs to FINISHED; malformed JSON is a 400 naming the field. Nothing sleeps to
//! synchronize: every wait polls a condition with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use flint_conf::Conf;
use flint_master::service::rest::jws::TokenKey;
use flint_master::{start, MasterHandle, MasterOptions};
use flint_worker::service::{WorkerHandle, WorkerOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SECRET: &str = "flint-master-rest-tests";
const DEADLINE: Duration = Duration::from_secs(20);

fn conf() -> Conf {
    Conf::new()
        .set("auth.secret", SECRET)
        .set("rest.enabled", "true")
        .set("rest.port", "0")
        .set("master.binary_store.max_size", "1m")
}

async fn master(conf: Conf) -> MasterHandle {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    start(MasterOptions {
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        conf,
    })
    .await
    .expect("master starts")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token() -> String {
    TokenKey::derive(SECRET.as_bytes()).issue(now(), 600)
}

/// A response: status code, headers (lower-cased names) and body.
#[derive(Debug)]
struct Http {
    code: u16,
    head: String,
    body: String,
}

impl Http {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One HTTP/1.1 request on a fresh connection (`connection: close`), the whole
/// response read, within [`DEADLINE`].
async fn request(base: &str, method: &str, path: &str, auth: Option<&str>, body: &[u8]) -> Http {
    let addr = base.strip_prefix("http://").unwrap();
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
            body.len()
        );
        if let Some(a) = auth {
            head.push_str(&format!("authorization: {a}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        // A server refusing an oversized body (413) may answer and close before the
        // last bytes are written, so the write can fail with a broken pipe: the
        // answer is still there to read, as an HTTP client reports it.
        if let Err(e) = s.write_all(body).await {
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ),
                "writing the request body: {e}"
            );
        }
        let mut out = Vec::new();
        if let Err(e) = s.read_to_end(&mut out).await {
            // A reset after the answer arrived (the unread body's doing) keeps what came.
            assert!(
                e.kind() == std::io::ErrorKind::ConnectionReset && !out.is_empty(),
                "reading the answer: {e}"
            );
        }
        String::from_utf8(out).unwrap()
    };
    let text = tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("an answer in time");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    Http {
        code,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

async fn with_token(base: &str, method: &str, path: &str, body: &[u8]) -> Http {
    let t = format!("Bearer {}", token());
    request(base, method, path, Some(&t), body).await
}

fn create_body(resource: &str, args: &[&str], props: serde_json::Value) -> Vec<u8> {
    serde_json::json!({
        "action": "CreateSubmissionRequest",
        "clientSparkVersion": "4.0.0",
        "appResource": resource,
        "mainClass": "org.example.Ignored",
        "appArgs": args,
        "environmentVariables": {"REST_TEST": "from-rest"},
        "sparkProperties": props,
    })
    .to_string()
    .into_bytes()
}

fn drivers(m: &MasterHandle) -> usize {
    let s = m.status();
    s.active_drivers.len() + s.completed_drivers.len()
}

/// Polls `probe` until it returns `Some`, failing after [`DEADLINE`] with `what`.
async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_state(base: &str, id: &str, state: &str) -> serde_json::Value {
    wait_for(&format!("{id} {state}"), async || {
        let r = with_token(base, "GET", &format!("/v1/submissions/status/{id}"), b"").await;
        assert_eq!(r.code, 200, "{}", r.body);
        let j = r.json();
        (j["driverState"] == state).then_some(j)
    })
    .await
}

async fn worker(m: &MasterHandle, dir: &Path) -> WorkerHandle {
    flint_worker::service::start(WorkerOptions {
        masters: vec![m.rpc_address().clone()],
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        cores: Some(2),
        memory_mb: Some(1024),
        work_dir: dir.to_path_buf(),
        conf: Conf::new().set("auth.secret", SECRET),
    })
    .await
    .expect("worker starts")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_is_off_by_default_and_nothing_listens() {
    let port = free_port();
    let m = master(
        Conf::new()
            .set("auth.secret", SECRET)
            .set("rest.port", port.to_string()),
    )
    .await;
    assert_eq!(m.rest_url(), None);
    let e = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect_err("nothing listens on the REST port");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    m.shutdown();
    m.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_rest_needs_an_explicit_opt_out() {
    let open = conf().set("auth.enabled", "false");
    let e = start(MasterOptions {
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        conf: open.clone(),
    })
    .await
    .expect_err("rest.enabled without a secret is refused")
    .to_string();
    assert!(e.starts_with("setting rest.enabled:"), "{e}");
    assert!(e.contains("rest.allow_unauthenticated = true"), "{e}");

    let m = master(open.set("rest.allow_unauthenticated", "true")).await;
    let base = m.rest_url().unwrap().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let r = request(&base, "GET", "/v1/submissions/readyz", None, b"").await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.json()["success"], true);
    m.shutdown();
    m.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_token_every_route_is_401_and_nothing_runs() {
    let m = master(conf()).await;
    let base = m.rest_url().unwrap().to_string();
    let t = now();
    let expired = TokenKey::derive(SECRET.as_bytes()).issue(t - 3600, 60);
    let other = TokenKey::derive(b"another cluster's secret").issue(t, 600);
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{}}}"#, t + 600))
    );
    let create = create_body(
        "/bin/sh",
        &["-c", "touch /tmp/never"],
        serde_json::json!({}),
    );
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "no Authorization header"),
        (
            Some(format!("Basic {}", URL_SAFE_NO_PAD.encode("u:p"))),
            "not \"Bearer <token>\"",
        ),
        (Some(format!("Bearer {expired}")), "token expired at"),
        (
            Some(format!("Bearer {other}")),
            "token signature does not match",
        ),
        (
            Some(format!("Bearer {none}")),
            "token algorithm \"none\" is not accepted",
        ),
        (Some("Bearer not-a-token".into()), "malformed token"),
        // The raw secret is not a token, nor is a token signed with the raw secret.
        (Some(format!("Bearer {SECRET}")), "malformed token"),
    ];
    for (auth, want) in &cases {
        for (method, path, body) in [
            ("POST", "/v1/submissions/create", create.as_slice()),
            ("GET", "/v1/submissions/readyz", b"".as_slice()),
            ("POST", "/v1/submissions/upload", b"#!/bin/sh\n".as_slice()),
            ("POST", "/v1/submissions/killall", b"".as_slice()),
            ("GET", "/nowhere", b"".as_slice()),
        ] {
            let r = request(&base, method, path, auth.as_deref(), body).await;
            assert_eq!(r.code, 401, "{auth:?} {path}: {}", r.body);
            assert!(
                r.head.contains("www-authenticate: bearer"),
                "{auth:?} {path}: {}",
                r.head
            );
            let j = r.json();
            assert_eq!(j["action"], "ErrorResponse");
            let msg = j["message"].as_str().unwrap();
            assert!(msg.contains(want), "{auth:?} {path}: {msg}");
        }
    }
    assert_eq!(drivers(&m), 0, "a refused request created a driver");
    // Nothing was uploaded either: the same bytes with a token are new to the store.
    let r = with_token(&base, "POST", "/v1/submissions/upload", b"#!/bin/sh\n").await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert!(
        r.json()["message"].as_str().unwrap().ends_with("stored"),
        "{}",
        r.body
    );
    // And a valid token passes.
    let r = with_token(&base, "GET", "/v1/submissions/readyz", b"").await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.json()["action"], "ReadyzResponse");
    m.shutdown();
    m.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_400_naming_the_field_and_run_nothing() {
    let m = master(conf()).await;
    let base = m.rest_url().unwrap().to_string();
    let ok_props = serde_json::json!({});
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "the body is not JSON"),
        (
            br#"{"action":"CreateSubmissionRequest","clientSparkVersion":"4.0.0","sparkProperties":{}}"#
                .to_vec(),
            "field appResource is missing",
        ),
        (
            br#"{"action":"CreateSubmissionRequest","clientSparkVersion":"4.0.0","appResource":"/bin/true","sparkProperties":{},"appArgs":"-c exit"}"#
                .to_vec(),
            "field appArgs must be an array of strings",
        ),
        (
            create_body("/bin/true", &[], serde_json::json!({"spark.driver.cores": "many"})),
            "field sparkProperties.spark.driver.cores \"many\" is not a positive whole number",
        ),
        (
            create_body("/bin/true", &[], serde_json::json!({"spark.driver.memory": "2x"})),
            "field sparkProperties.spark.driver.memory",
        ),
        (
            create_body(&format!("sha256:{}", "0".repeat(64)), &[], ok_props.clone()),
            "is not in the master's binary store",
        ),
        (
            create_body("https://example.com/app", &[], ok_props),
            "URLs are not fetched",
        ),
    ];
    for (body, want) in cases {
        let r = with_token(&base, "POST", "/v1/submissions/create", &body).await;
        assert_eq!(r.code, 400, "{}", r.body);
        let j = r.json();
        assert_eq!(j["action"], "ErrorResponse");
        let msg = j["message"].as_str().unwrap();
        assert!(msg.starts_with("Malformed request: "), "{msg}");
        assert!(msg.contains(want), "{msg}");
    }
    assert_eq!(drivers(&m), 0);
    // Paths as Spark's ErrorServlet answers them.
    let r = with_token(&base, "GET", "/v2/submissions/status/x", b"").await;
    assert_eq!(r.code, 468, "{}", r.body);
    assert_eq!(r.json()["highestProtocolVersion"], "v1");
    let r = with_token(&base, "GET", "/v1/submissions/status/", b"").await;
    assert_eq!(r.code, 400, "{}", r.body);
    assert_eq!(
        r.json()["message"],
        "Submission ID is missing in status request."
    );
    let r = with_token(&base, "POST", "/v1/submissions/nothing", b"").await;
    assert_eq!(r.code, 400, "{}", r.body);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("Missing an action"));
    // An unknown id is Spark's 200 with success false.
    let r = with_token(
        &base,
        "GET",
        "/v1/submissions/status/driver-20260101000000-0042",
        b"",
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.json()["success"], false);
    let r = with_token(
        &base,
        "POST",
        "/v1/submissions/kill/driver-20260101000000-0042",
        b"",
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.json()["success"], false);
    // A JSON body over rest.max_request_bytes is 413; an upload over the store, too.
    let big = vec![b' '; (1 << 20) + 10];
    let r = with_token(&base, "POST", "/v1/submissions/create", &big).await;
    assert_eq!(r.code, 413, "{}", r.body);
    assert!(
        r.body.contains("rest.max_request_bytes = 1048576"),
        "{}",
        r.body
    );
    let r = with_token(&base, "POST", "/v1/submissions/upload", &big).await;
    assert_eq!(r.code, 413, "{}", r.body);
    assert!(
        r.body.contains("master.binary_store.max_size"),
        "{}",
        r.body
    );
    m.shutdown();
    m.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_create_status_and_kill_run_a_real_driver_on_a_real_worker() {
    let m = master(conf()).await;
    let base = m.rest_url().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let w = worker(&m, &dir.path().join("work")).await;
    wait_for("the worker to register", async || {
        (m.status().alive_workers == 1).then_some(())
    })
    .await;

    // The driver binary: writes its pid, environment and argument, then waits to
    // be killed.
    let out = dir.path().join("driver.out");
    let script = "#!/bin/sh\necho \"$$ $REST_TEST $FLINT_DRIVER_APP_NAME $FLINT_MASTER\" > \"$1.tmp\"\nmv \"$1.tmp\" \"$1\"\nexec sleep 1000\n";
    let r = with_token(&base, "POST", "/v1/submissions/upload", script.as_bytes()).await;
    assert_eq!(r.code, 200, "{}", r.body);
    let up = r.json();
    let resource = up["appResource"].as_str().unwrap().to_string();
    assert!(
        resource.starts_with("sha256:") && resource.len() == 71,
        "{resource}"
    );
    assert_eq!(up["size"], script.len());
    // The same bytes again are not stored twice.
    let r = with_token(&base, "POST", "/v1/submissions/upload", script.as_bytes()).await;
    assert_eq!(r.json()["appResource"], resource.as_str());
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .ends_with("was stored already"));

    let body = create_body(
        &resource,
        &[out.to_str().unwrap()],
        serde_json::json!({
            "spark.driver.memory": "256m",
            "spark.driver.cores": "1",
            "spark.app.name": "rest-e2e",
            "spark.eventLog.enabled": "true",
        }),
    );
    let r = with_token(&base, "POST", "/v1/submissions/create", &body).await;
    assert_eq!(r.code, 200, "{}", r.body);
    let created = r.json();
    assert_eq!(created["action"], "CreateSubmissionResponse");
    assert_eq!(created["success"], true, "{}", r.body);
    assert_eq!(created["serverSparkVersion"], "flint 0.1.0");
    let id = created["submissionId"].as_str().unwrap().to_string();
    assert!(id.starts_with("driver-"), "{id}");
    assert!(
        created["message"]
            .as_str()
            .unwrap()
            .contains("ignored sparkProperties: spark.eventLog.enabled"),
        "{}",
        r.body
    );

    let line = wait_for("the driver's output", async || {
        std::fs::read_to_string(&out).ok()
    })
    .await;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let pid: i32 = fields[0].parse().unwrap();
    assert_eq!(
        &fields[1..],
        ["from-rest", "rest-e2e", &m.rpc_address().to_string()],
        "{line}"
    );
    let s = wait_state(&base, &id, "RUNNING").await;
    assert_eq!(s["action"], "SubmissionStatusResponse");
    assert_eq!(s["success"], true);
    assert_eq!(s["workerId"], w.id().to_string());
    assert!(
        s["workerHostPort"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{s}"
    );
    let d = m
        .status()
        .active_drivers
        .into_iter()
        .find(|d| d.id.to_string() == id)
        .unwrap();
    assert_eq!((d.cores, d.memory_mb), (1, 256));

    let r = with_token(&base, "POST", &format!("/v1/submissions/kill/{id}"), b"").await;
    assert_eq!(r.code, 200, "{}", r.body);
    let k = r.json();
    assert_eq!(k["action"], "KillSubmissionResponse");
    assert_eq!(k["success"], true);
    assert_eq!(k["submissionId"], id.as_str());
    wait_state(&base, &id, "KILLED").await;
    wait_for("the killed driver's process to go", async || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;

    // A program already on the workers, by path, runs to FINISHED.
    let body = create_body(
        "/bin/sh",
        &["-c", "exit 0"],
        serde_json::json!({"spark.driver.memory": "128m"}),
    );
    let r = with_token(&base, "POST", "/v1/submissions/create", &body).await;
    assert_eq!(r.json()["success"], true, "{}", r.body);
    let id2 = r.json()["submissionId"].as_str().unwrap().to_string();
    wait_state(&base, &id2, "FINISHED").await;

    // killall with nothing left running still succeeds.
    let r = with_token(&base, "POST", "/v1/submissions/killall", b"").await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.json()["action"], "KillAllSubmissionResponse");
    assert_eq!(r.json()["success"], true);

    w.shutdown();
    w.wait().await.unwrap();
    m.shutdown();
    m.wait().await;
}
