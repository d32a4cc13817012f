//! `llamaServer`: llama.cpp's `llama-server` under the supervisor's actor.
//!
//! This module says what to run: the argument vector, `/health` as the readiness and watchdog
//! probe (503 while the model loads, 200 when ready), and the lines that say the model is loaded.
//! The actor (`process::actor`) owns the lifecycle: spawn, readiness, stop, crashes, restarts.
//! Here the actor's events become llama's, and a running server holds its model in use. By
//! default the public port is the gateway's (`gateway`), and llama-server listens on an internal
//! loopback port behind it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::error::{Coded, ErrorCode};
use crate::events::EventSink;
use crate::http::HttpServer;
use crate::http::access::{Access, HostCheck};
use crate::launch::{ManagedServer, PortInUse, free_port};
use crate::process::{
    ExitInfo, HealthStatus, LaunchError, LaunchSpec, ServerActor, ServerEvent, ServerLog,
    ServerState, Snapshot, Transition,
};
use crate::sync::lock;
use crate::system::estimate::{
    EstimateSource, KvCache, KvCacheType, MemoryEstimate, compute_bytes,
};
use crate::system::rpc_probe::{ProbeError, RpcWorkerError};
use crate::system::split::Shares;
use gateway::{GatewayConfig, QueueBounds, Traffic};

pub use crate::process::RecoveryPolicy;
pub use crate::process::actor::restart_backoff;

const STOP_GRACE: Duration = Duration::from_secs(5);
/// The largest request the gateway passes on (a chat with images inlined stays well below).
const GATEWAY_MAX_BODY: usize = 32 << 20;
/// Lines that say the model is loaded: a health check follows at once.
const READY_HINTS: &[&str] = &["model loaded", "listening on"];
/// How long an RPC worker may take to accept a connection before a start is refused.
const RPC_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Our variables that llama-server would read in place of what the library sets: every flag's
/// `LLAMA_ARG_*` (the config and `extraArgs` are where flags come from), the API key, and router
/// mode's. Google Cloud's `AIP_MODE` passes (it adds Vertex AI's `/predict` route); its port,
/// `AIP_HTTP_PORT`, which llama-server would listen on instead of ours, is set by [`child_env`].
fn overrides_the_library(name: &str) -> bool {
    name.starts_with("LLAMA_ARG_")
        || matches!(
            name,
            "LLAMA_API_KEY" | "LLAMA_SERVER_ROUTER_PORT" | "LLAMA_SERVER_CHILD_MODE"
        )
}

/// What llama-server's environment gets besides ours (less [`overrides_the_library`]).
fn child_env(config: &LlamaConfig, port: u16) -> Vec<(String, String)> {
    let mut env = vec![
        // ggml would attach gdb on an abort (a lost RPC worker, say) and fill the crash's
        // last lines with a backtrace: the reason, its own line, is what they must show.
        ("GGML_NO_BACKTRACE".into(), "1".into()),
        // Read only with AIP_MODE=PREDICTION, where it would replace `--port`.
        ("AIP_HTTP_PORT".into(), port.to_string()),
    ];
    if on_cpu_only(config) {
        // A Vulkan build would still load every Vulkan driver to look for devices (Mesa's
        // lavapipe alone adds 57 MiB of RSS).
        env.push(("GGML_DISABLE_VULKAN".into(), "1".into()));
    }
    env
}

/// The environment llama.cpp's dry-run tool gets for `config`: llama-server's, less the port.
fn tool_env(config: &LlamaConfig) -> Vec<(String, String)> {
    let mut env = child_env(config, 0);
    env.retain(|(name, _)| name != "AIP_HTTP_PORT");
    env
}

/// No layer on a GPU, and no RPC worker to lend one.
fn on_cpu_only(config: &LlamaConfig) -> bool {
    config.gpu_layers == 0 && config.rpc_workers.is_empty()
}

/// The KV cache of a resolved config, and how it is attended to.
pub fn kv_cache_of(config: &LlamaConfig) -> KvCache {
    let k = config.cache_type_k.unwrap_or_default();
    KvCache {
        k,
        v: config.cache_type_v.unwrap_or(k),
        swa_full: config.tuning.swa_full == Some(true),
        flash_attention_off: config.flash_attention.as_deref() == Some("off"),
    }
}

