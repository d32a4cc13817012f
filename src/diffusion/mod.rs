//! `diffusionServer`: our HTTP server in front of stable-diffusion.cpp.
//!
//! `start` binds the port, picks the backend (one-shot `sd-cli` or resident `sd-server`) and
//! starts the job worker; requests arrive over HTTP (`routes`) or in-process (`generate`) and
//! become jobs of the one [`engine::Engine`]. `stop` refuses new work, cancels what is queued or
//! running, stops the backend's process, and closes the port before it resolves.

pub mod backend;
pub mod calibrate;
pub mod engine;
pub mod lora;
pub mod progress;
pub mod request;
pub mod resolve;
pub mod upscale;
mod routes;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::error::{Coded, ErrorCode};
use crate::events::EventSink;
use crate::http::HttpServer;
use crate::launch::ManagedServer;
use crate::process::actor::transition;
use crate::process::memory::TreeMemory;
use crate::process::{
    ExitInfo, HealthStatus, ServerEvent, ServerLog, ServerState, Snapshot, Transition,
};
use crate::sync::lock;
use backend::{Backend, BackendConfig, BackendKind};
use engine::{Admission, Bound, Engine, EngineEvent, Gates, ImageOutput, JobError};
use request::ImageRequest;
use tokio::sync::watch;

pub const DEFAULT_PORT: u16 = 8081;

