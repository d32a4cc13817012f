//! `llamaServer`: llama.cpp's `llama-server` under the supervisor.
//!
//! Start means: a free (or the requested) port, the argument vector, spawn, then `/health`
//! polled every 10 ms, and at once when the log says the model is loaded, until it answers 200;
//! if the process exits first, start fails at once with the end of its output. One event per
//! state change: starting, started, stopped, crashed.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{Coded, ErrorCode};
use crate::events::EventSink;
use crate::process::{self, ExitInfo, ProcessSpec, Supervised};
use crate::sync::lock;

const HEALTH_POLL: Duration = Duration::from_millis(10);
const STOP_GRACE: Duration = Duration::from_secs(5);
const LOG_TAIL: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
    #[error("llama-server is already {0}")]
    AlreadyRunning(&'static str),
    #[error("port {port} on {host} is already in use")]
    PortInUse { host: String, port: u16 },
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("llama-server exited during start ({exit}): {}", tail.last().map(String::as_str).unwrap_or(""))]
    ExitedDuringStart { exit: ExitInfo, tail: Vec<String> },
    #[error("llama-server was not ready within {secs} s")]
    Timeout { secs: u64, tail: Vec<String> },
    #[error("invalid server config: {0}")]
    Invalid(String),
}

impl Coded for LlamaError {
    fn code(&self) -> ErrorCode {
        match self {
            LlamaError::PortInUse { .. } => ErrorCode::PortInUse,
            LlamaError::Invalid(_) => ErrorCode::InvalidArgument,
            _ => ErrorCode::ServerError,
        }
    }

    fn suggestion(&self) -> Option<String> {
        Some(match self {
            LlamaError::AlreadyRunning(_) => "Call stop() first, or restart()".into(),
            LlamaError::PortInUse { .. } => "Choose another port, or port: 'auto' for a free one".into(),
            LlamaError::Spawn { .. } => "Check the llama-server executable (binaries.ensureBinary('llama-server'))".into(),
            LlamaError::ExitedDuringStart { .. } => "Read details.logs: a damaged model file or an unsupported option usually shows there".into(),
            LlamaError::Timeout { .. } => "Raise startupTimeout for large models, or check details.logs".into(),
            LlamaError::Invalid(_) => "Compare the config with LlamaServerConfig in index.d.ts".into(),
        })
    }

    fn details(&self) -> Map<String, Value> {
        let v = match self {
            LlamaError::PortInUse { host, port } => json!({ "host": host, "port": port }),
            LlamaError::ExitedDuringStart { exit, tail } => {
                json!({ "exitCode": exit.code, "signal": exit.signal, "logs": tail })
            }
            LlamaError::Timeout { tail, .. } => json!({ "logs": tail }),
            LlamaError::Spawn { binary, .. } => json!({ "binary": binary }),
            _ => json!({}),
        };
        v.as_object().cloned().unwrap_or_default()
    }
}

/// Everything a start needs, resolved (paths, numbers).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LlamaConfig {
    pub model_id: String,
    pub model_path: PathBuf,
    pub binary: PathBuf,
    /// `None`: a free port.
    pub port: Option<u16>,
    pub host: String,
    pub threads: u32,
    pub context_size: u32,
    pub gpu_layers: u32,
    pub parallel_requests: u32,
    pub flash_attention: Option<String>,
    /// KV-cache element types (`f16`, `q8_0`, …).
    pub cache_type_k: Option<String>,
    pub cache_type_v: Option<String>,
    #[serde(skip)]
    pub api_key: Option<String>,
    pub extra_args: Vec<String>,
    pub startup_timeout_ms: u64,
    pub log_file: Option<PathBuf>,
    pub recovery: RecoveryPolicy,
}

