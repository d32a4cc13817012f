//! The worker against fake effects, with tokio's paused time: the order of offloads, images and
//! reloads, cancels at every point, chat starvation, the idle reload and a failed reload. Each
//! effect is logged with the (virtual) millisecond it happened at.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::diffusion::engine::{ImageOutput, Permit};
use crate::diffusion::request::{ImageRequest, ImageShape};
use crate::llama::gateway::QueueBounds;
use crate::process::{HealthStatus, ServerState};

const MB: u64 = 1_000_000;
/// The LLM and an image each need this much; a budget below twice as much makes them swap.
const NEED: u64 = 100 * MB;
const IMAGE_TIME: Duration = Duration::from_secs(2);
const OFFLOAD_TIME: Duration = Duration::from_millis(100);
const RELOAD_TIME: Duration = Duration::from_millis(300);
/// The LLM's memory shows as free this long after it stopped.
const RELEASE_LAG: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Llm {
    Running,
    Offloaded,
    Stopped,
}

struct World {
    start: Instant,
    llm: Llm,
    /// When the stopped LLM's memory shows as free.
    released_at: Option<Instant>,
    /// Arrival of each chat request waiting at the gateway.
    chats: Vec<Instant>,
    reload_fails: bool,
    /// An idle resident sd-server and what it holds.
    resident: Option<Memory>,
    /// The models live on a GPU: VRAM is what they need and what is slow to free; RAM is
    /// plentiful, so a wait that read RAM would end at once.
    on_gpu: bool,
    log: Vec<String>,
}

struct Fake {
    world: Mutex<World>,
    chat_length: watch::Sender<usize>,
    images: FakeDiffusion,
}

