//! One actor per managed server: a task that alone owns the child, takes commands over a
//! channel, and publishes its state on a `watch` (as llama-swap's `process_command.go`).
//!
//! It knows no particular server. A [`LaunchSpec`] says what to run (argument vector, port,
//! health URL, lines that hint readiness, startup deadline, recovery policy); the actor owns
//! spawn, readiness, output lines, stop, kill, reap, restarts with backoff and the hang watchdog.
//!
//! States (`ServerState`) and the transitions it makes, each announced by exactly one
//! [`ServerEvent::State`]:
//!
//! ```text
//! Stopped|Crashed → Starting → Running → Stopping → Stopped
//!                   Starting → Stopped                (the start failed)
//!                   Starting → Stopping → Stopped     (stop() cancelled the start)
//!                              Running → Crashed      (exit, or hang)
//!                                        Crashed → Restarting → Running | Crashed   (automatic)
//!                                        Crashed → Stopping → Stopped
//!                                     Restarting → Stopping → Stopped
//!                   Running → Stopping → Restarting → Running | Stopped            (restart())
//!                         Stopped|Crashed → Restarting → Running | Stopped          (restart())
//! ```
//!
//! A stop that arrives while a start or restart is under way cancels it at once (the child's
//! tree is killed); a start that arrives while a stop is under way waits for it, then starts.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::Instrument;

use super::log::ServerLog;
use super::memory::TreeMemory;
use super::{ExitInfo, ProcessSpec, Supervised};
use crate::error::{Coded, ErrorCode};
use crate::events::EventSink;
use crate::sync::lock;

/// Readiness comes from the backend's own output: a ready hint prompts a health check, repeated
/// every `HINTED_POLL` for `HINT_WINDOW` (llama-server logs "model loaded" a few milliseconds
/// before `/health` says 200). Polling is otherwise only the fallback, sparse because on a small
/// machine a poll slows the load it waits for: the first check after `FIRST_POLL`, then each
/// interval half again as long, up to `MAX_POLL`.
const FIRST_POLL: Duration = Duration::from_millis(100);
const MAX_POLL: Duration = Duration::from_millis(500);
const HINTED_POLL: Duration = Duration::from_millis(5);
const HINT_WINDOW: Duration = Duration::from_secs(1);
/// How long one readiness check may take.
const READY_CHECK: Duration = Duration::from_millis(250);
/// A cancelled start's child gets this long to exit on SIGTERM before SIGKILL.
const CANCEL_GRACE: Duration = Duration::from_millis(100);
/// A hung child gets this long.
const HANG_GRACE: Duration = Duration::from_millis(200);
/// Output lines kept with a crash or a failed start.
pub const LOG_TAIL: usize = 20;

/// Where a managed server is in its lifecycle. `restarting`: an automatic restart after a crash
/// (backoff, then the new process loading), or {@link LlamaServerManager.restart}.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(rename_all = "lowercase")]
#[ts(rename = "ServerStatus")]
pub enum ServerState {
    #[default]
    Stopped,
    Starting,
    Running,
    Stopping,
    Crashed,
    Restarting,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Stopped => "stopped",
            ServerState::Starting => "starting",
            ServerState::Running => "running",
            ServerState::Stopping => "stopping",
            ServerState::Crashed => "crashed",
            ServerState::Restarting => "restarting",
        }
    }
}

impl std::fmt::Display for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The seed's `HealthStatus`: `ok` while the server runs and answers (for llama-server, its last
/// watchdog check passed), `error` while checks fail or after a crash, `unknown` when it does not
/// run. {@link LlamaServerManager.isHealthy} and {@link DiffusionServerManager.isHealthy} ask now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Error,
    Unknown,
}

impl HealthStatus {
    pub fn of(status: ServerState, failing_checks: u32) -> HealthStatus {
        match status {
            ServerState::Running if failing_checks > 0 => HealthStatus::Error,
            ServerState::Running => HealthStatus::Ok,
            ServerState::Crashed => HealthStatus::Error,
            _ => HealthStatus::Unknown,
        }
    }
}

