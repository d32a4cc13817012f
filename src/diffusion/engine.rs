//! Jobs: one worker runs them in order on the backend; a small queue holds the ones waiting,
//! and a full queue refuses more (busy). Every job has an id, a status, its latest progress and,
//! when done, its result or error; HTTP routes and the in-process API share this one table.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{Notify, broadcast, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::DiffusionError;
use super::backend::{Backend, Work};
use super::progress::Progress;
use super::request::ImageRequest;
use crate::error::{Coded, ErrorCode};
use crate::events::EventSink;
use crate::sync::lock;

/// Finished jobs (and their images) kept for `GET …/{id}`, for at most [`KEEP_FOR`]; older
/// ones are forgotten. A synchronous HTTP answer's job stays too, for clients that poll anyway.
const KEEP_FINISHED: usize = 16;
/// genai-electron 0.26 keeps results five minutes.
const KEEP_FOR: Duration = Duration::from_secs(300);

/// Where a job is: `pending` when accepted (waiting for its turn, and for memory when the
/// orchestrator must make room), `in_progress` when the backend takes it, then how it ended.
/// genai-electron 0.26's words, which its clients (genai-lite) poll for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    InProgress,
    Complete,
    Error,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::InProgress => "in_progress",
            JobStatus::Complete => "complete",
            JobStatus::Error => "error",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Complete | JobStatus::Error | JobStatus::Cancelled
        )
    }
}

/// What a finished job made.
#[derive(Debug)]
pub struct ImageOutput {
    pub images: Vec<Vec<u8>>,
    /// The seed of each image (a batch counts up from the first).
    pub seeds: Vec<i64>,
    pub width: u32,
    pub height: u32,
    /// From the job's start to its images in hand.
    pub time_taken: Duration,
    /// The part of it spent in the backend.
    pub backend_time: Duration,
    pub created: SystemTime,
}

/// A job's failure, kept (and cloned to every waiter) in the shape errors cross to callers.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    pub code: ErrorCode,
    pub message: String,
    pub suggestion: Option<String>,
    pub details: Map<String, Value>,
    pub cancelled: bool,
}

impl From<DiffusionError> for JobError {
    fn from(err: DiffusionError) -> Self {
        JobError {
            code: err.code(),
            message: err.to_string(),
            suggestion: err.suggestion(),
            details: err.details(),
            cancelled: matches!(err, DiffusionError::Cancelled),
        }
    }
}

impl Coded for JobError {
    fn code(&self) -> ErrorCode {
        self.code
    }

    fn suggestion(&self) -> Option<String> {
        self.suggestion.clone()
    }

    fn details(&self) -> Map<String, Value> {
        self.details.clone()
    }
}

#[derive(Debug, Clone)]
pub enum JobUpdate {
    Progress(Progress),
    Finished(JobStatus),
}

struct JobState {
    status: JobStatus,
    progress: Option<Progress>,
    outcome: Option<Result<Arc<ImageOutput>, JobError>>,
    /// The last change of status or progress.
    updated: SystemTime,
}

pub struct Job {
    pub id: String,
    pub request: ImageRequest,
    /// The gate of the orchestrator whose call this is: its own policy decides its turn.
    gate: Option<Arc<dyn Admission>>,
    pub seed: i64,
    pub created: SystemTime,
    cancel: CancellationToken,
    state: Mutex<JobState>,
    status: watch::Sender<JobStatus>,
    updates: broadcast::Sender<JobUpdate>,
}

/// A consistent copy of a job's state.
pub struct JobSnapshot {
    pub status: JobStatus,
    pub progress: Option<Progress>,
    pub outcome: Option<Result<Arc<ImageOutput>, JobError>>,
    pub updated: SystemTime,
}

impl Job {
    pub fn snapshot(&self) -> JobSnapshot {
        let state = lock(&self.state);
        JobSnapshot {
            status: state.status,
            progress: state.progress.clone(),
            outcome: state.outcome.clone(),
            updated: state.updated,
        }
    }