/// The argument vector (no shell ever sees it).
pub fn args(config: &LlamaConfig, port: u16) -> Vec<String> {
    let mut args = vec![
        "--model".into(),
        config.model_path.to_string_lossy().into_owned(),
        "--host".into(),
        config.host.clone(),
        "--port".into(),
        port.to_string(),
        "--threads".into(),
        config.threads.to_string(),
        "--ctx-size".into(),
        config.context_size.to_string(),
        "--n-gpu-layers".into(),
        config.gpu_layers.to_string(),
        "--parallel".into(),
        config.parallel_requests.to_string(),
    ];
    if let Some(fa) = &config.flash_attention {
        args.extend(["--flash-attn".into(), fa.clone()]);
    }
    if let Some(k) = &config.cache_type_k {
        args.extend(["--cache-type-k".into(), k.clone()]);
    }
    if let Some(v) = &config.cache_type_v {
        args.extend(["--cache-type-v".into(), v.clone()]);
    }
    if let Some(key) = &config.api_key {
        args.extend(["--api-key".into(), key.clone()]);
    }
    args.extend(config.extra_args.iter().cloned());
    args
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Stopped,
    Starting,
    Running,
    Stopping,
    Crashed,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Crashed => "crashed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    pub status: State,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub model_id: Option<String>,
    pub started_at: Option<String>,
    pub load_time_ms: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LlamaEvent {
    Starting,
    Started(ServerInfo),
    Stopped,
    /// `hang`: the watchdog killed a process that stopped answering `/health`.
    Crashed {
        exit: ExitInfo,
        tail: Vec<String>,
        hang: bool,
    },
    /// An automatic restart after a crash succeeded.
    Restarted(ServerInfo),
    /// Every automatic restart after a crash failed; the server stays crashed.
    RestartFailed {
        attempts: u32,
        error: String,
    },
    Log(String),
}

/// What keeps a running server alive: restarts after crashes, and the hang watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryPolicy {
    pub auto_restart: bool,
    pub max_restarts: u32,
    /// Milliseconds between watchdog health checks; 0 turns the watchdog off.
    pub health_check_interval_ms: u64,
    /// Failed health checks in a row (with the process alive) that count as a hang.
    pub hang_after_failures: u32,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        RecoveryPolicy {
            auto_restart: false,
            max_restarts: 3,
            health_check_interval_ms: 5000,
            hang_after_failures: 3,
        }
    }
}

/// Delay before restart number `n` (0-based): 500 ms, doubling, at most 10 s.
pub fn restart_backoff(n: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << n.min(5))).min(Duration::from_secs(10))
}

type Launch<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<ServerInfo, LlamaError>> + Send + 'a>,
>;

struct Shared {
    info: Mutex<ServerInfo>,
    child: Mutex<Option<Arc<Supervised>>>,
    config: Mutex<Option<LlamaConfig>>,
    /// Bumped by each launch, so the watcher of an older process never touches a newer one.
    generation: Mutex<u64>,
    events: Option<EventSink<LlamaEvent>>,
    /// Serializes start, stop and automatic restarts.
    op: tokio::sync::Mutex<()>,
}

pub struct LlamaServer {
    shared: Arc<Shared>,
}

