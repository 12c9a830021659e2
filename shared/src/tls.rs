//! The roots of trust for the SDK's HTTPS client.
//!
//! Every AWS API endpoint presents a certificate that chains to an Amazon Trust Services root,
//! so the functions trust those five roots (embedded from Mozilla's store) instead of loading
//! the platform's whole store: no file reads and no parsing of ~150 certificates at init, and a
//! narrower trust. `AWS_CA_BUNDLE` (a PEM file, as in the AWS CLI) adds roots: an endpoint
//! behind a TLS-inspecting proxy, a local emulator over HTTPS, or the platform store
//! (`/etc/pki/tls/certs/ca-bundle.crt` on Lambda) for endpoints outside Amazon Trust Services.

use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder, proxy::ProxyConfig};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::settings::{Env, SettingsError};

/// Amazon Root CA 1–4 and Starfield Services Root CA G2 (PEM).
pub const AMAZON_TRUST_SERVICES: &[u8] = include_bytes!("../certs/amazon-trust-services.pem");

/// The variable naming an extra PEM bundle to trust.
pub const CA_BUNDLE_VAR: &str = "AWS_CA_BUNDLE";

/// The roots to trust: Amazon Trust Services plus the `AWS_CA_BUNDLE` file, if set.
///
/// Fails (naming the variable, never its value) when the file cannot be read or holds no
/// usable certificate: the SDK would otherwise fail on every connection.
pub fn trust_store(env: &Env) -> Result<TrustStore, SettingsError> {
    let mut store = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(AMAZON_TRUST_SERVICES);
    if let Some(path) = env.optional(CA_BUNDLE_VAR) {
        let pem = std::fs::read(&path).map_err(|e| {
            SettingsError::malformed(
                CA_BUNDLE_VAR,
                format!("cannot read the file ({})", e.kind()),
            )
        })?;
        roots_in(&pem).map_err(|reason| SettingsError::malformed(CA_BUNDLE_VAR, reason))?;
        store = store.with_pem_certificate(pem);
    }
    Ok(store)
}

/// Checks that `pem` holds at least one certificate usable as a root; returns how many.
pub fn roots_in(pem: &[u8]) -> Result<usize, String> {
    let mut roots = rustls::RootCertStore::empty();
    for (i, der) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let der = der.map_err(|e| format!("certificate {} is not valid PEM: {e}", i + 1))?;
        roots
            .add(der)
            .map_err(|e| format!("certificate {} is not a usable root: {e}", i + 1))?;
    }
    match roots.len() {
        0 => Err("the file holds no PEM certificate".to_string()),
        n => Ok(n),
    }
}

/// The SDK's default HTTPS client (hyper 1, rustls with aws-lc, proxy settings from the
/// environment) with [`trust_store`]'s roots.
pub fn https_client(env: &Env) -> Result<SharedHttpClient, SettingsError> {
    let context = TlsContext::builder()
        .with_trust_store(trust_store(env)?)
        .build()
        .map_err(|e| SettingsError::malformed(CA_BUNDLE_VAR, e))?;
    Ok(
        Builder::new().build_with_connector_fn(move |settings, components| {
            let mut builder = ConnectorBuilder::default()
                .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
                .tls_context(context.clone());
            builder.set_connector_settings(settings.cloned());
            if let Some(components) = components {
                builder.set_sleep_impl(components.sleep_impl());
            }
            builder.set_proxy_config(Some(ProxyConfig::from_env()));
            builder.build()
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_roots_are_the_five_amazon_trust_services_roots() {
        assert_eq!(roots_in(AMAZON_TRUST_SERVICES), Ok(5));
    }

    #[test]
    fn bundle_without_certificates_is_refused() {
        assert!(roots_in(b"").unwrap_err().contains("no PEM certificate"));
        assert!(roots_in(b"not a certificate\n").is_err());
    }

    #[test]
    fn garbage_inside_a_pem_block_is_refused() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(roots_in(pem).unwrap_err().contains("certificate 1"));
    }

    #[test]
    fn unreadable_bundle_names_the_variable_not_the_path() {
        let env = Env::from_pairs([(CA_BUNDLE_VAR, "/nonexistent/secret-path.pem")]);
        let err = trust_store(&env).unwrap_err().to_string();
        assert!(err.contains(CA_BUNDLE_VAR), "{err}");
        assert!(!err.contains("secret-path"), "{err}");
    }

    #[test]
    fn bundle_of_embedded_roots_is_accepted() {
        let dir = std::env::temp_dir().join(format!("wikiops-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bundle.pem");
        std::fs::write(&path, AMAZON_TRUST_SERVICES).unwrap();
        let env = Env::from_pairs([(CA_BUNDLE_VAR, path.to_str().unwrap())]);
        assert!(trust_store(&env).is_ok());
        assert!(https_client(&env).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
