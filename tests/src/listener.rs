//! Listeners that stand where a database should be: one that only counts who connects and
//! never answers (the server a misdirected client would reach, or a database that accepts
//! connections and then hangs), and a MySQL server that offers no TLS and keeps what each
//! client sends back (whether a login went out in clear).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counts the connections accepted on `127.0.0.1:port` and keeps them open, silent; stops
/// listening (and closes them) when dropped.
pub struct CountingListener {
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingListener {
    /// Listens on a free loopback port.
    pub async fn start() -> CountingListener {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let port = listener.local_addr().expect("local addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                open.push(sock);
            }
        });
        CountingListener {
            port,
            accepted,
            task,
        }
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CountingListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A MySQL server that greets without the CLIENT_SSL capability and keeps the bytes each client
/// sends back within two seconds: a client that requires TLS must send nothing (no login
/// packet); stops listening when dropped.
pub struct PlaintextMySql {
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

/// The server greeting (protocol 10) of [`PlaintextMySql`]: capabilities LONG_PASSWORD,
/// CONNECT_WITH_DB, PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH, and no SSL (0x0800).
fn plaintext_greeting() -> Vec<u8> {
    let caps: u32 = 0x0001 | 0x0008 | 0x0200 | 0x8000 | 0x0008_0000;
    let mut p = vec![10u8];
    p.extend_from_slice(b"8.0.36-fake\0");
    p.extend_from_slice(&7u32.to_le_bytes());
    p.extend_from_slice(b"abcdefgh\0");
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(b"ijklmnopqrst\0");
    p.extend_from_slice(b"mysql_native_password\0");
    let len = (p.len() as u32).to_le_bytes();
    let mut packet = vec![len[0], len[1], len[2], 0];
    packet.extend_from_slice(&p);
    packet
}

impl PlaintextMySql {
    /// Listens on a free loopback port.
    pub async fn start() -> PlaintextMySql {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let port = listener.local_addr().expect("local addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (count, sink) = (accepted.clone(), received.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                if sock.write_all(&plaintext_greeting()).await.is_err() {
                    continue;
                }
                let mut buf = vec![0u8; 4096];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await
                {
                    sink.lock()
                        .expect("not poisoned")
                        .extend_from_slice(&buf[..n]);
                }
            }
        });
        PlaintextMySql {
            port,
            accepted,
            received,
            task,
        }
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Everything clients sent after the greeting.
    pub fn received(&self) -> Vec<u8> {
        self.received.lock().expect("not poisoned").clone()
    }
}

impl Drop for PlaintextMySql {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_each_connection() {
        let l = CountingListener::start().await;
        assert_eq!(l.accepted(), 0);
        for _ in 0..2 {
            drop(
                tokio::net::TcpStream::connect(("127.0.0.1", l.port))
                    .await
                    .unwrap(),
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(l.accepted(), 2);
    }

    #[tokio::test]
    async fn the_plaintext_server_greets_without_tls_and_keeps_the_answer() {
        let server = PlaintextMySql::start().await;
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        let mut head = [0u8; 5];
        c.read_exact(&mut head).await.unwrap();
        assert_eq!(head[4], 10, "protocol 10");
        let greeting = plaintext_greeting();
        let caps =
            u16::from_le_bytes([greeting[4 + 1 + 12 + 4 + 9], greeting[4 + 1 + 12 + 4 + 10]]);
        assert_eq!(caps & 0x0800, 0, "no CLIENT_SSL");
        c.write_all(b"login").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.accepted(), 1);
        assert_eq!(server.received(), b"login");
    }
}
