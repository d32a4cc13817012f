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
//! - `options`: the options as JS passes them, resolved.
//! - `usage`: what each side uses or will use (measured, else by arithmetic).
//! - `policy`: the decisions, pure: whether the two fit, whether the LLM comes back, whether an
//!   idle sd-server yields.
//! - `effects`: what the worker does and reads, as a trait; [`Servers`] does it to the real
//!   servers, and the tests to fakes with paused time.
//! - `worker`: the one task that owns the queue, the cancels, the saved state and the offload.
//!   The [`Orchestrator`] handle only sends it messages and reads what it publishes.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use tokio::sync::{mpsc, oneshot, watch};
use ts_rs::TS;

use crate::config::DataPaths;
use crate::diffusion::DiffusionError;
use crate::diffusion::request::ImageRequest;
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

pub use effects::{Effects, Free, ImageResult, PlannedStart, Servers, StartResult};
pub use options::{Options, OptionsRequest, OrchestratorError, Policy};
pub use usage::{Bottleneck, Estimate, Memory, Source, Usage};
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

/// The LLM as it was when it was offloaded.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct SavedState {
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
    /// The LLM is about to be drained and stopped.
    Offload(Box<SavedState>),
    /// The LLM is back.
    Reload(ServerInfo),
    /// The LLM could not be brought back; requests that waited got 503 with the reason.
    ReloadFailed { error: String },
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
    /// The chat requests waiting at the LLM's gateway.
    pub queue: QueueInfo,
    /// The images waiting for their turn (not the one being made).
    pub images_waiting: usize,
}

/// The orchestrator: a handle on its worker, which is started on first use (from within the
/// runtime) and ends once the handle is dropped and what was queued is done.
pub struct Orchestrator<E: Effects = Servers> {
    effects: Arc<E>,
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
        Orchestrator {
            effects,
            options,
            inbox,
            status,
            worker: Arc::new(LazyWorker(Mutex::new(Some(Box::pin(worker.run()))))),
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

    /// The chat requests waiting at the LLM's gateway now.
    pub fn queue(&self) -> QueueInfo {
        self.effects.chat_queue()
    }

    /// Images waiting for their turn (not the one being made).
    pub fn images_waiting(&self) -> usize {
        self.status.borrow().images_waiting
    }

    pub fn saved_state(&self) -> Option<SavedState> {
        self.status.borrow().saved.clone()
    }

    pub fn clear_saved_state(&self) {
        self.send(Msg::ClearSaved);
    }

    /// What the LLM and an image of `(width, height)` need, and whether they fit together.
    pub async fn estimate(&self, size: (u32, u32), data: &DataPaths) -> Estimate {
        worker::estimate(&*self.effects, &self.options, size, data).await
    }

    /// Makes the image in its turn, offloading the LLM first when the two do not fit; the LLM
    /// comes back as the policy says, and in any case once no image waits.
    pub async fn generate(
        &self,
        request: ImageRequest,
        id: String,
        data: &DataPaths,
    ) -> ImageResult {
        self.queue_image(request, id, data).outcome().await
    }

    /// Takes the image's place in the queue now, without awaiting anything: images are made in
    /// the order of these calls. Its id can be cancelled from the moment this returns.
    pub fn queue_image(&self, request: ImageRequest, id: String, data: &DataPaths) -> PendingImage {
        let (reply, answer) = oneshot::channel();
        self.send(Msg::Image {
            id,
            request,
            data: data.clone(),
            reply,
        });
        PendingImage {
            worker: self.worker.clone(),
            answer,
        }
    }

    /// Cancels an image that waits for its turn, for an offload, or is being made; an id not
    /// seen yet is cancelled when its image comes.
    pub fn cancel(&self, id: &str) -> bool {
        self.send(Msg::Cancel(id.to_string()));
        true
    }

    /// Starts the LLM in its turn; when it and an idle resident sd-server do not fit together,
    /// the sd-server is stopped first (the next image starts it again).
    pub async fn start_llm(&self, request: StartRequest, data: &DataPaths) -> StartResult {
        let (reply, answer) = oneshot::channel();
        self.send(Msg::StartLlm {
            request: Box::new(request),
            data: data.clone(),
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

/// An image in the orchestrator's queue.
pub struct PendingImage {
    worker: Arc<LazyWorker>,
    answer: oneshot::Receiver<ImageResult>,
}

impl PendingImage {
    /// Its images, once made; cancelled while it waits, it leaves the queue at once.
    pub async fn outcome(self) -> ImageResult {
        self.worker.start();
        match self.answer.await {
            Ok(outcome) => outcome,
            // The worker ended with the runtime.
            Err(_) => Err(DiffusionError::NotRunning.into()),
        }
    }
}

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
