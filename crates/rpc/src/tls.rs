//! Optional TLS for every connection, with rustls on the `ring` crypto provider (chosen
//! explicitly, so no process-wide default is needed). Authentication is mutual: each
//! node presents its certificate and accepts only peers whose certificates chain to
//! the configured CA.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::conf::TlsPaths;
use crate::error::RpcError;

/// The acceptor and connector built from one node's TLS material.
pub(crate) struct TlsContext {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

fn err(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> RpcError {
    RpcError::Tls(format!("{what} {}: {e}", path.display()))
}

impl TlsContext {
    pub(crate) fn load(paths: &TlsPaths) -> Result<Self, RpcError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.cert)
            .map_err(|e| err("cannot read certificate", &paths.cert, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| err("bad certificate in", &paths.cert, e))?;
        if certs.is_empty() {
            return Err(err("no certificate in", &paths.cert, "empty"));
        }
        let key = PrivateKeyDer::from_pem_file(&paths.key)
            .map_err(|e| err("cannot read private key", &paths.key, e))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&paths.ca)
            .map_err(|e| err("cannot read CA certificate", &paths.ca, e))?
        {
            let ca = ca.map_err(|e| err("bad CA certificate in", &paths.ca, e))?;
            roots
                .add(ca)
                .map_err(|e| err("unusable CA certificate in", &paths.ca, e))?;
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| RpcError::Tls(format!("client verifier: {e}")))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| RpcError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| err("certificate and key do not fit", &paths.key, e))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| RpcError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| err("certificate and key do not fit", &paths.key, e))?;
        Ok(TlsContext {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    pub(crate) async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.connector.connect(name, tcp).await
    }

    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        self.acceptor.accept(tcp).await
    }
}
