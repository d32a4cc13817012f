//! The orchestrator's worker: the one task that owns the queue of work, the cancels, the saved
//! state and the offloaded LLM. The handle only sends it messages and reads what it publishes.
//!
//! It runs one activity at a time (a piece of work, or the LLM's reload) while it keeps taking
//! messages, so a waiting image can be cancelled, or another queued, while the one before it is
//! made. Between activities it decides with [`Options::next`] whether an offloaded LLM comes back.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::effects::{Effects, StartResult};
use super::options::Options;
use super::policy::{Next, Situation};
use super::usage::{Bottleneck, Estimate, ServerUsage, Usage};
use super::{OrchestratorEvent, Phase, SavedState, YieldReason};
use crate::config::DataPaths;
use crate::diffusion::DiffusionError;
use crate::diffusion::engine::{JobError, Permit};
use crate::diffusion::request::ImageShape;
use crate::events::EventSink;
use crate::llama::gateway::QueueInfo;
use crate::llama::resolve::StartRequest;
use futures_util::future::join_all;

/// How often a wait for released memory looks again.
pub(super) const MEMORY_POLL: Duration = Duration::from_millis(50);

/// What the handle (and the diffusion server's gate) asks of the worker.
pub(super) enum Msg {
    /// The diffusion server's job `id` asks for its turn: make room if needed, then answer with
    /// a permit that the server holds while it makes the image.
    Admit {
        id: String,
        shape: ImageShape,
        reply: oneshot::Sender<Admitted>,
    },
    /// Answered once the image `id` is settled: at once, or, when it was the last image to
    /// keep the LLM out, once the LLM is back.
    Settle {
        id: String,
        reply: oneshot::Sender<()>,
    },
    StartLlm {
        server: usize,
        request: Box<StartRequest>,
        data: Box<DataPaths>,
        reply: oneshot::Sender<StartResult>,
    },
    /// An image waiting for its turn or for room: it leaves the queue, or its offload ends.
    Cancel(String),
    /// The app's own offload (`offloadLLM()`): in its turn, every running llama server goes as
    /// for an image and stays out until [`Msg::ReloadLlm`]; answers whether any was running.
    OffloadLlm(oneshot::Sender<bool>),
    /// Ends the app's hold: the LLM comes back once no image keeps it out; answered then.
    ReloadLlm(oneshot::Sender<()>),
    ClearSaved,
    /// Answered once every message sent before it has been taken.
    #[cfg(test)]
    Sync(oneshot::Sender<()>),
}

/// What the worker publishes on every change, for the handle's synchronous getters.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub phase: Phase,
    /// The llama servers out, as they were.
    pub saved: Vec<SavedState>,
    /// Images waiting for their turn (not the one being made).
    pub images_waiting: usize,
}

pub(super) type Admitted = Result<Permit, JobError>;

/// Work waiting for its turn, in order.
enum Work {
    Image {
        id: String,
        shape: ImageShape,
        cancel: CancellationToken,
        reply: oneshot::Sender<Admitted>,
    },
    StartLlm {
        server: usize,
        request: Box<StartRequest>,
        data: Box<DataPaths>,
        reply: oneshot::Sender<StartResult>,
    },
    Offload(oneshot::Sender<bool>),
}

/// Finished work and where its answer goes.
enum Done {
    /// The image's own answer went with the diffusion server's job; this settles its waiter.
    Image(String),
    Start(oneshot::Sender<StartResult>, StartResult),
    Offload(oneshot::Sender<bool>, bool),
}

/// The llama servers the orchestrator has offloaded: each with what it used, in the order they
/// went, and what ran out.
#[derive(Debug, Clone)]
struct Offloaded {
    servers: Vec<(usize, Usage)>,
    bottleneck: Bottleneck,
}

impl Offloaded {
    /// More servers went for a later image of the same burst.
    fn merge(this: Option<Offloaded>, more: Option<Offloaded>) -> Option<Offloaded> {
        match (this, more) {
            (Some(mut this), Some(more)) => {
                this.servers.extend(more.servers);
                Some(this)
            }
            (this, more) => this.or(more),
        }
    }

