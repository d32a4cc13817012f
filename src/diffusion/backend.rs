//! The two ways to run stable-diffusion.cpp behind one interface.
//!
//! - **One-shot**: `sd-cli` per request. The model is loaded for every image and all memory is
//!   free between images.
//! - **Resident**: `sd-server` keeps the model loaded; each request becomes a job on its native
//!   API (`POST /sdcpp/v1/img_gen`, polled at `/sdcpp/v1/jobs/{id}`). It runs under the
//!   supervisor's actor (`process::actor`), like llama-server: started on first use, stopped
//!   after an idle timeout, reported as crashed when it dies, and started again by the next
//!   request. It cannot cancel a job that is generating, so a cancel stops the process.
//!
//! Progress comes from the output bar in both cases (see `progress`). Only one job runs at a
//! time (the engine's single worker), so the resident server's output belongs to that job.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::DiffusionError;
use super::lora::{self, AppliedLora};
use super::progress::{Progress, ProgressParser};
use super::request::{ImageRequest, InputImage};
use crate::config::DataPaths;
use crate::events::EventSink;
use crate::process::actor::LOG_TAIL;
use crate::process::{
    self, LaunchError, LaunchSpec, ProcessSpec, RecoveryPolicy, ServerActor, ServerEvent,
    ServerLog, ServerState, Snapshot, inherit_all,
};
use crate::sync::lock;

/// A cancelled child gets this long to exit on SIGTERM before SIGKILL.
const CANCEL_GRACE: Duration = Duration::from_millis(150);
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Lines that say sd-server is up, or that a job finished: check at once.
const READY_HINTS: &[&str] = &["listening on"];
const DONE_HINT: &str = "generate_image completed";
const POLL: Duration = Duration::from_millis(20);
/// One exchange with sd-server (submit, or one status poll).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// How stable-diffusion.cpp runs: `sd-cli` per image, or `sd-server` with the model kept loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, ts_rs::TS)]
#[serde(rename_all = "kebab-case")]
#[ts(rename = "DiffusionBackend")]
pub enum BackendKind {
    OneShot,
    Resident,
}

/// The model's files and how stable-diffusion.cpp is told about them.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub primary: PathBuf,
    /// `(flag, path)`, e.g. `("--llm", …)`.
    pub components: Vec<(&'static str, PathBuf)>,
}

impl ModelFiles {
    pub fn from_info(info: &crate::models::ModelInfo) -> Self {
        let components = crate::models::ComponentRole::DIFFUSION
            .into_iter()
            .filter_map(|role| {
                let file = info.components.get(role.as_str())?;
                Some((role.flag(), file.path.clone()))
            })
            .collect();
        ModelFiles {
            primary: info.path.clone(),
            components,
        }
    }

    /// A lone file is a full checkpoint (`-m`); with components it is the diffusion model only.
    fn args(&self) -> Vec<String> {
        let primary_flag = if self.components.is_empty() {
            "--model"
        } else {
            "--diffusion-model"
        };
        let mut args = vec![primary_flag.to_string(), path_arg(&self.primary)];
        for (flag, path) in &self.components {
            args.extend([flag.to_string(), path_arg(path)]);
        }
        args
    }
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub kind: BackendKind,
    /// `sd-cli` for one-shot, `sd-server` for resident.
    pub binary: PathBuf,
    pub model: ModelFiles,
    pub threads: u32,
    /// Where the model's parts run: flags from `gpuLayers`/`vramBudget` (see [`Placement`]).
    pub placement: Vec<String>,
    pub extra_args: Vec<String>,
    /// Set in the backend's environment (`gpuLayers: 0` hides the GPUs).
    pub env: Vec<(String, String)>,
    /// How much of a GPU its images may take.
    pub device: DeviceUse,
    pub temp_dir: PathBuf,
    /// The data folder: its LoRAs are the backend's `--lora-model-dir`.
    pub data: DataPaths,
    pub startup_timeout: Duration,
    /// Resident only: stop `sd-server` after this long without a request (`None`: never).
    pub idle_timeout: Option<Duration>,
}

