//! The one `SdkConfig` per process and the clients built from it.
//!
//! `aws-config` honours `AWS_ENDPOINT_URL` and the per-service variants
//! (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_ECS`, …), so the same binary talks to AWS
//! or to a local emulator. S3 emulators also need path-style addressing:
//! `S3_FORCE_PATH_STYLE=true`.

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use std::sync::OnceLock;

use tokio::sync::OnceCell;

use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::error::Error;
use crate::settings::{Env, SettingsError};

/// Loads the SDK configuration from the environment (region, credentials, endpoints, retries),
/// with the HTTPS client of [`crate::tls`] (Amazon Trust Services roots plus `AWS_CA_BUNDLE`).
///
/// Call once per process, in `main`, and build every client from the result.
///
/// Lambda hands a function its credentials and region in the environment. When they are there
/// they are used directly: the default chains would resolve to the same values (the environment
/// comes first in both) but build their other providers first (an STS client for web identity,
/// the IMDS and container clients), which is most of the SDK's start-up work.
pub async fn sdk_config(env: &Env) -> Result<SdkConfig, SettingsError> {
    let http = crate::tls::https_client(env)?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if env_credentials(env) {
        loader = loader.credentials_provider(EnvironmentVariableCredentialsProvider::new());
    }
    if let Some(region) = env.optional("AWS_REGION") {
        loader = loader.region(Region::new(region));
    }
    Ok(loader.load().await)
}

/// Whether the environment holds static credentials (`AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY`, as Lambda sets them).
fn env_credentials(env: &Env) -> bool {
    env.optional("AWS_ACCESS_KEY_ID").is_some() && env.optional("AWS_SECRET_ACCESS_KEY").is_some()
}

/// A set of clients (`C`) set up on the first invocation rather than in the init phase: the
/// SDK configuration, TLS context and endpoint rules are work the first request can do, so init
/// stays close to a bare `lambda_runtime` function's.
///
/// A failed set-up (an unusable setting) is that invocation's error, with its `errorType`, and
/// is tried again on the next one.
pub struct DeferredClients<C> {
    build: Box<Build<C>>,
    ready: OnceCell<C>,
}

type Build<C> = dyn Fn(&Env, &SdkConfig) -> Result<C, Error> + Send + Sync;

impl<C> DeferredClients<C> {
    /// Clients that `build` makes, given the process environment and the one [`sdk_config`].
    pub fn new(
        build: impl Fn(&Env, &SdkConfig) -> Result<C, Error> + Send + Sync + 'static,
    ) -> Self {
        DeferredClients {
            build: Box::new(build),
            ready: OnceCell::new(),
        }
    }

    /// The clients, set up now if this is the first use.
    pub async fn get(&self) -> Result<&C, Error> {
        self.ready.get_or_try_init(|| set_up(&*self.build)).await
    }
}

async fn set_up<C>(build: &Build<C>) -> Result<C, Error> {
    let env = Env::from_process();
    let config = sdk_config(&env).await?;
    build(&env, &config)
}

/// A client built on its first use, for a service a function calls only sometimes (its
/// construction, endpoint rules included, then stays out of the init phase).
pub struct LazyClient<C> {
    config: SdkConfig,
    build: fn(&SdkConfig) -> C,
    client: OnceLock<C>,
}

impl<C> LazyClient<C> {
    /// A client that `build` makes from `config` when first asked for.
    pub fn new(config: &SdkConfig, build: fn(&SdkConfig) -> C) -> Self {
        LazyClient {
            config: config.clone(),
            build,
            client: OnceLock::new(),
        }
    }

    /// A client that is already built (tests: a mocked client).
    pub fn ready(client: C) -> Self {
        LazyClient {
            config: SdkConfig::builder().build(),
            build: |_| unreachable!("a ready client is never rebuilt"),
            client: OnceLock::from(client),
        }
    }

    /// The client, built now if this is the first use.
    pub fn get(&self) -> &C {
        self.client.get_or_init(|| (self.build)(&self.config))
    }

    /// Whether the client has been built.
    pub fn is_built(&self) -> bool {
        self.client.get().is_some()
    }
}

/// An S3 client, path-style when `S3_FORCE_PATH_STYLE` is true.
pub fn s3_client(config: &SdkConfig, env: &Env) -> Result<aws_sdk_s3::Client, SettingsError> {
    let path_style = env.flag("S3_FORCE_PATH_STYLE", false)?;
    let conf = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(path_style)
        .build();
    Ok(aws_sdk_s3::Client::from_conf(conf))
}

/// Converts an SDK timestamp to chrono's UTC time.
pub fn to_utc(t: &aws_smithy_types::DateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// Converts chrono's UTC time to an SDK timestamp.
pub fn from_utc(t: chrono::DateTime<chrono::Utc>) -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from_secs_and_nanos(t.timestamp(), t.timestamp_subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lambda_environment_gives_region_and_credentials_directly() {
        let env = Env::from_pairs([
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "example"),
        ]);
        assert!(env_credentials(&env));
        let conf = sdk_config(&env).await.unwrap();
        assert_eq!(conf.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert!(conf.credentials_provider().is_some());
    }

    #[tokio::test]
    async fn deferred_clients_retry_a_failed_set_up_then_keep_the_result() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let clients =
            DeferredClients::new(move |_, _| match counter.fetch_add(1, Ordering::SeqCst) {
                0 => Err(SettingsError::Missing("EXAMPLE".into()).into()),
                n => Ok(n),
            });
        assert_eq!(clients.get().await.unwrap_err().error_type(), "Settings");
        assert_eq!(*clients.get().await.unwrap(), 1);
        assert_eq!(*clients.get().await.unwrap(), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn lazy_client_is_built_once_on_first_use() {
        let conf = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .build();
        let lazy = LazyClient::new(&conf, aws_sdk_ecs::Client::new);
        assert!(!lazy.is_built());
        let first = lazy.get() as *const _;
        assert!(lazy.is_built());
        assert_eq!(first, lazy.get() as *const _);
        assert!(LazyClient::ready(7).is_built());
    }

    #[test]
    fn half_a_key_pair_leaves_the_default_chain() {
        assert!(!env_credentials(&Env::from_pairs([(
            "AWS_ACCESS_KEY_ID",
            "AKIDEXAMPLE"
        )])));
        assert!(!env_credentials(&Env::from_pairs([(
            "AWS_SECRET_ACCESS_KEY",
            "x"
        )])));
    }
}