/// The diffusion server's part: one image at a time, in order, each asking the gate first.
#[derive(Default)]
struct FakeDiffusion {
    gate: Mutex<Option<Arc<dyn Admission>>>,
    turn: Arc<tokio::sync::Mutex<()>>,
    /// The images waiting or being made, and their cancels.
    jobs: Mutex<HashMap<String, CancellationToken>>,
    /// Those that have not had their turn yet.
    queued: AtomicUsize,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            world: Mutex::new(World {
                start: Instant::now(),
                llm: Llm::Running,
                released_at: None,
                chats: Vec::new(),
                reload_fails: false,
                resident: None,
                on_gpu: false,
                log: Vec::new(),
            }),
            chat_length: watch::channel(0).0,
            images: FakeDiffusion::default(),
        })
    }

    /// An image's life at the diffusion server: its turn, the gate, then the making (cut by a
    /// cancel at any point). The answer goes before the permit is dropped, as the engine does.
    async fn make(
        self: Arc<Self>,
        request: ImageRequest,
        id: String,
        cancel: CancellationToken,
        answer: oneshot::Sender<ImageResult>,
    ) {
        let turn = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            turn = self.images.turn.clone().lock_owned() => Some(turn),
        };
        self.images.queued.fetch_sub(1, Ordering::SeqCst);
        let (outcome, permit) = match turn {
            Some(_) => self.admitted(&request, &id, &cancel).await,
            None => (Err(DiffusionError::Cancelled.into()), None),
        };
        lock(&self.images.jobs).remove(&id);
        let _ = answer.send(outcome);
        drop(permit);
        drop(turn);
    }

    async fn admitted(
        &self,
        request: &ImageRequest,
        id: &str,
        cancel: &CancellationToken,
    ) -> (ImageResult, Option<Permit>) {
        let gate = lock(&self.images.gate).clone();
        let permit = match gate.and_then(|gate| gate.admit(id, request)) {
            None => None,
            Some(admit) => tokio::select! {
                biased;
                () = cancel.cancelled() => return (Err(DiffusionError::Cancelled.into()), None),
                admitted = admit => match admitted {
                    Ok(permit) => Some(permit),
                    Err(err) => return (Err(err), None),
                },
            },
        };
        self.log(format!("image {id}"));
        tokio::select! {
            () = tokio::time::sleep(IMAGE_TIME) => {}
            () = cancel.cancelled() => {
                self.log(format!("cut {id}"));
                return (Err(DiffusionError::Cancelled.into()), permit);
            }
        }
        self.log(format!("made {id}"));
        let output = ImageOutput {
            images: vec![Vec::new()],
            seeds: vec![request.seed.unwrap_or(0)],
            width: request.width,
            height: request.height,
            time_taken: IMAGE_TIME,
            backend_time: IMAGE_TIME,
            created: SystemTime::now(),
        };
        (Ok(Arc::new(output)), permit)
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        lock(&self.world)
    }

    fn log(&self, what: impl std::fmt::Display) {
        let mut world = self.world();
        let at = world.start.elapsed().as_millis();
        world.log.push(format!("{at} {what}"));
    }

    /// The logged effects without their times.
    fn effects(&self) -> Vec<String> {
        let world = self.world();
        let names = world.log.iter().map(|l| l.split_once(' ').unwrap().1);
        names.map(String::from).collect()
    }

    /// The millisecond `what` was logged at.
    fn at(&self, what: &str) -> u128 {
        let world = self.world();
        let line = world.log.iter().find(|l| l.ends_with(&format!(" {what}")));
        let line = line.unwrap_or_else(|| panic!("{what} never happened: {:?}", world.log));
        line.split_once(' ').unwrap().0.parse().unwrap()
    }

    /// What the LLM and an image each need, where the models live.
    fn need(&self) -> Memory {
        if self.world().on_gpu {
            Memory {
                ram: NEED / 10,
                vram: NEED,
            }
        } else {
            Memory { ram: NEED, vram: 0 }
        }
    }

    /// Free memory where the models live: enough for one once the stopped one's is released.
    fn free_after_release(&self) -> u64 {
        let world = self.world();
        let released = world.released_at.is_some_and(|at| Instant::now() >= at);
        if released { 2 * NEED } else { NEED / 2 }
    }

    fn chat(&self) {
        let mut world = self.world();
        world.chats.push(Instant::now());
        self.chat_length.send_replace(world.chats.len());
    }

    fn serve_chats(&self, world: &mut World) {
        world.chats.clear();
        self.chat_length.send_replace(0);
    }

    fn info(&self) -> ServerInfo {
        ServerInfo {
            status: ServerState::Running,
            health: HealthStatus::Ok,
            pid: Some(1),
            port: Some(8080),
            backend_port: None,
            model_id: Some("chat".into()),
            mode: Some(crate::llama::tasks::Mode::Chat),
            started_at: None,
            load_time_ms: None,
            error: None,
            restarts: 0,
            restart_pending: false,
            rpc_workers: Vec::new(),
            running_with: Default::default(),
        }
    }
}

/// The fake behind an `Arc`, so that a test keeps a hand on the world the worker acts on.
struct Shared(Arc<Fake>);

impl Effects for Shared {
    async fn free(&self) -> Free {
        let on_gpu = self.0.world().on_gpu;
        Free {
            memory: Memory {
                ram: self.free_ram(),
                vram: if on_gpu {
                    self.0.free_after_release()
                } else {
                    0
                },
            },
            gpu: on_gpu,
            vram_reported: on_gpu,
        }
    }

    fn free_ram(&self) -> u64 {
        if self.0.world().on_gpu {
            return 100 * NEED;
        }
        self.0.free_after_release()
    }

    async fn llm_usage(&self, _: &DataPaths) -> Usage {
        if self.llm_running() {
            Usage::of(self.0.need(), None)
        } else {
            Usage::NONE
        }
    }

    fn llm_running(&self) -> bool {
        self.0.world().llm == Llm::Running
    }

    async fn image_usage(&self, _: &ImageShape) -> Usage {
        Usage::of(self.0.need(), None)
    }

    async fn diffusion_held(&self) -> Option<Memory> {
        self.0.world().resident
    }

    fn chat_queue(&self) -> QueueInfo {
        let world = self.0.world();
        QueueInfo {
            length: world.chats.len(),
            longest_wait_ms: world
                .chats
                .first()
                .map_or(0, |at| at.elapsed().as_millis() as u64),
        }
    }