impl BackendConfig {
    /// Whether sd is told to keep the component given with `flag` (`--llm`, `--taesd`, …) on the
    /// CPU: the text encoders with `--clip-on-cpu`, the VAE with `--vae-on-cpu`.
    pub fn keeps_on_cpu(&self, flag: &str) -> bool {
        let switch = match flag {
            "--vae" | "--taesd" => "--vae-on-cpu",
            _ => "--clip-on-cpu",
        };
        self.placement
            .iter()
            .chain(&self.extra_args)
            .any(|a| a == switch)
    }

    fn common_args(&self) -> Vec<String> {
        let mut args = self.model.args();
        args.extend(["--threads".into(), self.threads.to_string()]);
        args.extend(self.placement.iter().cloned());
        args.extend(self.extra_args.iter().cloned());
        args.extend(["--lora-model-dir".into(), path_arg(&self.data.models_lora)]);
        args
    }
}

/// The seed's `gpuLayers` and `vramBudget` in stable-diffusion.cpp's terms. The backend has no
/// layer count: `gpuLayers: 0` hides every GPU from ggml (CUDA, ROCm and Vulkan builds then run
/// on the CPU), any other count leaves the GPU in use. `vramBudget` (MB) caps the compute graph
/// (`--max-vram`, which runs it in segments that fit); when the model and a 512×512 image do not
/// fit the budget, the weights stay in RAM and go to VRAM as needed (`--offload-to-cpu`), and
/// when the diffusion model alone does not, the text encoders and VAE run on the CPU too
/// (`--clip-on-cpu`, `--vae-on-cpu`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub device: DeviceUse,
}

/// How much of a GPU an image may take, where one is usable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceUse {
    /// None: `gpuLayers: 0`.
    None,
    /// At most these bytes: `--max-vram` of `vramBudget`.
    Capped(u64),
    /// The model and the image's working set.
    #[default]
    Whole,
}

impl Placement {
    pub fn of(
        gpu_layers: Option<u32>,
        vram_budget_mb: Option<f64>,
        model_bytes: u64,
        diffusion_model_bytes: u64,
    ) -> Result<Placement, String> {
        if let Some(mb) = vram_budget_mb
            && !(mb.is_finite() && mb > 0.0)
        {
            return Err(format!(
                "vramBudget must be a number of MB above 0, got {mb}"
            ));
        }
        if gpu_layers == Some(0) {
            if vram_budget_mb.is_some() {
                return Err(
                    "vramBudget has no effect with gpuLayers: 0 (CPU only): leave one out".into(),
                );
            }
            return cpu_only();
        }
        let Some(mb) = vram_budget_mb else {
            return Ok(Placement::default());
        };
        let budget = (mb * 1_048_576.0) as u64;
        let mut args = vec!["--max-vram".to_string(), format!("{:.3}", mb / 1024.0)];
        if model_bytes.saturating_add(super::working_set(512, 512)) > budget {
            args.push("--offload-to-cpu".into());
        }
        if diffusion_model_bytes > budget {
            args.extend(["--clip-on-cpu".into(), "--vae-on-cpu".into()]);
        }
        Ok(Placement {
            args,
            env: vec![],
            device: DeviceUse::Capped(budget),
        })
    }
}

/// ggml finds no CUDA or ROCm device when none is visible, and skips Vulkan when told to.
#[cfg(not(target_os = "macos"))]
const HIDE_GPUS: [(&str, &str); 3] = [
    ("CUDA_VISIBLE_DEVICES", ""),
    ("HIP_VISIBLE_DEVICES", ""),
    ("GGML_DISABLE_VULKAN", "1"),
];

#[cfg(not(target_os = "macos"))]
fn cpu_only() -> Result<Placement, String> {
    Ok(Placement {
        args: vec![],
        env: HIDE_GPUS
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .to_vec(),
        device: DeviceUse::None,
    })
}

impl Placement {
    /// Where detection found no GPU that the backend could use: it is not left to look (a Vulkan
    /// build would load every Vulkan driver to find none; Mesa's lavapipe alone adds 57 MiB of
    /// RSS). A Metal build on macOS is left as it is.
    #[cfg(not(target_os = "macos"))]
    pub fn without_gpu(mut self) -> Placement {
        for (key, value) in HIDE_GPUS {
            if !self.env.iter().any(|(k, _)| k == key) {
                self.env.push((key.into(), value.into()));
            }
        }
        self.device = DeviceUse::None;
        self
    }