    fn servers(&self) -> impl Iterator<Item = usize> + '_ {
        self.servers.iter().map(|(server, _)| *server)
    }
}

/// How an activity ended.
enum Finished {
    Work {
        done: Box<Done>,
        /// Set when the work offloaded the LLM.
        offloaded: Option<Offloaded>,
    },
    Reloaded,
}

type Activity = Pin<Box<dyn Future<Output = Finished> + Send>>;

/// What every activity uses. The status is written only from the worker's task.
struct Context<E> {
    effects: Arc<E>,
    options: Options,
    events: Option<EventSink<OrchestratorEvent>>,
    status: watch::Sender<Status>,
}

pub(super) struct Worker<E> {
    context: Arc<Context<E>>,
    inbox: mpsc::UnboundedReceiver<Msg>,
    queue: VecDeque<Work>,
    /// Who waits for an image to be settled ([`Msg::Settle`]).
    settling: HashMap<String, oneshot::Sender<()>>,
    /// The image being made, and its cancel.
    making: Option<(String, CancellationToken)>,
    offloaded: Option<Offloaded>,
    /// Answers held until the LLM is back, when their work was the last to keep it out.
    held: Vec<Done>,
    idle_since: Instant,
    /// The handle is gone: finish what is queued, bring the LLM back, end.
    closed: bool,
    /// The app offloaded the LLM itself (`offloadLLM()`): it stays out until `reloadLLM()`.
    held_by_app: bool,
    /// Who waits for the LLM to be back (`reloadLLM()`).
    reloading: Vec<oneshot::Sender<()>>,
}

impl<E: Effects> Worker<E> {
    pub(super) fn new(
        effects: Arc<E>,
        options: Options,
        events: Option<EventSink<OrchestratorEvent>>,
        inbox: mpsc::UnboundedReceiver<Msg>,
        status: watch::Sender<Status>,
    ) -> Self {
        Worker {
            context: Arc::new(Context {
                effects,
                options,
                events,
                status,
            }),
            inbox,
            queue: VecDeque::new(),
            settling: HashMap::new(),
            making: None,
            offloaded: None,
            held: Vec::new(),
            idle_since: Instant::now(),
            closed: false,
            held_by_app: false,
            reloading: Vec::new(),
        }
    }

    pub(super) async fn run(mut self) {
        let mut current: Option<Activity> = None;
        loop {
            if current.is_none() {
                // Every message sent so far counts for the decision (an image that has left
                // the diffusion server's queue has asked for its turn by then).
                self.take_sent();
                current = self.next_activity();
                if current.is_none() && self.closed {
                    return;
                }
            }
            let idle = self.idle_wake(current.is_none());
            tokio::select! {
                message = self.inbox.recv(), if !self.closed => match message {
                    Some(message) => self.receive(message),
                    None => self.closed = true,
                },
                finished = async { current.as_mut().expect("guarded").await }, if current.is_some() => {
                    current = None;
                    self.finish(finished);
                }
                () = idle => {}
            }
        }
    }

    fn take_sent(&mut self) {
        while !self.closed {
            match self.inbox.try_recv() {
                Ok(message) => self.receive(message),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => self.closed = true,
            }
        }
    }

    /// Takes a message; nothing here awaits, so messages are taken while an activity runs.
    fn receive(&mut self, message: Msg) {
        match message {
            Msg::Admit { id, shape, reply } => self.queue.push_back(Work::Image {
                id,
                shape,
                cancel: CancellationToken::new(),
                reply,
            }),
            Msg::Settle { id, reply } => self.settle(id, reply),
            Msg::OffloadLlm(reply) => {
                self.held_by_app = true;
                self.queue.push_back(Work::Offload(reply));
            }
            Msg::ReloadLlm(reply) => {
                self.held_by_app = false;
                if self.offloaded.is_some()
                    || self.queue.iter().any(|w| matches!(w, Work::Offload(_)))
                {
                    self.reloading.push(reply);
                } else {
                    let _ = reply.send(());
                }
            }
            Msg::StartLlm {
                server,
                request,
                data,
                reply,
            } => self.queue.push_back(Work::StartLlm {
                server,
                request,
                data,
                reply,
            }),
            Msg::Cancel(id) => self.cancel(id),
            Msg::ClearSaved => self.context.status.send_modify(|s| s.saved.clear()),
            #[cfg(test)]
            Msg::Sync(reply) => drop(reply.send(())),
        }
        self.publish_queue();
    }