    async fn chat_arrived(&self) {
        let _ = self.0.chat_length.subscribe().wait_for(|n| *n > 0).await;
    }

    async fn chat_drained(&self) {
        let _ = self.0.chat_length.subscribe().wait_for(|n| *n == 0).await;
    }

    fn llm_config(&self) -> Option<LlamaConfig> {
        self.llm_running()
            .then(|| crate::llama::tests::config("llama-server".into(), "chat.gguf".into()))
    }

    async fn offload_llm(&self, _: Duration, _: QueueBounds) -> bool {
        self.0.log("offload");
        tokio::time::sleep(OFFLOAD_TIME).await;
        let mut world = self.0.world();
        world.llm = Llm::Offloaded;
        world.released_at = Some(Instant::now() + RELEASE_LAG);
        true
    }

    fn llm_offloaded(&self) -> bool {
        self.0.world().llm == Llm::Offloaded
    }

    async fn reload_llm(&self) -> Result<ServerInfo, String> {
        self.0.log("reload");
        tokio::time::sleep(RELOAD_TIME).await;
        let mut world = self.0.world();
        world.released_at = None;
        if world.reload_fails {
            world.llm = Llm::Stopped;
            return Err("llama-server exited with code 1".into());
        }
        world.llm = Llm::Running;
        self.0.serve_chats(&mut world);
        Ok(self.0.info())
    }

    async fn plan_llm(
        &self,
        _: &StartRequest,
        _: &DataPaths,
    ) -> Result<PlannedStart, StartError<LlamaError>> {
        Ok(PlannedStart {
            config: crate::llama::tests::config("llama-server".into(), "chat.gguf".into()),
            need: Some((
                Usage::of(Memory { ram: NEED, vram: 0 }, None),
                Bottleneck::Ram,
            )),
        })
    }

    async fn start_llm(&self, _: StartRequest, _: LlamaConfig, _: &DataPaths) -> StartResult {
        self.0.log("start");
        tokio::time::sleep(RELOAD_TIME).await;
        self.0.world().llm = Llm::Running;
        Ok(self.0.info())
    }

    fn data_paths(&self) -> DataPaths {
        DataPaths::new(
            "/nonexistent".into(),
            crate::config::DataDirSource::Configured,
        )
    }

    fn serve_images(&self, gate: Arc<dyn Admission>) {
        *lock(&self.0.images.gate) = Some(gate);
    }

    /// The fake's one gate is this orchestrator's already.
    fn submit_image(&self, request: ImageRequest, id: String, _: Arc<dyn Admission>) -> ImageJob {
        let cancel = CancellationToken::new();
        lock(&self.0.images.jobs).insert(id.clone(), cancel.clone());
        self.0.images.queued.fetch_add(1, Ordering::SeqCst);
        let (answer, outcome) = oneshot::channel();
        tokio::spawn(self.0.clone().make(request, id, cancel, answer));
        Box::pin(async move {
            match outcome.await {
                Ok(outcome) => outcome,
                Err(_) => Err(DiffusionError::Cancelled.into()),
            }
        })
    }

    fn cancel_image(&self, id: &str) -> bool {
        let jobs = lock(&self.0.images.jobs);
        jobs.get(id).map(CancellationToken::cancel).is_some()
    }

    fn images_queued(&self) -> usize {
        self.0.images.queued.load(Ordering::SeqCst)
    }

    async fn release_idle_diffusion(&self) -> bool {
        self.0.log("release");
        let mut world = self.0.world();
        world.resident = None;
        world.released_at = Some(Instant::now() + RELEASE_LAG);
        true
    }
}

struct Setup {
    fake: Arc<Fake>,
    orchestrator: Orchestrator<Shared>,
    events: Arc<Mutex<Vec<String>>>,
    data: DataPaths,
}