    #[cfg(target_os = "macos")]
    pub fn without_gpu(self) -> Placement {
        self
    }
}

/// A Metal build cannot be told to leave the GPU; a CPU build of sd-cli/sd-server can be given.
#[cfg(target_os = "macos")]
fn cpu_only() -> Result<Placement, String> {
    Err("gpuLayers: 0 cannot keep a Metal build of stable-diffusion.cpp off the GPU: pass binaryPath/serverBinaryPath of a CPU build instead".into())
}

/// One request as the backend sees it.
pub struct Work<'a> {
    pub id: &'a str,
    pub request: &'a ImageRequest,
    pub seed: i64,
    pub cancel: &'a CancellationToken,
    /// Notified at every line of the backend's output: the stall watchdog's heartbeat.
    pub on_output: Arc<Notify>,
    pub on_progress: ProgressFn,
}

pub struct Output {
    pub images: Vec<Vec<u8>>,
    /// Time spent in the backend: the `sd-cli` process, or the `sd-server` job.
    pub backend_time: Duration,
}

pub enum Backend {
    OneShot(Box<OneShot>),
    Resident(Arc<Resident>),
}

impl Backend {
    /// `events`: the resident server's lifecycle (the one-shot backend has none).
    pub fn new(
        config: BackendConfig,
        log: Arc<ServerLog>,
        events: Option<EventSink<ServerEvent<Snapshot>>>,
    ) -> Self {
        match config.kind {
            BackendKind::OneShot => Backend::OneShot(Box::new(OneShot {
                config,
                log,
                last_peak: Mutex::new(None),
            })),
            BackendKind::Resident => {
                Backend::Resident(Arc::new(Resident::new(config, log, events)))
            }
        }
    }

    pub fn config(&self) -> &BackendConfig {
        match self {
            Backend::OneShot(b) => &b.config,
            Backend::Resident(b) => &b.config,
        }
    }

    /// Where the backend's output goes (`getLogs()` and the log file).
    pub fn log(&self) -> Arc<ServerLog> {
        match self {
            Backend::OneShot(b) => b.log.clone(),
            Backend::Resident(b) => b.actor.log().clone(),
        }
    }

    /// Makes the job's images; its LoRAs are found first, the same for both backends.
    pub async fn run(&self, work: Work<'_>) -> Result<Output, DiffusionError> {
        let loras = lora::resolve(&self.config().data, &work.request.loras).await?;
        match self {
            Backend::OneShot(b) => b.run(work, &loras).await,
            Backend::Resident(b) => b.run(work, &loras).await,
        }
    }

    /// The last lines of the backend's output.
    pub fn tail(&self) -> Vec<String> {
        match self {
            Backend::OneShot(b) => b.log.last(LOG_TAIL),
            Backend::Resident(b) => b.actor.tail(LOG_TAIL),
        }
    }

    /// The one-shot backend (the resident one is [`Self::resident`]).
    pub fn one_shot(&self) -> Option<&OneShot> {
        match self {
            Backend::OneShot(b) => Some(b),
            Backend::Resident(_) => None,
        }
    }

    /// The resident server's actor (the one-shot backend runs no server).
    pub fn resident(&self) -> Option<&ServerActor> {
        match self {
            Backend::OneShot(_) => None,
            Backend::Resident(b) => Some(&b.actor),
        }
    }

    /// Stops the resident server's process if no job is using it (the next request starts it
    /// again); true when one was stopped.
    pub async fn release_idle(&self) -> bool {
        match self {
            Backend::OneShot(_) => false,
            Backend::Resident(b) => b.stop_if_idle().await,
        }
    }

    pub async fn shutdown(&self) {
        if let Backend::Resident(b) = self {
            b.stop_server().await;
        }
    }
}

/// The job whose progress a child's output reports.
type Tracker = Arc<Mutex<Option<Listener>>>;

