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

/// One llama server.
struct FakeLlm {
    state: Llm,
    mode: crate::llama::tasks::Mode,
    /// What it needs where the models live.
    need: u64,
    idle_ms: u64,
    /// When its memory shows as free, once it stopped.
    released_at: Option<Instant>,
    /// Arrival of each request waiting at its gateway.
    chats: Vec<Instant>,
}

impl FakeLlm {
    fn new(mode: crate::llama::tasks::Mode, need: u64, idle_ms: u64) -> FakeLlm {
        FakeLlm {
            state: Llm::Running,
            mode,
            need,
            idle_ms,
            released_at: None,
            chats: Vec::new(),
        }
    }
}

struct World {
    start: Instant,
    llms: Vec<FakeLlm>,
    /// When the stopped sd-server's memory shows as free.
    sd_released_at: Option<Instant>,
    reload_fails: bool,
    /// An idle resident sd-server and what it holds.
    resident: Option<Memory>,
    /// The models live on a GPU: VRAM is what they need and what is slow to free; RAM is
    /// plentiful, so a wait that read RAM would end at once.
    on_gpu: bool,
    log: Vec<String>,
}

impl World {
    /// The chat server, `llamaServer`.
    fn llm(&mut self) -> &mut FakeLlm {
        &mut self.llms[0]
    }
}

struct Fake {
    world: Mutex<World>,
    /// How many requests wait at each server's gateway.
    chat_lengths: Vec<watch::Sender<usize>>,
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
    /// One chat server needing [`NEED`].
    fn new() -> Arc<Fake> {
        Fake::with(vec![FakeLlm::new(crate::llama::tasks::Mode::Chat, NEED, 0)])
    }