    /// Progress and the final status, from now on. Take it before reading a snapshot, so that
    /// nothing falls between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<JobUpdate> {
        self.updates.subscribe()
    }

    /// Resolves when the job has finished.
    pub async fn wait(&self) -> Result<Arc<ImageOutput>, JobError> {
        let mut status = self.status.subscribe();
        let _ = status.wait_for(|s| s.is_final()).await;
        lock(&self.state)
            .outcome
            .clone()
            .expect("a final job has an outcome")
    }

    fn progress(&self, progress: Progress) {
        let mut state = lock(&self.state);
        state.progress = Some(progress.clone());
        state.updated = SystemTime::now();
        drop(state);
        let _ = self.updates.send(JobUpdate::Progress(progress));
    }

    fn set_running(&self) -> bool {
        let mut state = lock(&self.state);
        if state.status != JobStatus::Pending {
            return false;
        }
        state.status = JobStatus::InProgress;
        state.updated = SystemTime::now();
        drop(state);
        self.status.send_replace(JobStatus::InProgress);
        true
    }

    /// Records the outcome once; later calls change nothing.
    fn finish(&self, outcome: Result<Arc<ImageOutput>, JobError>) -> Option<JobStatus> {
        let mut state = lock(&self.state);
        if state.status.is_final() {
            return None;
        }
        let status = match &outcome {
            Ok(_) => JobStatus::Complete,
            Err(e) if e.cancelled => JobStatus::Cancelled,
            Err(_) => JobStatus::Error,
        };
        state.status = status;
        state.outcome = Some(outcome);
        state.updated = SystemTime::now();
        drop(state);
        self.status.send_replace(status);
        let _ = self.updates.send(JobUpdate::Finished(status));
        Some(status)
    }
}

/// What the image jobs report.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[serde(tag = "type", rename_all = "lowercase")]
#[ts(rename = "ImageJobEvent")]
pub enum EngineEvent {
    /// Progress of any job, in-process or HTTP.
    Progress {
        /// The job's id (the `id` of an async HTTP job).
        id: String,
        #[serde(flatten)]
        progress: Progress,
    },
    /// Every change of a job's status: pending, in progress, then how it ended.
    Job { id: String, status: JobStatus },
}

/// Decides when a job may run: the ResourceOrchestrator that serves this server, which first makes
/// room (offloads the LLM) when the image and the LLM do not fit together. Every job asks, in
/// its turn, whatever door it came through (HTTP, sync or async; the JS API; the orchestrator's
/// own calls), so all of them share one queue and one swap policy.
pub trait Admission: Send + Sync {
    /// `None` once the gate is gone (its orchestrator was dropped). Otherwise resolves when the
    /// job may run, with a permit the engine holds until the job has finished; an error ends the
    /// job unrun. Dropping the future withdraws the job (it was cancelled).
    fn admit(&self, id: &str, request: &ImageRequest) -> Option<Admit>;
}

pub type Admit =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Permit, JobError>> + Send>>;

/// Held while an admitted job runs; dropping it tells the gate that the job is over.
pub struct Permit(#[allow(dead_code)] oneshot::Sender<()>);

impl Permit {
    /// A permit, and what resolves once it is dropped.
    pub fn new() -> (Permit, oneshot::Receiver<()>) {
        let (over, dropped) = oneshot::channel();
        (Permit(over), dropped)
    }
}

/// The gates of a diffusion server, newest last: the newest one still there decides. They
/// outlive the engine (a restart keeps them).
#[derive(Default)]
pub struct Gates(Mutex<Vec<Arc<dyn Admission>>>);

impl Gates {
    pub fn add(&self, gate: Arc<dyn Admission>) {
        lock(&self.0).push(gate);
    }

    /// The newest live gate's admission of the job; `None`: no gate, the job runs in its turn.
    fn admit(&self, id: &str, request: &ImageRequest) -> Option<Admit> {
        let mut gates = lock(&self.0);
        while let Some(gate) = gates.last() {
            if let Some(admit) = gate.admit(id, request) {
                return Some(admit);
            }
            gates.pop();
        }
        None
    }
}

/// Whether a job counts against `maxQueue`: requests over HTTP and `generateImage` do; the
/// images an app queues at its orchestrator (`orchestrateImageGeneration`) wait their turn there,
/// however many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    MaxQueue,
    Unbounded,
}