    fn cancel(&mut self, id: String) {
        let waiting = self
            .queue
            .iter()
            .position(|w| matches!(w, Work::Image { id: queued, .. } if *queued == id));
        if let Some(Work::Image { reply, .. }) = waiting.and_then(|i| self.queue.remove(i)) {
            // It leaves the queue at once, and causes no offload; the count is published first.
            self.publish_queue();
            let _ = reply.send(Err(cancelled()));
        } else if let Some((_, cancel)) = self.making.as_ref().filter(|(making, _)| *making == id) {
            cancel.cancel();
        }
    }

    /// The image being made, or made and held until the LLM is back, settles later; any other
    /// (made and released, never admitted here) is settled now.
    fn settle(&mut self, id: String, reply: oneshot::Sender<()>) {
        let making = self
            .making
            .as_ref()
            .is_some_and(|(making, _)| *making == id);
        let held = self
            .held
            .iter()
            .any(|d| matches!(d, Done::Image(held) if *held == id));
        if making || held {
            self.settling.insert(id, reply);
        } else {
            let _ = reply.send(());
        }
    }

    /// Gives finished work its answer. A caller that is gone (its future dropped) needs none.
    fn answer(&mut self, done: Done) {
        match done {
            Done::Image(id) => {
                if let Some(waiter) = self.settling.remove(&id) {
                    let _ = waiter.send(());
                }
            }
            Done::Start(reply, outcome) => drop(reply.send(outcome)),
            Done::Offload(reply, offloaded) => drop(reply.send(offloaded)),
        }
    }

    /// Images waiting in this queue (the one asking for its turn, at most), not those still
    /// queued at the diffusion server behind it.
    fn images_waiting(&self) -> usize {
        self.queue
            .iter()
            .filter(|w| matches!(w, Work::Image { .. }))
            .count()
    }

    fn publish_queue(&self) {
        let waiting = self.images_waiting();
        self.context
            .status
            .send_if_modified(|s| std::mem::replace(&mut s.images_waiting, waiting) != waiting);
    }

    fn finish(&mut self, finished: Finished) {
        match finished {
            Finished::Work { done, offloaded } => {
                self.making = None;
                self.offloaded = Offloaded::merge(self.offloaded.take(), offloaded);
                self.held.push(*done);
                self.idle_since = Instant::now();
            }
            Finished::Reloaded => {
                self.held_by_app = false;
                for waiter in self.reloading.drain(..) {
                    let _ = waiter.send(());
                }
            }
        }
    }

    /// With nothing running: bring the LLM back, or start the next work, or wait.
    fn next_activity(&mut self) -> Option<Activity> {
        if let Some(offloaded) = self.offloaded.clone() {
            match self.context.options.next(self.situation(&offloaded)) {
                Next::Reload => {
                    self.offloaded = None;
                    let context = self.context.clone();
                    return Some(Box::pin(async move {
                        context.reload(offloaded, YieldReason::Reload).await;
                        Finished::Reloaded
                    }));
                }
                Next::StayOffloaded => self.context.set_phase(Phase::Offloaded),
            }
        }
        for done in std::mem::take(&mut self.held) {
            self.answer(done);
        }
        let Some(work) = self.queue.pop_front() else {
            if self.offloaded.is_none() {
                self.context.set_phase(Phase::Idle);
            }
            return None;
        };
        self.publish_queue();
        let context = self.context.clone();
        Some(match work {
            Work::Image {
                id,
                shape,
                cancel,
                reply,
            } => {
                self.making = Some((id.clone(), cancel.clone()));
                Box::pin(async move {
                    let offloaded = context.image(&shape, &cancel, reply).await;
                    Finished::Work {
                        done: Box::new(Done::Image(id)),
                        offloaded,
                    }
                })
            }
            Work::StartLlm {
                server,
                request,
                data,
                reply,
            } => Box::pin(async move {
                let outcome = context.start_llm(server, *request, &data).await;
                Finished::Work {
                    done: Box::new(Done::Start(reply, outcome)),
                    offloaded: None,
                }
            }),
            Work::Offload(reply) => Box::pin(async move {
                let offloaded = context.offload_for_app().await;
                Finished::Work {
                    done: Box::new(Done::Offload(reply, offloaded.is_some())),
                    offloaded,
                }
            }),
        })
    }