/// One change of a server's status: every change emits exactly one.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "StateChange")]
pub struct Transition {
    pub old: ServerState,
    pub new: ServerState,
    /// Why: `start()`, `ready in 245 ms`, `llama-server stopped unexpectedly (signal 9)`, …
    pub reason: String,
    /// `new` is `crashed` and an automatic restart follows (Node stays alive for it).
    pub will_restart: bool,
}

/// What keeps a running server alive: restarts after crashes, and the hang watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
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

impl RecoveryPolicy {
    /// No restarts and no watchdog: a server that is started on demand (the resident sd-server).
    pub const NONE: RecoveryPolicy = RecoveryPolicy {
        auto_restart: false,
        max_restarts: 0,
        health_check_interval_ms: 0,
        hang_after_failures: 0,
    };
}

/// Delay before restart number `n` (0-based): 500 ms, doubling, at most 10 s.
pub fn restart_backoff(n: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << n.min(5))).min(Duration::from_secs(10))
}

/// What to run, and how to tell that it is ready and alive.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Set in the child's environment, on top of ours.
    pub env: Vec<(String, String)>,
    /// Our variables the child must not see.
    pub unset: fn(&str) -> bool,
    pub port: u16,
    /// A 2xx answer here means ready (while starting) and alive (for the watchdog).
    pub health_url: String,
    /// An output line containing one of these prompts a readiness check at once.
    pub ready_hints: &'static [&'static str],
    /// Sees every output line before the server's log does (a job's progress, say).
    pub on_line: Option<EventSink<String>>,
    pub startup_timeout: Duration,
    /// How long a stop waits after SIGTERM before it kills the tree.
    pub stop_grace: Duration,
    pub recovery: RecoveryPolicy,
}

/// The state and the facts of the current (or last) run, published on every change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub status: ServerState,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub started_at: Option<String>,
    pub load_time_ms: Option<u64>,
    pub error: Option<String>,
    /// Automatic restarts since the last start.
    pub restarts: u32,
    /// Crashed, with an automatic restart to follow.
    pub restart_pending: bool,
}

/// The lifecycle of a managed server, one event per transition. `I` is what a start carries:
/// the actor's [`Snapshot`], or the server's own info once its facade has added what it knows.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerEvent<I> {
    /// Every transition, before the named event it may cause.
    State(Transition),
    Starting,
    Started(I),
    Stopped,
    /// The process ended without stop(), or hung (`hang: true`, then killed): exit code or
    /// signal, and its last output lines.
    Crashed {
        #[serde(flatten)]
        exit: ExitInfo,
        #[serde(rename = "logs")]
        tail: Vec<String>,
        hang: bool,
    },
    /// An automatic restart after a crash succeeded.
    Restarted(I),
    /// Every automatic restart after a crash failed; the server stays crashed.
    RestartFailed {
        attempts: u32,
        error: String,
    },
}