/// An orchestrator over the fake under a budget that holds the LLM or an image, not both.
fn setup(options: OptionsRequest) -> Setup {
    let fake = Fake::new();
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = events.clone();
    let options = Options::resolve(OptionsRequest {
        ram_budget_bytes: options.ram_budget_bytes.or(Some((NEED + NEED / 2) as f64)),
        headroom: Some(0.0),
        ..options
    })
    .unwrap();
    let orchestrator = Orchestrator::new(
        Shared(fake.clone()),
        options,
        Some(EventSink::new(move |e: OrchestratorEvent| {
            lock(&sink).push(match e {
                OrchestratorEvent::Phase { phase: p } => format!("{p:?}"),
                OrchestratorEvent::Offload(_) => "offload".into(),
                OrchestratorEvent::Reload(_) => "reload".into(),
                OrchestratorEvent::ReloadFailed { error: e } => format!("reload-failed: {e}"),
                OrchestratorEvent::DiffusionReleased { reason: r } => format!("released for {r:?}"),
            })
        })),
    );
    let data = Shared(fake.clone()).data_paths();
    Setup {
        fake,
        orchestrator,
        events,
        data,
    }
}

fn image(seed: u32) -> ImageRequest {
    crate::testing::image(
        &serde_json::json!({ "prompt": "a red cube", "width": 64, "height": 64, "seed": seed }),
    )
}

impl Setup {
    fn queue(&self, ids: &[&str]) -> Vec<PendingImage> {
        let images = ids.iter().enumerate();
        images
            .map(|(i, id)| {
                let request = image(i as u32);
                self.orchestrator.queue_image(request, id.to_string())
            })
            .collect()
    }

    fn events(&self) -> Vec<String> {
        lock(&self.events).clone()
    }

    /// Lets virtual time run until the orchestrator is in `phase`.
    async fn until(&self, phase: Phase) {
        let mut status = self.orchestrator.status.clone();
        let reached = status.wait_for(|s| s.phase == phase);
        tokio::time::timeout(Duration::from_secs(600), reached)
            .await
            .unwrap_or_else(|_| panic!("never {phase:?}: {:?}", self.events()))
            .unwrap();
    }
}

async fn outcomes(images: Vec<PendingImage>) -> Vec<ImageResult> {
    let mut all = Vec::new();
    for image in images {
        all.push(image.outcome().await);
    }
    all
}

#[tokio::test(start_paused = true)]
async fn a_burst_runs_behind_one_offload_in_order_and_is_answered_once_the_llm_is_back() {
    let s = setup(OptionsRequest::default());
    let images = s.queue(&["a", "b", "c"]);
    let done = outcomes(images).await;
    let seeds: Vec<_> = done.iter().map(|o| o.as_ref().unwrap().seeds[0]).collect();
    assert_eq!(seeds, [0, 1, 2]);
    assert_eq!(
        s.fake.effects(),
        [
            "offload", "image a", "made a", "image b", "made b", "image c", "made c", "reload"
        ]
    );
    // The image waited for the LLM's memory to show as free, not just for its stop.
    assert!(s.fake.at("image a") >= (OFFLOAD_TIME + RELEASE_LAG).as_millis());
    assert_eq!(
        s.events(),
        [
            "Draining",
            "offload",
            "Offloading",
            "Generating",
            "Offloaded",
            "Generating",
            "Offloaded",
            "Generating",
            "Reloading",
            "reload",
            "Idle"
        ]
    );
    assert!(s.orchestrator.saved_state().is_none());
    assert_eq!(s.orchestrator.images_waiting(), 0);
}

