//! The ResourceOrchestrator: images while llama servers are loaded, and chat between images.
//!
//! When the running llama servers (a chat server, an embedding or rerank server beside it) and
//! an image together do not fit the budget, the servers the image needs room from are offloaded
//! (their gateways hold new requests, those in flight finish, then each llama-server stops), the
//! image is made once their memory is reported free, and they are reloaded on the same ports
//! with the same configs; the requests made meanwhile are then served. Which servers go is
//! `policy::choose_offloads`: chat servers first, and only as many as make room.
//!
//! One worker runs the work (images, LLM starts) one piece at a time, in order, and alone
//! decides when the servers (below, "the LLM") go and come back ([`Options::next`]): with the `collate` policy the
//! images queued behind an offload run back to back and the LLM returns once none waits, or
//! sooner when a chat request has waited `maxChatWait`; `fifo` reloads after every image. With
//! `reloadAfterIdle` the LLM stays out after the images until a chat request comes or the
//! orchestrator has been idle that long. When the LLM must come back (or be started) and an idle
//! resident sd-server holds the memory it needs, the sd-server yields.
//!
//! - `options`: the options as JS passes them, resolved.
//! - `usage`: what each side uses or will use (measured, else by arithmetic).
//! - `policy`: the decisions, pure: whether they fit and which servers go, whether the servers
//!   come back, whether an idle sd-server yields.
//! - `effects`: what the worker does and reads, as a trait; [`Servers`] does it to the real
//!   servers, and the tests to fakes with paused time.
//! - `worker`: the one task that owns the queue, the cancels, the saved state and the offload.
//!   The [`Orchestrator`] handle only sends it messages and reads what it publishes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde::Serialize;

use tokio::sync::{mpsc, oneshot, watch};
use ts_rs::TS;

use crate::config::DataPaths;
use crate::diffusion::DiffusionError;
use crate::diffusion::engine::{Admission, Admit};
use crate::diffusion::request::{ImageRequest, ImageShape};
use crate::events::EventSink;
use crate::launch::StartError;
use crate::llama::gateway::QueueInfo;
use crate::llama::resolve::StartRequest;
use crate::llama::{LlamaConfig, LlamaError, ServerInfo};
use crate::sync::lock;

mod effects;
mod options;
mod policy;
mod usage;
mod worker;

pub use effects::{Effects, Free, ImageJob, ImageResult, PlannedStart, Servers, StartResult};
pub use options::{Options, OptionsRequest, OrchestratorError, Policy};
pub use usage::{Bottleneck, Estimate, Memory, ServerUsage, Source, Usage};
use worker::{Msg, Status, Worker};

/// What the orchestrator is doing. `offloaded`: the LLM stays out between images of a burst, or
/// (with `reloadAfterIdle`) until a chat or the idle time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "lowercase")]
#[ts(rename = "OrchestratorPhase")]
pub enum Phase {
    #[default]
    Idle,
    Draining,
    Offloading,
    Generating,
    /// The LLM stays offloaded: more images are queued, or (with `reloadAfterIdle`) it waits
    /// for a chat request or the idle time.
    Offloaded,
    Reloading,
}

/// A llama server as it was when it was offloaded.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct SavedState {
    /// Its place among the orchestrator's llama servers (0: `llamaServer`).
    pub server: usize,
    pub resolved: LlamaConfig,
    pub was_running: bool,
    /// Milliseconds since the Unix epoch.
    pub saved_at: u64,
}

/// Why the diffusion side gave its memory back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "kebab-case")]
pub enum YieldReason {
    Reload,
    Start,
}

/// What the orchestrator reports, one event per step.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum OrchestratorEvent {
    /// Every change of `getInfo().phase`.
    Phase { phase: Phase },
    /// A llama server is about to be drained and stopped (one event per server).
    Offload(Box<SavedState>),
    /// A llama server is back.
    Reload {
        /// Its place among the orchestrator's llama servers (0: `llamaServer`).
        server: usize,
        #[serde(flatten)]
        info: ServerInfo,
    },
    /// A llama server could not be brought back; requests that waited got 503 with the reason.
    ReloadFailed { server: usize, error: String },
    /// The idle resident sd-server was stopped to make room for the LLM coming back (`reload`)
    /// or started by {@link ResourceOrchestrator.startLlamaServer} (`start`); the next image
    /// starts it again.
    DiffusionReleased { reason: YieldReason },
}