impl<I> ServerEvent<I> {
    /// The same event, with what a start carries made into `J`.
    pub fn map<J>(self, info: impl FnOnce(I) -> J) -> ServerEvent<J> {
        match self {
            ServerEvent::State(t) => ServerEvent::State(t),
            ServerEvent::Starting => ServerEvent::Starting,
            ServerEvent::Started(i) => ServerEvent::Started(info(i)),
            ServerEvent::Stopped => ServerEvent::Stopped,
            ServerEvent::Crashed { exit, tail, hang } => ServerEvent::Crashed { exit, tail, hang },
            ServerEvent::Restarted(i) => ServerEvent::Restarted(info(i)),
            ServerEvent::RestartFailed { attempts, error } => {
                ServerEvent::RestartFailed { attempts, error }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{server} is already {state}")]
    AlreadyRunning {
        server: &'static str,
        state: ServerState,
    },
    #[error("cannot start {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{server} exited during start ({exit}): {}", tail.last().map(String::as_str).unwrap_or(""))]
    ExitedDuringStart {
        server: &'static str,
        exit: ExitInfo,
        tail: Vec<String>,
    },
    #[error("{server} was not ready within {secs} s")]
    Timeout {
        server: &'static str,
        secs: u64,
        tail: Vec<String>,
    },
    #[error("the start of {server} was cancelled by stop()")]
    Cancelled { server: &'static str },
    #[error("{server} was never started")]
    NeverStarted { server: &'static str },
}

impl LaunchError {
    /// The server's last lines, where the error has them.
    pub fn tail(&self) -> &[String] {
        match self {
            LaunchError::ExitedDuringStart { tail, .. } | LaunchError::Timeout { tail, .. } => tail,
            _ => &[],
        }
    }
}

impl Coded for LaunchError {
    fn code(&self) -> ErrorCode {
        match self {
            LaunchError::AlreadyRunning { .. } => ErrorCode::ServerAlreadyRunning,
            LaunchError::Spawn { .. } => ErrorCode::ServerStartFailed,
            LaunchError::ExitedDuringStart { .. } => ErrorCode::ServerExited,
            LaunchError::Timeout { .. } => ErrorCode::ServerStartTimeout,
            LaunchError::Cancelled { .. } => ErrorCode::Cancelled,
            LaunchError::NeverStarted { .. } => ErrorCode::ServerNotRunning,
        }
    }

    fn suggestion(&self) -> Option<String> {
        Some(match self {
            LaunchError::AlreadyRunning { .. } => "Call stop() first, or restart()".into(),
            LaunchError::Spawn { binary, .. } => format!(
                "Check the executable {} (binaries.ensureBinary)",
                binary.display()
            ),
            LaunchError::ExitedDuringStart { .. } => {
                "Read details.logs: a damaged model file or an unsupported option usually shows there".into()
            }
            LaunchError::Timeout { .. } => {
                "Raise startupTimeout for large models, or check details.logs".into()
            }
            LaunchError::Cancelled { .. } => return None,
            LaunchError::NeverStarted { .. } => "Call start(config) first".into(),
        })
    }

    fn details(&self) -> Map<String, Value> {
        let v = match self {
            LaunchError::ExitedDuringStart { exit, tail, .. } => {
                json!({ "exitCode": exit.code, "signal": exit.signal, "logs": tail })
            }
            LaunchError::Timeout { tail, .. } => json!({ "logs": tail }),
            LaunchError::Spawn { binary, .. } => json!({ "binary": binary }),
            LaunchError::AlreadyRunning { state, .. } => json!({ "status": state }),
            LaunchError::Cancelled { .. } | LaunchError::NeverStarted { .. } => json!({}),
        };
        v.as_object().cloned().unwrap_or_default()
    }
}

enum Command {
    Start(Box<LaunchSpec>, Reply),
    Stop(oneshot::Sender<Option<ExitInfo>>),
    Restart(Reply),
}

/// The handle of one server's actor. Dropping it ends the actor and kills its child.
pub struct ServerActor {
    name: &'static str,
    log: Arc<ServerLog>,
    commands: mpsc::UnboundedSender<Command>,
    /// The actor, until the first command spawns it (a constructor may run outside tokio).
    idle: Mutex<Option<Actor>>,
    state: watch::Receiver<Snapshot>,
    /// The current or last child: its own output for error tails, its pid for memory.
    child: Arc<Mutex<Option<Arc<Supervised>>>>,
    /// Health checks failed in a row by the running child (the watchdog's count).
    failing_checks: Arc<AtomicU32>,
}

impl ServerActor {
    pub fn new(
        name: &'static str,
        log: Arc<ServerLog>,
        events: Option<EventSink<ServerEvent<Snapshot>>>,
    ) -> Self {
        let (commands, inbox) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(Snapshot::default());
        let child = Arc::new(Mutex::new(None));
        let failing_checks = Arc::new(AtomicU32::new(0));
        let actor = Actor {
            name,
            log: log.clone(),
            inbox,
            state: state_tx,
            events,
            child: child.clone(),
            failing_checks: failing_checks.clone(),
            last: None,
        };
        ServerActor {
            name,
            log,
            commands,
            idle: Mutex::new(Some(actor)),
            state,
            child,
            failing_checks,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn snapshot(&self) -> Snapshot {
        self.state.borrow().clone()
    }

    pub fn status(&self) -> ServerState {
        self.state.borrow().status
    }

    /// The health of a server in `status` (the current one's failed checks counted).
    pub fn health(&self, status: ServerState) -> HealthStatus {
        HealthStatus::of(status, self.failing_checks.load(Ordering::Relaxed))
    }

    /// Every published snapshot, for whoever follows the server's state (the LLM gateway).
    pub fn watch(&self) -> watch::Receiver<Snapshot> {
        self.state.clone()
    }

    pub fn log(&self) -> &Arc<ServerLog> {
        &self.log
    }

    /// The last `n` lines the current (or last) child printed, without the library's lines.
    pub fn tail(&self, n: usize) -> Vec<String> {
        lock(&self.child)
            .as_ref()
            .map(|c| c.logs.last(n))
            .unwrap_or_default()
    }

    /// Starts the server and resolves once it is ready. Refused while it starts, runs or
    /// restarts; waits for a stop under way, then starts.
    pub async fn start(&self, spec: LaunchSpec) -> Result<Snapshot, LaunchError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Start(Box::new(spec), reply));
        answer
            .await
            .unwrap_or(Err(LaunchError::Cancelled { server: self.name }))
    }

    /// Stops the server if it runs, then starts it again as it was last started (same
    /// arguments, same port), through `Restarting`: the `Restarted` event follows, as after an
    /// automatic restart.
    pub async fn restart(&self) -> Result<Snapshot, LaunchError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Restart(reply));
        answer
            .await
            .unwrap_or(Err(LaunchError::Cancelled { server: self.name }))
    }

    /// Stops the server (cancelling a start or restart under way) and resolves once its tree
    /// is gone: port and memory free. `None` when there was nothing to stop.
    pub async fn stop(&self) -> Option<ExitInfo> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Stop(reply));
        answer.await.ok().flatten()
    }

    /// Resolves once no stop is under way (at once when none is).
    pub async fn stop_done(&self) {
        let mut state = self.state.clone();
        let _ = state.wait_for(|s| s.status != ServerState::Stopping).await;
    }

    /// Resolves once the server is no longer running (it crashed, or is being stopped).
    pub async fn left_running(&self) {
        let mut state = self.state.clone();
        let _ = state.wait_for(|s| s.status != ServerState::Running).await;
    }

    /// What the running server's process tree uses now; `None` when nothing runs.
    pub async fn memory(&self) -> Option<TreeMemory> {
        let pid = self.snapshot().pid?;
        tokio::task::spawn_blocking(move || super::memory::tree(pid))
            .await
            .ok()
            .flatten()
    }

    fn send(&self, command: Command) {
        if let Some(actor) = lock(&self.idle).take() {
            let span = self.log.span(self.name);
            tokio::spawn(actor.run().instrument(span));
        }
        // The actor lives as long as this handle: the send cannot fail.
        let _ = self.commands.send(command);
    }
}

/// The task's side.
struct Actor {
    name: &'static str,
    log: Arc<ServerLog>,
    inbox: mpsc::UnboundedReceiver<Command>,
    state: watch::Sender<Snapshot>,
    events: Option<EventSink<ServerEvent<Snapshot>>>,
    child: Arc<Mutex<Option<Arc<Supervised>>>>,
    failing_checks: Arc<AtomicU32>,
    /// What the last start that worked ran: `restart()` runs it again.
    last: Option<Box<LaunchSpec>>,
}

/// What the actor holds between commands.
enum Held {
    Nothing,
    Running(Arc<Supervised>, Box<LaunchSpec>),
    /// Crashed and not restarting: the child's exit is kept for `stop()`.
    Crashed(Arc<Supervised>),
}

/// A stop that interrupted work; `None` when the handle was dropped.
struct StopRequest(Option<oneshot::Sender<Option<ExitInfo>>>);

impl StopRequest {
    fn answer(self, exit: Option<ExitInfo>) {
        if let Some(reply) = self.0 {
            let _ = reply.send(exit);
        }
    }
}

enum Interrupt {
    Stop(StopRequest),
    Restart(Reply),
}

/// Why a launch did not reach readiness.
enum NotLaunched {
    Failed(LaunchError),
    /// A stop came first: the tree is gone and the actor is Stopped.
    Cancelled(StopRequest, ExitInfo),
}

type Reply = oneshot::Sender<Result<Snapshot, LaunchError>>;

impl Actor {
    async fn run(mut self) {
        let mut held = Held::Nothing;
        loop {
            held = match held {
                Held::Running(child, spec) => self.running(child, spec).await,
                idle => match self.inbox.recv().await {
                    // The handle is gone: dropping `idle` ends what is left.
                    None => return,
                    Some(Command::Start(spec, reply)) => self.start(spec, reply).await,
                    Some(Command::Restart(reply)) => self.restart_on_request(reply).await,
                    Some(Command::Stop(reply)) => {
                        let exit = match idle {
                            Held::Crashed(child) => {
                                self.set(ServerState::Stopping, "stop()", |_| {});
                                let exit = child.wait().await;
                                self.stopped("stopped after a crash");
                                Some(exit)
                            }
                            _ => None,
                        };
                        let _ = reply.send(exit);
                        Held::Nothing
                    }
                },
            };
        }
    }