    fn situation(&self, offloaded: &Offloaded) -> Situation {
        let reload_after_idle = self.context.options.reload_after_idle;
        Situation {
            images_waiting: self.images_waiting() + self.context.effects.images_queued(),
            starts_waiting: self
                .queue
                .iter()
                .any(|w| matches!(w, Work::StartLlm { .. })),
            chat: queue_at(&*self.context.effects, offloaded.servers()),
            may_idle_offloaded: !self.closed
                && reload_after_idle.is_some_and(|after| self.idle_since.elapsed() < after),
            held_by_app: self.held_by_app && !self.closed,
        }
    }

    /// While the LLM stays out with nothing to do, the worker decides again when an image it
    /// stayed out for leaves the diffusion server's queue unmade (cancelled), or, with
    /// `reloadAfterIdle`, when a chat request comes or the idle time is over.
    fn idle_wake(&self, idle: bool) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let Some(offloaded) = self.offloaded.as_ref().filter(|_| idle) else {
            return Box::pin(std::future::pending());
        };
        let servers: Vec<usize> = offloaded.servers().collect();
        let effects = self.context.effects.clone();
        let deadline = self
            .context
            .options
            .reload_after_idle
            .map(|after| self.idle_since + after);
        let images_queued = effects.images_queued() > 0;
        Box::pin(async move {
            let idle_over = async {
                match deadline {
                    Some(deadline) => tokio::select! {
                        () = chat_arrived(&*effects, &servers) => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    },
                    None => std::future::pending().await,
                }
            };
            let images_gone = async {
                if !images_queued {
                    return std::future::pending().await;
                }
                while effects.images_queued() > 0 {
                    tokio::time::sleep(MEMORY_POLL).await;
                }
            };
            tokio::select! {
                () = idle_over => {}
                () = images_gone => {}
            }
        })
    }
}

fn cancelled() -> JobError {
    DiffusionError::Cancelled.into()
}

/// The requests waiting at these servers' gateways: how many, and the longest wait.
pub(super) fn queue_at<E: Effects>(effects: &E, servers: impl Iterator<Item = usize>) -> QueueInfo {
    let queues = servers.map(|server| effects.chat_queue(server));
    queues.fold(QueueInfo::default(), |all, queue| QueueInfo {
        length: all.length + queue.length,
        longest_wait_ms: all.longest_wait_ms.max(queue.longest_wait_ms),
    })
}

/// Resolves once a request waits at any of these servers' gateways.
async fn chat_arrived<E: Effects>(effects: &E, servers: &[usize]) {
    // select_all panics on no futures: with no server to wait for, nothing arrives.
    if servers.is_empty() {
        return std::future::pending().await;
    }
    let arrivals = servers
        .iter()
        .map(|&server| Box::pin(effects.chat_arrived(server)));
    futures_util::future::select_all(arrivals).await;
}

