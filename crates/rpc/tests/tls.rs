//! TLS between environments, with a CA and node certificates generated inside the test:
//! mutual authentication works, a plaintext client and a client whose certificate
//! comes from another CA are refused, and the server keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use flint_rpc::{RpcConf, RpcEnv, RpcError, Secret, TlsPaths};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// Writes a CA and one node certificate (for 127.0.0.1 and localhost) into `dir`.
fn make_pki(dir: &Path, tag: &str) -> TlsPaths {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("flint test CA {tag}"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let node_key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("flint node {tag}"));
    let cert = params.signed_by(&node_key, &ca, &ca_key).unwrap();
    let paths = TlsPaths {
        cert: dir.join(format!("{tag}-node.pem")),
        key: dir.join(format!("{tag}-node.key")),
        ca: dir.join(format!("{tag}-ca.pem")),
    };
    std::fs::write(&paths.cert, cert.pem()).unwrap();
    std::fs::write(&paths.key, node_key.serialize_pem()).unwrap();
    std::fs::write(&paths.ca, ca.pem()).unwrap();
    paths
}

fn tls_conf(paths: &TlsPaths) -> RpcConf {
    let mut c = quick_conf();
    c.tls = Some(paths.clone());
    c
}

#[tokio::test]
async fn tls_with_mutual_authentication() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let good = make_pki(dir.path(), "good");
    let other = make_pki(dir.path(), "other");
    let (server, addr, _) = server_with_test_endpoint(tls_conf(&good)).await;

    // Same CA: works, for a server-mode peer and a client-only one, with auth on top.
    still_serves(&addr, tls_conf(&good)).await;
    let peer = RpcEnv::server(tls_conf(&good), "127.0.0.1", 0)
        .await
        .unwrap();
    let r = peer
        .setup_endpoint_ref::<TestMsg>(&addr, "test")
        .await
        .unwrap();
    assert_eq!(r.ask(Echo("over tls".into())).await.unwrap(), "over tls");

    // Plaintext client: refused, logged, server unharmed.
    let plain = RpcEnv::client(quick_conf()).unwrap();
    let e = plain
        .endpoint_ref::<TestMsg>(&addr, "test")
        .ask(Get)
        .await
        .unwrap_err();
    assert!(e.is_not_delivered(), "{e}");
    wait_for_log(&["refused connection from", "TLS failed"]).await;

    // A certificate from another CA: refused.
    let stranger = RpcEnv::client(tls_conf(&other)).unwrap();
    let e = stranger
        .endpoint_ref::<TestMsg>(&addr, "test")
        .ask(Get)
        .await
        .unwrap_err();
    assert!(e.is_not_delivered(), "{e}");
    assert!(e.to_string().contains("TLS"), "{e}");
    still_serves(&addr, tls_conf(&good)).await;

    peer.shutdown();
    server.shutdown();
}

#[tokio::test]
async fn tls_and_shared_secret_together() {
    let dir = tempfile::tempdir().unwrap();
    let good = make_pki(dir.path(), "both");
    let mut conf = tls_conf(&good);
    conf.secret = Some(Secret::new("s"));
    let (server, addr, _) = server_with_test_endpoint(conf.clone()).await;
    still_serves(&addr, conf).await;
    let mut wrong = tls_conf(&good);
    wrong.secret = Some(Secret::new("t"));
    let c = RpcEnv::client(wrong).unwrap();
    let e = c
        .endpoint_ref::<TestMsg>(&addr, "test")
        .ask(Get)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("authentication failed"), "{e}");
    server.shutdown();
}

#[tokio::test]
async fn missing_tls_files_are_named() {
    let paths = TlsPaths {
        cert: "/nonexistent/node.pem".into(),
        key: "/nonexistent/node.key".into(),
        ca: "/nonexistent/ca.pem".into(),
    };
    let e = match RpcEnv::client(tls_conf(&paths)) {
        Err(e) => e,
        Ok(_) => panic!("a missing certificate must be refused"),
    };
    assert!(matches!(e, RpcError::Tls(_)), "{e}");
    assert!(e.to_string().contains("/nonexistent/node.pem"), "{e}");
}