struct Listener {
    parser: ProgressParser,
    on_output: Arc<Notify>,
    on_progress: ProgressFn,
    /// LoRA files of which sd applied no tensor (see [`lora::unapplied`]).
    unapplied_loras: Vec<String>,
}

impl Listener {
    fn of(work: &Work<'_>) -> Self {
        Listener {
            parser: ProgressParser::new(work.request.count, work.request.hires.is_some()),
            on_output: work.on_output.clone(),
            on_progress: work.on_progress.clone(),
            unapplied_loras: Vec::new(),
        }
    }
}

/// Feeds one output line to the job's progress.
fn track(tracker: &Tracker, line: &str) {
    if let Some(listener) = lock(tracker).as_mut() {
        listener.on_output.notify_one();
        if let Some(p) = listener.parser.feed(line) {
            (listener.on_progress)(p);
        }
        if let Some(file) = lora::unapplied(line) {
            listener.unapplied_loras.push(file);
        }
    }
}

/// The LoRA files the job's output says sd applied none of.
fn unapplied_loras(tracker: &Tracker) -> Vec<String> {
    lock(tracker)
        .as_mut()
        .map(|l| std::mem::take(&mut l.unapplied_loras))
        .unwrap_or_default()
}

pub struct OneShot {
    config: BackendConfig,
    log: Arc<ServerLog>,
    /// The last image's `sd-cli` at its largest: resident bytes.
    last_peak: Mutex<Option<u64>>,
}

/// How often a running `sd-cli`'s high-water mark is read: often enough that its last phase
/// (the VAE's decode, the image written) is seen before it exits.
const PEAK_SAMPLE: Duration = Duration::from_millis(10);

/// Keeps in `peak` the most resident memory `pid` has had while this runs: the kernel's
/// high-water mark (Linux), else its tree's resident memory sampled.
async fn watch_peak(pid: u32, peak: Arc<AtomicU64>) {
    loop {
        let now = match crate::process::memory::peak_rss(pid) {
            Some(hwm) => hwm,
            None => tokio::task::spawn_blocking(move || {
                crate::process::memory::tree(pid).map_or(0, |t| t.rss_bytes)
            })
            .await
            .unwrap_or(0),
        };
        peak.fetch_max(now, Ordering::Relaxed);
        tokio::time::sleep(PEAK_SAMPLE).await;
    }
}

impl OneShot {
    /// Resident bytes of the last image's `sd-cli` at its largest (`diffusionServer.calibrate()`
    /// measures one-shot images by it).
    pub fn last_peak(&self) -> Option<u64> {
        *lock(&self.last_peak)
    }

    async fn run(&self, work: Work<'_>, loras: &[AppliedLora]) -> Result<Output, DiffusionError> {
        let dir = TempDir::create(&self.config.temp_dir, work.id).await?;
        let mut args = self.config.common_args();
        args.extend(cli_args(work.request, work.seed, loras));
        let request = work.request;
        let references = request.reference_images.iter().enumerate();
        let images = [
            (
                "--init-img",
                "init".to_string(),
                request.init_image.as_ref(),
            ),
            ("--mask", "mask".to_string(), request.mask.as_ref()),
        ]
        .into_iter()
        .chain(references.map(|(i, image)| ("--ref-image", format!("reference-{i}"), Some(image))));
        for (flag, name, image) in images {
            if let Some(image) = image {
                args.extend([flag.into(), path_arg(&dir.write_image(&name, image).await?)]);
            }
        }
        args.extend(["--output".into(), path_arg(&dir.0.join("image_%d.png"))]);
        let tracker: Tracker = Arc::new(Mutex::new(Some(Listener::of(&work))));
        let spec = ProcessSpec {
            program: self.config.binary.clone(),
            args,
            guarded: false,
            env: self.config.env.clone(),
            unset: inherit_all,
        };
        let log = self.log.clone();
        let output_tracker = tracker.clone();
        let on_line = EventSink::new(move |line: String| {
            track(&output_tracker, &line);
            log.output(&line);
        });
        let began = Instant::now();
        let child =
            process::spawn(spec, Some(on_line)).map_err(|source| DiffusionError::Spawn {
                binary: self.config.binary.clone(),
                source,
            })?;
        let peak = Arc::new(AtomicU64::new(0));
        let watcher = tokio::spawn(watch_peak(child.pid, peak.clone()));
        let exit = tokio::select! {
            exit = child.wait() => exit,
            _ = work.cancel.cancelled() => {
                watcher.abort();
                child.stop(CANCEL_GRACE).await;
                return Err(DiffusionError::Cancelled);
            }
        };
        watcher.abort();
        *lock(&self.last_peak) = Some(peak.load(Ordering::Relaxed)).filter(|&p| p > 0);
        let backend_time = began.elapsed();
        if exit.code != Some(0) {
            return Err(DiffusionError::BackendFailed {
                message: format!("sd-cli failed ({exit})"),
                logs: child.logs.last(LOG_TAIL),
            });
        }
        lora::check_applied(loras, &unapplied_loras(&tracker))?;
        let images = read_images(&dir.0, work.request).await.map_err(|message| {
            DiffusionError::BackendFailed {
                message,
                logs: child.logs.last(LOG_TAIL),
            }
        })?;
        Ok(Output {
            images,
            backend_time,
        })
    }
}