/// What the running llama servers and an image of this shape need, whether they fit together,
/// and which servers go when they do not.
pub(super) async fn estimate<E: Effects>(
    effects: &E,
    options: &Options,
    shape: &ImageShape,
    data: &DataPaths,
) -> Estimate {
    let mut servers = Vec::new();
    for server in 0..effects.llm_servers() {
        servers.extend(effects.llm_usage(server, data).await);
    }
    let diffusion = effects.image_usage(shape).await;
    let free = effects.free().await;
    options.weigh(servers, diffusion, free.memory, free.gpu)
}

impl<E: Effects> Context<E> {
    /// An image's turn: offloads the llama servers it needs room from first, then lets the
    /// diffusion server make it and waits until it has (the permit is dropped); says what it
    /// offloaded.
    async fn image(
        &self,
        shape: &ImageShape,
        cancel: &CancellationToken,
        reply: oneshot::Sender<Admitted>,
    ) -> Option<Offloaded> {
        if cancel.is_cancelled() {
            let _ = reply.send(Err(cancelled()));
            return None;
        }
        let data = self.effects.data_paths();
        let estimate = estimate(&*self.effects, &self.options, shape, &data).await;
        let mut offloaded = None;
        if estimate.needs_offload {
            let going = estimate.servers.iter().filter(|s| s.offload);
            offloaded = self.offload(going, estimate.bottleneck).await;
            if cancel.is_cancelled() {
                let _ = reply.send(Err(cancelled()));
                return offloaded;
            }
            self.wait_for_memory(estimate.diffusion, estimate.bottleneck)
                .await;
        }
        self.set_phase(Phase::Generating);
        let (permit, over) = Permit::new();
        // Refused when the job was withdrawn meanwhile: nothing is made.
        if reply.send(Ok(permit)).is_ok() {
            let _ = over.await;
        }
        offloaded
    }

    /// `offloadLLM()`: every running llama server goes as for an image that does not fit;
    /// `None` when none was running (or all were already out).
    async fn offload_for_app(&self) -> Option<Offloaded> {
        let data = self.effects.data_paths();
        let estimate = estimate(&*self.effects, &self.options, &ImageShape::default(), &data).await;
        self.offload(estimate.servers.iter(), estimate.bottleneck)
            .await
    }

    /// Holds, drains and stops these servers together.
    async fn offload(
        &self,
        servers: impl Iterator<Item = &ServerUsage>,
        bottleneck: Bottleneck,
    ) -> Option<Offloaded> {
        let options = &self.options;
        let servers: Vec<&ServerUsage> = servers.collect();
        // Requests let through by the last reload are served before the next hold.
        let drained = servers.iter().map(|s| self.effects.chat_drained(s.server));
        let _ = tokio::time::timeout(options.drain_timeout, join_all(drained)).await;
        // One the app stopped meanwhile has nothing to offload.
        let going: Vec<(SavedState, Usage)> = servers
            .iter()
            .filter_map(|s| {
                let resolved = self.effects.llm_config(s.server)?;
                let saved = SavedState {
                    server: s.server,
                    resolved,
                    was_running: true,
                    saved_at: crate::clock::unix_millis(),
                };
                Some((saved, s.usage))
            })
            .collect();
        if going.is_empty() {
            return None;
        }
        self.status.send_modify(|s| {
            s.saved
                .retain(|kept| going.iter().all(|(g, _)| g.server != kept.server));
            s.saved.extend(going.iter().map(|(saved, _)| saved.clone()));
        });
        self.set_phase(Phase::Draining);
        for (saved, _) in &going {
            self.emit(OrchestratorEvent::Offload(Box::new(saved.clone())));
        }
        let offloads = going.iter().map(|(saved, _)| {
            self.effects
                .offload_llm(saved.server, options.drain_timeout, options.queue)
        });
        if join_all(offloads).await.contains(&false) {
            tracing::warn!("offload: requests still in flight after the drain timeout were cut");
        }
        self.set_phase(Phase::Offloading);
        Some(Offloaded {
            servers: going.iter().map(|(s, usage)| (s.server, *usage)).collect(),
            bottleneck,
        })
    }

