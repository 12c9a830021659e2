//! A function's real binary, driven through the Lambda Runtime API.
//!
//! The test serves the Runtime API (`/2018-06-01/runtime/invocation/next`, `…/{id}/response`,
//! `…/{id}/error`, `…/init/error`) on a free loopback port and starts the binary with
//! `AWS_LAMBDA_RUNTIME_API` pointing at it, with the environment Lambda gives a
//! `provided.al2023` function. Each [`Lambda::invoke`] queues one event; the binary's long
//! poll on `next` receives it with the request-id, deadline, function-ARN and trace headers.
//! Everything the binary writes to stdout and stderr is captured ([`Lambda::logs`]).

use std::collections::HashMap;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot, watch};

/// An error the function reported (or the runtime's own, when the process died).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct FunctionError {
    #[serde(rename = "errorType", default)]
    pub error_type: String,
    #[serde(rename = "errorMessage", default)]
    pub error_message: String,
}

impl std::fmt::Display for FunctionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type, self.error_message)
    }
}

type Reply = Result<Value, FunctionError>;

struct Invocation {
    id: String,
    deadline_ms: u128,
    body: Value,
}

struct Api {
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    first_next: OnceLock<Instant>,
    init_error: Mutex<Option<FunctionError>>,
    function_arn: String,
}

/// A function binary running under the bench's Runtime API; killed when dropped.
pub struct Lambda {
    /// The binary's name (`config-redeploy`, …).
    pub name: String,
    tx: mpsc::UnboundedSender<Invocation>,
    api: Arc<Api>,
    logs: Arc<Mutex<Vec<String>>>,
    exited: watch::Receiver<Option<ExitStatus>>,
    started: Instant,
    pid: Option<u32>,
    kill: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

async fn next(State(api): State<Arc<Api>>) -> impl IntoResponse {
    api.first_next.get_or_init(Instant::now);
    let inv = api.queue.lock().await.recv().await;
    let Some(inv) = inv else {
        return (StatusCode::GONE, HeaderMap::new(), Bytes::new());
    };
    let mut h = HeaderMap::new();
    let hv = |s: &str| HeaderValue::from_str(s).expect("header value");
    h.insert("Lambda-Runtime-Aws-Request-Id", hv(&inv.id));
    h.insert(
        "Lambda-Runtime-Deadline-Ms",
        hv(&inv.deadline_ms.to_string()),
    );
    h.insert("Lambda-Runtime-Invoked-Function-Arn", hv(&api.function_arn));
    h.insert(
        "Lambda-Runtime-Trace-Id",
        hv("Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0"),
    );
    h.insert("Content-Type", hv("application/json"));
    (StatusCode::OK, h, Bytes::from(inv.body.to_string()))
}

fn finish(api: &Api, id: &str, reply: Reply) -> StatusCode {
    match api
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id)
    {
        Some(tx) => {
            let _ = tx.send(reply);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn response(State(api): State<Arc<Api>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    finish(&api, &id, Ok(value))
}

fn parse_error(body: &[u8]) -> FunctionError {
    serde_json::from_slice(body).unwrap_or_else(|_| FunctionError {
        error_type: "Unparseable".into(),
        error_message: String::from_utf8_lossy(body).into(),
    })
}

async fn error(State(api): State<Arc<Api>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    finish(&api, &id, Err(parse_error(&body)))
}

async fn init_error(State(api): State<Arc<Api>>, body: Bytes) -> StatusCode {
    *api.init_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(parse_error(&body));
    StatusCode::ACCEPTED
}

impl Lambda {
    /// Starts the workspace binary `name` (built on first use) with `env` added to the
    /// Lambda environment. `AWS_LAMBDA_LOG_FORMAT` defaults to `JSON`, as the template sets.
    pub async fn start<I, K, V>(name: &str, env: I) -> Lambda
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let program = crate::paths::binary(name);
        Self::start_program(name, &program, env).await
    }

    /// Like [`Lambda::start`], for any executable (a hello-world reference, a release build).
    pub async fn start_program<I, K, V>(name: &str, program: &std::path::Path, env: I) -> Lambda
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self::launch(name, program, &[], env, None).await
    }

    /// Like [`Lambda::start_program`], with arguments: any runtime that speaks the Runtime API,
    /// e.g. `python -m awslambdaric module.handler` (a Python runtime interface client).
    pub async fn start_command<I, K, V>(
        name: &str,
        program: &std::path::Path,
        args: &[String],
        env: I,
    ) -> Lambda
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self::launch(name, program, args, env, None).await
    }