/// `sd-cli` flags of one request (seed resolved by the caller). Its LoRAs are tags at the end of
/// the prompt, the one way `sd-cli` takes them (found in `--lora-model-dir`, and taken out of
/// the prompt before it is encoded).
pub fn cli_args(req: &ImageRequest, seed: i64, loras: &[AppliedLora]) -> Vec<String> {
    let mut prompt = req.prompt.clone();
    for lora in loras {
        prompt.push_str(&format!(" <lora:{}:{}>", lora.path, lora.weight));
    }
    let mut args = vec![
        "--prompt".to_string(),
        prompt,
        "--width".into(),
        req.width.to_string(),
        "--height".into(),
        req.height.to_string(),
        "--steps".into(),
        req.steps.to_string(),
        "--seed".into(),
        seed.to_string(),
        "--batch-count".into(),
        req.count.to_string(),
    ];
    if let Some(negative) = &req.negative_prompt {
        args.extend(["--negative-prompt".into(), negative.clone()]);
    }
    if let Some(cfg) = req.cfg_scale {
        args.extend(["--cfg-scale".into(), cfg.to_string()]);
    }
    if let Some(sampler) = req.sampler {
        args.extend(["--sampling-method".into(), sampler.as_str().into()]);
    }
    if let Some(strength) = req.strength {
        args.extend(["--strength".into(), strength.to_string()]);
    }
    if let Some(hires) = &req.hires {
        // The target size, resolved here, rather than sd's scale: the image is the size asked.
        args.extend([
            "--hires".into(),
            "--hires-width".into(),
            hires.target.0.to_string(),
            "--hires-height".into(),
            hires.target.1.to_string(),
        ]);
        if let Some(steps) = hires.steps {
            args.extend(["--hires-steps".into(), steps.to_string()]);
        }
        if let Some(strength) = hires.denoising_strength {
            args.extend(["--hires-denoising-strength".into(), strength.to_string()]);
        }
        if let Some(upscaler) = &hires.upscaler {
            args.extend(["--hires-upscaler".into(), upscaler.clone()]);
        }
    }
    args
}

