//! An HTTPS front for a plain-HTTP peer (moto): terminates TLS with a certificate from a test
//! CA and forwards each request upstream, counting what it forwarded. It shows what a function
//! trusts: a handshake it refuses forwards nothing.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::tls::Ca;

/// A running HTTPS front; stops when dropped.
pub struct HttpsProxy {
    /// `https://localhost:<port>`.
    pub endpoint: String,
    forwarded: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl HttpsProxy {
    /// Serves `https://localhost:<free port>` with a certificate signed by `ca`, forwarding to
    /// `upstream` (`http://127.0.0.1:<port>`).
    pub async fn start(ca: &Ca, upstream: &str) -> HttpsProxy {
        let leaf = ca.server(&["localhost", "127.0.0.1"]);
        let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("leaf certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("leaf key PEM");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let forwarded = Arc::new(AtomicUsize::new(0));
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let upstream: Arc<str> = Arc::from(upstream.trim_end_matches('/'));
        let count = forwarded.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, client, upstream, count) = (
                    acceptor.clone(),
                    client.clone(),
                    upstream.clone(),
                    count.clone(),
                );
                tokio::spawn(async move {
                    // A refused handshake simply ends the connection.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        forward(req, client.clone(), upstream.clone(), count.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        HttpsProxy {
            endpoint: format!("https://localhost:{port}"),
            forwarded,
            task,
        }
    }

    /// How many requests were forwarded upstream.
    pub fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::SeqCst)
    }
}

/// `env` (a process environment for moto) with every AWS endpoint pointed at `endpoint`, and
/// `AWS_CA_BUNDLE` set to `ca_bundle`: the process's calls then go through the proxy and are
/// counted.
pub fn through(
    env: Vec<(String, String)>,
    endpoint: &str,
    ca_bundle: &str,
) -> Vec<(String, String)> {
    env.into_iter()
        .filter(|(k, _)| k != "AWS_CA_BUNDLE")
        .map(|(k, v)| {
            if k.starts_with("AWS_ENDPOINT_URL") {
                (k, endpoint.to_string())
            } else {
                (k, v)
            }
        })
        .chain([("AWS_CA_BUNDLE".to_string(), ca_bundle.to_string())])
        .collect()
}

impl Drop for HttpsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    req: Request<Incoming>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: Arc<str>,
    count: Arc<AtomicUsize>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("{upstream}{path}").parse().expect("upstream URI");
    count.fetch_add(1, Ordering::SeqCst);
    let answer = match client
        .request(Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Response::from_parts(parts, Full::new(body))
        }
        Err(e) => {
            let mut resp = Response::new(Full::new(Bytes::from(format!("upstream: {e}"))));
            *resp.status_mut() = hyper::StatusCode::BAD_GATEWAY;
            resp
        }
    };
    Ok(answer)
}