pub struct Engine {
    backend: Arc<Backend>,
    gates: Arc<Gates>,
    max_queue: usize,
    /// A job with no output from the backend for this long fails (`None`: never).
    stall_timeout: Option<Duration>,
    /// Every job still known: waiting, running, or finished and kept for `GET …/{id}`.
    jobs: Mutex<VecDeque<Arc<Job>>>,
    /// The jobs waiting, in order.
    pending: Mutex<VecDeque<Arc<Job>>>,
    wake: Notify,
    closing: AtomicBool,
    /// The upscales under way (beside the queue), by id: each one's cancel.
    upscales: Mutex<std::collections::HashMap<String, CancellationToken>>,
    running: Mutex<Option<Arc<Job>>>,
    events: EventSink<EngineEvent>,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Engine {
    /// Starts the worker. `max_queue` jobs may wait while one runs.
    pub fn start(
        backend: Backend,
        gates: Arc<Gates>,
        max_queue: usize,
        stall_timeout: Option<Duration>,
        events: EventSink<EngineEvent>,
    ) -> Arc<Self> {
        let engine = Arc::new(Engine {
            backend: Arc::new(backend),
            gates,
            max_queue: max_queue.max(1),
            stall_timeout,
            jobs: Mutex::new(VecDeque::new()),
            pending: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            upscales: Mutex::default(),
            running: Mutex::new(None),
            events,
            worker: Mutex::new(None),
        });
        let worker = tokio::spawn(engine.clone().work());
        *lock(&engine.worker) = Some(worker);
        engine
    }

    /// Queues a request. `id` lets an in-process caller name its job (to cancel it later).
    /// `Bound::MaxQueue` refuses it when `max_queue` jobs wait already.
    pub fn submit(
        &self,
        request: ImageRequest,
        id: Option<String>,
        bound: Bound,
        gate: Option<Arc<dyn Admission>>,
    ) -> Result<Arc<Job>, DiffusionError> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(DiffusionError::NotRunning);
        }
        let id = match id {
            Some(id) if valid_id(&id) && self.get(&id).is_none() => id,
            Some(id) => {
                return Err(DiffusionError::Invalid(format!(
                    "job id {id:?} must be 1-64 letters, digits, '-' or '_', and not in use"
                )));
            }
            None => format!("img_{:016x}", fastrand::u64(..)),
        };
        let seed = request.resolved_seed();
        let created = SystemTime::now();
        let (status, _) = watch::channel(JobStatus::Pending);
        let (updates, _) = broadcast::channel(256);
        let job = Arc::new(Job {
            id,
            request,
            gate,
            seed,
            created,
            cancel: CancellationToken::new(),
            state: Mutex::new(JobState {
                status: JobStatus::Pending,
                progress: None,
                outcome: None,
                updated: created,
            }),
            status,
            updates,
        });
        {
            // Cancelled jobs leave the queue at once: they hold no place.
            let mut pending = lock(&self.pending);
            pending.retain(|j| !lock(&j.state).status.is_final());
            // One runs and `max_queue` wait; a job not yet picked up by the worker waits too.
            let running = usize::from(lock(&self.running).is_some());
            if bound == Bound::MaxQueue && pending.len() + running > self.max_queue {
                return Err(DiffusionError::Busy {
                    queued: pending.len(),
                });
            }
            // Known before it is queued, so a cancel by id always finds it.
            let mut jobs = lock(&self.jobs);
            jobs.push_back(job.clone());
            prune(&mut jobs);
            pending.push_back(job.clone());
        }
        self.announce(&job, JobStatus::Pending);
        self.wake.notify_one();
        Ok(job)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        let mut jobs = lock(&self.jobs);
        prune(&mut jobs);
        jobs.iter().find(|j| j.id == id).cloned()
    }

    /// Forgets a finished job whose caller has its result (sync HTTP, in-process), so its
    /// images are not kept.
    pub fn forget(&self, id: &str) {
        lock(&self.jobs).retain(|j| j.id != id);
    }

    /// Cancels a queued or running job; `None` cancels the running one. Returns the job, or
    /// `None` when there is no such job.
    pub fn cancel(&self, id: Option<&str>) -> Option<Arc<Job>> {
        let job = match id {
            Some(id) => self.get(id)?,
            None => lock(&self.running).clone()?,
        };
        job.cancel.cancel();
        // A queued job ends now; a running one ends when the backend has stopped its work.
        if lock(&job.state).status == JobStatus::Pending {
            self.finish(&job, Err(DiffusionError::Cancelled.into()));
        }
        Some(job)
    }

    pub fn busy(&self) -> bool {
        lock(&self.running).is_some()
    }

    /// The job whose turn it is: being made, or waiting for its orchestrator to make room.
    pub fn active(&self) -> Option<String> {
        lock(&self.running).as_ref().map(|job| job.id.clone())
    }

    pub fn queued(&self) -> usize {
        lock(&self.pending)
            .iter()
            .filter(|j| !lock(&j.state).status.is_final())
            .count()
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Upscales an image by `sd-cli`, beside the queue; `id` names it for [`Engine::cancel_upscale`].
    pub async fn upscale(
        &self,
        request: &super::upscale::UpscaleRequest,
        id: String,
    ) -> Result<super::upscale::Upscaled, DiffusionError> {
        let cancel = CancellationToken::new();
        {
            let mut upscales = lock(&self.upscales);
            if self.closing.load(Ordering::SeqCst) {
                return Err(DiffusionError::NotRunning);
            }
            if !valid_id(&id) || upscales.contains_key(&id) {
                return Err(DiffusionError::Invalid(format!(
                    "upscale id {id:?} must be 1-64 letters, digits, '-' or '_', and not in use"
                )));
            }
            upscales.insert(id.clone(), cancel.clone());
        }
        let log = self.backend.log();
        let lines = EventSink::new(move |line: String| log.output(&line));
        let config = self.backend.config();
        let result = super::upscale::upscale(config, request, &id, &cancel, lines).await;
        lock(&self.upscales).remove(&id);
        result
    }

    /// Cancels the upscale `id`; false when none runs by that id.
    pub fn cancel_upscale(&self, id: &str) -> bool {
        lock(&self.upscales)
            .get(id)
            .map(CancellationToken::cancel)
            .is_some()
    }

    /// Cancels every job and upscale, waits for the worker, and stops the backend's process.
    pub async fn shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        for upscale in lock(&self.upscales).values() {
            upscale.cancel();
        }
        let jobs: Vec<_> = lock(&self.jobs).iter().cloned().collect();
        for job in jobs {
            if !lock(&job.state).status.is_final() {
                self.cancel(Some(&job.id));
            }
        }
        self.wake.notify_one();
        let worker = lock(&self.worker).take();
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        self.backend.shutdown().await;
    }

    async fn work(self: Arc<Self>) {
        loop {
            // Taken, marked running and (in its turn) put to its gate under one lock, so neither
            // `submit` nor a gate reading `queued()` ever sees it in neither place.
            let (next, admit) = {
                let mut pending = lock(&self.pending);
                let next = pending.pop_front();
                *lock(&self.running) = next.clone();
                let waiting = next
                    .as_ref()
                    .filter(|j| !lock(&j.state).status.is_final())
                    .filter(|_| !self.closing.load(Ordering::SeqCst));
                let admit = waiting.and_then(|job| self.gate_of(job));
                (next, admit)
            };
            let Some(job) = next else {
                if self.closing.load(Ordering::SeqCst) {
                    return;
                }
                self.wake.notified().await;
                continue;
            };
            // A job that slipped in while the server was stopping does not run.
            if self.closing.load(Ordering::SeqCst) {
                *lock(&self.running) = None;
                self.cancel(Some(&job.id));
                continue;
            }
            // Its turn: the orchestrator serving this server may make room first.
            let permit = match admission(&job, admit).await {
                Ok(permit) => permit,
                Err(err) => {
                    *lock(&self.running) = None;
                    self.finish(&job, Err(err));
                    continue;
                }
            };
            if !job.set_running() {
                *lock(&self.running) = None;
                continue;
            }
            self.announce(&job, JobStatus::InProgress);
            let outcome = self.run(&job).await;
            *lock(&self.running) = None;
            self.finish(&job, outcome);
            // Only now: the gate sees the next job still waiting (no reload between images).
            drop(permit);
        }
    }

    /// The job's own gate (the orchestrator whose call it is) if it still serves, else the
    /// server's: its admission of the job, now asked.
    fn gate_of(&self, job: &Job) -> Option<Admit> {
        let own = job
            .gate
            .as_ref()
            .and_then(|g| g.admit(&job.id, &job.request));
        own.or_else(|| self.gates.admit(&job.id, &job.request))
    }

    async fn run(&self, job: &Arc<Job>) -> Result<Arc<ImageOutput>, JobError> {
        let began = Instant::now();
        let (progress_job, events) = (Arc::downgrade(job), self.events.clone());
        // The watchdog's own cancel: a stall stops the backend the way a cancel does.
        let stop = job.cancel.child_token();
        let output = Arc::new(Notify::new());
        let work = Work {
            id: &job.id,
            request: &job.request,
            seed: job.seed,
            cancel: &stop,
            on_output: output.clone(),
            on_progress: Arc::new(move |progress: Progress| {
                if let Some(job) = progress_job.upgrade() {
                    job.progress(progress.clone());
                    events.emit(EngineEvent::Progress {
                        id: job.id.clone(),
                        progress,
                    });
                }
            }),
        };
        let run = self.backend.run(work);
        tokio::pin!(run);
        let output = tokio::select! {
            output = &mut run => output?,
            limit = stalled(self.stall_timeout, &output) => {
                stop.cancel();
                // The backend stops its process as for a cancel.
                let _ = run.await;
                tracing::warn!("image {}: no output from the backend for {} s, stopped", job.id, limit.as_secs_f64());
                return Err(DiffusionError::Stalled { limit, logs: self.backend.tail() }.into());
            }
        };
        // What was made: the size asked, or what the backend rounded it up to.
        let (width, height) = output
            .images
            .first()
            .and_then(|png| super::backend::png_size(png))
            .unwrap_or(job.request.output_size());
        let seeds = (0..job.request.count)
            .map(|i| job.seed + i64::from(i))
            .collect();
        Ok(Arc::new(ImageOutput {
            images: output.images,
            seeds,
            width,
            height,
            time_taken: began.elapsed(),
            backend_time: output.backend_time,
            created: SystemTime::now(),
        }))
    }

    fn finish(&self, job: &Job, outcome: Result<Arc<ImageOutput>, JobError>) {
        if let Some(status) = job.finish(outcome) {
            self.announce(job, status);
        }
    }

    fn announce(&self, job: &Job, status: JobStatus) {
        self.events.emit(EngineEvent::Job {
            id: job.id.clone(),
            status,
        });
    }
}

