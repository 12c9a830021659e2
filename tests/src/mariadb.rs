//! A throwaway MariaDB with TLS on a free loopback port.
//!
//! `mariadb-install-db` runs once per target directory into a template datadir (about 4 s);
//! each server copies it, gets a CA and server certificate made by the test, listens on
//! 127.0.0.1 with its own socket, and has an admin account (`admin`, all privileges with
//! grant option) that stands in for the RDS master user.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mysql_async::{Conn, OptsBuilder, SslOpts};
use tokio::process::{Child, Command};

use crate::tls::Ca;

/// A running MariaDB; stopped and deleted when dropped.
pub struct MariaDb {
    pub port: u16,
    /// The admin (master) user name and password.
    pub admin_user: String,
    pub admin_password: String,
    /// PEM of the CA that signed the server certificate.
    pub ca_pem: String,
    /// Path of a file holding [`Self::ca_pem`] (what `DB_CA_BUNDLE` points at).
    pub ca_path: PathBuf,
    dir: tempfile::TempDir,
    _child: Child,
}

fn find(program: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(program)
}

/// Installs the template datadir once (under a file lock: tests run in parallel processes).
fn template_datadir() -> PathBuf {
    let base = crate::paths::bench_dir();
    let template = base.join("mariadb-template");
    let lock = std::fs::File::create(base.join("mariadb-template.lock")).expect("lock file");
    lock.lock().expect("lock template");
    if !template.join("mysql").exists() {
        let tmp = base.join("mariadb-template.tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        let out = std::process::Command::new(find("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", tmp.display()))
            .args([
                "--user=root",
                "--skip-test-db",
                "--auth-root-authentication-method=socket",
            ])
            .output()
            .expect("run mariadb-install-db (is mariadb-server installed?)");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&tmp, &template).expect("publish template datadir");
    }
    template
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy file");
        }
    }
}

impl MariaDb {
    /// Starts a server with TLS and waits until the admin user can log in over TLS.
    pub async fn start() -> MariaDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let datadir = dir.path().join("data");
        copy_dir(&template_datadir(), &datadir);

        let ca = Ca::new("wikiops bench CA");
        let leaf = ca.server(&["localhost", "127.0.0.1"]);
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &ca.cert_pem).expect("write ca");
        std::fs::write(dir.path().join("server.pem"), &leaf.cert_pem).expect("write cert");
        std::fs::write(dir.path().join("server-key.pem"), &leaf.key_pem).expect("write key");

        let admin_password = format!("adm-{}", uuid::Uuid::new_v4().simple());
        std::fs::write(
            dir.path().join("init.sql"),
            format!(
                "CREATE USER IF NOT EXISTS 'admin'@'%' IDENTIFIED BY '{admin_password}';\n\
                 GRANT ALL PRIVILEGES ON *.* TO 'admin'@'%' WITH GRANT OPTION;\n\
                 CREATE DATABASE IF NOT EXISTS wiki;\n"
            ),
        )
        .expect("write init.sql");

        let port = crate::free_port();
        let d = dir.path();
        let mut cmd = Command::new(find("mariadbd"));
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--socket={}", d.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--init-file={}", d.join("init.sql").display()))
            .arg(format!("--ssl-ca={}", ca_path.display()))
            .arg(format!("--ssl-cert={}", d.join("server.pem").display()))
            .arg(format!("--ssl-key={}", d.join("server-key.pem").display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=8M",
                "--performance-schema=OFF",
                "--max-connections=200",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = crate::die_with_parent(&mut cmd)
            .spawn()
            .expect("start mariadbd");
        let db = MariaDb {
            port,
            admin_user: "admin".into(),
            admin_password,
            ca_pem: ca.cert_pem.clone(),
            ca_path,
            dir,
            _child: child,
        };
        crate::wait_for_port(port, Duration::from_secs(30), "mariadbd").await;
        // The port opens before the init file has run: retry the admin login briefly.
        let start = std::time::Instant::now();
        loop {
            match db
                .try_connect(&db.admin_user, &db.admin_password.clone())
                .await
            {
                Ok(c) => {
                    let _ = c.disconnect().await;
                    break;
                }
                Err(e) if start.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!(
                    "admin login to the bench MariaDB failed: {e}\n{}",
                    db.error_log()
                ),
            }
        }
        db
    }

    /// TLS options that trust only the bench CA.
    pub fn ssl_opts(&self) -> SslOpts {
        SslOpts::default()
            .with_root_certs(vec![self.ca_pem.as_bytes().to_vec().into()])
            .with_disable_built_in_roots(true)
    }

    /// Connection options for `user` over TLS (verified against the bench CA, host `localhost`).
    pub fn opts(&self, user: &str, password: &str) -> OptsBuilder {
        OptsBuilder::default()
            .ip_or_hostname("localhost")
            .tcp_port(self.port)
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false)
            .ssl_opts(self.ssl_opts())
    }

    /// Logs in as `user` over TLS.
    pub async fn try_connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Conn, mysql_async::Error> {
        Conn::new(self.opts(user, password)).await
    }

    /// An admin connection over TLS.
    pub async fn admin(&self) -> Conn {
        self.try_connect(&self.admin_user, &self.admin_password)
            .await
            .expect("admin login")
    }

    /// The server's error log (for failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// The bench directory of this server (certificates live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