    /// Like [`Lambda::start`], with the process running as user `uid` and group `gid` (the
    /// test runs as root; a function sees only what that user may read).
    pub async fn start_as<I, K, V>(name: &str, env: I, uid: u32, gid: u32) -> Lambda
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let program = crate::paths::binary(name);
        Self::launch(name, &program, &[], env, Some((uid, gid))).await
    }

    async fn launch<I, K, V>(
        name: &str,
        program: &std::path::Path,
        args: &[String],
        env: I,
        user: Option<(u32, u32)>,
    ) -> Lambda
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let api = Arc::new(Api {
            queue: tokio::sync::Mutex::new(rx),
            pending: Mutex::new(HashMap::new()),
            first_next: OnceLock::new(),
            init_error: Mutex::new(None),
            function_arn: format!(
                "arn:aws:lambda:{}:{}:function:{name}",
                crate::moto::REGION,
                crate::moto::ACCOUNT
            ),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind runtime api");
        let addr = listener.local_addr().expect("runtime api addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("LAMBDA_TASK_ROOT", "/var/task")
            .env("_HANDLER", "bootstrap")
            .envs(env.into_iter().map(|(k, v)| (k.into(), v.into())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        crate::die_with_parent(&mut cmd);
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let pid = child.id();

        let logs = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = logs.clone();
            let tag = name.to_string();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("[{tag}] {line}");
                    logs.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }

        let (exit_tx, exited) = watch::channel(None);
        let (kill, kill_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            tokio::select! {
                status = child.wait() => { let _ = exit_tx.send(status.ok()); }
                _ = kill_rx => { let _ = child.kill().await; let _ = exit_tx.send(child.wait().await.ok()); }
            }
        });

        Lambda {
            name: name.to_string(),
            tx,
            api,
            logs,
            exited,
            started,
            pid,
            kill: Some(kill),
            server,
        }
    }

    /// Invokes the function with `event` and a 60 s deadline.
    pub async fn invoke(&self, event: Value) -> Result<Value, FunctionError> {
        self.invoke_with_deadline(event, Duration::from_secs(60))
            .await
    }

    /// Invokes the function with `event`; the function sees a deadline `deadline` from now.
    ///
    /// Waits for the reply up to the deadline plus 30 s. A process that exits first gives
    /// `Runtime.ExitError`, as Lambda reports it.
    pub async fn invoke_with_deadline(
        &self,
        event: Value,
        deadline: Duration,
    ) -> Result<Value, FunctionError> {
        let id = uuid::Uuid::new_v4().to_string();
        let deadline_ms = (SystemTime::now() + deadline)
            .duration_since(UNIX_EPOCH)
            .expect("clock after epoch")
            .as_millis();
        let (reply_tx, reply_rx) = oneshot::channel();
        self.api
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), reply_tx);
        self.tx
            .send(Invocation {
                id,
                deadline_ms,
                body: event,
            })
            .expect("runtime api queue");
        let mut exited = self.exited.clone();
        let exit = async move {
            let status = exited
                .wait_for(|s| s.is_some())
                .await
                .map(|s| *s)
                .ok()
                .flatten();
            // Let a last response posted just before exit win the race.
            tokio::time::sleep(Duration::from_millis(200)).await;
            status
        };
        tokio::select! {
            reply = reply_rx => reply.unwrap_or_else(|_| Err(FunctionError {
                error_type: "Bench.Dropped".into(),
                error_message: "the invocation was dropped".into(),
            })),
            status = exit => {
                let init = self.api.init_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
                Err(init.unwrap_or(FunctionError {
                    error_type: "Runtime.ExitError".into(),
                    error_message: format!("RequestId: process exited: {status:?}"),
                }))
            }
            _ = tokio::time::sleep(deadline + Duration::from_secs(30)) => Err(FunctionError {
                error_type: "Sandbox.Timedout".into(),
                error_message: format!("no reply within {deadline:?}"),
            }),
        }
    }

    /// Everything the process wrote so far, one line per entry, stdout and stderr interleaved.
    pub fn logs(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// Time from process start to its first `next` request (the init phase), once reached.
    pub fn init_duration(&self) -> Option<Duration> {
        self.api
            .first_next
            .get()
            .map(|t| t.duration_since(self.started))
    }

    /// Waits until the process has asked for its first event (init done), up to `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(d) = self.init_duration() {
                return Some(d);
            }
            if self.exited.borrow().is_some() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        None
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The exit status, once the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exited.borrow()
    }

    /// Kills the process (as Lambda does when it recycles an environment) and waits for it.
    pub async fn stop(mut self) -> Option<ExitStatus> {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        let mut exited = self.exited.clone();
        exited.wait_for(|s| s.is_some()).await.ok().and_then(|s| *s)
    }
}

impl Drop for Lambda {
    fn drop(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        self.server.abort();
    }
}