#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    #[error("the diffusion server is already {0}")]
    AlreadyRunning(&'static str),
    #[error("the diffusion server is not running")]
    NotRunning,
    #[error("port {port} on {host} is already in use")]
    PortInUse { host: String, port: u16 },
    #[error("cannot listen on {host}:{port}: {source}")]
    Bind {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the diffusion server is busy: one image is being made and {queued} more are waiting")]
    Busy { queued: usize },
    #[error("image generation was cancelled")]
    Cancelled,
    #[error("diffusionServer is calibrating: calibrate() runs the model in a server of its own")]
    Calibrating,
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{message}")]
    BackendFailed { message: String, logs: Vec<String> },
    #[error("stable-diffusion.cpp printed nothing for {} s: the image was stopped", .limit.as_secs_f64())]
    Stalled {
        limit: std::time::Duration,
        logs: Vec<String>,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Coded for DiffusionError {
    fn code(&self) -> ErrorCode {
        match self {
            DiffusionError::AlreadyRunning(_) => ErrorCode::ServerAlreadyRunning,
            DiffusionError::NotRunning => ErrorCode::ServerNotRunning,
            DiffusionError::PortInUse { .. } => ErrorCode::PortInUse,
            DiffusionError::Bind { .. } | DiffusionError::Spawn { .. } => {
                ErrorCode::ServerStartFailed
            }
            DiffusionError::Invalid(_) => ErrorCode::InvalidArgument,
            DiffusionError::Busy { .. } | DiffusionError::Calibrating => ErrorCode::ServerBusy,
            DiffusionError::Cancelled => ErrorCode::Cancelled,
            DiffusionError::BackendFailed { .. } => ErrorCode::BackendFailed,
            DiffusionError::Stalled { .. } => ErrorCode::BackendStalled,
            DiffusionError::Io { .. } => ErrorCode::FileSystemError,
        }
    }

    fn suggestion(&self) -> Option<String> {
        Some(match self {
            DiffusionError::AlreadyRunning(_) => "Call stop() first".into(),
            DiffusionError::NotRunning => "Call diffusionServer.start({ modelId }) first".into(),
            DiffusionError::PortInUse { .. } => {
                "Choose another port, or port: 'auto' for a free one".into()
            }
            DiffusionError::Bind { .. } => {
                "Use an address of this machine as host (default 127.0.0.1) and a port from 1024 up".into()
            }
            DiffusionError::Invalid(_) => {
                "Compare the request with ImageGenerationConfig in index.d.ts".into()
            }
            DiffusionError::Busy { .. } => {
                "Wait for the current image, or raise maxQueue in the server config".into()
            }
            DiffusionError::Cancelled => return None,
            DiffusionError::Calibrating => {
                "Start the server once calibrate() has resolved, or abort it with its signal".into()
            }
            DiffusionError::Spawn { .. } => {
                "Check the stable-diffusion.cpp executable (binaries.ensureBinary('sd-cli'))".into()
            }
            DiffusionError::BackendFailed { .. } => {
                "Read details.logs: a damaged model file, a missing component or too little memory usually shows there".into()
            }
            DiffusionError::Stalled { .. } => {
                "Read details.logs; raise stallTimeout in the server config for very large images on a slow CPU".into()
            }
            DiffusionError::Io { source, .. } => crate::error::io_suggestion(source).into(),
        })
    }

    fn details(&self) -> Map<String, Value> {
        let v = match self {
            DiffusionError::PortInUse { host, port } | DiffusionError::Bind { host, port, .. } => {
                json!({ "host": host, "port": port })
            }
            DiffusionError::Busy { queued } => json!({ "queued": queued }),
            DiffusionError::Spawn { binary, .. } => json!({ "binary": binary }),
            DiffusionError::BackendFailed { logs, .. } => json!({ "logs": logs }),
            DiffusionError::Stalled { limit, logs } => {
                json!({ "stallTimeoutMs": limit.as_millis() as u64, "logs": logs })
            }
            DiffusionError::Io { path, .. } => json!({ "path": path }),
            _ => json!({}),
        };
        v.as_object().cloned().unwrap_or_default()
    }
}

/// sd-cli's peak RSS beyond its model files, measured on the tiny diffusion set (Ovis-Image
/// shaped, 10.6 MB of files): 121.5–127.5 MB at 64×64, 131 MB at 128×128, 241.7–253.4 MB at
/// 256×256, 391.8 MB at 384×384 (two runs apart), with a CPU build; a Vulkan build with the GPUs
/// hidden holds 11 MB more (138.9 MB at 64×64, 263.6 MB at 256×256: its Vulkan loader). A line
/// through the 64 and 256 points, rounded up so that an estimate is never below what was
/// measured: 124 MB, plus 2,000 bytes a pixel.
const DIFFUSION_BASE: u64 = 124_000_000;
const DIFFUSION_PER_PIXEL: u64 = 2_000;

/// What a resident `sd-server` holds beyond sd-cli from its second image on, and no more after:
/// its peak RSS on the tiny set after one image and after two to five, 130.0 → 152.6 MiB at 64×64,
/// 249.9 → 272.8 MiB at 256×256 (sd's allocations kept between requests). Rounded up.
const RESIDENT_EXTRA: u64 = 24_000_000;

/// What each image the VAE encodes for a request (an init image, a reference image) adds to
/// sd-cli's peak RSS, measured on the tiny set at 64×64: 128.2 MB text-to-image, 139.4 MB with
/// an init image (the encoder's weights and pass; a mask adds nothing), 147.4 MB with two
/// reference images; at 256×256, where decoding sets the peak, +3.4 and +3.7 MB. Rounded up.
pub const ENCODE_PER_IMAGE: u64 = 12_000_000;

/// An image's working set beyond its model files (see [`DIFFUSION_BASE`]).
pub fn working_set(width: u32, height: u32) -> u64 {
    DIFFUSION_BASE + DIFFUSION_PER_PIXEL * u64::from(width) * u64::from(height)
}

/// The same for a backend of `kind`: a resident server holds [`RESIDENT_EXTRA`] more.
pub fn working_set_of(kind: BackendKind, width: u32, height: u32) -> u64 {
    let extra = match kind {
        BackendKind::Resident => RESIDENT_EXTRA,
        BackendKind::OneShot => 0,
    };
    working_set(width, height) + extra
}

/// Everything a start needs, resolved.
#[derive(Debug, Clone)]
pub struct DiffusionConfig {
    pub model_id: String,
    pub host: String,
    /// `None`: a free port (once running, the one it got).
    pub port: Option<u16>,
    pub backend: BackendConfig,
    pub api_key: Option<String>,
    pub allowed_origins: Vec<String>,
    /// Names the server answers besides loopback's (`Host`); others are refused.
    pub allowed_hosts: Vec<String>,
    pub max_queue: usize,
    /// An image that gets no output from the backend for this long fails (`None`: never).
    pub stall_timeout: Option<std::time::Duration>,
    pub max_body_bytes: usize,
    /// The rotating log of the backend's output and the library's lines about it.
    pub log_file: Option<PathBuf>,
}

/// What `getConfig()` shows: everything but the API key.
impl Serialize for DiffusionConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ConfigView::from(self).serialize(serializer)
    }
}

/// The resolved configuration of the running server (the API key only as present or not).
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "ResolvedDiffusionConfig")]
pub struct ConfigView {
    pub model_id: String,
    pub host: String,
    /// The port it listens on (`port: 'auto'` resolved).
    pub port: Option<u16>,
    pub backend: BackendKind,
    pub binary: PathBuf,
    pub threads: u32,
    /// The flags `vramBudget` chose (`--max-vram`, `--offload-to-cpu`, `--clip-on-cpu`,
    /// `--vae-on-cpu`).
    pub placement: Vec<String>,
    pub extra_args: Vec<String>,
    /// Milliseconds; `null`: never stopped for idleness.
    pub idle_timeout: Option<u64>,
    pub startup_timeout: u64,
    /// Milliseconds; `null`: no stall watchdog.
    pub stall_timeout: Option<u64>,
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub api_key: bool,
    pub max_queue: usize,
    pub max_body_bytes: usize,
}

