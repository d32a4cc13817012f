//! The ResourceOrchestrator: images while chat is loaded, and chat between images.
//!
//! When the LLM and an image together do not fit the budget, the LLM is offloaded (the gateway
//! holds new chat requests, those in flight finish, then llama-server stops), the image is made
//! once its memory is reported free, and the LLM is reloaded on the same port with the same
//! config; the chat requests made meanwhile are then served.
//!
//! One worker runs the work (images, LLM starts) one piece at a time, in order, and alone
//! decides when the LLM goes and comes back ([`Options::next`]): with the `collate` policy the
//! images queued behind an offload run back to back and the LLM returns once none waits, or
//! sooner when a chat request has waited `maxChatWait`; `fifo` reloads after every image. With
//! `reloadAfterIdle` the LLM stays out after the images until a chat request comes or the
//! orchestrator has been idle that long. When the LLM must come back (or be started) and an idle
//! resident sd-server holds the memory it needs, the sd-server yields.
//!
//! Estimates (`estimate`) count a running process by what it uses, never less than its RSS, and
//! otherwise by arithmetic: for the LLM the GGUF-based estimate behind `canRunModel` with the
//! running server's context, GPU layers and KV-cache types (for a model split over RPC workers,
//! only this machine's share of the layers); for an image its model's files plus a working set
//! that grows with width × height, calibrated on the real sd-cli.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::DataPaths;
use crate::diffusion::engine::{ImageOutput, JobError};
use crate::diffusion::{DiffusionError, DiffusionServer};
use crate::error::{Coded, ErrorCode};
use crate::events::EventSink;
use crate::launch::StartError;
use crate::llama::gateway::{QueueBounds, QueueInfo};
use crate::llama::resolve::{self, StartRequest};
use crate::llama::{LlamaConfig, LlamaError, LlamaServer, ServerInfo};
use crate::process::ServerState;
use crate::sync::lock;
use crate::system::SystemInfo;
use crate::system::estimate::{KvCache, KvCacheType, ModelSpec};

const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("{0}")]
    Invalid(String),
}

impl Coded for OrchestratorError {
    fn code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }

    fn suggestion(&self) -> Option<String> {
        Some("Compare with OrchestratorOptions in index.d.ts".into())
    }
}

/// The JS `OrchestratorOptions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OptionsRequest {
    /// Bytes; JS numbers beyond 2^32 arrive as floating point.
    pub ram_budget_bytes: Option<f64>,
    pub vram_budget_bytes: Option<f64>,
    pub headroom: Option<f64>,
    /// Milliseconds.
    pub memory_release_timeout: Option<u64>,
    pub drain_timeout: Option<u64>,
    /// Milliseconds a chat request may wait while the LLM is offloaded.
    pub queue_timeout: Option<u64>,
    pub max_queued_requests: Option<u32>,
    /// `'collate'` (default) or `'fifo'`.
    pub policy: Option<String>,
    /// Milliseconds a chat request waits for images before the LLM comes back between them.
    pub max_chat_wait: Option<u64>,
    /// Milliseconds: keep the LLM out after images until a chat request or this much idle time.
    pub reload_after_idle: Option<u64>,
}

/// How the images queued behind an offload are ordered against the LLM's return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Back to back while the LLM is out; it returns when none waits (or a chat waits too long).
    Collate,
    /// The LLM returns after every image.
    Fifo,
}

/// A byte count from JS: a whole number from 0 (or from 1 with `positive`).
fn bytes(name: &str, value: Option<f64>, positive: bool) -> Result<Option<u64>, OrchestratorError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && v.fract() == 0.0 && v >= f64::from(u8::from(positive)) => {
            Ok(Some(v as u64))
        }
        Some(v) => Err(OrchestratorError::Invalid(format!(
            "{name} must be a whole number of bytes{}, got {v}",
            if positive {
                " above 0 (leave it unset for what the machine has)"
            } else {
                ""
            }
        ))),
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// What the two servers together may use; `None`: what the machine has.
    pub ram_budget: Option<u64>,
    pub vram_budget: Option<u64>,
    /// Kept free beside the two.
    pub headroom: u64,
    pub memory_release_timeout: Duration,
    pub drain_timeout: Duration,
    /// The gateway's queue while the LLM is offloaded; unset parts are the server's own.
    pub queue: QueueBounds,
    pub policy: Policy,
    pub max_chat_wait: Duration,
    /// `None`: the LLM returns as soon as no image waits.
    pub reload_after_idle: Option<Duration>,
}

impl Options {
    pub fn resolve(req: OptionsRequest) -> Result<Options, OrchestratorError> {
        let policy = match req.policy.as_deref() {
            None | Some("collate") => Policy::Collate,
            Some("fifo") => Policy::Fifo,
            Some(other) => {
                return Err(OrchestratorError::Invalid(format!(
                    "policy must be 'collate' or 'fifo', got {other:?}"
                )));
            }
        };
        Ok(Options {
            policy,
            max_chat_wait: Duration::from_millis(req.max_chat_wait.unwrap_or(30_000)),
            reload_after_idle: req.reload_after_idle.map(Duration::from_millis),
            ram_budget: bytes("ramBudgetBytes", req.ram_budget_bytes, true)?,
            vram_budget: bytes("vramBudgetBytes", req.vram_budget_bytes, true)?,
            headroom: bytes("headroom", req.headroom, false)?.unwrap_or(512 * MIB),
            memory_release_timeout: Duration::from_millis(
                req.memory_release_timeout.unwrap_or(10_000),
            ),
            drain_timeout: Duration::from_millis(req.drain_timeout.unwrap_or(30_000)),
            queue: QueueBounds {
                max_queued: req.max_queued_requests.map(|n| n as usize),
                timeout: req.queue_timeout.map(Duration::from_millis),
            },
        })
    }

