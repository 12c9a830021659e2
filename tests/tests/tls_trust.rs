//! What the functions' HTTPS client trusts (shared::tls), proven through a real binary talking
//! to moto behind an HTTPS front whose certificate comes from a test CA.

use serde_json::json;
use wikiops_tests::https_proxy::HttpsProxy;
use wikiops_tests::tls::Ca;
use wikiops_tests::{Lambda, Moto};

/// moto's environment with every endpoint pointed at `endpoint`, plus `extra`.
fn env_via(moto: &Moto, endpoint: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    moto.env()
        .into_iter()
        .map(|(k, v)| {
            if k.starts_with("AWS_ENDPOINT_URL") {
                (k, endpoint.to_string())
            } else {
                (k, v)
            }
        })
        .chain([
            ("PROBE_CLUSTER".to_string(), "wiki".to_string()),
            ("PROBE_SERVICE".to_string(), "web".to_string()),
        ])
        .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

#[tokio::test]
async fn only_amazon_roots_and_aws_ca_bundle_are_trusted() {
    let moto = Moto::start().await;
    moto.ecs_service("wiki", "web", "wiki-web").await;
    let ca = Ca::new("wikiops test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).expect("write CA");
    let ca_path = ca_path.to_str().expect("utf-8 path");
    let proxy = HttpsProxy::start(&ca, &moto.endpoint).await;

    // The platform store is not consulted: a CA it would trust (SSL_CERT_FILE) is refused,
    // before any request is sent, with one clear error.
    let probe = Lambda::start(
        "shared-probe",
        env_via(&moto, &proxy.endpoint, &[("SSL_CERT_FILE", ca_path)]),
    )
    .await;
    let err = probe.invoke(json!({})).await.unwrap_err();
    assert_eq!(err.error_type, "AwsApi", "{err:?}");
    assert!(
        err.error_message.contains("could not be sent")
            && err.error_message.contains("certificate"),
        "{err:?}"
    );
    assert_eq!(
        proxy.forwarded(),
        0,
        "a request went past a refused handshake"
    );
    drop(probe);

    // AWS_CA_BUNDLE adds the CA: the same call goes through.
    let probe = Lambda::start(
        "shared-probe",
        env_via(&moto, &proxy.endpoint, &[("AWS_CA_BUNDLE", ca_path)]),
    )
    .await;
    let out = probe.invoke(json!({})).await.unwrap();
    assert_eq!(out["outcome"], "started", "{out}");
    assert!(proxy.forwarded() > 0);
}

#[tokio::test]
async fn an_unusable_aws_ca_bundle_is_one_clear_settings_error() {
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("write");
    for (path, reason) in [
        (junk.to_str().expect("utf-8"), "holds no PEM certificate"),
        ("/nonexistent/bundle.pem", "cannot read the file"),
    ] {
        let lambda = Lambda::start(
            "shared-probe",
            env_via(&moto, &moto.endpoint, &[("AWS_CA_BUNDLE", path)]),
        )
        .await;
        // Every invocation answers with the same typed error.
        for _ in 0..2 {
            let err = lambda.invoke(json!({})).await.unwrap_err();
            assert_eq!(err.error_type, "Settings", "{err:?}");
            assert!(
                err.error_message
                    .starts_with("environment variable AWS_CA_BUNDLE is malformed")
                    && err.error_message.contains(reason),
                "{err:?}"
            );
        }
        let logs = lambda.logs();
        assert!(
            !logs.contains(path),
            "the path leaked into the logs: {logs}"
        );
    }
}

/// Every cargo build in the workspace (tests, `scripts/bench`, `sam build`'s Makefile) builds
/// aws-lc to seed its random generator from the kernel alone: the CPU jitter collection it does
/// otherwise costs each cold start tens of milliseconds of CPU before its first TLS handshake
/// (functions/secret-rotation/README.md, Benchmark).
#[test]
fn aws_lc_is_built_without_cpu_jitter_seeding() {
    let config = std::fs::read_to_string(wikiops_tests::paths::root().join(".cargo/config.toml"))
        .expect("read .cargo/config.toml");
    let mut section = "";
    let mut set = false;
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[env]"
            && line.replace(' ', "") == "AWS_LC_SYS_NO_JITTER_ENTROPY=\"1\""
        {
            set = true;
        }
    }
    assert!(
        set,
        ".cargo/config.toml [env] must set AWS_LC_SYS_NO_JITTER_ENTROPY = \"1\""
    );
}
