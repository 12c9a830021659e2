//! MySQL 8.4's default authentication, `caching_sha2_password`, with no MySQL 8 server on this
//! machine: a fake server greets as MySQL 8.4 asking for that plugin and checks the scramble the
//! function's login sends (`XOR(SHA256(pw), SHA256(SHA256(SHA256(pw)) || nonce))`, never the
//! password itself), then refuses the login so the error path is checked too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use secret_rotation::db::{self, ConnectOptions, DbError, Endpoint};
use secret_rotation::secret::Password;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NONCE: &[u8; 20] = b"abcdefghijklmnopqrst";

fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut p = vec![len[0], len[1], len[2], seq];
    p.extend_from_slice(payload);
    p
}

fn greeting() -> Vec<u8> {
    // LONG_PASSWORD, CONNECT_WITH_DB, PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH,
    // PLUGIN_AUTH_LENENC_CLIENT_DATA.
    let caps: u32 = 0x0001 | 0x0008 | 0x0200 | 0x8000 | 0x0008_0000 | 0x0020_0000;
    let mut p = vec![10u8];
    p.extend_from_slice(b"8.4.3\0");
    p.extend_from_slice(&7u32.to_le_bytes());
    p.extend_from_slice(&NONCE[..8]);
    p.push(0);
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(255);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(&NONCE[8..]);
    p.push(0);
    p.extend_from_slice(b"caching_sha2_password\0");
    packet(0, &p)
}

/// The scramble caching_sha2_password sends for `password`.
fn expected_scramble(password: &str) -> Vec<u8> {
    let h1 = Sha256::digest(password.as_bytes());
    let h2 = Sha256::digest(h1);
    let mut h = Sha256::new();
    h.update(h2);
    h.update(NONCE);
    let h3 = h.finalize();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

/// Serves one login; returns what the client sent (user, auth response, raw bytes).
async fn fake_mysql_84() -> (u16, Arc<Mutex<Option<(String, Vec<u8>, Vec<u8>)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(None));
    let sink = seen.clone();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        sock.write_all(&greeting()).await.unwrap();
        let mut header = [0u8; 4];
        sock.read_exact(&mut header).await.unwrap();
        let len = usize::from(header[0]) | usize::from(header[1]) << 8;
        let mut body = vec![0u8; len];
        sock.read_exact(&mut body).await.unwrap();
        let rest = &body[32..];
        let end = rest.iter().position(|b| *b == 0).unwrap();
        let user = String::from_utf8_lossy(&rest[..end]).into_owned();
        let n = usize::from(rest[end + 1]);
        let auth = rest[end + 2..end + 2 + n].to_vec();
        *sink.lock().unwrap() = Some((user, auth, body.clone()));
        let mut err = vec![0xff];
        err.extend_from_slice(&1045u16.to_le_bytes());
        err.extend_from_slice(
            b"#28000Access denied for user 'wiki'@'10.0.3.7' (using password: YES)",
        );
        sock.write_all(&packet(header[3] + 1, &err)).await.unwrap();
    });
    (port, seen)
}

#[tokio::test]
async fn logs_in_with_caching_sha2_password_without_sending_the_password() {
    let (port, seen) = fake_mysql_84().await;
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port,
        tls: false,
    };
    let options = ConnectOptions {
        extra_ca_pem: None,
        timeout: Duration::from_secs(5),
    };
    let password = "Rotated_pw.1";
    let result = db::connect(&endpoint, "wiki", &Password::new(password), None, &options).await;
    match result {
        Err(DbError::LoginRefused { code: 1045, .. }) => {}
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("the fake server refuses every login"),
    }
    let (user, auth, raw) = seen.lock().unwrap().clone().expect("a login was sent");
    assert_eq!(user, "wiki");
    assert_eq!(
        auth,
        expected_scramble(password),
        "caching_sha2_password scramble"
    );
    assert!(
        !raw.windows(password.len())
            .any(|w| w == password.as_bytes()),
        "the password went out in clear"
    );
}
