//! Which CA a database's certificate needs, for the `TlsUntrusted` message.
//!
//! When verification fails with an unknown issuer, the driver's error does not say which CA
//! was missing. [`needed_ca`] opens a second connection that sends no credentials: the MySQL
//! greeting, an SSLRequest, then a TLS handshake that records the presented chain and stops.
//! [`issuer`] (pure) reads the issuer name out of a certificate.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::db::Endpoint;

/// Reads one DER element at the start of `der`: (tag, contents, rest).
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, b| (a << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The issuer name of a DER certificate, as `CN=…, OU=…, O=…, C=…` (the attributes it has).
pub fn issuer(cert: &[u8]) -> Option<String> {
    let (_, cert, _) = element(cert)?;
    let (_, tbs, _) = element(cert)?;
    let mut rest = tbs;
    let (tag, _, after) = element(rest)?;
    if tag == 0xa0 {
        rest = after; // explicit version
    }
    let (_, _, rest) = element(rest)?; // serial number
    let (_, _, rest) = element(rest)?; // signature algorithm
    let (_, mut name, _) = element(rest)?;
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (_, set, next) = element(name)?;
        name = next;
        let (_, attr, _) = element(set)?;
        let (_, oid, value) = element(attr)?;
        let (_, value, _) = element(value)?;
        let key = match oid {
            [0x55, 0x04, 0x03] => "CN",
            [0x55, 0x04, 0x0b] => "OU",
            [0x55, 0x04, 0x0a] => "O",
            [0x55, 0x04, 0x06] => "C",
            _ => continue,
        };
        parts.push(format!("{key}={}", String::from_utf8_lossy(value)));
    }
    parts.reverse();
    Some(parts.join(", "))
}

type Signature = Result<HandshakeSignatureValid, rustls::Error>;

const NOT_VERIFIED: Signature = Err(rustls::Error::HandshakeNotComplete);

/// Records the presented chain and refuses it.
#[derive(Debug)]
struct Recorder {
    chain: Mutex<Vec<Vec<u8>>>,
    schemes: Vec<rustls::SignatureScheme>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut chain) = self.chain.lock() {
            chain.push(end_entity.to_vec());
            chain.extend(intermediates.iter().map(|c| c.to_vec()));
        }
        Err(rustls::Error::General("chain recorded".into()))
    }

    // Never reached: the handshake stops at the certificate.
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        NOT_VERIFIED
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Signature {
        NOT_VERIFIED
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes.clone()
    }
}

/// The SSLRequest packet (sequence 1): CLIENT_SSL with the 4.1 protocol, no credentials.
fn ssl_request() -> Vec<u8> {
    // LONG_PASSWORD | PROTOCOL_41 | SSL | SECURE_CONNECTION | PLUGIN_AUTH
    let caps: u32 = 0x0001 | 0x0200 | 0x0800 | 0x8000 | 0x0008_0000;
    let mut p = vec![32, 0, 0, 1];
    p.extend_from_slice(&caps.to_le_bytes());
    p.extend_from_slice(&(16u32 << 20).to_le_bytes());
    p.push(45); // utf8mb4
    p.extend_from_slice(&[0; 23]);
    p
}

/// The issuer of the topmost certificate the server presents: the CA it needs trusted.
/// `None` when the probe fails for any reason (it only improves a message).
pub async fn needed_ca(endpoint: &Endpoint, timeout: Duration) -> Option<String> {
    tokio::time::timeout(timeout, probe(endpoint)).await.ok()?
}

async fn probe(endpoint: &Endpoint) -> Option<String> {
    let mut tcp = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .ok()?;
    let mut header = [0u8; 4];
    tcp.read_exact(&mut header).await.ok()?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut greeting = vec![0u8; len];
    tcp.read_exact(&mut greeting).await.ok()?;
    if greeting.first() != Some(&10) {
        return None; // an error packet, not a protocol-10 greeting
    }
    tcp.write_all(&ssl_request()).await.ok()?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let recorder = Arc::new(Recorder {
        chain: Mutex::new(Vec::new()),
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    });
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(endpoint.host.clone()).ok()?;
    let _ = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    let chain = recorder.chain.lock().ok()?;
    issuer(chain.last()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn reads_the_issuer_of_an_rds_ca() {
        let first = CertificateDer::pem_slice_iter(crate::db::RDS_CA_BUNDLE)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            issuer(&first).unwrap(),
            "CN=Amazon RDS af-south-1 Root CA, OU=Amazon RDS, O=Amazon Web Services, Inc., C=US"
        );
        assert_eq!(issuer(b"\x30\x03\x02\x01"), None);
        assert_eq!(issuer(&[]), None);
    }

    #[test]
    fn the_ssl_request_is_a_32_byte_packet_without_credentials() {
        let p = ssl_request();
        assert_eq!(p.len(), 36);
        assert_eq!(&p[..4], &[32, 0, 0, 1]);
        assert_ne!(u32::from_le_bytes([p[4], p[5], p[6], p[7]]) & 0x0800, 0);
    }
}