/// What `config` will hold, as llama.cpp projects it (see [`projection`]): the devices' buffers
/// are its VRAM, the host's its RAM, with llama-server's own memory (and a GPU driver's).
/// `compute_cap` is the arithmetic's compute part for the config, where the model's shape is
/// known. `Err` says why there is none: the tool is not beside
/// llama-server or failed, or the model is split over RPC workers (sized from what each worker
/// reports: the dry run would take a worker, and a worker serves one client at a time).
pub async fn projected(
    config: &LlamaConfig,
    compute_cap: Option<u64>,
) -> Result<(MemoryEstimate, projection::Projection), String> {
    if !config.rpc_workers.is_empty() {
        return Err("a split over RPC workers is sized from what the workers report".into());
    }
    let tool = projection::tool_beside(&config.binary);
    let env = tool_env(config);
    let projection = projection::project(
        &tool,
        &config.model_path,
        &args(config, "127.0.0.1", 0),
        &env,
    )
    .await?;
    // The tool sizes the compute buffers for logits of every token of a batch; llama-server
    // keeps one output a slot (the chat model: 98 MiB projected, 13 MiB allocated). Our
    // arithmetic's figure bounds each: both are at least what is allocated.
    let cap = match compute_cap {
        Some(cap) => cap,
        None => compute_bytes(
            tokio::fs::metadata(&config.model_path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", config.model_path.display()))?
                .len(),
        ),
    };
    let projection = projection.compute_at_most(cap);
    let extras = extras::memory(config, true).await?;
    let (devices, all) = (projection.on_devices(), projection.all());
    let main = MemoryEstimate {
        ram: projection.host.total()
            + crate::system::estimate::driver_ram(devices.total())
            + crate::system::estimate::SERVER_BASE_RAM,
        vram: devices.total(),
        weights: all.model,
        kv_cache: all.context,
        compute: all.compute,
        context_size: config.context_size,
        gpu_layers: config.gpu_layers,
        source: EstimateSource::Projected,
    };
    Ok((extras.added_to(main), projection))
}

#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
    #[error(transparent)]
    PortInUse(#[from] PortInUse),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("invalid server config: {0}")]
    Invalid(String),
    #[error(transparent)]
    RpcWorker(#[from] RpcWorkerError),
    #[error("llamaServer is calibrating: calibrate() runs the model in a server of its own")]
    Calibrating,
}

impl Coded for LlamaError {
    fn code(&self) -> ErrorCode {
        match self {
            LlamaError::PortInUse(e) => e.code(),
            LlamaError::Launch(e) => e.code(),
            LlamaError::Invalid(_) => ErrorCode::InvalidArgument,
            LlamaError::RpcWorker(e) => e.code(),
            LlamaError::Calibrating => ErrorCode::ServerBusy,
        }
    }

    fn suggestion(&self) -> Option<String> {
        match self {
            LlamaError::PortInUse(e) => e.suggestion(),
            LlamaError::Launch(LaunchError::Spawn { .. }) => Some(
                "Check the llama-server executable (binaries.ensureBinary('llama-server'))".into(),
            ),
            LlamaError::Launch(e) => e.suggestion(),
            LlamaError::Invalid(_) => {
                Some("Compare the config with LlamaServerConfig in index.d.ts".into())
            }
            LlamaError::RpcWorker(e) => e.suggestion(),
            LlamaError::Calibrating => Some(
                "Start the server once calibrate() has resolved, or abort it with its signal"
                    .into(),
            ),
        }
    }

    fn details(&self) -> Map<String, Value> {
        match self {
            LlamaError::PortInUse(e) => e.details(),
            LlamaError::Launch(e) => e.details(),
            LlamaError::Invalid(_) => Map::new(),
            LlamaError::RpcWorker(e) => e.details(),
            LlamaError::Calibrating => Map::new(),
        }
    }
}

/// Everything a start needs, resolved (paths, numbers): what
/// {@link LlamaServerManager.getConfig} shows, the API key left out.
#[derive(Debug, Clone, Default, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "ResolvedLlamaConfig")]
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
    pub cache_type_k: Option<KvCacheType>,
    pub cache_type_v: Option<KvCacheType>,
    #[serde(skip)]
    #[ts(skip)]
    pub api_key: Option<String>,
    pub extra_args: Vec<String>,
    pub startup_timeout_ms: u64,
    pub log_file: Option<PathBuf>,
    pub recovery: RecoveryPolicy,
    /// The public port is our gateway's (llama-server listens on an internal loopback port).
    pub gateway: bool,
    /// Browser origins the gateway answers (CORS); others are refused.
    pub allowed_origins: Vec<String>,
    /// Names the gateway answers besides loopback's (`Host`); others are refused.
    pub allowed_hosts: Vec<String>,
    /// Requests that may wait at the gateway while the server is not running yet.
    pub max_queued_requests: u32,
    pub queue_timeout_ms: u64,
    /// `host:port` of each rpc-server that holds a share of the model's layers.
    pub rpc_workers: Vec<String>,
    /// A split model's shares, here and on each worker, sized from what the workers reported
    /// before the start (they cannot be asked while llama-server holds them).
    #[serde(skip)]
    #[ts(skip)]
    pub shares: Option<Shares>,
    /// genai-electron 0.26's tuning settings (`modelAlias`, `batchSize`, `fit`, …).
    #[serde(flatten)]
    pub tuning: tuning::Tuning,
    /// What it serves: chat, embeddings or reranking.
    pub mode: tasks::Mode,
    /// The pooling an embedding server is given (`null`: the model's own).
    pub pooling: Option<tasks::Pooling>,
    /// The multimodal projector it loads (the model's `mmproj`), if any.
    pub projector: Option<tasks::Projector>,
    /// The draft model it decodes speculatively with, if any.
    pub draft: Option<tasks::Draft>,
}

/// The argument vector (no shell ever sees it), to listen on `host:port`.
pub fn args(config: &LlamaConfig, host: &str, port: u16) -> Vec<String> {
    let mut args = vec![
        "--model".into(),
        config.model_path.to_string_lossy().into_owned(),
        "--host".into(),
        host.into(),
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
    // `--fit off` unless asked: the context and GPU layers are set above from the library's
    // estimate (its check and the orchestrator need them before the start), and llama.cpp's
    // own fitting (a dry-run allocation before the load) would only cost time: 185–220 ms a
    // start of the chat model on the CPU, 100–180 ms with a Vulkan device. `extraArgs` come last, so a flag there wins.
    args.extend(config.tuning.args());
    args.extend(tasks::args(
        config.mode,
        config.pooling,
        config.projector.as_ref(),
        config.draft.as_ref(),
    ));
    // llama-server names its model by the file's path (the user's home folder, in /v1/models and
    // in every answer's `model`) unless given an alias: clients see the model's id instead.
    if config.tuning.model_alias.is_none() {
        args.extend(["--alias".into(), config.model_id.clone()]);
    }
    // The verbosity at which llama.cpp prints its buffers per device as it loads (what
    // getMemoryUsage() counts as VRAM); it adds about 170 lines at a load and 17 a request.
    args.extend(["--log-verbosity".into(), "4".into()]);
    if let Some(fa) = &config.flash_attention {
        args.extend(["--flash-attn".into(), fa.clone()]);
    }
    if let Some(k) = config.cache_type_k {
        args.extend(["--cache-type-k".into(), k.as_str().into()]);
    }
    if let Some(v) = config.cache_type_v {
        args.extend(["--cache-type-v".into(), v.as_str().into()]);
    }
    if !config.rpc_workers.is_empty() {
        args.extend(["--rpc".into(), config.rpc_workers.join(",")]);
    }
    if on_cpu_only(config) {
        // With no layer on a GPU, llama.cpp would still put its compute buffer on one (and run
        // large batches there): `none` keeps the whole model off every device.
        args.extend(["--device".into(), "none".into()]);
    }
    if let Some(key) = &config.api_key {
        args.extend(["--api-key".into(), key.clone()]);
    }
    args.extend(config.extra_args.iter().cloned());
    args
}

/// What `llamaServer.getInfo()` shows: the server's state and the model it serves.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    pub status: ServerState,
    pub health: HealthStatus,
    pub pid: Option<u32>,
    /// The public port: the gateway's (or llama-server's own with `gateway: false`).
    pub port: Option<u16>,
    /// The port llama-server itself listens on, on 127.0.0.1 behind the gateway.
    pub backend_port: Option<u16>,
    pub model_id: Option<String>,
    /// What it serves (`null` before its first start).
    pub mode: Option<tasks::Mode>,
    /// ISO 8601, when it became ready.
    pub started_at: Option<String>,
    /// Milliseconds from spawn to the first healthy answer.
    pub load_time_ms: Option<u64>,
    /// Why the last start failed or the server crashed.
    pub error: Option<String>,
    /// Automatic restarts since the last start.
    pub restarts: u32,
    /// Crashed, with an automatic restart to follow.
    pub restart_pending: bool,
    /// The rpc-servers (`host:port`) holding a share of the model; empty when it runs here alone.
    pub rpc_workers: Vec<String>,
    /// What llama-server said, as it last loaded, it runs with: the layers on devices of the
    /// model's, the context and the slots (each `null` until its line is read).
    pub running_with: projection::RunningWith,
}

impl ServerInfo {
    fn of(
        snapshot: Snapshot,
        health: HealthStatus,
        config: Option<&LlamaConfig>,
        gateway_port: Option<u16>,
        running_with: projection::RunningWith,
    ) -> Self {
        ServerInfo {
            running_with,
            status: snapshot.status,
            health,
            pid: snapshot.pid,
            port: gateway_port.or(snapshot.port),
            backend_port: snapshot.port,
            model_id: config.map(|c| c.model_id.clone()),
            mode: config.map(|c| c.mode),
            rpc_workers: config.map(|c| c.rpc_workers.clone()).unwrap_or_default(),
            started_at: snapshot.started_at,
            load_time_ms: snapshot.load_time_ms,
            error: snapshot.error,
            restarts: snapshot.restarts,
            restart_pending: snapshot.restart_pending,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum LlamaEvent {
    /// The lifecycle, as for every managed server, with the server's info on a start.
    Server(ServerEvent<ServerInfo>),
    /// A request began or stopped waiting at the gateway.
    Queue(gateway::QueueEvent),
    /// How far `calibrate()` is.
    Calibration(calibrate::Progress),
    Log(String),
}

pub struct LlamaServer {
    actor: ServerActor,
    /// The config of the last start: its model is in use while the server runs.
    config: Arc<Mutex<Option<LlamaConfig>>>,
    /// The gateway and the public port it serves, from `start()` to `stop()`.
    gateway: Arc<Mutex<Option<(HttpServer, u16)>>>,
    /// The gateway's hold and its requests in flight: what an offload drains.
    traffic: Arc<Traffic>,
    /// The buffers llama-server reported at its last load, per device and on the host.
    allocated: Arc<Mutex<projection::Allocated>>,
    events: Option<EventSink<LlamaEvent>>,
    /// Cancels the calibration under way.
    calibrating: crate::calibration::Slot,
}

type Gateway = Arc<Mutex<Option<(HttpServer, u16)>>>;

fn gateway_port(gateway: &Gateway) -> Option<u16> {
    lock(gateway).as_ref().map(|(_, port)| *port)
}

impl LlamaServer {
    pub fn new(events: Option<EventSink<LlamaEvent>>) -> Self {
        let config: Arc<Mutex<Option<LlamaConfig>>> = Arc::default();
        let gateway: Gateway = Arc::default();
        let allocated: Arc<Mutex<projection::Allocated>> = Arc::default();
        let events_for_queue = events
            .clone()
            .map(|events| EventSink::new(move |e| events.emit(LlamaEvent::Queue(e))));
        let log = ServerLog::new(
            events
                .clone()
                .map(|events| EventSink::new(move |line| events.emit(LlamaEvent::Log(line)))),
        );
        let actor_events = {
            let events = events.clone();
            let (config, gateway, log) = (config.clone(), gateway.clone(), log.clone());
            let allocated = allocated.clone();
            EventSink::new(move |event| {
                let models = || {
                    lock(&config)
                        .as_ref()
                        .map(models_in_use)
                        .unwrap_or_default()
                };
                let info = |s: Snapshot| {
                    let health = HealthStatus::of(s.status, 0);
                    let running_with = lock(&allocated).running;
                    let config = lock(&config);
                    ServerInfo::of(
                        s,
                        health,
                        config.as_ref(),
                        gateway_port(&gateway),
                        running_with,
                    )
                };
                if let ServerEvent::State(t) = &event {
                    hold_models(t, &models());
                }
                if let ServerEvent::Crashed { .. } = &event {
                    let workers = lock(&config).as_ref().map(|c| c.rpc_workers.clone());
                    name_lost_workers(workers.unwrap_or_default(), &log);
                }
                if let Some(events) = &events {
                    events.emit(LlamaEvent::Server(event.map(info)));
                }
            })
        };
        LlamaServer {
            actor: ServerActor::new("llama-server", log, Some(actor_events)),
            config,
            gateway,
            traffic: Arc::new(Traffic::new(events_for_queue)),
            allocated,
            events,
            calibrating: Default::default(),
        }
    }

    fn info_of(&self, snapshot: Snapshot) -> ServerInfo {
        let health = self.actor.health(snapshot.status);
        let running_with = lock(&self.allocated).running;
        let config = lock(&self.config);
        ServerInfo::of(
            snapshot,
            health,
            config.as_ref(),
            gateway_port(&self.gateway),
            running_with,
        )
    }

    /// The requests waiting at the gateway now.
    pub fn queue(&self) -> gateway::QueueInfo {
        self.traffic.queue()
    }

    /// How long its gateway has served no request (counted from the start until the first).
    pub fn idle_for(&self) -> Duration {
        self.traffic.idle_for()
    }

    /// How many chat requests wait at the gateway, from now on.
    pub fn queue_length(&self) -> tokio::sync::watch::Receiver<usize> {
        self.traffic.length()
    }

    /// Starts llama-server and resolves once `/health` answers 200. A `stop()` meanwhile
    /// cancels it: the start then fails with `LaunchError::Cancelled`.
    pub async fn start(&self, config: LlamaConfig) -> Result<ServerInfo, LlamaError> {
        if self.calibrating.is_taken() {
            return Err(LlamaError::Calibrating);
        }
        // A stop under way still holds the port: the start waits for it, then starts.
        self.actor.stop_done().await;
        let status = self.actor.status();
        if matches!(
            status,
            ServerState::Starting | ServerState::Running | ServerState::Restarting
        ) {
            return Err(LaunchError::AlreadyRunning {
                server: self.actor.name(),
                state: status,
            }
            .into());
        }
        for worker in &config.rpc_workers {
            if !crate::process::actor::reachable(worker, RPC_CHECK_TIMEOUT).await {
                return Err(RpcWorkerError {
                    worker: worker.clone(),
                    problem: ProbeError::Unreachable,
                }
                .into());
            }
        }
        // A server that crashed for good still holds its public port.
        self.close_gateway().await;
        // Idle from its start until its first request.
        self.traffic.touch();
        let (host, port) = if config.gateway {
            let public = self.open_gateway(&config).await?;
            *lock(&self.gateway) = Some(public);
            ("127.0.0.1", free_port("127.0.0.1", None)?)
        } else {
            // llama-server binds every address itself; the first tells whether the port is free.
            let first = crate::http::addresses(&config.host)
                .next()
                .unwrap_or("127.0.0.1");
            (config.host.as_str(), free_port(first, config.port)?)
        };
        let spec = LaunchSpec {
            program: config.binary.clone(),
            args: args(&config, host, port),
            env: child_env(&config, port),
            unset: overrides_the_library,
            port,
            health_url: health_url(host, port),
            ready_hints: READY_HINTS,
            on_line: Some(self.buffer_reader()),
            startup_timeout: Duration::from_millis(config.startup_timeout_ms),
            stop_grace: STOP_GRACE,
            recovery: config.recovery,
        };
        self.actor.log().set_file(config.log_file.as_deref());
        if let Some(shares) = &config.shares {
            let _in = self.actor.log().span("llama-server").entered();
            tracing::info!("the model is split over RPC workers: {shares}");
        }
        let previous = lock(&self.config).replace(config);
        match self.actor.start(spec).await {
            Ok(snapshot) => Ok(self.info_of(snapshot)),
            Err(err) => {
                // getConfig() keeps showing the last start that worked.
                *lock(&self.config) = previous;
                self.close_gateway().await;
                Err(err.into())
            }
        }
    }

    /// A reader of the load's buffer lines, from a start's first line on.
    fn buffer_reader(&self) -> EventSink<String> {
        let allocated = self.allocated.clone();
        *lock(&allocated) = Default::default();
        EventSink::new(move |line: String| lock(&allocated).read(&line))
    }

    /// Binds the public port, on each address of `host`, and serves the gateway on it; returns
    /// it with the port.
    async fn open_gateway(&self, config: &LlamaConfig) -> Result<(HttpServer, u16), LlamaError> {
        let mut port = config.port.unwrap_or(0);
        let mut listeners = Vec::new();
        // The first address picks the port ('auto'); the others take the same.
        for address in crate::http::addresses(&config.host) {
            let listener = bind(address, port).await?;
            port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
            listeners.push(listener);
        }
        let settings = GatewayConfig {
            access: Access {
                hosts: HostCheck::new(&config.host, &config.allowed_hosts),
                api_key: config.api_key.clone(),
                allowed_origins: config.allowed_origins.clone(),
                methods: "GET, POST, PUT, DELETE, OPTIONS",
            },
            max_queued: config.max_queued_requests as usize,
            queue_timeout: Duration::from_millis(config.queue_timeout_ms),
            max_body_bytes: GATEWAY_MAX_BODY,
            task: task_check(config),
        };
        let traffic = self.traffic.clone();
        let server =
            gateway::serve(listeners, self.actor.watch(), traffic, settings).map_err(|e| {
                LlamaError::Invalid(format!("cannot serve on {}:{port}: {e}", config.host))
            })?;
        Ok((server, port))
    }

    async fn close_gateway(&self) {
        let open = lock(&self.gateway).take();
        if let Some((server, _)) = open {
            server.shutdown().await;
        }
    }

    /// Stops the server if it runs and starts it again with the config of the last start that
    /// worked, on the same port; `restarted` follows, as after an automatic restart.
    pub async fn restart(&self) -> Result<ServerInfo, LlamaError> {
        let snapshot = self.actor.restart().await?;
        Ok(self.info_of(snapshot))
    }

    /// Stops the server (cancelling a start under way) and waits until its process is gone:
    /// port and memory free. Idempotent.
    pub async fn stop(&self) -> Option<ExitInfo> {
        let exit = self.actor.stop().await;
        self.close_gateway().await;
        self.traffic.release();
        exit
    }

    /// Makes room: new requests wait at the gateway (bounded by `bounds` where set, else by the
    /// server's own queue options), those in flight (streams included) finish (at most `drain`),
    /// then the process stops; the gateway keeps the public port. False when the drain ran out
    /// of time (what was still in flight was cut).
    pub async fn offload(&self, drain: Duration, bounds: QueueBounds) -> bool {
        self.traffic.bound(bounds);
        self.traffic.hold(true);
        let drained = self.traffic.drained(drain).await;
        self.actor.stop().await;
        drained
    }

    /// Runs `request`'s combinations in servers of their own and measures them (see
    /// [`calibrate`]); refused while this server runs, is offloaded, or calibrates already.
    pub async fn calibrate(
        &self,
        request: calibrate::CalibrationRequest,
        data: &crate::config::DataPaths,
        system: &crate::system::SystemInfo,
        binaries: &crate::binaries::BinaryManager,
    ) -> Result<calibrate::Report, calibrate::CalibrationError> {
        let taken = self
            .calibrating
            .take(|| {
                let status = self.actor.status();
                if self.is_offloaded() {
                    Some("offloaded by the orchestrator, which brings it back".into())
                } else if !matches!(status, ServerState::Stopped | ServerState::Crashed) {
                    Some(status.to_string())
                } else {
                    None
                }
            })
            .map_err(calibrate::CalibrationError::Busy)?;
        let events = self.events.clone();
        let emit = move |progress| {
            if let Some(events) = &events {
                events.emit(LlamaEvent::Calibration(progress));
            }
        };
        let context = calibrate::Context {
            data,
            system,
            binaries,
            cancel: taken.cancel.clone(),
            emit: &emit,
        };
        calibrate::calibrate(request, context).await
    }

    /// Ends the calibration under way (its server is stopped; it rejects as cancelled). False
    /// when none runs.
    pub fn cancel_calibration(&self) -> bool {
        self.calibrating.cancel()
    }

    /// Offloaded and not stopped or started since: its gateway holds requests for a reload.
    pub fn is_offloaded(&self) -> bool {
        self.traffic.is_held() && self.actor.status() == ServerState::Stopped
    }

    /// Brings an offloaded server back as it was (same config, same ports); the requests that
    /// waited are served then, or answered with the reason when it fails.
    pub async fn reload(&self) -> Result<ServerInfo, LlamaError> {
        let reloaded = self.restart().await;
        self.traffic.release();
        reloaded
    }
}

impl ManagedServer for LlamaServer {
    type Info = ServerInfo;
    type Config = LlamaConfig;

    fn info(&self) -> ServerInfo {
        self.info_of(self.actor.snapshot())
    }

    crate::launch::actor_server_parts!(config, log);

    /// Its process tree, with the buffers llama.cpp reported on its devices as the VRAM where
    /// that is more than NVML tells (Vulkan or Metal devices NVML does not see).
    async fn memory(&self) -> Option<crate::process::memory::TreeMemory> {
        let mut tree = self.actor.memory().await?;
        let on_devices = lock(&self.allocated).buffers.on_devices().total();
        if on_devices > 0 {
            tree.vram_bytes = Some(tree.vram_bytes.unwrap_or(0).max(on_devices));
        }
        Some(tree)
    }

    async fn is_healthy(&self) -> bool {
        let info = self.info();
        let (ServerState::Running, Some(port)) = (info.status, info.port) else {
            return false;
        };
        let Some(host) = lock(&self.config).as_ref().map(|c| c.host.clone()) else {
            return false;
        };
        crate::process::actor::answers(&health_url(&host, port), Duration::from_secs(2)).await
    }

    async fn shut_down(&self) {
        self.stop().await;
    }
}

/// After a crash of a split model, says in the server's log which RPC workers no longer answer
/// (llama.cpp's own line says only that one was lost).
fn name_lost_workers(workers: Vec<String>, log: &ServerLog) {
    if workers.is_empty() {
        return;
    }
    let span = log.span("llama-server");
    tokio::spawn(
        async move {
            for worker in workers {
                if !crate::process::actor::reachable(&worker, RPC_CHECK_TIMEOUT).await {
                    tracing::error!(
                        "the RPC worker {worker} does not answer: the layers it held are lost"
                    );
                }
            }
        }
        .instrument(span),
    );
}

/// A running server holds its models in use (they cannot be deleted); leaving Running lets go.
fn hold_models(transition: &Transition, model_ids: &[String]) {
    for model_id in model_ids {
        if transition.new == ServerState::Running {
            crate::models::acquire(model_id);
        } else if transition.old == ServerState::Running {
            crate::models::release(model_id);
        }
    }
}

/// The installed models a running server reads: its own, and another model it drafts with.
fn models_in_use(config: &LlamaConfig) -> Vec<String> {
    let draft = config.draft.as_ref().map(|d| d.model_id.clone());
    let other = draft.filter(|id| *id != config.model_id);
    std::iter::once(config.model_id.clone())
        .chain(other)
        .collect()
}

/// What the gateway lets through, from the arguments llama-server gets: its task and whether a
/// projector reads images (the config's, or those `extraArgs` name in their place).
fn task_check(config: &LlamaConfig) -> tasks::TaskCheck {
    let args = args(config, "127.0.0.1", 0);
    tasks::TaskCheck {
        mode: tasks::mode_of(&args),
        reads_media: extras::Extras::of(&args).projector.is_some(),
    }
}

/// Listens on `address:port` (an address as [`crate::http::addresses`] gives it).
async fn bind(address: &str, port: u16) -> Result<tokio::net::TcpListener, LlamaError> {
    tokio::net::TcpListener::bind((address, port))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => LlamaError::PortInUse(PortInUse {
                host: address.into(),
                port,
            }),
            _ => LlamaError::Invalid(format!("cannot listen on {address}:{port}: {e}")),
        })
}

fn health_url(host: &str, port: u16) -> String {
    format!("{}/health", crate::http::local_base(host, port))
}

pub mod calibrate;
pub mod extras;
pub mod gateway;
pub mod projection;
pub mod resolve;
pub mod sizing;
pub mod tasks;
pub mod tuning;

#[cfg(all(test, unix))]
pub(crate) mod tests;