    fn with(llms: Vec<FakeLlm>) -> Arc<Fake> {
        Arc::new(Fake {
            chat_lengths: llms.iter().map(|_| watch::channel(0).0).collect(),
            world: Mutex::new(World {
                start: Instant::now(),
                llms,
                sd_released_at: None,
                reload_fails: false,
                resident: None,
                on_gpu: false,
                log: Vec::new(),
            }),
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

    /// `bytes` where the models live.
    fn need(&self, bytes: u64) -> Memory {
        if self.world().on_gpu {
            Memory {
                ram: bytes / 10,
                vram: bytes,
            }
        } else {
            Memory {
                ram: bytes,
                vram: 0,
            }
        }
    }

    /// Free memory where the models live: half of [`NEED`], and one and a half times what each
    /// stopped server needed once its memory is released (for one server, enough for an image).
    fn free_after_release(&self) -> u64 {
        let world = self.world();
        let released = |at: Option<Instant>| at.is_some_and(|at| Instant::now() >= at);
        let llms = world.llms.iter().filter(|l| released(l.released_at));
        let sd = released(world.sd_released_at).then_some(NEED);
        let freed: u64 = llms.map(|l| l.need).chain(sd).sum();
        NEED / 2 + freed * 3 / 2
    }

    /// A request arrives at the chat server's gateway.
    fn chat(&self) {
        self.request(0);
    }

    fn request(&self, server: usize) {
        let mut world = self.world();
        let chats = &mut world.llms[server].chats;
        chats.push(Instant::now());
        self.chat_lengths[server].send_replace(chats.len());
    }

    fn serve_chats(&self, world: &mut World, server: usize) {
        world.llms[server].chats.clear();
        self.chat_lengths[server].send_replace(0);
    }

    /// How an effect on a server is logged: the chat server's alone by its name.
    fn on(what: &str, server: usize) -> String {
        match server {
            0 => what.to_string(),
            _ => format!("{what} {server}"),
        }
    }

    fn info(&self, server: usize) -> ServerInfo {
        ServerInfo {
            status: ServerState::Running,
            health: HealthStatus::Ok,
            pid: Some(1),
            port: Some(8080 + server as u16),
            backend_port: None,
            model_id: Some("chat".into()),
            mode: Some(self.world().llms[server].mode),
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

    fn llm_servers(&self) -> usize {
        self.0.world().llms.len()
    }

    async fn llm_usage(&self, server: usize, _: &DataPaths) -> Option<ServerUsage> {
        let (mode, need, idle_ms) = {
            let world = self.0.world();
            let llm = &world.llms[server];
            (llm.state == Llm::Running).then_some((llm.mode, llm.need, llm.idle_ms))?
        };
        Some(ServerUsage {
            server,
            mode,
            port: Some(8080 + server as u16),
            usage: Usage::of(self.0.need(need), None),
            idle_ms,
            offload: false,
        })
    }

    async fn image_usage(&self, _: &ImageShape) -> Usage {
        Usage::of(self.0.need(NEED), None)
    }

    async fn diffusion_held(&self) -> Option<Memory> {
        self.0.world().resident
    }

    fn chat_queue(&self, server: usize) -> QueueInfo {
        let world = self.0.world();
        let chats = &world.llms[server].chats;
        QueueInfo {
            length: chats.len(),
            longest_wait_ms: chats
                .first()
                .map_or(0, |at| at.elapsed().as_millis() as u64),
        }
    }

    async fn chat_arrived(&self, server: usize) {
        let mut length = self.0.chat_lengths[server].subscribe();
        let _ = length.wait_for(|n| *n > 0).await;
    }

    async fn chat_drained(&self, server: usize) {
        let mut length = self.0.chat_lengths[server].subscribe();
        let _ = length.wait_for(|n| *n == 0).await;
    }

    fn llm_config(&self, server: usize) -> Option<LlamaConfig> {
        let running = self.0.world().llms[server].state == Llm::Running;
        running.then(|| crate::llama::tests::config("llama-server".into(), "chat.gguf".into()))
    }

    async fn offload_llm(&self, server: usize, _: Duration, _: QueueBounds) -> bool {
        self.0.log(Fake::on("offload", server));
        tokio::time::sleep(OFFLOAD_TIME).await;
        let mut world = self.0.world();
        let llm = &mut world.llms[server];
        llm.state = Llm::Offloaded;
        llm.released_at = Some(Instant::now() + RELEASE_LAG);
        true
    }

    fn llm_offloaded(&self, server: usize) -> bool {
        self.0.world().llms[server].state == Llm::Offloaded
    }

    async fn reload_llm(&self, server: usize) -> Result<ServerInfo, String> {
        self.0.log(Fake::on("reload", server));
        tokio::time::sleep(RELOAD_TIME).await;
        let mut world = self.0.world();
        world.llms[server].released_at = None;
        world.sd_released_at = None;
        if world.reload_fails {
            world.llms[server].state = Llm::Stopped;
            return Err("llama-server exited with code 1".into());
        }
        world.llms[server].state = Llm::Running;
        self.0.serve_chats(&mut world, server);
        drop(world);
        Ok(self.0.info(server))
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

    async fn start_llm(
        &self,
        server: usize,
        _: StartRequest,
        _: LlamaConfig,
        _: &DataPaths,
    ) -> StartResult {
        self.0.log(Fake::on("start", server));
        tokio::time::sleep(RELOAD_TIME).await;
        self.0.world().llms[server].state = Llm::Running;
        Ok(self.0.info(server))
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
        world.sd_released_at = Some(Instant::now() + RELEASE_LAG);
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
    setup_with(Fake::new(), options)
}

/// The same over a chat server needing [`NEED`], an embedding server needing half as much (idle
/// for a minute) and a reranker needing a tenth (idle for two), with a RAM budget of `budget`
/// times [`NEED`].
fn three_servers(budget: f64, options: OptionsRequest) -> Setup {
    use crate::llama::tasks::Mode;
    let fake = Fake::with(vec![
        FakeLlm::new(Mode::Chat, NEED, 0),
        FakeLlm::new(Mode::Embedding, NEED / 2, 60_000),
        FakeLlm::new(Mode::Rerank, NEED / 10, 120_000),
    ]);
    let options = OptionsRequest {
        ram_budget_bytes: Some(budget * NEED as f64),
        ..options
    };
    setup_with(fake, options)
}

fn setup_with(fake: Arc<Fake>, options: OptionsRequest) -> Setup {
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
                OrchestratorEvent::Offload(saved) => Fake::on("offload", saved.server),
                OrchestratorEvent::Reload { server, .. } => Fake::on("reload", server),
                OrchestratorEvent::ReloadFailed { error: e, .. } => format!("reload-failed: {e}"),
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
    s.fake.world().llm().state = Llm::Stopped;
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
    let started = s.orchestrator.start_llm(0, request, &s.data).await;
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
    s.fake.world().llm().state = Llm::Stopped;
    s.fake.world().resident = Some(Memory { ram: NEED, vram: 0 });
    let request: StartRequest =
        serde_json::from_value(serde_json::json!({ "modelId": "chat" })).unwrap();
    assert!(s.orchestrator.start_llm(0, request, &s.data).await.is_ok());
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

#[tokio::test(start_paused = true)]
async fn of_three_servers_only_the_chat_server_goes_when_that_makes_room() {
    // 1.6 needed by the servers and 1 by the image, in 2: 0.6 over, which the chat server frees.
    let s = three_servers(2.0, OptionsRequest::default());
    let estimate = s
        .orchestrator
        .estimate(&ImageShape::default(), &s.data)
        .await;
    let offload: Vec<bool> = estimate.servers.iter().map(|s| s.offload).collect();
    assert_eq!(offload, [true, false, false]);
    assert_eq!(estimate.llm.ram, NEED + NEED / 2 + NEED / 10);
    let images = s.queue(&["a"]);
    s.until(Phase::Generating).await;
    let saved = s.orchestrator.saved_states();
    assert_eq!(saved.iter().map(|s| s.server).collect::<Vec<_>>(), [0]);
    s.fake.chat();
    assert!(outcomes(images).await[0].is_ok());
    assert_eq!(s.fake.effects(), ["offload", "image a", "made a", "reload"]);
    assert_eq!(s.orchestrator.queue().length, 0, "the held chat was served");
    assert!(s.orchestrator.saved_states().is_empty());
}

#[tokio::test(start_paused = true)]
async fn when_the_chat_server_is_not_enough_the_one_that_frees_the_rest_goes_too() {
    // 2.6 needed in 1.4: 1.2 over; the chat server frees 1, the reranker's 0.1 is short of the
    // rest, the embedding server's 0.5 is not.
    let s = three_servers(1.4, OptionsRequest::default());
    let images = s.queue(&["a"]);
    s.until(Phase::Generating).await;
    // Requests at both wait for them; the reranker answers meanwhile.
    s.fake.chat();
    s.fake.request(1);
    assert_eq!(s.orchestrator.queue().length, 2);
    let saved = s.orchestrator.saved_states();
    assert_eq!(saved.iter().map(|s| s.server).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(s.orchestrator.saved_state().unwrap().server, 0);
    assert!(outcomes(images).await[0].is_ok());
    assert_eq!(
        s.fake.effects(),
        [
            "offload",
            "offload 1",
            "image a",
            "made a",
            "reload",
            "reload 1"
        ]
    );
    assert_eq!(
        s.orchestrator.queue().length,
        0,
        "both held requests were served"
    );
    let events = s.events();
    let named: Vec<&str> = events.iter().map(String::as_str).collect();
    assert_eq!(
        named,
        [
            "Draining",
            "offload",
            "offload 1",
            "Offloading",
            "Generating",
            "Reloading",
            "reload",
            "reload 1",
            "Idle"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn with_reload_after_idle_a_request_at_any_offloaded_server_brings_them_back() {
    let s = three_servers(
        1.4,
        OptionsRequest {
            reload_after_idle: Some(60_000),
            ..Default::default()
        },
    );
    outcomes(s.queue(&["a"])).await;
    s.until(Phase::Offloaded).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.fake.request(1);
    s.until(Phase::Idle).await;
    assert!(s.fake.at("reload 1") - s.fake.at("made a") < 1_500);
    assert_eq!(s.orchestrator.queue().length, 0);
}

#[tokio::test(start_paused = true)]
async fn the_apps_own_offload_takes_every_running_server_out_and_brings_them_back() {
    let s = three_servers(10.0, OptionsRequest::default());
    s.fake.world().llms[1].state = Llm::Stopped;
    assert!(s.orchestrator.offload_llm().await);
    assert_eq!(
        s.fake.effects(),
        ["offload", "offload 2"],
        "the stopped one stays so"
    );
    assert_eq!(s.orchestrator.saved_states().len(), 2);
    s.orchestrator.reload_llm().await;
    assert_eq!(
        s.fake.effects(),
        ["offload", "offload 2", "reload", "reload 2"]
    );
    assert!(s.orchestrator.saved_states().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_server_the_app_started_meanwhile_is_left_and_the_others_come_back() {
    let s = three_servers(1.4, OptionsRequest::default());
    let images = s.queue(&["a"]);
    s.until(Phase::Generating).await;
    s.fake.world().llms[1].state = Llm::Running;
    assert!(outcomes(images).await[0].is_ok());
    assert_eq!(
        s.fake.effects(),
        ["offload", "offload 1", "image a", "made a", "reload"]
    );
    assert!(s.orchestrator.saved_states().is_empty(), "neither is out");
}