/// What `getInfo()` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct OrchestratorInfo {
    pub phase: Phase,
    /// The requests waiting at the llama servers' gateways (all of them together).
    pub queue: QueueInfo,
    /// The images waiting for their turn (not the one being made).
    pub images_waiting: usize,
}

/// The orchestrator: a handle on its worker, which is started on first use (from within the
/// runtime) and ends once the handle is dropped and what was queued is done.
pub struct Orchestrator<E: Effects = Servers> {
    effects: Arc<E>,
    /// This orchestrator as the gate of the diffusion server's images.
    gate: Arc<Gate>,
    options: Options,
    inbox: mpsc::UnboundedSender<Msg>,
    status: watch::Receiver<Status>,
    worker: Arc<LazyWorker>,
}

type WorkerTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The worker's task until it is spawned: a JS constructor runs outside the runtime.
struct LazyWorker(Mutex<Option<WorkerTask>>);

impl LazyWorker {
    fn start(&self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current()
            && let Some(task) = lock(&self.0).take()
        {
            drop(runtime.spawn(task));
        }
    }
}

impl<E: Effects> Orchestrator<E> {
    pub fn new(effects: E, options: Options, events: Option<EventSink<OrchestratorEvent>>) -> Self {
        let effects = Arc::new(effects);
        let (inbox, messages) = mpsc::unbounded_channel();
        let (publish, status) = watch::channel(Status::default());
        let worker = Worker::new(effects.clone(), options.clone(), events, messages, publish);
        let worker = Arc::new(LazyWorker(Mutex::new(Some(Box::pin(worker.run())))));
        // Every image of the diffusion server asks this orchestrator for its turn, whatever
        // door it came through, until a newer orchestrator takes over or this one is disposed
        // or dropped; its own calls ask it whatever newer ones there are.
        let gate = Arc::new(Gate {
            inbox: inbox.downgrade(),
            worker: Arc::downgrade(&worker),
            serving: AtomicBool::new(true),
        });
        effects.serve_images(gate.clone());
        Orchestrator {
            effects,
            gate,
            options,
            inbox,
            status,
            worker,
        }
    }

    fn send(&self, message: Msg) {
        self.worker.start();
        // The worker ends only after this handle is dropped.
        let _ = self.inbox.send(message);
    }

    pub fn phase(&self) -> Phase {
        self.status.borrow().phase
    }

    pub fn info(&self) -> OrchestratorInfo {
        OrchestratorInfo {
            phase: self.phase(),
            queue: self.queue(),
            images_waiting: self.images_waiting(),
        }
    }

    /// The requests waiting at the llama servers' gateways now.
    pub fn queue(&self) -> QueueInfo {
        worker::queue_at(&*self.effects, 0..self.effects.llm_servers())
    }

    /// Images waiting for their turn (not the one being made), at the diffusion server too.
    pub fn images_waiting(&self) -> usize {
        self.status.borrow().images_waiting + self.effects.images_queued()
    }

    /// The first llama server out (`llamaServer` when it is), as it was.
    pub fn saved_state(&self) -> Option<SavedState> {
        let status = self.status.borrow();
        status.saved.iter().min_by_key(|s| s.server).cloned()
    }

    /// Every llama server out, as it was, in the order they went.
    pub fn saved_states(&self) -> Vec<SavedState> {
        self.status.borrow().saved.clone()
    }

    pub fn clear_saved_state(&self) {
        self.send(Msg::ClearSaved);
    }

    /// What the LLM and an image of this shape need, and whether they fit together.
    pub async fn estimate(&self, shape: &ImageShape, data: &DataPaths) -> Estimate {
        worker::estimate(&*self.effects, &self.options, shape, data).await
    }

    /// Makes the image in its turn, offloading the LLM first when the two do not fit; the LLM
    /// comes back as the policy says, and in any case once no image waits.
    pub async fn generate(&self, request: ImageRequest, id: String) -> ImageResult {
        self.queue_image(request, id).outcome().await
    }

    /// Queues the image at the diffusion server now, without awaiting anything: images are made
    /// in the order of these calls (and of HTTP requests). Its id can be cancelled from the
    /// moment this returns.
    pub fn queue_image(&self, request: ImageRequest, id: String) -> PendingImage {
        PendingImage {
            job: self
                .effects
                .submit_image(request, id.clone(), self.gate.clone()),
            id,
            inbox: self.inbox.clone(),
            worker: self.worker.clone(),
        }
    }