    async fn start(&mut self, spec: Box<LaunchSpec>, reply: Reply) -> Held {
        let port = spec.port;
        self.set(ServerState::Starting, "start()", |s| {
            *s = Snapshot {
                status: s.status,
                port: Some(port),
                ..Snapshot::default()
            }
        });
        self.emit(ServerEvent::Starting);
        tracing::info!("starting {} on port {port}", self.name);
        let began = Instant::now();
        match self.launch(&spec).await {
            Ok(child) => {
                let load_time_ms = began.elapsed().as_millis() as u64;
                self.set(
                    ServerState::Running,
                    format!("ready in {load_time_ms} ms"),
                    |s| {
                        s.started_at = Some(crate::clock::iso_now());
                        s.load_time_ms = Some(load_time_ms);
                    },
                );
                tracing::info!("{} ready on port {port} in {load_time_ms} ms", self.name);
                let snapshot = self.state.borrow().clone();
                self.emit(ServerEvent::Started(snapshot.clone()));
                let _ = reply.send(Ok(snapshot));
                self.last = Some(spec.clone());
                Held::Running(child, spec)
            }
            Err(not) => self.not_started(not, reply, "start"),
        }
    }

    /// A start, or a restart that was asked for, that did not reach Running: it ends Stopped
    /// (a failure is announced as `Stopped`), and the caller hears why.
    fn not_started(&self, not: NotLaunched, reply: Reply, what: &str) -> Held {
        match not {
            NotLaunched::Failed(err) => {
                tracing::error!("{} failed to {what}: {err}", self.name);
                let reason = err.to_string();
                self.set(ServerState::Stopped, reason.clone(), |s| {
                    s.pid = None;
                    s.error = Some(reason);
                });
                self.emit(ServerEvent::Stopped);
                let _ = reply.send(Err(err));
            }
            NotLaunched::Cancelled(stop, exit) => {
                let _ = reply.send(Err(LaunchError::Cancelled { server: self.name }));
                stop.answer(Some(exit));
            }
        }
        Held::Nothing
    }