impl From<&DiffusionConfig> for ConfigView {
    fn from(c: &DiffusionConfig) -> Self {
        let b = &c.backend;
        let millis = |d: std::time::Duration| d.as_millis() as u64;
        ConfigView {
            model_id: c.model_id.clone(),
            host: c.host.clone(),
            port: c.port,
            backend: b.kind,
            binary: b.binary.clone(),
            threads: b.threads,
            placement: b.placement.clone(),
            extra_args: b.extra_args.clone(),
            idle_timeout: b.idle_timeout.map(millis),
            startup_timeout: millis(b.startup_timeout),
            stall_timeout: c.stall_timeout.map(millis),
            allowed_origins: c.allowed_origins.clone(),
            allowed_hosts: c.allowed_hosts.clone(),
            api_key: c.api_key.is_some(),
            max_queue: c.max_queue,
            max_body_bytes: c.max_body_bytes,
        }
    }
}

/// What `diffusionServer.getInfo()` shows.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "DiffusionServerInfo")]
pub struct DiffusionInfo {
    /// The server's status: `crashed` while its resident `sd-server` is (the HTTP port still
    /// answers, and the next image starts `sd-server` again, back to `running`).
    #[ts(type = "'stopped' | 'starting' | 'running' | 'stopping' | 'crashed'")]
    pub status: ServerState,
    pub health: HealthStatus,
    pub port: Option<u16>,
    pub host: Option<String>,
    pub model_id: Option<String>,
    pub backend: Option<BackendKind>,
    /// The resident `sd-server`'s process id while it runs (it starts with the first image).
    pub pid: Option<u32>,
    /// The resident `sd-server`'s own status (`crashed` after it died; the next image starts it); `null` for one-shot.
    pub backend_status: Option<ServerState>,
    /// The port the resident `sd-server` listens on (127.0.0.1), while it runs.
    pub backend_port: Option<u16>,
    /// ISO 8601.
    pub started_at: Option<String>,
    /// An image is being made.
    pub busy: bool,
    /// The id of the job whose turn it is (being made, or waiting for its orchestrator to make
    /// room); `getActiveGenerationId()`.
    pub active_generation_id: Option<String>,
    /// Requests waiting.
    pub queued: usize,
    /// Why the last start failed.
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub enum DiffusionEvent {
    /// The lifecycle of the HTTP server, as for every managed server (it never crashes itself:
    /// a crash of the resident `sd-server` under it is [`DiffusionEvent::Crashed`]).
    Server(ServerEvent<DiffusionInfo>),
    /// A transition of the resident `sd-server` under it.
    BackendState(Transition),
    /// The resident `sd-server` died; the next request starts it again.
    Crashed {
        exit: ExitInfo,
        tail: Vec<String>,
    },
    /// A job's progress, and every change of its status.
    Engine(EngineEvent),
    /// How far `calibrate()` is.
    Calibration(calibrate::Progress),
    Log(String),
}

struct Shared {
    /// The server's own state (`status`, `startedAt`, `error`), changed as the actor changes
    /// its child's.
    status: watch::Sender<Snapshot>,
    running: Mutex<Option<Arc<RunningHandle>>>,
    log: Arc<ServerLog>,
    events: Option<EventSink<DiffusionEvent>>,
    op: tokio::sync::Mutex<()>,
    /// Who decides when each image may run (the orchestrators that serve this server).
    gates: Arc<Gates>,
    /// Cancels the calibration under way.
    calibrating: crate::calibration::Slot,
}

/// The running server: its engine, config, port and HTTP server (taken by `stop`).
struct RunningHandle {
    engine: Arc<Engine>,
    config: DiffusionConfig,
    port: u16,
    http: Mutex<Option<HttpServer>>,
}

pub struct DiffusionServer {
    shared: Arc<Shared>,
}

impl DiffusionServer {
    pub fn new(events: Option<EventSink<DiffusionEvent>>) -> Self {
        let log = ServerLog::new(
            events
                .clone()
                .map(|events| EventSink::new(move |line| events.emit(DiffusionEvent::Log(line)))),
        );
        DiffusionServer {
            shared: Arc::new(Shared {
                status: watch::channel(Snapshot::default()).0,
                running: Mutex::new(None),
                log,
                events,
                op: tokio::sync::Mutex::new(()),
                gates: Arc::default(),
                calibrating: Default::default(),
            }),
        }
    }