/// The native `img_gen` body of one request; its LoRAs as sd-server lists them (their paths in
/// `--lora-model-dir`).
pub fn img_gen_body(req: &ImageRequest, seed: i64, loras: &[AppliedLora]) -> Value {
    let mut sample = json!({ "sample_steps": req.steps });
    if let Some(cfg) = req.cfg_scale {
        sample["guidance"] = json!({ "txt_cfg": cfg });
    }
    if let Some(sampler) = req.sampler {
        sample["sample_method"] = json!(sampler.as_str());
    }
    let mut body = json!({
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt.clone().unwrap_or_default(),
        "width": req.width,
        "height": req.height,
        "seed": seed,
        "batch_count": req.count,
        "sample_params": sample,
        "output_format": "png",
    });
    let encode =
        |image: &InputImage| base64::engine::general_purpose::STANDARD.encode(&image.bytes);
    for (field, image) in [("init_image", &req.init_image), ("mask_image", &req.mask)] {
        if let Some(image) = image {
            body[field] = json!(encode(image));
        }
    }
    if let Some(hires) = &req.hires {
        let mut native = json!({
            "enabled": true,
            "target_width": hires.target.0,
            "target_height": hires.target.1,
            "upscaler": hires.upscaler.as_deref().unwrap_or("Latent"),
        });
        if let Some(steps) = hires.steps {
            native["steps"] = json!(steps);
        }
        if let Some(strength) = hires.denoising_strength {
            native["denoising_strength"] = json!(strength);
        }
        body["hires"] = native;
    }
    if !req.reference_images.is_empty() {
        let images: Vec<String> = req.reference_images.iter().map(encode).collect();
        body["ref_images"] = json!(images);
    }
    if let Some(strength) = req.strength {
        body["strength"] = json!(strength);
    }
    if !loras.is_empty() {
        let loras: Vec<Value> = loras
            .iter()
            .map(|l| json!({ "path": l.path, "multiplier": l.weight }))
            .collect();
        body["lora"] = json!(loras);
    }
    body
}

/// A per-request folder under the data dir's `temp/`, removed however the request ends.
pub(super) struct TempDir(pub(super) PathBuf);

const TEMP_PREFIX: &str = "diffusion-";
/// A request folder this old was left by a process that died mid-request.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Removes request folders that a crashed or killed run left behind (not recent ones: another
/// app on the same data folder may be using them).
pub async fn sweep_stale_temp(root: &Path) {
    let Ok(mut entries) = tokio::fs::read_dir(root).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let stale = entry
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if stale && entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let _ = tokio::fs::remove_dir_all(entry.path()).await;
        }
    }
}

impl TempDir {
    pub(super) async fn create(root: &Path, id: &str) -> Result<Self, DiffusionError> {
        let dir = root.join(format!("{TEMP_PREFIX}{id}"));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| DiffusionError::Io {
                path: dir.clone(),
                source,
            })?;
        Ok(TempDir(dir))
    }

    /// Writes an image the request carries as `{name}.{format}`, beside the outputs: gone with
    /// the folder however the request ends.
    pub(super) async fn write_image(
        &self,
        name: &str,
        image: &InputImage,
    ) -> Result<PathBuf, DiffusionError> {
        let path = self.0.join(format!("{name}.{}", image.format));
        tokio::fs::write(&path, &image.bytes)
            .await
            .map_err(|e| DiffusionError::BackendFailed {
                message: format!("cannot write the {name} image: {e}"),
                logs: Vec::new(),
            })?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A few small PNGs; this runs on a runtime thread, never on the JS thread.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `image_0.png` … `image_{n-1}.png`, each checked to be a PNG of the asked size.
async fn read_images(dir: &Path, req: &ImageRequest) -> Result<Vec<Vec<u8>>, String> {
    let mut images = Vec::new();
    for i in 0..req.count {
        let path = dir.join(format!("image_{i}.png"));
        let png = tokio::fs::read(&path)
            .await
            .map_err(|e| format!("sd-cli wrote no image {}: {e}", path.display()))?;
        check_png(&png, req)?;
        images.push(png);
    }
    Ok(images)
}

/// The PNG signature and the IHDR size, so a caller never gets a broken or wrong-sized image.
/// A PNG of the size asked, or of what stable-diffusion.cpp rounded it up to: a multiple of
/// what the model takes (8 for DiT models, 64 for the UNet of SD 1.x and SDXL).
pub fn check_png(png: &[u8], req: &ImageRequest) -> Result<(), String> {
    let (width, height) = png_size(png).ok_or("the backend's output is not a PNG image")?;
    let asked = req.output_size();
    let rounded_up = |made: u32, asked: u32| (asked..asked + 64).contains(&made);
    if !rounded_up(width, asked.0) || !rounded_up(height, asked.1) {
        return Err(format!(
            "the backend made a {width}x{height} image, {}x{} was asked",
            asked.0, asked.1
        ));
    }
    Ok(())
}

/// The width and height in a PNG's header.
pub fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if png.len() < 24 || &png[..8] != SIGNATURE || &png[12..16] != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    let height = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
    Some((width, height))
}