    /// Spawns and waits for readiness; a stop meanwhile kills the tree and moves to Stopped.
    async fn launch(&mut self, spec: &LaunchSpec) -> Result<Arc<Supervised>, NotLaunched> {
        let hint = Arc::new(Notify::new());
        let (log, lines_hint, hints) = (self.log.clone(), hint.clone(), spec.ready_hints);
        let hook = spec.on_line.clone();
        let on_line = EventSink::new(move |line: String| {
            if hints.iter().any(|h| line.contains(h)) {
                lines_hint.notify_one();
            }
            if let Some(hook) = &hook {
                hook.emit(line.clone());
            }
            log.output(&line);
        });
        let process = ProcessSpec {
            program: spec.program.clone(),
            args: spec.args.clone(),
            guarded: false,
            env: spec.env.clone(),
            unset: spec.unset,
        };
        let child = match super::spawn(process, Some(on_line)) {
            Ok(child) => Arc::new(child),
            Err(source) => {
                return Err(NotLaunched::Failed(LaunchError::Spawn {
                    binary: spec.program.clone(),
                    source,
                }));
            }
        };
        *lock(&self.child) = Some(child.clone());
        // A new process has failed no health check yet.
        self.failing_checks.store(0, Ordering::Relaxed);
        self.state.send_modify(|s| s.pid = Some(child.pid));
        let ready = wait_ready(&child, spec, &hint, self.name);
        match self.until_stop(ready).await {
            Ok(Ok(())) => Ok(child),
            Ok(Err(err)) => {
                child.stop(CANCEL_GRACE).await;
                Err(NotLaunched::Failed(err))
            }
            Err(stop) => {
                tracing::info!("{}: stop() cancels the start", self.name);
                self.set(ServerState::Stopping, "stop() cancels the start", |_| {});
                let exit = child.stop(CANCEL_GRACE).await;
                self.stopped(&format!("start cancelled ({exit})"));
                Err(NotLaunched::Cancelled(stop, exit))
            }
        }
    }