    /// Every image, whatever door it comes through, waits for this gate in its turn (the newest
    /// gate still there decides; they outlive a stop and a start).
    pub fn serve_by(&self, gate: Arc<dyn Admission>) {
        self.shared.gates.add(gate);
    }

    /// Stops the resident `sd-server` if no image is being made with it, to give its memory
    /// back (the next request starts it again); true when it was stopped.
    pub async fn release_idle_backend(&self) -> bool {
        match self.engine() {
            Some(engine) => engine.backend().release_idle().await,
            None => false,
        }
    }

    pub async fn start(&self, config: DiffusionConfig) -> Result<DiffusionInfo, DiffusionError> {
        let span = self.shared.log.span("diffusion-server");
        self.start_logged(config).instrument(span).await
    }

    async fn start_logged(&self, config: DiffusionConfig) -> Result<DiffusionInfo, DiffusionError> {
        let _op = self.shared.op.lock().await;
        if self.shared.calibrating.is_taken() {
            return Err(DiffusionError::Calibrating);
        }
        let status = self.shared.status.borrow().status;
        if status != ServerState::Stopped {
            return Err(DiffusionError::AlreadyRunning(status.as_str()));
        }
        self.shared.log.set_file(config.log_file.as_deref());
        self.shared
            .set_status(ServerState::Starting, "start()".into(), None);
        self.shared
            .emit(DiffusionEvent::Server(ServerEvent::Starting));
        tracing::info!(
            "starting the diffusion server ({:?} backend)",
            config.backend.kind
        );
        match self.launch(config).await {
            Ok(()) => {
                self.shared
                    .set_status(ServerState::Running, "listening".into(), None);
                let info = self.info();
                if let Some(port) = info.port {
                    tracing::info!("diffusion server listening on port {port}");
                }
                self.shared
                    .emit(DiffusionEvent::Server(ServerEvent::Started(info.clone())));
                Ok(info)
            }
            Err(err) => {
                tracing::error!("diffusion server failed to start: {err}");
                self.shared.set_status(
                    ServerState::Stopped,
                    err.to_string(),
                    Some(err.to_string()),
                );
                self.shared
                    .emit(DiffusionEvent::Server(ServerEvent::Stopped));
                Err(err)
            }
        }
    }

    async fn launch(&self, config: DiffusionConfig) -> Result<(), DiffusionError> {
        let listener = bind(&config.host, config.port).await?;
        tokio::fs::create_dir_all(&config.backend.temp_dir)
            .await
            .map_err(|source| DiffusionError::Io {
                path: config.backend.temp_dir.clone(),
                source,
            })?;
        backend::sweep_stale_temp(&config.backend.temp_dir).await;
        let events = self.shared.events.clone();
        // Weak: the resident's actor lives inside `shared` (through the engine).
        let weak = Arc::downgrade(&self.shared);
        let resident_events = Some(EventSink::new(move |event| {
            let Some(shared) = weak.upgrade() else { return };
            match event {
                ServerEvent::State(t) => {
                    shared.emit(DiffusionEvent::BackendState(t.clone()));
                    shared.follow_backend(&t);
                }
                ServerEvent::Crashed { exit, tail, .. } => {
                    shared.emit(DiffusionEvent::Crashed { exit, tail })
                }
                // The state events say all the rest.
                _ => {}
            }
        }));
        let engine_events = EventSink::new(move |event: EngineEvent| {
            if let Some(events) = &events {
                events.emit(DiffusionEvent::Engine(event));
            }
        });
        let engine = Engine::start(
            Backend::new(
                config.backend.clone(),
                self.shared.log.clone(),
                resident_events,
            ),
            self.shared.gates.clone(),
            config.max_queue,
            config.stall_timeout,
            engine_events,
        );
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let http = crate::http::serve(listener, routes::handler(engine.clone(), &config)).map_err(
            |source| DiffusionError::Io {
                path: PathBuf::from(format!("{}:{port}", config.host)),
                source,
            },
        )?;
        crate::models::acquire(&config.model_id);
        *lock(&self.shared.running) = Some(Arc::new(RunningHandle {
            engine,
            // The port it has, a free one it was given included: what `getConfig()` shows.
            config: DiffusionConfig {
                port: Some(port),
                ..config
            },
            port,
            http: Mutex::new(Some(http)),
        }));
        Ok(())
    }