pub struct Resident {
    config: BackendConfig,
    actor: ServerActor,
    tracker: Tracker,
    /// Woken by the server's "completed" line, so the job is polled at once.
    done: Arc<tokio::sync::Notify>,
    /// One job at a time; an idle stop waits for the job under way.
    jobs: tokio::sync::Mutex<()>,
    /// Bumped by each request; an idle stop only happens if no request came since it was planned.
    epoch: Mutex<u64>,
}

impl Resident {
    fn new(
        config: BackendConfig,
        log: Arc<ServerLog>,
        events: Option<EventSink<ServerEvent<Snapshot>>>,
    ) -> Self {
        Resident {
            config,
            actor: ServerActor::new("sd-server", log, events),
            tracker: Arc::new(Mutex::new(None)),
            done: Arc::new(tokio::sync::Notify::new()),
            jobs: tokio::sync::Mutex::new(()),
            epoch: Mutex::new(0),
        }
    }

    async fn run(
        self: &Arc<Self>,
        work: Work<'_>,
        loras: &[AppliedLora],
    ) -> Result<Output, DiffusionError> {
        *lock(&self.epoch) += 1;
        let job = self.jobs.lock().await;
        let result = self.run_job(&work, loras).await.and_then(|output| {
            lora::check_applied(loras, &unapplied_loras(&self.tracker))?;
            Ok(output)
        });
        *lock(&self.tracker) = None;
        if matches!(result, Err(DiffusionError::Cancelled)) {
            // The server cannot cancel a generating job: it goes, and the next request starts it.
            self.actor.stop().await;
        }
        drop(job);
        self.plan_idle_stop();
        result
    }

    async fn run_job(
        &self,
        work: &Work<'_>,
        loras: &[AppliedLora],
    ) -> Result<Output, DiffusionError> {
        // From the start: a model that loads reports progress, and its output is a heartbeat.
        *lock(&self.tracker) = Some(Listener::of(work));
        if self.actor.status() != ServerState::Running {
            tokio::select! {
                started = self.actor.start(self.launch_spec()?) => {
                    started.map_err(|e| self.launch_failed(e))?;
                }
                _ = work.cancel.cancelled() => return Err(DiffusionError::Cancelled),
            }
        }
        let port = self.actor.snapshot().port.unwrap_or_default();
        let began = Instant::now();
        let base = format!("http://127.0.0.1:{port}/sdcpp/v1");
        let client = crate::http::local_client();
        let failed = |message: String| DiffusionError::BackendFailed {
            message,
            logs: self.actor.tail(LOG_TAIL),
        };
        let gone = || {
            let why = self.actor.snapshot().error.unwrap_or_default();
            failed(format!("sd-server stopped during the job: {why}"))
        };
        // Every exchange gives way to a cancel or the server's end, and has a time limit: a
        // wedged server must not hold up a cancel or stop().
        let exchange = |request: reqwest::RequestBuilder| async {
            tokio::select! {
                _ = work.cancel.cancelled() => Err(DiffusionError::Cancelled),
                _ = self.actor.left_running() => Err(gone()),
                answer = tokio::time::timeout(REQUEST_TIMEOUT, json_of(request)) => match answer {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(e)) => Err(failed(format!("sd-server did not answer: {e}"))),
                    Err(_) => Err(failed(format!("sd-server did not answer within {} s", REQUEST_TIMEOUT.as_secs()))),
                },
            }
        };
        let submitted = exchange(
            client
                .post(format!("{base}/img_gen"))
                .header("content-type", "application/json")
                .body(img_gen_body(work.request, work.seed, loras).to_string()),
        )
        .await?;
        let job = submitted["id"]
            .as_str()
            .ok_or_else(|| failed(format!("sd-server refused the job: {submitted}")))?
            .to_string();
        loop {
            tokio::select! {
                _ = work.cancel.cancelled() => return Err(DiffusionError::Cancelled),
                _ = self.actor.left_running() => return Err(gone()),
                _ = self.done.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            let status = exchange(client.get(format!("{base}/jobs/{job}"))).await?;
            match status["status"].as_str() {
                Some("completed") => {
                    let backend_time = began.elapsed();
                    let images = decode_images(&status, work.request).map_err(failed)?;
                    return Ok(Output {
                        images,
                        backend_time,
                    });
                }
                Some("failed") => {
                    return Err(failed(format!(
                        "sd-server failed the job: {}",
                        status["error"]
                    )));
                }
                Some("cancelled") => return Err(DiffusionError::Cancelled),
                _ => {}
            }
        }
    }