    async fn running(&mut self, child: Arc<Supervised>, spec: Box<LaunchSpec>) -> Held {
        let failing = self.failing_checks.clone();
        let interrupt = match self
            .until(watch_health(&child, &spec, &failing), true)
            .await
        {
            Ok(hang) => return self.crashed(child, spec, hang).await,
            Err(interrupt) => interrupt,
        };
        let reason = match interrupt {
            Interrupt::Stop(_) => "stop()",
            Interrupt::Restart(_) => "restart()",
        };
        self.set(ServerState::Stopping, reason, |_| {});
        tracing::info!("stopping {} ({reason})", self.name);
        let exit = child.stop(spec.stop_grace).await;
        tracing::info!("{} stopped ({exit})", self.name);
        match interrupt {
            Interrupt::Restart(reply) => self.relaunch(spec, reply).await,
            Interrupt::Stop(stop) => {
                self.stopped(&format!("stopped ({exit})"));
                stop.answer(Some(exit));
                Held::Nothing
            }
        }
    }

    /// `restart()` while not running: the last spec again, if there is one.
    async fn restart_on_request(&mut self, reply: Reply) -> Held {
        match self.last.clone() {
            Some(spec) => self.relaunch(spec, reply).await,
            None => {
                let _ = reply.send(Err(LaunchError::NeverStarted { server: self.name }));
                Held::Nothing
            }
        }
    }

    /// A restart that was asked for: `Restarting`, then `Running` with a `Restarted` event, or
    /// `Stopped` when it fails (as a start would).
    async fn relaunch(&mut self, spec: Box<LaunchSpec>, reply: Reply) -> Held {
        self.set(ServerState::Restarting, "restart()", |s| {
            s.port = Some(spec.port);
            s.error = None;
        });
        tracing::info!("restarting {} on port {}", self.name, spec.port);
        match self.launch(&spec).await {
            Ok(child) => {
                let snapshot = self.running_again("restarted", false);
                let _ = reply.send(Ok(snapshot));
                Held::Running(child, spec)
            }
            Err(not) => self.not_started(not, reply, "restart"),
        }
    }

    /// Restarting → Running; announces `Restarted` and returns the snapshot.
    fn running_again(&self, reason: &str, after_crash: bool) -> Snapshot {
        self.set(ServerState::Running, reason, |s| {
            s.started_at = Some(crate::clock::iso_now());
            s.error = None;
            if after_crash {
                s.restarts += 1;
            }
        });
        tracing::info!("{} {reason}", self.name);
        let snapshot = self.state.borrow().clone();
        self.emit(ServerEvent::Restarted(snapshot.clone()));
        snapshot
    }

    async fn crashed(&mut self, child: Arc<Supervised>, spec: Box<LaunchSpec>, hang: bool) -> Held {
        let exit = if hang {
            child.stop(HANG_GRACE).await
        } else {
            child.wait().await
        };
        let reason = if hang {
            format!(
                "{} stopped answering {} and was killed",
                self.name, spec.health_url
            )
        } else {
            format!("{} stopped unexpectedly ({exit})", self.name)
        };
        tracing::warn!("{reason}");
        let will_restart = spec.recovery.auto_restart && spec.recovery.max_restarts > 0;
        self.set_crashed(reason, will_restart);
        self.emit(ServerEvent::Crashed {
            exit,
            tail: child.logs.last(LOG_TAIL),
            hang,
        });
        if will_restart {
            self.restart(spec, child).await
        } else {
            Held::Crashed(child)
        }
    }