    /// Whether the two fit: on the GPU when either uses it (VRAM is then what runs out first),
    /// else in RAM, with the headroom kept free; only a running LLM is offloaded.
    fn weigh(
        &self,
        llm: Usage,
        diffusion: Usage,
        available: Memory,
        gpu: bool,
        llm_running: bool,
    ) -> Estimate {
        // What the running servers hold is theirs to use again.
        let held = |what: fn(&Usage) -> u64| {
            [&llm, &diffusion]
                .into_iter()
                .filter(|u| u.source == Source::Measured)
                .map(what)
                .sum::<u64>()
        };
        let budget = Memory {
            ram: self.ram_budget.unwrap_or(available.ram + held(|u| u.ram)),
            vram: self
                .vram_budget
                .unwrap_or(available.vram + held(|u| u.vram)),
        };
        let bottleneck = if gpu && (llm.vram > 0 || diffusion.vram > 0) {
            Bottleneck::Vram
        } else {
            Bottleneck::Ram
        };
        let (need, room) = match bottleneck {
            Bottleneck::Ram => (llm.ram + diffusion.ram, budget.ram),
            Bottleneck::Vram => (llm.vram + diffusion.vram, budget.vram),
        };
        Estimate {
            llm,
            diffusion,
            available,
            budget,
            bottleneck,
            needs_offload: llm_running && need + self.headroom > room,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The process runs: what it uses (never less than its RSS).
    Measured,
    Estimated,
    /// Nothing runs and nothing is asked.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// What counts: the larger of the two below.
    pub ram: u64,
    pub vram: u64,
    pub source: Source,
    /// By arithmetic.
    pub estimated: Memory,
    /// What the running process tree uses now.
    pub measured: Option<Memory>,
}

impl Usage {
    const NONE: Usage = Usage {
        ram: 0,
        vram: 0,
        source: Source::None,
        estimated: Memory { ram: 0, vram: 0 },
        measured: None,
    };

    fn of(estimated: Memory, measured: Option<&crate::process::memory::TreeMemory>) -> Usage {
        let measured = measured.map(|m| Memory {
            ram: m.rss_bytes,
            vram: m.vram_bytes.unwrap_or(0),
        });
        Usage {
            ram: estimated.ram.max(measured.map_or(0, |m| m.ram)),
            vram: estimated.vram.max(measured.map_or(0, |m| m.vram)),
            source: if measured.is_some() {
                Source::Measured
            } else {
                Source::Estimated
            },
            estimated,
            measured,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub ram: u64,
    pub vram: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bottleneck {
    Ram,
    Vram,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    pub llm: Usage,
    pub diffusion: Usage,
    /// Free now, as the system reports it.
    pub available: Memory,
    /// What the two servers together may use: the budget, or what is free plus what they hold.
    pub budget: Memory,
    pub bottleneck: Bottleneck,
    pub needs_offload: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Idle,
    Draining,
    Offloading,
    Generating,
    /// The LLM stays offloaded: more images are queued, or (with `reloadAfterIdle`) it waits
    /// for a chat request or the idle time.
    Offloaded,
    Reloading,
}

/// The LLM as it was when it was offloaded.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedState {
    pub resolved: LlamaConfig,
    pub was_running: bool,
    /// Milliseconds since the Unix epoch.
    pub saved_at: u64,
}

/// Why the diffusion side gave its memory back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum YieldReason {
    Reload,
    Start,
}

#[derive(Debug, Clone)]
pub enum OrchestratorEvent {
    Phase(Phase),
    Offload(Box<SavedState>),
    Reload(ServerInfo),
    ReloadFailed(String),
    /// The idle resident sd-server was stopped to make room for the LLM.
    DiffusionReleased(YieldReason),
}

/// What happens to an offloaded LLM when the orchestrator has finished a piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Reload,
    StayOffloaded,
}

/// What the orchestrator knows when it decides: the work waiting behind it, the chat requests
/// held at the gateway, and whether an idle LLM may stay offloaded.
#[derive(Debug, Clone, Copy)]
pub struct Situation {
    pub images_waiting: usize,
    pub starts_waiting: bool,
    pub chat: QueueInfo,
    /// `reloadAfterIdle` is set and has not run out since the last work.
    pub may_idle_offloaded: bool,
}

impl Options {
    /// The swap policy: collate images while the LLM is out, unless a chat request has waited
    /// `maxChatWait`; with nothing to do, reload at once, or after a chat or the idle time.
    pub fn next(&self, now: Situation) -> Next {
        let starving = now.chat.length > 0
            && Duration::from_millis(now.chat.longest_wait_ms) >= self.max_chat_wait;
        if now.starts_waiting {
            Next::Reload
        } else if now.images_waiting > 0 {
            match self.policy {
                Policy::Collate if !starving => Next::StayOffloaded,
                _ => Next::Reload,
            }
        } else if now.chat.length == 0 && now.may_idle_offloaded {
            Next::StayOffloaded
        } else {
            Next::Reload
        }
    }
}

type ImageResult = Result<Arc<ImageOutput>, JobError>;
type StartResult = Result<ServerInfo, StartError<LlamaError>>;

/// Work waiting for its turn, in order.
enum Work {
    Image {
        id: String,
        request: Value,
        data: DataPaths,
        cancel: CancellationToken,
        reply: oneshot::Sender<ImageResult>,
    },
    StartLlm {
        request: Box<StartRequest>,
        data: DataPaths,
        reply: oneshot::Sender<StartResult>,
    },
}

/// Finished work and where its answer goes.
enum Done {
    Image(oneshot::Sender<ImageResult>, ImageResult),
    Start(oneshot::Sender<StartResult>, StartResult),
}

impl Done {
    fn send(self) {
        // A caller that is gone (its future dropped) needs no answer.
        let _ = match self {
            Done::Image(reply, outcome) => reply.send(outcome).map_err(drop),
            Done::Start(reply, outcome) => reply.send(outcome).map_err(drop),
        };
    }
}

/// The LLM while the orchestrator has it offloaded: what it used, and what ran out.
#[derive(Debug, Clone, Copy)]
struct Offloaded {
    llm: Usage,
    bottleneck: Bottleneck,
}

/// The orchestrator's state, shared by its handle and its worker. The worker alone offloads,
/// reloads and runs the work, one piece at a time.
struct Core {
    llama: Arc<LlamaServer>,
    diffusion: Arc<DiffusionServer>,
    system: &'static SystemInfo,
    options: Options,
    events: Option<EventSink<OrchestratorEvent>>,
    saved: Mutex<Option<SavedState>>,
    offloaded: Mutex<Option<Offloaded>>,
    phase: Mutex<Phase>,
    queue: Mutex<VecDeque<Work>>,
    /// The cancel of every image not finished, and of ids cancelled before their image came.
    cancels: Mutex<HashMap<String, CancellationToken>>,
    wake: Notify,
    closed: AtomicBool,
    worker: OnceLock<()>,
}

pub struct Orchestrator {
    core: Arc<Core>,
}

impl Orchestrator {
    pub fn new(
        llama: Arc<LlamaServer>,
        diffusion: Arc<DiffusionServer>,
        system: &'static SystemInfo,
        options: Options,
        events: Option<EventSink<OrchestratorEvent>>,
    ) -> Self {
        Orchestrator {
            core: Arc::new(Core {
                llama,
                diffusion,
                system,
                options,
                events,
                saved: Mutex::new(None),
                offloaded: Mutex::new(None),
                phase: Mutex::new(Phase::Idle),
                queue: Mutex::default(),
                cancels: Mutex::default(),
                wake: Notify::new(),
                closed: AtomicBool::new(false),
                worker: OnceLock::new(),
            }),
        }
    }

    pub fn phase(&self) -> Phase {
        *lock(&self.core.phase)
    }

    /// The chat requests waiting at the LLM's gateway now.
    pub fn queue(&self) -> QueueInfo {
        self.core.llama.queue()
    }

    /// Images waiting for their turn (not the one being made).
    pub fn images_waiting(&self) -> usize {
        self.core.images_waiting()
    }

    pub fn saved_state(&self) -> Option<SavedState> {
        lock(&self.core.saved).clone()
    }

    pub fn clear_saved_state(&self) {
        *lock(&self.core.saved) = None;
    }

    /// What the LLM and an image of `request` (`{ width, height, count }`) need, and whether
    /// they fit together.
    pub async fn estimate(&self, request: &Value, data: &DataPaths) -> Estimate {
        self.core.estimate(request, data).await
    }

    /// Makes the image in its turn, offloading the LLM first when the two do not fit; the LLM
    /// comes back as the policy says, and in any case once no image waits.
    pub async fn generate(&self, request: &Value, id: String, data: &DataPaths) -> ImageResult {
        self.queue_image(request, id, data).outcome().await
    }

    /// Takes the image's place in the queue now, without awaiting anything: images are made in
    /// the order of these calls. Its id can be cancelled from the moment this returns.
    pub fn queue_image(&self, request: &Value, id: String, data: &DataPaths) -> PendingImage {
        let cancel = lock(&self.core.cancels)
            .entry(id.clone())
            .or_default()
            .clone();
        let (reply, answer) = oneshot::channel();
        self.core.enqueue(Work::Image {
            id: id.clone(),
            request: request.clone(),
            data: data.clone(),
            cancel: cancel.clone(),
            reply,
        });
        PendingImage {
            core: self.core.clone(),
            id,
            cancel,
            answer,
        }
    }

    /// Cancels an image that waits for its turn, for an offload, or is being made.
    pub fn cancel(&self, id: &str) -> bool {
        // An id not seen yet is cancelled before its image comes.
        lock(&self.core.cancels)
            .entry(id.to_string())
            .or_default()
            .cancel();
        self.core.diffusion.cancel(Some(id));
        true
    }

    /// Starts the LLM in its turn; when it and an idle resident sd-server do not fit together,
    /// the sd-server is stopped first (the next image starts it again).
    pub async fn start_llm(&self, request: StartRequest, data: &DataPaths) -> StartResult {
        let (reply, answer) = oneshot::channel();
        self.core.enqueue(Work::StartLlm {
            request: Box::new(request),
            data: data.clone(),
            reply,
        });
        self.core.start_worker();
        answer.await.unwrap_or_else(|_| {
            Err(StartError::Server(LlamaError::Invalid(
                "the orchestrator is gone".into(),
            )))
        })
    }
}

/// An image in the orchestrator's queue.
pub struct PendingImage {
    core: Arc<Core>,
    id: String,
    cancel: CancellationToken,
    answer: oneshot::Receiver<ImageResult>,
}

impl PendingImage {
    /// Its images, once made; cancelled while it waits, it leaves the queue at once.
    pub async fn outcome(mut self) -> ImageResult {
        self.core.start_worker();
        let outcome = tokio::select! {
            outcome = &mut self.answer => outcome,
            _ = self.cancel.cancelled() => {
                // Still waiting: it leaves the queue now, and causes no offload.
                if self.core.unqueue(&self.id) {
                    self.core.wake.notify_one();
                    Ok(Err(DiffusionError::Cancelled.into()))
                } else {
                    self.answer.await
                }
            }
        };
        lock(&self.core.cancels).remove(&self.id);
        match outcome {
            Ok(outcome) => outcome,
            // The worker ended with the runtime.
            Err(_) => Err(DiffusionError::NotRunning.into()),
        }
    }
}

impl Drop for Orchestrator {
    /// The worker finishes what is queued, brings the LLM back, and ends.
    fn drop(&mut self) {
        self.core.closed.store(true, Ordering::SeqCst);
        self.core.wake.notify_one();
    }
}

impl Core {
    fn enqueue(&self, work: Work) {
        lock(&self.queue).push_back(work);
        self.wake.notify_one();
    }

    /// The worker, started on first use (from within the runtime).
    fn start_worker(self: &Arc<Self>) {
        self.worker
            .get_or_init(|| drop(tokio::spawn(self.clone().work())));
    }

    async fn work(self: Arc<Self>) {
        let mut idle_since = Instant::now();
        loop {
            let next = lock(&self.queue).pop_front();
            let done = match next {
                Some(work) => {
                    let done = self.run(work).await;
                    idle_since = Instant::now();
                    Some(done)
                }
                None if self.closed.load(Ordering::SeqCst) => {
                    if lock(&self.offloaded).is_some() {
                        self.reload(YieldReason::Reload).await;
                    }
                    return;
                }
                None => {
                    self.idle(idle_since).await;
                    if !lock(&self.queue).is_empty() {
                        continue;
                    }
                    None
                }
            };
            self.settle(idle_since).await;
            // Answered once the LLM is back, when this work was the last to keep it out.
            if let Some(done) = done {
                done.send();
            }
        }
    }

    /// Waits for work; an LLM left offloaded also comes back for a chat request or once the
    /// idle time is over (`settle` decides).
    async fn idle(&self, idle_since: Instant) {
        let wake = self.wake.notified();
        let lazily_offloaded = lock(&self.offloaded).is_some();
        match self.options.reload_after_idle {
            Some(after) if lazily_offloaded => {
                let mut chat = self.llama.queue_length();
                tokio::select! {
                    _ = wake => {}
                    _ = chat.wait_for(|n| *n > 0) => {}
                    _ = tokio::time::sleep_until((idle_since + after).into()) => {}
                }
            }
            _ => wake.await,
        }
    }

    /// After each piece of work (or wake-up): reload the offloaded LLM, or keep it out.
    async fn settle(&self, idle_since: Instant) {
        if lock(&self.offloaded).is_none() {
            if lock(&self.queue).is_empty() {
                self.set_phase(Phase::Idle);
            }
            return;
        }
        let now = Situation {
            images_waiting: self.images_waiting(),
            starts_waiting: lock(&self.queue)
                .iter()
                .any(|w| matches!(w, Work::StartLlm { .. })),
            chat: self.llama.queue(),
            may_idle_offloaded: self
                .options
                .reload_after_idle
                .is_some_and(|after| idle_since.elapsed() < after),
        };
        match self.options.next(now) {
            Next::Reload => self.reload(YieldReason::Reload).await,
            Next::StayOffloaded => self.set_phase(Phase::Offloaded),
        }
    }

    fn images_waiting(&self) -> usize {
        lock(&self.queue)
            .iter()
            .filter(|w| matches!(w, Work::Image { cancel, .. } if !cancel.is_cancelled()))
            .count()
    }

    /// Takes a waiting image out of the queue; false when it is not there (it runs).
    fn unqueue(&self, image: &str) -> bool {
        let mut queue = lock(&self.queue);
        let before = queue.len();
        queue.retain(|w| !matches!(w, Work::Image { id, .. } if id == image));
        queue.len() < before
    }

    async fn run(&self, work: Work) -> Done {
        match work {
            Work::Image {
                id,
                request,
                data,
                cancel,
                reply,
            } => Done::Image(reply, self.image(&request, &id, &data, &cancel).await),
            Work::StartLlm {
                request,
                data,
                reply,
            } => Done::Start(reply, self.start_llm(*request, &data).await),
        }
    }

    async fn image(
        &self,
        request: &Value,
        id: &str,
        data: &DataPaths,
        cancel: &CancellationToken,
    ) -> ImageResult {
        let cancelled = || JobError::from(DiffusionError::Cancelled);
        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        let estimate = self.estimate(request, data).await;
        if estimate.needs_offload {
            self.offload(&estimate).await;
            if cancel.is_cancelled() {
                return Err(cancelled());
            }
            self.wait_for_memory(estimate.diffusion.ram).await;
        }
        self.set_phase(Phase::Generating);
        let submitted = self.diffusion.submit(request, Some(id.to_string()))?;
        // A cancel between the check above and the submit found no job to cancel.
        if cancel.is_cancelled() {
            self.diffusion.cancel(Some(id));
        }
        submitted.outcome().await
    }

    async fn offload(&self, estimate: &Estimate) {
        // Chat requests let through by the last reload are served before the next hold.
        let mut waiting = self.llama.queue_length();
        let _ =
            tokio::time::timeout(self.options.drain_timeout, waiting.wait_for(|n| *n == 0)).await;
        let saved = SavedState {
            resolved: self.llama.config().expect("a running server has a config"),
            was_running: true,
            saved_at: crate::clock::unix_millis(),
        };
        *lock(&self.saved) = Some(saved.clone());
        *lock(&self.offloaded) = Some(Offloaded {
            llm: estimate.llm,
            bottleneck: estimate.bottleneck,
        });
        self.set_phase(Phase::Draining);
        self.emit(OrchestratorEvent::Offload(Box::new(saved)));
        let drained = self
            .llama
            .offload(self.options.drain_timeout, self.options.queue)
            .await;
        if !drained {
            tracing::warn!("offload: requests still in flight after the drain timeout were cut");
        }
        self.set_phase(Phase::Offloading);
    }

    async fn reload(&self, reason: YieldReason) {
        let Some(offloaded) = lock(&self.offloaded).take() else {
            return;
        };
        if !self.llama.is_offloaded() {
            // The app stopped or started the LLM itself meanwhile: it is not ours to bring back.
            *lock(&self.saved) = None;
            self.set_phase(Phase::Idle);
            return;
        }
        self.set_phase(Phase::Reloading);
        self.make_room_for_the_llm(offloaded.llm, offloaded.bottleneck, reason)
            .await;
        match self.llama.reload().await {
            Ok(info) => {
                *lock(&self.saved) = None;
                self.emit(OrchestratorEvent::Reload(info));
            }
            Err(err) => self.emit(OrchestratorEvent::ReloadFailed(err.to_string())),
        }
        self.set_phase(Phase::Idle);
    }

    async fn start_llm(&self, request: StartRequest, data: &DataPaths) -> StartResult {
        // An LLM the orchestrator holds offloaded comes back first: a start then finds it
        // running, as it would without the orchestrator.
        self.reload(YieldReason::Start).await;
        let binaries = crate::binaries::BinaryManager::shared();
        // What it will run with, whatever is free now: its estimate says what must yield.
        let planned = StartRequest {
            force: true,
            ..request.clone()
        };
        let config = resolve::resolve(planned, data, self.system, binaries).await?;
        if let Some((ram, vram)) = llm_estimate(&config, data).await {
            let gpu = self.system.gpu().await.available && vram > 0;
            let bottleneck = if gpu {
                Bottleneck::Vram
            } else {
                Bottleneck::Ram
            };
            let llm = Usage::of(Memory { ram, vram }, None);
            self.make_room_for_the_llm(llm, bottleneck, YieldReason::Start)
                .await;
        }
        let config = if request.force {
            config
        } else {
            resolve::resolve(request, data, self.system, binaries).await?
        };
        self.llama.start(config).await.map_err(StartError::Server)
    }

    /// What the LLM and an image of `request` need, and whether they fit together.
    async fn estimate(&self, request: &Value, data: &DataPaths) -> Estimate {
        let llm = self.llm_usage(data).await;
        let diffusion = self.diffusion_usage(request).await;
        let free = self.system.memory().available;
        let gpu = self.system.gpu().await;
        let available = Memory {
            ram: free,
            vram: gpu.vram_free.unwrap_or(0),
        };
        let llm_running = self.llama.info().status == ServerState::Running;
        self.options
            .weigh(llm, diffusion, available, gpu.available, llm_running)
    }

    async fn llm_usage(&self, data: &DataPaths) -> Usage {
        let (ServerState::Running, Some(config)) = (self.llama.info().status, self.llama.config())
        else {
            return Usage::NONE;
        };
        // Split over RPC workers, most of the model lives elsewhere: only this machine's share
        // counts, as sized from what the workers reported at start.
        let (ram, vram) = match (&config.shares, config.rpc_workers.is_empty()) {
            (_, true) => llm_estimate(&config, data).await.unwrap_or((0, 0)),
            (Some(shares), false) => (shares.local.ram, shares.local.vram),
            // Unsized (a worker's protocol unknown here): what its process holds is all we know.
            (None, false) => (0, 0),
        };
        Usage::of(Memory { ram, vram }, self.llama.memory().await.as_ref())
    }

    async fn diffusion_usage(&self, request: &Value) -> Usage {
        let Some(config) = self.diffusion.config() else {
            return Usage::NONE;
        };
        // The size as a request would have it (an estimate needs no prompt).
        let mut sized = request.clone();
        if let Some(fields) = sized.as_object_mut() {
            fields.entry("prompt").or_insert_with(|| json!("size only"));
        }
        let (width, height) = crate::diffusion::request::parse(&sized, false)
            .map(|r| (r.width, r.height))
            .unwrap_or((512, 512));
        let mut files = 0;
        let model = &config.backend.model;
        for path in std::iter::once(&model.primary).chain(model.components.iter().map(|(_, p)| p)) {
            files += tokio::fs::metadata(path).await.map_or(0, |m| m.len());
        }
        let estimated = Memory {
            ram: files + crate::diffusion::working_set(width, height),
            vram: 0,
        };
        Usage::of(estimated, self.diffusion.memory().await.as_ref())
    }

    /// A resident sd-server keeps its model loaded after the image: when it and the LLM do not
    /// fit together, it yields if idle (an image being made is never cut; the next image starts
    /// it again).
    async fn make_room_for_the_llm(&self, llm: Usage, bottleneck: Bottleneck, reason: YieldReason) {
        let Some(resident) = self.diffusion.memory().await else {
            return;
        };
        let (need, room) = match bottleneck {
            Bottleneck::Ram => {
                let held = resident.rss_bytes;
                let free = self.system.memory().available;
                (
                    llm.ram + held,
                    self.options.ram_budget.unwrap_or(free + held),
                )
            }
            Bottleneck::Vram => {
                let held = resident.vram_bytes.unwrap_or(0);
                let free = self.system.gpu().await.vram_free.unwrap_or(0);
                (
                    llm.vram + held,
                    self.options.vram_budget.unwrap_or(free + held),
                )
            }
        };
        if need + self.options.headroom > room && self.diffusion.release_idle_backend().await {
            tracing::info!("stopped the idle resident sd-server to make room for the LLM");
            self.emit(OrchestratorEvent::DiffusionReleased(reason));
            self.wait_for_memory(llm.ram).await;
        }
    }

    /// Memory is not free the moment a process exits: wait (bounded) until `needed` is.
    async fn wait_for_memory(&self, needed: u64) {
        let deadline = Instant::now() + self.options.memory_release_timeout;
        while self.system.memory().available < needed + self.options.headroom
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn set_phase(&self, phase: Phase) {
        let changed = {
            let mut current = lock(&self.phase);
            std::mem::replace(&mut *current, phase) != phase
        };
        if changed {
            self.emit(OrchestratorEvent::Phase(phase));
        }
    }

    fn emit(&self, event: OrchestratorEvent) {
        if let Some(events) = &self.events {
            events.emit(event);
        }
    }
}

/// `(ram, vram)` of the running LLM by the GGUF arithmetic behind `canRunModel`.
async fn llm_estimate(config: &LlamaConfig, data: &DataPaths) -> Option<(u64, u64)> {
    let info = crate::models::store::read(data, &config.model_id)
        .await
        .ok()?;
    let spec: ModelSpec = serde_json::from_value(serde_json::to_value(&info).ok()?).ok()?;
    let kind = |t: &Option<String>| -> Option<KvCacheType> {
        serde_json::from_value(json!(t.as_deref()?)).ok()
    };
    let k = kind(&config.cache_type_k).unwrap_or_default();
    let cache = KvCache {
        k,
        v: kind(&config.cache_type_v).unwrap_or(k),
    };
    let e = crate::system::estimate::estimate(&spec, config.context_size, config.gpu_layers, cache);
    Some((e.ram, e.vram))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real llama-server behind its gateway and a one-shot sd-cli server with the tiny
    /// models, and an orchestrator over them under `options` whose events are recorded by name;
    /// `None` (the test skips) without the real backends.
    struct Real {
        _serial: tokio::sync::MutexGuard<'static, ()>,
        _tmp: tempfile::TempDir,
        data: DataPaths,
        llama: Arc<LlamaServer>,
        diffusion: Arc<DiffusionServer>,
        first: ServerInfo,
        orchestrator: Orchestrator,
        events: Arc<Mutex<Vec<String>>>,
    }

    async fn real(options: OptionsRequest) -> Option<Real> {
        let (Some((binary, model)), Some(b)) =
            (crate::llama::tests::real(), crate::diffusion::tests::real())
        else {
            return None;
        };
        let serial = crate::diffusion::tests::SERIAL.lock().await;
        let tmp = tempfile::tempdir().unwrap();
        let data = DataPaths::new(tmp.path().into(), crate::config::DataDirSource::Configured);
        let llama = Arc::new(LlamaServer::new(None));
        let diffusion = Arc::new(DiffusionServer::new(None));
        let mut llm = crate::llama::tests::config(binary, model);
        llm.gateway = true;
        let first = llama.start(llm).await.unwrap();
        let kind = crate::diffusion::backend::BackendKind::OneShot;
        diffusion
            .start(crate::diffusion::tests::config(&b, kind, tmp.path()))
            .await
            .unwrap();
        let system: &'static SystemInfo = Box::leak(Box::new(SystemInfo::new(vec![])));
        let events: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = events.clone();
        let orchestrator = Orchestrator::new(
            llama.clone(),
            diffusion.clone(),
            system,
            Options::resolve(options).unwrap(),
            Some(EventSink::new(move |e: OrchestratorEvent| {
                lock(&sink).push(match e {
                    OrchestratorEvent::Phase(p) => format!("{p:?}"),
                    OrchestratorEvent::Offload(_) => "offload".into(),
                    OrchestratorEvent::Reload(_) => "reload".into(),
                    OrchestratorEvent::ReloadFailed(e) => format!("reload-failed {e}"),
                    OrchestratorEvent::DiffusionReleased(r) => format!("released {r:?}"),
                })
            })),
        );
        Some(Real {
            _serial: serial,
            _tmp: tmp,
            data,
            llama,
            diffusion,
            first,
            orchestrator,
            events,
        })
    }

    /// The real llama-server (behind its gateway) and sd-cli, with the tiny models.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_image_that_does_not_fit_offloads_and_reloads_the_llm_and_a_chat_waits_for_it() {
        let Some(Real {
            data,
            llama,
            diffusion,
            first,
            orchestrator,
            events,
            ..
        }) = real(OptionsRequest {
            ram_budget_bytes: Some(1e6),
            headroom: Some(0.0),
            ..Default::default()
        })
        .await
        else {
            return;
        };
        let request =
            json!({ "prompt": "a red cube", "width": 64, "height": 64, "steps": 2, "cfgScale": 1 });
        let estimate = orchestrator.estimate(&request, &data).await;
        assert!(estimate.needs_offload, "{estimate:?}");
        assert_eq!(estimate.llm.source, Source::Measured);
        assert_eq!(estimate.diffusion.source, Source::Estimated);
        assert_eq!(estimate.bottleneck, Bottleneck::Ram);

        let port = first.port.unwrap();
        let chat = async {
            // Sent once the LLM is held: it waits for the reload.
            while orchestrator.phase() == Phase::Idle {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            crate::http::local_client()
                .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
                .body(r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2}"#)
                .send()
                .await
                .unwrap()
                .status()
        };
        let (image, status) = tokio::join!(
            orchestrator.generate(&request, "img_orchestrated".into(), &data),
            chat
        );
        assert_eq!(image.unwrap().width, 64);
        assert_eq!(status, 200);
        let after = llama.info();
        assert_eq!(
            (after.status, after.port),
            (ServerState::Running, Some(port))
        );
        assert_ne!(after.pid, first.pid);
        assert!(orchestrator.saved_state().is_none());
        assert_eq!(
            *lock(&events),
            [
                "Draining",
                "offload",
                "Offloading",
                "Generating",
                "Reloading",
                "reload",
                "Idle"
            ]
        );
        // A cancel that comes before the image's job is queued still counts.
        assert!(orchestrator.cancel("img_early"));
        let cancelled = orchestrator
            .generate(&request, "img_early".into(), &data)
            .await
            .unwrap_err();
        assert!(cancelled.cancelled);
        assert_eq!(llama.info().status, ServerState::Running);
        llama.stop().await;
        diffusion.stop().await;
    }

    /// Collated images behind one offload, in the order queued; a cancelled waiting image
    /// leaves at once; with `reloadAfterIdle` the LLM stays out until the idle time is over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_runs_behind_one_offload_and_the_llm_returns_after_the_idle_time() {
        let Some(Real {
            data,
            llama,
            diffusion,
            orchestrator,
            events,
            ..
        }) = real(OptionsRequest {
            ram_budget_bytes: Some(1e6),
            headroom: Some(0.0),
            reload_after_idle: Some(400),
            ..Default::default()
        })
        .await
        else {
            return;
        };
        let request = |seed: u32| json!({ "prompt": "a red cube", "width": 64, "height": 64, "steps": 2, "cfgScale": 1, "seed": seed });
        let images: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .enumerate()
            .map(|(i, id)| orchestrator.queue_image(&request(i as u32), id.into(), &data))
            .collect();
        assert_eq!(orchestrator.images_waiting(), 3);
        assert!(orchestrator.cancel("c"));
        assert_eq!(
            orchestrator.images_waiting(),
            2,
            "a cancelled image does not count"
        );
        let mut outcomes = Vec::new();
        for image in images {
            outcomes.push(image.outcome().await);
        }
        assert_eq!(outcomes[0].as_ref().unwrap().seeds, [0]);
        assert_eq!(outcomes[1].as_ref().unwrap().seeds, [1]);
        assert!(outcomes[2].as_ref().unwrap_err().cancelled);
        assert_eq!(orchestrator.phase(), Phase::Offloaded);
        assert!(llama.is_offloaded());
        // Nothing comes: the idle time brings it back.
        let deadline = Instant::now() + Duration::from_secs(30);
        while orchestrator.phase() != Phase::Idle {
            assert!(Instant::now() < deadline, "{:?}", lock(&events));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(llama.info().status, ServerState::Running);
        let seen = lock(&events).clone();
        assert_eq!(
            seen.iter().filter(|e| *e == "offload").count(),
            1,
            "{seen:?}"
        );
        assert_eq!(seen.iter().filter(|e| *e == "reload").count(), 1);
        assert_eq!(
            seen.iter().filter(|e| *e == "Generating").count(),
            2,
            "{seen:?}"
        );
        assert!(orchestrator.saved_state().is_none());
        drop(orchestrator);
        llama.stop().await;
        diffusion.stop().await;
    }

    fn usage(ram: u64, vram: u64, source: Source) -> Usage {
        let memory = Memory { ram, vram };
        Usage {
            ram,
            vram,
            source,
            estimated: memory,
            measured: (source == Source::Measured).then_some(memory),
        }
    }

    #[test]
    fn the_gpu_decides_when_the_servers_use_it_and_ram_otherwise() {
        const GB: u64 = 1 << 30;
        let options = Options::resolve(OptionsRequest {
            headroom: Some(0.0),
            ..Default::default()
        })
        .unwrap();
        // 6 GB of VRAM free beside an LLM that holds 5 GB of it: an image needing 4 GB does not
        // fit (11 GB of VRAM in all), though RAM has plenty.
        let free = Memory {
            ram: 64 * GB,
            vram: 6 * GB,
        };
        let llm = usage(GB, 5 * GB, Source::Measured);
        let image = usage(GB, 4 * GB, Source::Estimated);
        let e = options.weigh(llm, image, free, true, true);
        assert_eq!(e.bottleneck, Bottleneck::Vram);
        assert_eq!(
            e.budget.vram,
            11 * GB,
            "what is free plus what the LLM holds"
        );
        assert!(!e.needs_offload, "5 + 4 of 11 GB fits");
        let big = usage(GB, 7 * GB, Source::Estimated);
        assert!(options.weigh(llm, big, free, true, true).needs_offload);
        // The same figures without a usable GPU: both run on the CPU, RAM decides.
        let e = options.weigh(llm, big, free, false, true);
        assert_eq!(e.bottleneck, Bottleneck::Ram);
        assert!(!e.needs_offload);
        // Nothing on the GPU: RAM decides even where a GPU is present.
        let cpu = |ram| usage(ram, 0, Source::Measured);
        let e = options.weigh(cpu(40 * GB), cpu(30 * GB), free, true, true);
        assert_eq!(e.bottleneck, Bottleneck::Ram);
        assert_eq!(e.budget.ram, 134 * GB);
        assert!(!e.needs_offload);
        // A VRAM budget caps what the machine has, and the headroom counts.
        let capped = Options::resolve(OptionsRequest {
            vram_budget_bytes: Some((10 * GB) as f64),
            headroom: Some((2 * GB) as f64),
            ..Default::default()
        })
        .unwrap();
        let e = capped.weigh(llm, image, free, true, true);
        assert_eq!(e.budget.vram, 10 * GB);
        assert!(e.needs_offload, "5 + 4 and 2 of headroom > 10");
        // An LLM that does not run is never offloaded.
        assert!(!capped.weigh(llm, big, free, true, false).needs_offload);
    }

    fn situation(images: usize, chat: usize, waited_ms: u64, idle: bool) -> Situation {
        Situation {
            images_waiting: images,
            starts_waiting: false,
            chat: QueueInfo {
                length: chat,
                longest_wait_ms: waited_ms,
            },
            may_idle_offloaded: idle,
        }
    }

    #[test]
    fn collate_keeps_the_llm_out_while_images_wait_unless_a_chat_has_waited_too_long() {
        let options = |policy: &str| {
            Options::resolve(OptionsRequest {
                policy: Some(policy.into()),
                max_chat_wait: Some(1_000),
                ..Default::default()
            })
            .unwrap()
        };
        let (collate, fifo) = (options("collate"), options("fifo"));
        use Next::{Reload, StayOffloaded};
        // Images waiting: collate keeps it out, fifo brings it back after each.
        assert_eq!(collate.next(situation(3, 0, 0, false)), StayOffloaded);
        assert_eq!(fifo.next(situation(3, 0, 0, false)), Reload);
        // A chat that has not waited maxChatWait yet does not cut in; one that has, does.
        assert_eq!(collate.next(situation(3, 1, 999, false)), StayOffloaded);
        assert_eq!(collate.next(situation(3, 1, 1_000, false)), Reload);
        // Nothing waits: back at once, unless it may idle out (reloadAfterIdle) and no chat waits.
        assert_eq!(collate.next(situation(0, 0, 0, false)), Reload);
        assert_eq!(collate.next(situation(0, 0, 0, true)), StayOffloaded);
        assert_eq!(fifo.next(situation(0, 0, 0, true)), StayOffloaded);
        assert_eq!(collate.next(situation(0, 1, 0, true)), Reload);
        // A start of the LLM waits behind: it comes back first.
        let start = Situation {
            starts_waiting: true,
            ..situation(3, 0, 0, true)
        };
        assert_eq!(collate.next(start), Reload);
    }

    #[test]
    fn swap_options_have_defaults_and_a_policy_is_checked() {
        let defaults = Options::resolve(OptionsRequest::default()).unwrap();
        assert_eq!(defaults.policy, Policy::Collate);
        assert_eq!(defaults.max_chat_wait, Duration::from_secs(30));
        assert_eq!(defaults.reload_after_idle, None);
        let err = Options::resolve(OptionsRequest {
            policy: Some("lifo".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(err.to_string().contains("'collate' or 'fifo'"), "{err}");
    }

    #[test]
    fn options_are_whole_byte_counts() {
        let bad = |req: OptionsRequest| Options::resolve(req).unwrap_err().code();
        assert_eq!(
            bad(OptionsRequest {
                ram_budget_bytes: Some(0.0),
                ..Default::default()
            }),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            bad(OptionsRequest {
                headroom: Some(1.5),
                ..Default::default()
            }),
            ErrorCode::InvalidArgument
        );
        let big = Options::resolve(OptionsRequest {
            ram_budget_bytes: Some(2f64.powi(50)),
            headroom: Some(0.0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((big.ram_budget, big.headroom), (Some(1 << 50), 0));
        let defaults = Options::resolve(OptionsRequest::default()).unwrap();
        assert_eq!(defaults.headroom, 512 * MIB);
        assert_eq!(defaults.drain_timeout, Duration::from_secs(30));
    }
}