    /// sd-server on a free port, ready when `/sdcpp/v1/capabilities` answers; its output
    /// also feeds the job's progress.
    fn launch_spec(&self) -> Result<LaunchSpec, DiffusionError> {
        let port = crate::launch::free_port("127.0.0.1", None).map_err(|e| DiffusionError::Io {
            path: PathBuf::from("127.0.0.1:0"),
            source: std::io::Error::other(e),
        })?;
        let mut args = self.config.common_args();
        args.extend([
            "--listen-ip".into(),
            "127.0.0.1".into(),
            "--listen-port".into(),
            port.to_string(),
        ]);
        let (tracker, done) = (self.tracker.clone(), self.done.clone());
        Ok(LaunchSpec {
            program: self.config.binary.clone(),
            args,
            env: self.config.env.clone(),
            unset: inherit_all,
            port,
            health_url: format!("http://127.0.0.1:{port}/sdcpp/v1/capabilities"),
            ready_hints: READY_HINTS,
            on_line: Some(EventSink::new(move |line: String| {
                if line.contains(DONE_HINT) {
                    done.notify_one();
                }
                track(&tracker, &line);
            })),
            startup_timeout: self.config.startup_timeout,
            stop_grace: STOP_GRACE,
            recovery: RecoveryPolicy::NONE,
        })
    }

    fn launch_failed(&self, err: LaunchError) -> DiffusionError {
        match err {
            LaunchError::Spawn { binary, source } => DiffusionError::Spawn { binary, source },
            LaunchError::Cancelled { .. } => DiffusionError::Cancelled,
            err => DiffusionError::BackendFailed {
                message: err.to_string(),
                logs: err.tail().to_vec(),
            },
        }
    }

    fn plan_idle_stop(self: &Arc<Self>) {
        let Some(idle) = self.config.idle_timeout else {
            return;
        };
        let epoch = *lock(&self.epoch);
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(idle).await;
            let Some(this) = this.upgrade() else { return };
            let _job = this.jobs.lock().await;
            if *lock(&this.epoch) == epoch && this.actor.status() == ServerState::Running {
                let span = this.actor.log().span("sd-server");
                span.in_scope(|| {
                    tracing::info!("sd-server idle for {} s: stopping it", idle.as_secs())
                });
                this.actor.stop().await;
            }
        });
    }

    async fn stop_if_idle(&self) -> bool {
        let Ok(_job) = self.jobs.try_lock() else {
            return false;
        };
        if self.actor.status() != ServerState::Running {
            return false;
        }
        *lock(&self.epoch) += 1;
        self.actor.stop().await.is_some()
    }

    async fn stop_server(&self) {
        *lock(&self.epoch) += 1;
        self.actor.stop().await;
    }
}

/// Sends the request; its answer as JSON (`null` when the body is not JSON).
async fn json_of(request: reqwest::RequestBuilder) -> Result<Value, reqwest::Error> {
    let bytes = request.send().await?.bytes().await?;
    Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn decode_images(status: &Value, req: &ImageRequest) -> Result<Vec<Vec<u8>>, String> {
    let images = status["result"]["images"]
        .as_array()
        .ok_or("sd-server's job has no images")?;
    let mut out = Vec::new();
    for image in images {
        let b64 = image["b64_json"]
            .as_str()
            .ok_or("sd-server's image has no data")?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("sd-server's image is not base64: {e}"))?;
        check_png(&png, req)?;
        out.push(png);
    }
    if out.len() != req.count as usize {
        return Err(format!(
            "sd-server made {} images, {} were asked",
            out.len(),
            req.count
        ));
    }
    Ok(out)
}