    /// Restarts with backoff until one succeeds, the attempts run out, or a stop comes.
    async fn restart(&mut self, spec: Box<LaunchSpec>, crashed: Arc<Supervised>) -> Held {
        let attempts = spec.recovery.max_restarts;
        let mut last_error = String::new();
        for attempt in 0..attempts {
            let backoff = restart_backoff(attempt);
            self.set(
                ServerState::Restarting,
                format!("restart {} of {attempts}", attempt + 1),
                |_| {},
            );
            tracing::info!(
                "restarting {} in {} ms (attempt {} of {attempts})",
                self.name,
                backoff.as_millis(),
                attempt + 1
            );
            if let Err(stop) = self.until_stop(tokio::time::sleep(backoff)).await {
                self.set(ServerState::Stopping, "stop() cancels the restart", |_| {});
                self.stopped("restart cancelled");
                stop.answer(crashed.exited());
                return Held::Nothing;
            }
            match self.launch(&spec).await {
                Ok(child) => {
                    self.running_again(&format!("restart {} succeeded", attempt + 1), true);
                    return Held::Running(child, spec);
                }
                Err(NotLaunched::Failed(err)) => {
                    tracing::warn!("restart {} of {} failed: {err}", attempt + 1, self.name);
                    last_error = err.to_string();
                    self.set_crashed(
                        format!("restart {} failed: {err}", attempt + 1),
                        attempt + 1 < attempts,
                    );
                }
                Err(NotLaunched::Cancelled(stop, exit)) => {
                    stop.answer(Some(exit));
                    return Held::Nothing;
                }
            }
        }
        tracing::error!("{} stays crashed: {attempts} restarts failed", self.name);
        self.emit(ServerEvent::RestartFailed {
            attempts,
            error: last_error,
        });
        Held::Crashed(crashed)
    }

    /// Runs `work` while answering commands: a start is refused (the server is busy); a stop,
    /// and where `restartable` a restart, interrupts the work and is returned.
    async fn until<T>(
        &mut self,
        work: impl Future<Output = T>,
        restartable: bool,
    ) -> Result<T, Interrupt> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return Ok(out),
                command = self.inbox.recv() => match command {
                    None => return Err(Interrupt::Stop(StopRequest(None))),
                    Some(Command::Stop(reply)) => return Err(Interrupt::Stop(StopRequest(Some(reply)))),
                    Some(Command::Restart(reply)) if restartable => return Err(Interrupt::Restart(reply)),
                    Some(Command::Start(_, reply) | Command::Restart(reply)) => {
                        let state = self.state.borrow().status;
                        let _ = reply.send(Err(LaunchError::AlreadyRunning { server: self.name, state }));
                    }
                },
            }
        }
    }

    /// [`Self::until`] for work that only a stop interrupts.
    async fn until_stop<T>(&mut self, work: impl Future<Output = T>) -> Result<T, StopRequest> {
        match self.until(work, false).await {
            Ok(out) => Ok(out),
            Err(Interrupt::Stop(stop)) => Err(stop),
            Err(Interrupt::Restart(_)) => unreachable!("restarts are refused here"),
        }
    }

    fn set_crashed(&self, reason: String, will_restart: bool) {
        let error = reason.clone();
        self.transition(ServerState::Crashed, reason, will_restart, |s| {
            s.pid = None;
            s.error = Some(error);
        });
    }

    fn stopped(&self, reason: &str) {
        self.set(ServerState::Stopped, reason, |s| {
            s.pid = None;
            s.port = None;
            s.started_at = None;
        });
        self.emit(ServerEvent::Stopped);
    }

    fn set(&self, new: ServerState, reason: impl Into<String>, f: impl FnOnce(&mut Snapshot)) {
        self.transition(new, reason.into(), false, f);
    }

    /// Publishes the new state, then announces it: a listener that reads the state sees it.
    fn transition(
        &self,
        new: ServerState,
        reason: String,
        will_restart: bool,
        f: impl FnOnce(&mut Snapshot),
    ) {
        if let Some(t) = transition(&self.state, new, reason, will_restart, f) {
            self.emit(ServerEvent::State(t));
        }
    }

    fn emit(&self, event: ServerEvent<Snapshot>) {
        if let Some(events) = &self.events {
            events.emit(event);
        }
    }
}