/// Models on a GPU whose memory holds one of them: the image waits for the *device's* memory
/// after the offload (RAM is free at once), and no longer than `memoryReleaseTimeout`.
#[tokio::test(start_paused = true)]
async fn on_a_gpu_the_image_waits_for_vram_to_show_as_free_bounded_by_the_release_timeout() {
    for (timeout, waited) in [(10_000, RELEASE_LAG), (100, Duration::from_millis(100))] {
        let s = setup(OptionsRequest {
            ram_budget_bytes: Some((1000 * NEED) as f64),
            vram_budget_bytes: Some((NEED + NEED / 2) as f64),
            memory_release_timeout: Some(timeout),
            ..Default::default()
        });
        s.fake.world().on_gpu = true;
        let done = outcomes(s.queue(&["a"])).await;
        assert!(done[0].is_ok());
        assert_eq!(s.fake.effects(), ["offload", "image a", "made a", "reload"]);
        let at = s.fake.at("image a");
        let expected = (OFFLOAD_TIME + waited).as_millis();
        // Polled every MEMORY_POLL: the image starts at the first look after the wait is over.
        assert!(
            (expected..expected + super::worker::MEMORY_POLL.as_millis() + 1).contains(&at),
            "timeout {timeout} ms: image at {at} ms, expected from {expected} ms"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn fifo_brings_the_llm_back_after_every_image() {
    let s = setup(OptionsRequest {
        policy: Some("fifo".into()),
        ..Default::default()
    });
    let done = outcomes(s.queue(&["a", "b"])).await;
    assert!(done.iter().all(Result::is_ok));
    assert_eq!(
        s.fake.effects(),
        [
            "offload", "image a", "made a", "reload", "offload", "image b", "made b", "reload"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn images_that_fit_beside_the_llm_never_offload_it() {
    let s = setup(OptionsRequest {
        ram_budget_bytes: Some((3 * NEED) as f64),
        ..Default::default()
    });
    let done = outcomes(s.queue(&["a"])).await;
    assert!(done[0].is_ok());
    assert_eq!(s.fake.effects(), ["image a", "made a"]);
    assert_eq!(s.events(), ["Generating", "Idle"]);
}

#[tokio::test(start_paused = true)]
async fn a_chat_that_has_waited_max_chat_wait_brings_the_llm_back_between_images() {
    let s = setup(OptionsRequest {
        max_chat_wait: Some(1_000),
        ..Default::default()
    });
    let images = s.queue(&["a", "b", "c"]);
    s.until(Phase::Generating).await;
    s.fake.chat();
    let done = outcomes(images).await;
    assert!(done.iter().all(Result::is_ok));
    assert_eq!(
        s.fake.effects(),
        [
            "offload", "image a", "made a", "reload", "offload", "image b", "made b", "image c",
            "made c", "reload"
        ]
    );
    // Served by the first reload: it waited one image at most.
    assert!(s.fake.at("reload") <= s.fake.at("made a") + 1);
    assert_eq!(s.orchestrator.queue().length, 0);
}

#[tokio::test(start_paused = true)]
async fn a_chat_that_has_not_waited_long_enough_does_not_cut_in() {
    let s = setup(OptionsRequest {
        max_chat_wait: Some(10_000),
        ..Default::default()
    });
    let images = s.queue(&["a", "b"]);
    s.until(Phase::Generating).await;
    s.fake.chat();
    outcomes(images).await;
    assert_eq!(
        s.fake.effects(),
        [
            "offload", "image a", "made a", "image b", "made b", "reload"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiting_image_cancelled_leaves_at_once_and_causes_no_offload() {
    let s = setup(OptionsRequest {
        policy: Some("fifo".into()),
        ..Default::default()
    });
    let mut images = s.queue(&["a", "b"]);
    s.until(Phase::Generating).await;
    assert_eq!(s.orchestrator.images_waiting(), 1);
    assert!(s.orchestrator.cancel("b"));
    let b = images.pop().unwrap().outcome().await;
    assert!(b.unwrap_err().cancelled);
    assert_eq!(s.orchestrator.images_waiting(), 0);
    assert!(
        !s.fake.effects().contains(&"made a".into()),
        "b left while a was being made"
    );
    let a = images.pop().unwrap().outcome().await;
    assert!(a.is_ok());
    assert_eq!(
        s.fake.effects(),
        ["offload", "image a", "made a", "reload"],
        "fifo would have offloaded again for b"
    );
}

#[tokio::test(start_paused = true)]
async fn an_image_cancelled_before_its_turn_fails_at_once_and_nothing_stops() {
    let s = setup(OptionsRequest::default());
    let images = s.queue(&["early"]);
    assert!(s.orchestrator.cancel("early"));
    let done = outcomes(images).await;
    assert!(done[0].as_ref().unwrap_err().cancelled);
    assert!(s.fake.effects().is_empty());
    assert!(!s.orchestrator.cancel("early"), "gone");
    let done = outcomes(s.queue(&["early"])).await;
    assert!(done[0].is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_orchestrator_stops_being_the_gate() {
    let s = setup(OptionsRequest::default());
    let gate = lock(&s.fake.images.gate).clone().unwrap();
    let request = image(0);
    drop(s.orchestrator);
    tokio::task::yield_now().await;
    assert!(gate.admit("a", &request).is_none());
}

#[tokio::test(start_paused = true)]
async fn an_image_cancelled_during_the_offload_is_not_made_and_the_llm_comes_back() {
    let s = setup(OptionsRequest::default());
    let images = s.queue(&["a"]);
    s.until(Phase::Draining).await;
    s.orchestrator.cancel("a");
    let done = outcomes(images).await;
    assert!(done[0].as_ref().unwrap_err().cancelled);
    assert_eq!(s.fake.effects(), ["offload", "reload"]);
    assert_eq!(s.orchestrator.phase(), Phase::Idle);
}

#[tokio::test(start_paused = true)]
async fn an_image_cancelled_while_it_is_made_is_cut() {
    let s = setup(OptionsRequest::default());
    let images = s.queue(&["a", "b"]);
    s.until(Phase::Generating).await;
    s.orchestrator.cancel("a");
    let done = outcomes(images).await;
    assert!(done[0].as_ref().unwrap_err().cancelled);
    assert!(done[1].is_ok());
    assert_eq!(
        s.fake.effects(),
        ["offload", "image a", "cut a", "image b", "made b", "reload"]
    );
}

#[tokio::test(start_paused = true)]
async fn with_reload_after_idle_the_llm_stays_out_until_the_idle_time_is_over() {
    let s = setup(OptionsRequest {
        reload_after_idle: Some(5_000),
        ..Default::default()
    });
    let done = outcomes(s.queue(&["a"])).await;
    assert!(done[0].is_ok(), "answered while the LLM stays out");
    assert_eq!(s.orchestrator.phase(), Phase::Offloaded);
    let made = s.fake.at("made a");
    s.until(Phase::Idle).await;
    let back = s.fake.at("reload");
    assert!((5_000..5_100).contains(&(back - made)), "{back} - {made}");
}

#[tokio::test(start_paused = true)]
async fn with_reload_after_idle_a_chat_brings_the_llm_back_at_once() {
    let s = setup(OptionsRequest {
        reload_after_idle: Some(60_000),
        ..Default::default()
    });
    outcomes(s.queue(&["a"])).await;
    s.until(Phase::Offloaded).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.fake.chat();
    s.until(Phase::Idle).await;
    assert!(s.fake.at("reload") - s.fake.at("made a") < 1_100);
    assert_eq!(s.orchestrator.queue().length, 0, "the chat was served");
}

#[tokio::test(start_paused = true)]
async fn the_apps_own_offload_keeps_the_llm_out_across_images_and_chats_until_it_reloads() {
    let s = setup(OptionsRequest::default());
    assert!(s.orchestrator.offload_llm().await);
    assert!(s.orchestrator.saved_state().is_some());
    s.fake.chat();
    let done = outcomes(s.queue(&["a"])).await;
    assert!(done[0].is_ok());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        s.fake.effects(),
        ["offload", "image a", "made a"],
        "no reload yet"
    );
    assert_eq!(s.orchestrator.phase(), Phase::Offloaded);
    assert!(!s.orchestrator.offload_llm().await, "already out");
    s.orchestrator.reload_llm().await;
    assert_eq!(s.fake.effects(), ["offload", "image a", "made a", "reload"]);
    assert_eq!(s.orchestrator.queue().length, 0, "the held chat was served");
    assert!(s.orchestrator.saved_state().is_none());
    // Nothing out: a reload is answered at once.
    s.orchestrator.reload_llm().await;
    assert_eq!(s.fake.effects().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_failed_reload_is_reported_and_keeps_the_saved_state() {
    let s = setup(OptionsRequest::default());
    s.fake.world().reload_fails = true;
    outcomes(s.queue(&["a"])).await;
    assert!(
        s.events()
            .contains(&"reload-failed: llama-server exited with code 1".into())
    );
    assert_eq!(s.orchestrator.phase(), Phase::Idle);
    let saved = s.orchestrator.saved_state().expect("kept for the app");
    assert!(saved.was_running);
    s.orchestrator.clear_saved_state();
    s.orchestrator.sync().await;
    assert!(s.orchestrator.saved_state().is_none());
    // The LLM is down: the next image has nothing to offload.
    outcomes(s.queue(&["b"])).await;
    assert_eq!(
        s.fake.effects(),
        [
            "offload", "image a", "made a", "reload", "image b", "made b"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_llm_the_app_stopped_meanwhile_is_not_brought_back() {
    let s = setup(OptionsRequest::default());
    let images = s.queue(&["a"]);
    s.until(Phase::Generating).await;
    s.fake.world().llm = Llm::Stopped;
    outcomes(images).await;
    assert_eq!(s.fake.effects(), ["offload", "image a", "made a"]);
    assert!(s.orchestrator.saved_state().is_none());
    assert_eq!(s.orchestrator.phase(), Phase::Idle);
}

#[tokio::test(start_paused = true)]
async fn a_start_waits_for_the_image_and_an_idle_sd_server_yields_to_it() {
    let s = setup(OptionsRequest {
        reload_after_idle: Some(60_000),
        ..Default::default()
    });
    let images = s.queue(&["a"]);
    s.until(Phase::Generating).await;
    s.fake.world().resident = Some(Memory { ram: NEED, vram: 0 });
    let request: StartRequest =
        serde_json::from_value(serde_json::json!({ "modelId": "chat" })).unwrap();
    let started = s.orchestrator.start_llm(request, &s.data).await;
    assert!(started.is_ok());
    assert!(outcomes(images).await[0].is_ok());
    // The LLM the orchestrator held came back first (despite reloadAfterIdle), the sd-server
    // yielding to it; the start then found room.
    assert_eq!(
        s.fake.effects(),
        ["offload", "image a", "made a", "release", "reload", "start"]
    );
    assert!(s.events().contains(&"released for Reload".into()));
}

#[tokio::test(start_paused = true)]
async fn a_start_beside_an_idle_sd_server_that_does_not_fit_stops_it_first() {
    let s = setup(OptionsRequest::default());
    s.fake.world().llm = Llm::Stopped;
    s.fake.world().resident = Some(Memory { ram: NEED, vram: 0 });
    let request: StartRequest =
        serde_json::from_value(serde_json::json!({ "modelId": "chat" })).unwrap();
    assert!(s.orchestrator.start_llm(request, &s.data).await.is_ok());
    assert_eq!(s.fake.effects(), ["release", "start"]);
    assert_eq!(s.events(), ["released for Start"]);
}

#[tokio::test(start_paused = true)]
async fn an_estimate_changes_nothing() {
    let s = setup(OptionsRequest::default());
    let estimate = s
        .orchestrator
        .estimate(
            &ImageShape {
                width: 512,
                height: 512,
                ..Default::default()
            },
            &s.data,
        )
        .await;
    assert!(estimate.needs_offload);
    assert!(s.fake.effects().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_orchestrator_finishes_its_queue_and_brings_the_llm_back() {
    let s = setup(OptionsRequest {
        reload_after_idle: Some(60_000),
        ..Default::default()
    });
    let images = s.queue(&["a", "b"]);
    drop(s.orchestrator);
    let done = outcomes(images).await;
    assert!(done.iter().all(Result::is_ok));
    // The worker ends once the LLM is back, without waiting out reloadAfterIdle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        s.fake.effects(),
        [
            "offload", "image a", "made a", "image b", "made b", "reload"
        ]
    );
    assert_eq!(*lock(&s.events).last().unwrap(), "Idle");
}