    /// Brings the offloaded servers back, in the order they went, once an idle sd-server that
    /// does not fit beside them all has yielded.
    async fn reload(&self, offloaded: Offloaded, reason: YieldReason) {
        // One the app stopped or started itself meanwhile is not ours to bring back.
        let (ours, theirs): (Vec<_>, Vec<_>) = offloaded
            .servers
            .iter()
            .partition(|(server, _)| self.effects.llm_offloaded(*server));
        self.forget(theirs.iter().map(|(server, _)| *server));
        if ours.is_empty() {
            self.set_phase(Phase::Idle);
            return;
        }
        self.set_phase(Phase::Reloading);
        let need = Usage::total(ours.iter().map(|(_, usage)| usage));
        self.make_room_for_the_llm(need, offloaded.bottleneck, reason)
            .await;
        for (server, _) in ours {
            match self.effects.reload_llm(server).await {
                Ok(info) => {
                    self.forget([server]);
                    self.emit(OrchestratorEvent::Reload { server, info });
                }
                Err(error) => self.emit(OrchestratorEvent::ReloadFailed { server, error }),
            }
        }
        self.set_phase(Phase::Idle);
    }

    /// Drops the saved state of servers that are back (or not ours any more).
    fn forget(&self, servers: impl IntoIterator<Item = usize>) {
        let servers: Vec<usize> = servers.into_iter().collect();
        if !servers.is_empty() {
            self.status
                .send_modify(|s| s.saved.retain(|saved| !servers.contains(&saved.server)));
        }
    }

    /// Starts a llama server; an idle resident sd-server that does not fit beside it yields
    /// first. (Servers the orchestrator holds offloaded have come back before: [`Options::next`].)
    async fn start_llm(
        &self,
        server: usize,
        request: StartRequest,
        data: &DataPaths,
    ) -> StartResult {
        let planned = self.effects.plan_llm(&request, data).await?;
        if let Some((llm, bottleneck)) = planned.need {
            self.make_room_for_the_llm(llm, bottleneck, YieldReason::Start)
                .await;
        }
        let started = self
            .effects
            .start_llm(server, request, planned.config, data);
        started.await
    }

    /// A resident sd-server keeps its model loaded after the image: when it and the LLM do not
    /// fit together, it yields if idle (an image being made is never cut; the next image starts
    /// it again).
    async fn make_room_for_the_llm(&self, llm: Usage, bottleneck: Bottleneck, reason: YieldReason) {
        let Some(held) = self.effects.diffusion_held().await else {
            return;
        };
        let free = self.effects.free().await;
        if self.options.must_yield(llm, held, free.memory, bottleneck)
            && self.effects.release_idle_diffusion().await
        {
            tracing::info!("stopped the idle resident sd-server to make room for the LLM");
            self.emit(OrchestratorEvent::DiffusionReleased { reason });
            self.wait_for_memory(llm, bottleneck).await;
        }
    }

    /// Memory is not free the moment a process exits: waits (bounded) until what `needed` asks
    /// of the bottleneck is reported free, with the headroom. A wait for RAM reads only RAM: each
    /// look at VRAM asks the GPU's driver.
    async fn wait_for_memory(&self, needed: Usage, bottleneck: Bottleneck) {
        let deadline = Instant::now() + self.options.memory_release_timeout;
        loop {
            let enough = match bottleneck {
                Bottleneck::Ram => self.effects.free_ram() >= needed.ram + self.options.headroom,
                Bottleneck::Vram => {
                    let free = self.effects.free().await;
                    // A driver that does not say what is free cannot be waited for.
                    !free.vram_reported || free.memory.vram >= needed.vram + self.options.headroom
                }
            };
            if enough || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(MEMORY_POLL).await;
        }
    }

    fn set_phase(&self, phase: Phase) {
        if self
            .status
            .send_if_modified(|s| std::mem::replace(&mut s.phase, phase) != phase)
        {
            self.emit(OrchestratorEvent::Phase { phase });
        }
    }

    fn emit(&self, event: OrchestratorEvent) {
        if let Some(events) = &self.events {
            events.emit(event);
        }
    }
}