    /// Cancels all work, stops the backend's process and closes the port. Idempotent.
    pub async fn stop(&self) {
        let span = self.shared.log.span("diffusion-server");
        self.stop_logged().instrument(span).await
    }

    async fn stop_logged(&self) {
        let _op = self.shared.op.lock().await;
        let Some(running) = lock(&self.shared.running).clone() else {
            return;
        };
        self.shared
            .set_status(ServerState::Stopping, "stop()".into(), None);
        tracing::info!("stopping the diffusion server");
        let http = lock(&running.http).take();
        running.engine.shutdown().await;
        if let Some(http) = http {
            http.shutdown().await;
        }
        crate::models::release(&running.config.model_id);
        *lock(&self.shared.running) = None;
        self.shared
            .set_status(ServerState::Stopped, "stopped".into(), None);
        tracing::info!("diffusion server stopped");
        self.shared
            .emit(DiffusionEvent::Server(ServerEvent::Stopped));
    }

    /// Makes images of each size with each combination in servers of their own and measures
    /// them (see [`calibrate`]); refused while this server runs or calibrates already.
    pub async fn calibrate(
        &self,
        request: calibrate::CalibrationRequest,
        data: &crate::config::DataPaths,
        system: &crate::system::SystemInfo,
        binaries: &crate::binaries::BinaryManager,
    ) -> Result<calibrate::Report, calibrate::CalibrationError> {
        let taken = self
            .shared
            .calibrating
            .take(|| {
                let status = self.shared.status.borrow().status;
                (status != ServerState::Stopped).then(|| status.to_string())
            })
            .map_err(calibrate::CalibrationError::Busy)?;
        let shared = self.shared.clone();
        let emit = move |progress| shared.emit(DiffusionEvent::Calibration(progress));
        let context = calibrate::Context {
            data,
            system,
            binaries,
            cancel: taken.cancel.clone(),
            emit: &emit,
        };
        calibrate::calibrate(request, context).await
    }

    /// Ends the calibration under way; false when none runs.
    pub fn cancel_calibration(&self) -> bool {
        self.shared.calibrating.cancel()
    }

    /// Makes images in-process (the same jobs as HTTP requests). `id` names the job, so the
    /// caller can cancel it and match its progress events.
    pub async fn generate(
        &self,
        request: ImageRequest,
        id: Option<String>,
    ) -> Result<Arc<ImageOutput>, JobError> {
        self.submit(request, id, Bound::MaxQueue, None)?
            .outcome()
            .await
    }

    /// Queues an in-process request at once (without awaiting anything), so its id can be
    /// cancelled from the moment this returns.
    pub fn submit(
        &self,
        request: ImageRequest,
        id: Option<String>,
        bound: Bound,
        gate: Option<Arc<dyn Admission>>,
    ) -> Result<Submitted, DiffusionError> {
        let engine = self.engine().ok_or(DiffusionError::NotRunning)?;
        let job = engine.submit(request, id, bound, gate)?;
        Ok(Submitted { engine, job })
    }

    /// Upscales an image with an installed upscaler, by `sd-cli` as this server's config says;
    /// `id` names it for [`DiffusionServer::cancel_upscale`].
    pub async fn upscale(
        &self,
        request: upscale::UpscaleRequest,
        id: String,
    ) -> Result<upscale::Upscaled, DiffusionError> {
        let engine = self.engine().ok_or(DiffusionError::NotRunning)?;
        engine.upscale(&request, id).await
    }

    /// Cancels the upscale `id`; false when none runs by that id.
    pub fn cancel_upscale(&self, id: &str) -> bool {
        self.engine().is_some_and(|e| e.cancel_upscale(id))
    }

    /// Requests waiting for their turn (`getInfo().queued`).
    pub fn queued(&self) -> usize {
        self.engine().map_or(0, |e| e.queued())
    }

    /// Cancels the job `id`, or the running one. False when there is no such job.
    pub fn cancel(&self, id: Option<&str>) -> bool {
        self.engine().and_then(|e| e.cancel(id)).is_some()
    }

    fn engine(&self) -> Option<Arc<Engine>> {
        lock(&self.shared.running)
            .as_ref()
            .map(|r| r.engine.clone())
    }
}

impl ManagedServer for DiffusionServer {
    type Info = DiffusionInfo;
    type Config = DiffusionConfig;