/// Moves the published state to `new` (and lets `f` record what goes with it), the one way every
/// server's state changes: the actor's for its child, the diffusion server's for itself. The
/// [`Transition`] to announce once the new state is visible; `None` when it did not change.
pub fn transition(
    state: &watch::Sender<Snapshot>,
    new: ServerState,
    reason: String,
    will_restart: bool,
    f: impl FnOnce(&mut Snapshot),
) -> Option<Transition> {
    let mut old = new;
    state.send_modify(|s| {
        old = s.status;
        s.status = new;
        s.restart_pending = will_restart;
        f(s);
    });
    (old != new).then_some(Transition {
        old,
        new,
        reason,
        will_restart,
    })
}

async fn wait_ready(
    child: &Supervised,
    spec: &LaunchSpec,
    hint: &Notify,
    server: &'static str,
) -> Result<(), LaunchError> {
    let deadline = Instant::now() + spec.startup_timeout;
    let mut interval = FIRST_POLL;
    let mut next_poll = Instant::now() + interval;
    let mut hinted_until = None;
    loop {
        let hinted = hinted_until.is_some_and(|until| Instant::now() < until);
        let wake = if hinted {
            Instant::now() + HINTED_POLL
        } else {
            next_poll
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake.min(deadline).into()) => {
                if !hinted {
                    interval = (interval * 3 / 2).min(MAX_POLL);
                    next_poll = Instant::now() + interval;
                }
            }
            _ = hint.notified() => hinted_until = Some(Instant::now() + HINT_WINDOW),
            _ = child.wait() => {}
        }
        if let Some(exit) = child.exited() {
            return Err(LaunchError::ExitedDuringStart {
                server,
                exit,
                tail: child.logs.last(LOG_TAIL),
            });
        }
        // Ready only while it still runs: another process may answer on the port of one
        // that has just died.
        if answers(&spec.health_url, READY_CHECK).await && child.exited().is_none() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LaunchError::Timeout {
                server,
                secs: spec.startup_timeout.as_secs(),
                tail: child.logs.last(LOG_TAIL),
            });
        }
    }
}

/// Resolves with `false` when the process exits, or `true` when it lives but has failed
/// `hang_after_failures` health checks in a row (stopped, deadlocked, swapped to death).
/// `failing` counts the checks failed in a row.
async fn watch_health(child: &Supervised, spec: &LaunchSpec, failing: &AtomicU32) -> bool {
    let policy = &spec.recovery;
    if policy.health_check_interval_ms == 0 || policy.hang_after_failures == 0 {
        child.wait().await;
        return false;
    }
    let interval = Duration::from_millis(policy.health_check_interval_ms);
    let check_timeout = (interval / 2).clamp(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = child.wait() => return false,
            _ = tokio::time::sleep(interval) => {}
        }
        if child.exited().is_some() {
            return false;
        }
        let failures = if answers(&spec.health_url, check_timeout).await {
            failing.store(0, Ordering::Relaxed);
            0
        } else {
            failing.fetch_add(1, Ordering::Relaxed) + 1
        };
        if failures >= policy.hang_after_failures {
            return true;
        }
    }
}

/// `GET url` answered 2xx in time (llama-server answers 503 while loading; refused means not
/// yet listening). A `tcp://host:port` URL (a server that speaks no HTTP) answers when a
/// connection opens.
pub async fn answers(url: &str, timeout: Duration) -> bool {
    if let Some(address) = url.strip_prefix("tcp://") {
        return reachable(address, timeout).await;
    }
    matches!(
        tokio::time::timeout(timeout, crate::http::local_client().get(url).send()).await,
        Ok(Ok(response)) if response.status().is_success()
    )
}

/// A TCP connection to `address` (`host:port`) opens within `timeout`.
pub async fn reachable(address: &str, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await,
        Ok(Ok(_))
    )
}

#[cfg(all(test, unix))]
mod tests;
