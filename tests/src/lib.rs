//! The bench: real peers for the integration tests.
//!
//! - [`Moto`]: the AWS APIs, in a `moto_server` started for the test on a free loopback port;
//! - [`MariaDb`]: a throwaway MariaDB with TLS (its own CA and server certificate);
//! - [`Lambda`]: a function's real binary, driven through a Lambda Runtime API served by
//!   the test (next / response / error, request-id and deadline headers), as Lambda runs it;
//! - [`https_proxy::HttpsProxy`]: an HTTPS front (a test CA's certificate) for a plain-HTTP peer;
//! - [`events`]: the sample events in `events/`, the ones `sam local invoke -e` takes.
//!
//! Every peer stops when its handle is dropped. Nothing listens beyond 127.0.0.1.
//!
//! ```no_run
//! # async fn demo() {
//! use wikiops_tests::{Lambda, Moto, events};
//! let moto = Moto::start().await;
//! let lambda = Lambda::start("config-redeploy", moto.env().into_iter().chain([
//!     ("CONFIG_BUCKET".to_string(), "wiki-config".to_string()),
//! ])).await;
//! let out = lambda.invoke(events::load("s3-put")).await;
//! # }
//! ```

pub mod env_reads;
pub mod events;
pub mod http;
pub mod https_proxy;
pub mod lambda;
pub mod listener;
pub mod mariadb;
pub mod measure;
pub mod moto;
pub mod paths;
pub mod rds_ca;
pub mod taskdef;
pub mod tls;
pub mod wiki;

pub use lambda::{FunctionError, Lambda};
pub use mariadb::MariaDb;
pub use moto::Moto;

/// Makes `cmd`'s process die with the test process: a test killed by a timeout must not
/// leave its servers running (Linux `PR_SET_PDEATHSIG`).
pub fn die_with_parent(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    l.local_addr().expect("local addr").port()
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`, or panics after `timeout`.
pub async fn wait_for_port(port: u16, timeout: std::time::Duration, what: &str) {
    let start = std::time::Instant::now();
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{what} did not listen on 127.0.0.1:{port} within {timeout:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