impl LlamaServer {
    pub fn new(events: Option<EventSink<LlamaEvent>>) -> Self {
        let info = ServerInfo {
            status: State::Stopped,
            pid: None,
            port: None,
            model_id: None,
            started_at: None,
            load_time_ms: None,
            error: None,
        };
        LlamaServer {
            shared: Arc::new(Shared {
                info: Mutex::new(info),
                child: Mutex::new(None),
                config: Mutex::new(None),
                generation: Mutex::new(0),
                events,
                op: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn info(&self) -> ServerInfo {
        lock(&self.shared.info).clone()
    }

    pub fn config(&self) -> Option<LlamaConfig> {
        lock(&self.shared.config).clone()
    }

    pub fn logs(&self, n: usize) -> Vec<String> {
        lock(&self.shared.child)
            .as_ref()
            .map(|c| c.logs.last(n))
            .unwrap_or_default()
    }

    pub fn clear_logs(&self) {
        if let Some(child) = lock(&self.shared.child).as_ref() {
            child.logs.clear();
        }
    }

    pub async fn is_healthy(&self) -> bool {
        match self.info() {
            ServerInfo {
                status: State::Running,
                port: Some(port),
                ..
            } => {
                let host = lock(&self.shared.config)
                    .as_ref()
                    .map(|c| c.host.clone())
                    .unwrap_or_else(|| "127.0.0.1".into());
                health(&host, port, Duration::from_secs(2)).await
            }
            _ => false,
        }
    }

    pub async fn start(&self, config: LlamaConfig) -> Result<ServerInfo, LlamaError> {
        let _op = self.shared.op.lock().await;
        let status = self.info().status;
        if matches!(status, State::Running | State::Starting) {
            return Err(LlamaError::AlreadyRunning(status.as_str()));
        }
        let port = choose_port(&config.host, config.port)?;
        let info = Shared::launch(&self.shared, config, port).await?;
        self.shared.emit(LlamaEvent::Started(info.clone()));
        Ok(info)
    }

    /// Stops the server and waits until its process is gone (port and memory free). Idempotent.
    pub async fn stop(&self) -> Option<ExitInfo> {
        let _op = self.shared.op.lock().await;
        let child = lock(&self.shared.child).clone()?;
        let was = self.info().status;
        if was == State::Stopped {
            return None;
        }
        // A new generation: the watcher of this process must not take its exit for a crash.
        *lock(&self.shared.generation) += 1;
        self.shared.set(|i| i.status = State::Stopping);
        let exit = child.stop(STOP_GRACE).await;
        if was != State::Crashed {
            self.shared.release_model();
        }
        self.shared.set(|i| {
            i.status = State::Stopped;
            i.pid = None;
        });
        self.shared.emit(LlamaEvent::Stopped);
        Some(exit)
    }
}

impl Shared {
    /// Spawns and waits for health; on success the server is Running and watched.
    // Boxed: `launch` spawns a watcher that may call `launch` again, and only a named future
    // type lets the compiler see that this cycle is Send.
    fn launch(self: &Arc<Self>, config: LlamaConfig, port: u16) -> Launch<'_> {
        Box::pin(async move {
            let generation = {
                let mut g = lock(&self.generation);
                *g += 1;
                *g
            };
            self.set(|i| {
                *i = ServerInfo {
                    status: State::Starting,
                    pid: None,
                    port: Some(port),
                    model_id: Some(config.model_id.clone()),
                    started_at: None,
                    load_time_ms: None,
                    error: None,
                }
            });
            self.emit(LlamaEvent::Starting);
            let began = Instant::now();
            // The ready lines prompt an immediate health check instead of waiting for the next poll.
            let ready_hint = Arc::new(tokio::sync::Notify::new());
            let (events, hint) = (self.events.clone(), ready_hint.clone());
            let on_line = EventSink::new(move |line: String| {
                if line.contains("model loaded") || line.contains("listening on") {
                    hint.notify_one();
                }
                if let Some(events) = &events {
                    events.emit(LlamaEvent::Log(line));
                }
            });
            let spec = ProcessSpec {
                program: config.binary.clone(),
                args: args(&config, port),
                log_file: config.log_file.clone(),
            };
            let child = match process::spawn(spec, Some(on_line)) {
                Ok(child) => Arc::new(child),
                Err(source) => {
                    return Err(self.failed(LlamaError::Spawn {
                        binary: config.binary.clone(),
                        source,
                    }));
                }
            };
            *lock(&self.child) = Some(child.clone());
            self.set(|i| i.pid = Some(child.pid));
            let timeout = Duration::from_millis(config.startup_timeout_ms);
            if let Err(err) = wait_ready(&child, &config.host, port, timeout, &ready_hint).await {
                child.stop(STOP_GRACE).await;
                return Err(self.failed(err));
            }
            let load_time_ms = began.elapsed().as_millis() as u64;
            crate::models::acquire(&config.model_id);
            let policy = config.recovery;
            let host = config.host.clone();
            *lock(&self.config) = Some(config);
            self.set(|i| {
                i.status = State::Running;
                i.started_at = Some(crate::models::iso_now());
                i.load_time_ms = Some(load_time_ms);
            });
            tokio::spawn(self.clone().watch(child, generation, host, port, policy));
            Ok(lock(&self.info).clone())
        })
    }

    /// Waits for the process to exit (or to hang), reports the crash, and restarts it when the
    /// policy says so.
    async fn watch(
        self: Arc<Self>,
        child: Arc<Supervised>,
        generation: u64,
        host: String,
        port: u16,
        policy: RecoveryPolicy,
    ) {
        let hang = watch_health(&child, &host, port, &policy).await;
        let exit = if hang {
            child.stop(Duration::from_millis(200)).await
        } else {
            child.wait().await
        };
        let _op = self.op.lock().await;
        if *lock(&self.generation) != generation || lock(&self.info).status != State::Running {
            return;
        }
        self.set(|i| {
            i.status = State::Crashed;
            i.pid = None;
            i.error = Some(if hang {
                "llama-server stopped answering /health".to_string()
            } else {
                format!("llama-server stopped unexpectedly ({exit})")
            });
        });
        self.release_model();
        self.emit(LlamaEvent::Crashed {
            exit,
            tail: child.logs.last(LOG_TAIL),
            hang,
        });
        if policy.auto_restart {
            drop(_op);
            self.restart_after_crash(generation, port, policy).await;
        }
    }

    async fn restart_after_crash(
        self: &Arc<Self>,
        crashed_generation: u64,
        port: u16,
        policy: RecoveryPolicy,
    ) {
        let mut last_error = String::new();
        for attempt in 0..policy.max_restarts {
            tokio::time::sleep(restart_backoff(attempt)).await;
            let _op = self.op.lock().await;
            // Someone called stop() or start() meanwhile: their word wins.
            if lock(&self.info).status != State::Crashed
                || *lock(&self.generation) < crashed_generation
            {
                return;
            }
            let Some(config) = lock(&self.config).clone() else {
                return;
            };
            match self.launch(config, port).await {
                Ok(info) => {
                    self.emit(LlamaEvent::Restarted(info));
                    return;
                }
                Err(err) => {
                    tracing::warn!("restart {} of llama-server failed: {err}", attempt + 1);
                    self.set(|i| i.status = State::Crashed);
                    last_error = err.to_string();
                }
            }
        }
        self.emit(LlamaEvent::RestartFailed {
            attempts: policy.max_restarts,
            error: last_error,
        });
    }

    fn release_model(&self) {
        if let Some(config) = lock(&self.config).as_ref() {
            crate::models::release(&config.model_id);
        }
    }

    fn failed(&self, err: LlamaError) -> LlamaError {
        self.set(|i| {
            i.status = State::Stopped;
            i.pid = None;
            i.error = Some(err.to_string());
        });
        self.emit(LlamaEvent::Stopped);
        err
    }

    fn set(&self, f: impl FnOnce(&mut ServerInfo)) {
        f(&mut lock(&self.info));
    }

    fn emit(&self, event: LlamaEvent) {
        if let Some(events) = &self.events {
            events.emit(event);
        }
    }
}

/// Resolves with `false` when the process exits, or `true` when it lives but has failed
/// `hang_after_failures` health checks in a row (stopped, deadlocked, swapped to death).
async fn watch_health(child: &Supervised, host: &str, port: u16, policy: &RecoveryPolicy) -> bool {
    if policy.health_check_interval_ms == 0 || policy.hang_after_failures == 0 {
        child.wait().await;
        return false;
    }
    let interval = Duration::from_millis(policy.health_check_interval_ms);
    let mut failures = 0;
    loop {
        tokio::select! {
            _ = child.wait() => return false,
            _ = tokio::time::sleep(interval) => {}
        }
        if child.exited().is_some() {
            return false;
        }
        let check_timeout =
            (interval / 2).clamp(Duration::from_millis(100), Duration::from_secs(2));
        if health(host, port, check_timeout).await {
            failures = 0;
        } else {
            failures += 1;
            if failures >= policy.hang_after_failures {
                return true;
            }
        }
    }
}

/// A fixed port must be free now; `None` takes one the OS hands out.
fn choose_port(host: &str, port: Option<u16>) -> Result<u16, LlamaError> {
    let listener =
        TcpListener::bind((host, port.unwrap_or(0))).map_err(|_| LlamaError::PortInUse {
            host: host.into(),
            port: port.unwrap_or(0),
        })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|_| LlamaError::PortInUse {
            host: host.into(),
            port: port.unwrap_or(0),
        })
}

async fn wait_ready(
    child: &Supervised,
    host: &str,
    port: u16,
    timeout: Duration,
    ready_hint: &tokio::sync::Notify,
) -> Result<(), LlamaError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(exit) = child.exited() {
            return Err(LlamaError::ExitedDuringStart {
                exit,
                tail: child.logs.last(LOG_TAIL),
            });
        }
        if health(host, port, HEALTH_POLL * 4).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LlamaError::Timeout {
                secs: timeout.as_secs(),
                tail: child.logs.last(LOG_TAIL),
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(HEALTH_POLL) => {}
            _ = ready_hint.notified() => {}
        }
    }
}

/// `GET /health` answered 200 (503 means still loading; refused means not yet listening).
async fn health(host: &str, port: u16, timeout: Duration) -> bool {
    let url = format!("{}/health", crate::http::local_base(host, port));
    matches!(
        tokio::time::timeout(timeout, crate::http::local_client().get(&url).send()).await,
        Ok(Ok(response)) if response.status().as_u16() == 200
    )
}

pub mod resolve;

#[cfg(all(test, unix))]
mod tests;
