//! A TCP listener that only counts who connects and never answers: the server a misdirected
//! client would reach, or a database that accepts connections and then hangs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
}