    /// Stops deciding the diffusion server's images: the orchestrator constructed before it
    /// serves again, and the images it queued itself are made as the others are.
    pub fn dispose(&self) {
        self.gate.serving.store(false, Ordering::SeqCst);
    }

    /// Cancels an image that waits for its turn, for an offload, or is being made.
    pub fn cancel(&self, id: &str) -> bool {
        self.effects.cancel_image(id)
    }

    /// `offloadLLM()`: in its turn, the LLM goes as for an image that does not fit (its gateway
    /// holds chat requests) and stays out until [`Orchestrator::reload_llm`]; images made
    /// meanwhile need no offload. False when it was not running.
    pub async fn offload_llm(&self) -> bool {
        let (reply, answer) = oneshot::channel();
        self.send(Msg::OffloadLlm(reply));
        answer.await.unwrap_or(false)
    }

    /// `reloadLLM()`: ends the app's hold; resolves once the LLM is back (at once when it is not
    /// out), after the images that keep it out.
    pub async fn reload_llm(&self) {
        let (reply, answer) = oneshot::channel();
        self.send(Msg::ReloadLlm(reply));
        let _ = answer.await;
    }

    /// Starts llama server `server` in its turn; when it and an idle resident sd-server do not
    /// fit together, the sd-server is stopped first (the next image starts it again).
    pub async fn start_llm(
        &self,
        server: usize,
        request: StartRequest,
        data: &DataPaths,
    ) -> StartResult {
        let (reply, answer) = oneshot::channel();
        self.send(Msg::StartLlm {
            server,
            request: Box::new(request),
            data: Box::new(data.clone()),
            reply,
        });
        answer.await.unwrap_or_else(|_| {
            Err(StartError::Server(LlamaError::Invalid(
                "the orchestrator is gone".into(),
            )))
        })
    }

    /// Resolves once the worker has taken every message sent before.
    #[cfg(test)]
    async fn sync(&self) {
        let (reply, answer) = oneshot::channel();
        self.send(Msg::Sync(reply));
        let _ = answer.await;
    }
}

/// An image queued at the diffusion server by the orchestrator's own call. While it is held,
/// the orchestrator serves as the gate even if its handle was dropped.
pub struct PendingImage {
    job: ImageJob,
    id: String,
    inbox: mpsc::UnboundedSender<Msg>,
    worker: Arc<LazyWorker>,
}

impl PendingImage {
    /// Its images, once made and, when it was the last image to keep the LLM out, once the LLM
    /// is back; cancelled while it waits, it leaves the queue at once.
    pub async fn outcome(self) -> ImageResult {
        self.worker.start();
        let outcome = self.job.await;
        let (reply, settled) = oneshot::channel();
        if self.inbox.send(Msg::Settle { id: self.id, reply }).is_ok() {
            let _ = settled.await;
        }
        outcome
    }
}

/// The orchestrator as the gate of its diffusion server's images. Weak: a dropped orchestrator
/// stops serving (its worker ends once its queue is done).
struct Gate {
    inbox: mpsc::WeakUnboundedSender<Msg>,
    worker: Weak<LazyWorker>,
    /// Until `dispose()`.
    serving: AtomicBool,
}

impl Admission for Gate {
    fn admit(&self, id: &str, request: &ImageRequest) -> Option<Admit> {
        if !self.serving.load(Ordering::SeqCst) {
            return None;
        }
        let (inbox, worker) = (self.inbox.upgrade()?, self.worker.upgrade()?);
        let (reply, answer) = oneshot::channel();
        inbox
            .send(Msg::Admit {
                id: id.to_string(),
                shape: request.shape(),
                reply,
            })
            .ok()?;
        worker.start();
        let mut withdraw = Withdraw(Some((self.inbox.clone(), id.to_string())));
        Some(Box::pin(async move {
            let answer = answer.await;
            withdraw.disarm();
            match answer {
                Ok(admitted) => admitted,
                // Its worker ended with the runtime.
                Err(_) => Err(DiffusionError::NotRunning.into()),
            }
        }))
    }
}

/// An admission dropped before its answer: the job was cancelled while it waited for its turn
/// or for room; it leaves the queue, or its offload ends.
struct Withdraw(Option<(mpsc::WeakUnboundedSender<Msg>, String)>);

impl Withdraw {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if let Some((inbox, id)) = self.0.take()
            && let Some(inbox) = inbox.upgrade()
        {
            let _ = inbox.send(Msg::Cancel(id));
        }
    }
}

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