/// Waits for the gate's answer, if one was asked; a cancel withdraws the job.
async fn admission(job: &Job, admit: Option<Admit>) -> Result<Option<Permit>, JobError> {
    let Some(admit) = admit else {
        return Ok(None);
    };
    tokio::select! {
        permit = admit => permit.map(Some),
        () = job.cancel.cancelled() => Err(DiffusionError::Cancelled.into()),
    }
}

/// Resolves once `output` has not been notified for `limit` (never when there is no limit).
async fn stalled(limit: Option<Duration>, output: &Notify) -> Duration {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    while tokio::time::timeout(limit, output.notified()).await.is_ok() {}
    limit
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Drops finished jobs older than [`KEEP_FOR`], and the oldest beyond [`KEEP_FINISHED`].
fn prune(jobs: &mut VecDeque<Arc<Job>>) {
    let expired = |j: &Job| {
        let state = lock(&j.state);
        state.status.is_final() && state.updated.elapsed().is_ok_and(|age| age > KEEP_FOR)
    };
    jobs.retain(|j| !expired(j));
    let mut finished = jobs
        .iter()
        .filter(|j| lock(&j.state).status.is_final())
        .count();
    jobs.retain(|j| {
        if finished > KEEP_FINISHED && lock(&j.state).status.is_final() {
            finished -= 1;
            false
        } else {
            true
        }
    });
}

pub fn unix_seconds(t: SystemTime) -> u64 {
    unix_millis(t) / 1000
}

pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