    fn info(&self) -> DiffusionInfo {
        let Snapshot {
            status,
            started_at,
            error,
            ..
        } = self.shared.status.borrow().clone();
        let running = lock(&self.shared.running).clone();
        let resident = running
            .as_ref()
            .and_then(|r| r.engine.backend().resident().map(|a| a.snapshot()));
        DiffusionInfo {
            status,
            health: HealthStatus::of(status, 0),
            port: running.as_ref().map(|r| r.port),
            host: running.as_ref().map(|r| r.config.host.clone()),
            model_id: running.as_ref().map(|r| r.config.model_id.clone()),
            backend: running.as_ref().map(|r| r.config.backend.kind),
            pid: resident.as_ref().and_then(|s| s.pid),
            backend_status: resident.as_ref().map(|s| s.status),
            backend_port: resident.as_ref().and_then(|s| s.port),
            started_at,
            busy: running.as_ref().is_some_and(|r| r.engine.busy()),
            active_generation_id: running.as_ref().and_then(|r| r.engine.active()),
            queued: running.as_ref().map_or(0, |r| r.engine.queued()),
            error,
        }
    }

    fn config(&self) -> Option<DiffusionConfig> {
        lock(&self.shared.running)
            .as_ref()
            .map(|r| r.config.clone())
    }

    fn log(&self) -> &ServerLog {
        &self.shared.log
    }

    /// What the resident `sd-server`'s process tree uses now; `None` when none runs.
    async fn memory(&self) -> Option<TreeMemory> {
        let engine = self.engine()?;
        engine.backend().resident()?.memory().await
    }

    /// Running and answering its own `/health`.
    async fn is_healthy(&self) -> bool {
        let Some(running) = lock(&self.shared.running).clone() else {
            return false;
        };
        let url = format!(
            "{}/health",
            crate::http::local_base(&running.config.host, running.port)
        );
        crate::process::actor::answers(&url, std::time::Duration::from_secs(2)).await
    }

    async fn shut_down(&self) {
        self.stop().await;
    }
}

/// An in-process request in the queue.
pub struct Submitted {
    engine: Arc<Engine>,
    job: Arc<engine::Job>,
}

impl Submitted {
    /// Its images, once made; the job is then forgotten (the caller has them).
    pub async fn outcome(self) -> Result<Arc<ImageOutput>, JobError> {
        let outcome = self.job.wait().await;
        self.engine.forget(&self.job.id);
        outcome
    }
}

impl Shared {
    /// The server is `crashed` while its resident sd-server is (its HTTP port still answers, and
    /// the next image starts sd-server again), and `running` once that one is back.
    fn follow_backend(&self, backend: &Transition) {
        let now = self.status.borrow().status;
        match (now, backend.new) {
            (ServerState::Running, ServerState::Crashed) => self.set_status(
                ServerState::Crashed,
                backend.reason.clone(),
                Some(backend.reason.clone()),
            ),
            (ServerState::Crashed, ServerState::Running) => {
                self.set_status(ServerState::Running, "sd-server is back".into(), None)
            }
            _ => {}
        }
    }

    /// Sets the state, then announces the transition (one `State` event each).
    fn set_status(&self, state: ServerState, reason: String, error: Option<String>) {
        let changed = transition(&self.status, state, reason, false, |s| {
            match state {
                ServerState::Running if s.started_at.is_none() => {
                    s.started_at = Some(crate::clock::iso_now())
                }
                ServerState::Stopped => s.started_at = None,
                _ => {}
            }
            if error.is_some() || state == ServerState::Starting {
                s.error = error;
            }
        });
        if let Some(t) = changed {
            self.emit(DiffusionEvent::Server(ServerEvent::State(t)));
        }
    }

    fn emit(&self, event: DiffusionEvent) {
        if let Some(events) = &self.events {
            events.emit(event);
        }
    }
}

/// A fixed port must be free now; `None` takes one the OS hands out.
async fn bind(host: &str, port: Option<u16>) -> Result<tokio::net::TcpListener, DiffusionError> {
    tokio::net::TcpListener::bind((host, port.unwrap_or(0)))
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => DiffusionError::PortInUse {
                host: host.into(),
                port: port.unwrap_or(0),
            },
            _ => DiffusionError::Bind {
                host: host.into(),
                port: port.unwrap_or(0),
                source,
            },
        })
}

#[cfg(all(test, unix))]
pub(crate) mod tests;
