//! `diffusionServer.calibrate()`: the model runs in a resident `sd-server` of its own (or, asked
//! for, one-shot `sd-cli` runs), once for each combination of placement switches, and makes
//! images of each size asked for (one warm-up, then timed samples); what it really takes is
//! measured: its peak RSS at each size (the sizes run smallest first, so the high-water mark
//! after a size is that size's peak; each `sd-cli`'s own high-water mark, one-shot), the params
//! memory sd reports (VRAM and RAM), and the time of each image. The report is stored beside
//! the model; the orchestrator's estimate of an image of a measured size, with the same
//! placement and executable, is then the measurement (`source: 'measured'`).
//!
//! The request and report follow genai-electron 0.26's `DiffusionCalibrationConfig` and
//! `DiffusionCalibrationReport`, with `ramPeakBytes` on each run besides.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use ts_rs::TS;

use super::backend::BackendKind;
use super::resolve::{self, StartRequest};
use super::{DiffusionConfig, DiffusionError, DiffusionServer};
use crate::binaries::BinaryManager;
use crate::calibration::{self, PeakSampler, median};
use crate::config::DataPaths;
use crate::launch::{ManagedServer, StartError};
use crate::system::SystemInfo;

/// The stored reports, beside the model's files: the newest eight, the newest first.
pub const REPORTS_FILE: &str = "diffusion-calibration.json";
const MAX_SAMPLES: u32 = 10;
const DEFAULT_PROMPT: &str = "a lighthouse on a cliff at sunset";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, TS)]
#[serde(deny_unknown_fields)]
#[ts(rename = "CalibrationSize")]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    fn pixels(self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

/// How each image is made.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[ts(rename = "DiffusionCalibrationGeneration")]
pub struct Generation {
    pub steps: u32,
    pub cfg_scale: f64,
    #[ts(type = "ImageSampler")]
    pub sampler: String,
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Images a request (1; 0.26's sd-server batch, refused above 1 as by `start()`).
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
}

/// Where the model's parts run, as `diffusionServer.start()` takes the switches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[ts(rename = "DiffusionOffloadCombo")]
pub struct Combo {
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_on_cpu: Option<bool>,
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vae_on_cpu: Option<bool>,
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offload_to_cpu: Option<bool>,
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diffusion_flash_attention: Option<bool>,
}

/// `diffusionServer.calibrate(config)` (less `onProgress` and `signal`, which stay in JS).
#[derive(Debug, Clone, Deserialize, TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[ts(rename = "DiffusionCalibrationRequest")]
pub struct CalibrationRequest {
    /// An installed `diffusion` model.
    pub model_id: String,
    /// Each combination makes images of each size.
    pub sizes: Vec<Size>,
    pub generation: Generation,
    /// genai-electron 0.26's backend choice, as `start()` takes it: `single` measures one-shot
    /// images (`sd-cli`), `burst` and `auto` the resident `sd-server`.
    #[ts(optional, type = "'burst' | 'single' | 'auto'")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_mode: Option<String>,
    /// The backend to measure (default: `resident`, or `one-shot` with `usageMode: 'single'`):
    /// a one-shot image's estimate is then its `sd-cli`'s measured peak.
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKind>,
    /// Placements to measure (default: one, as `start()` would choose).
    #[serde(default)]
    #[ts(as = "Option<Vec<Combo>>", optional)]
    pub combos: Vec<Combo>,
    /// Timed images of each size after one warm-up (default 1, at most 10).
    pub samples: Option<u32>,
    /// The seed of every image (default 42).
    pub seed: Option<i64>,
    pub prompt: Option<String>,
}

/// Where a calibration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(rename = "DiffusionCalibrationPhase")]
pub enum Phase {
    Preparing,
    Warmup,
    Sampling,
    Done,
}

/// A `calibration-progress` event, and `onProgress`'s argument.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "DiffusionCalibrationProgress")]
pub struct Progress {
    pub phase: Phase,
    pub combo_index: usize,
    pub combo_count: usize,
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub combo: Option<Combo>,
    pub size_index: usize,
    pub size_count: usize,
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// The sample under way (1-based; absent at the warm-up).
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<u32>,
    pub sample_count: u32,
    pub overall_percent: f64,
}

/// The switches a combination ran with, as resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "DiffusionCalibrationPlacement")]
pub struct Resolved {
    pub clip_on_cpu: bool,
    pub vae_on_cpu: bool,
    pub offload_to_cpu: bool,
    pub diffusion_flash_attention: bool,
}

impl Resolved {
    fn of(config: &DiffusionConfig) -> Resolved {
        let has = |flag: &str| {
            let backend = &config.backend;
            backend
                .placement
                .iter()
                .chain(&backend.extra_args)
                .any(|a| a == flag)
        };
        Resolved {
            clip_on_cpu: has("--clip-on-cpu"),
            vae_on_cpu: has("--vae-on-cpu"),
            offload_to_cpu: has("--offload-to-cpu"),
            diffusion_flash_attention: has("--diffusion-fa"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, TS)]
#[serde(rename_all = "lowercase")]
#[ts(rename = "DiffusionCalibrationStatus")]
pub enum RunStatus {
    Ok,
    Oom,
    Error,
}

/// One size made with one combination.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "CalibrationRun")]
pub struct Run {
    pub size: Size,
    pub combo: Combo,
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolved>,
    pub status: RunStatus,
    /// The median of the samples, milliseconds from the request to the image.
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_taken_ms: Option<f64>,
    /// `loadMs`: the warm-up's time beyond the median (the model's load, at the first size).
    #[ts(optional, type = "{ loadMs?: number }")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_ms: Option<Value>,
    /// VRAM sd reported for the model's params, or NVML's figure for its process if more.
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vram_peak_bytes: Option<u64>,
    /// The highest resident memory of `sd-server` by the end of this size.
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ram_peak_bytes: Option<u64>,
    /// The params memory sd reported in RAM.
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params_ram_bytes: Option<u64>,
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples_ms: Option<Vec<f64>>,
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What an estimate matches: the backend executable and the placement switches.
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
}

/// A combination not started: the start's own check refused it.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[ts(rename = "DiffusionCalibrationSkippedCombo")]
pub struct Skipped {
    pub combo: Combo,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "DiffusionCalibrationMachine")]
pub struct Machine {
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_type: Option<String>,
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_name: Option<String>,
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vram_bytes: Option<u64>,
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vram_available_bytes: Option<u64>,
}

/// What `calibrate()` resolves with, as stored beside the model.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "DiffusionCalibrationReport")]
pub struct Report {
    pub machine: Machine,
    pub model_id: String,
    pub steps: u32,
    pub cfg_scale: f64,
    #[ts(type = "ImageSampler")]
    pub sampler: String,
    pub samples: u32,
    #[ts(type = "'burst' | 'single' | 'auto'")]
    pub usage_mode: String,
    /// ISO 8601.
    pub created_at: String,
    pub runs: Vec<Run>,
    /// The fastest combination at each size that ran, by `"<width>x<height>"`.
    #[ts(type = "Record<string, DiffusionOffloadCombo>")]
    pub recommended: Map<String, Value>,
    pub skipped_combos: Vec<Skipped>,
}

/// The calibration of sd-server: what its errors say.
#[derive(Debug)]
pub struct Diffusion;

impl crate::calibration::Calibrates for Diffusion {
    const NAME: &'static str = "diffusionServer";
    const REQUEST: &'static str = "{ modelId, sizes: [{ width, height }], generation: { steps, cfgScale, sampler } } (DiffusionCalibrationRequest in index.d.ts)";
    type StartError = StartError<DiffusionError>;
}

/// Why a calibration did not give a report.
pub type CalibrationError = crate::calibration::CalibrationError<Diffusion>;

/// A request checked before anything runs.
struct Plan {
    request: CalibrationRequest,
    combos: Vec<Combo>,
    /// Indexes into `request.sizes`, the smallest first.
    order: Vec<usize>,
    samples: u32,
}

fn plan(request: CalibrationRequest) -> Result<Plan, CalibrationError> {
    let invalid = |m: String| CalibrationError::Invalid(m);
    if request.sizes.is_empty() {
        return Err(invalid(
            "sizes must name at least one { width, height }".into(),
        ));
    }
    let samples = request.samples.unwrap_or(1);
    if !(1..=MAX_SAMPLES).contains(&samples) {
        return Err(invalid(format!(
            "samples must be 1 to {MAX_SAMPLES}, got {samples}"
        )));
    }
    if request.generation.batch_size.is_some_and(|b| b != 1) {
        return Err(invalid(
            "generation.batchSize must be 1: each image is its own request".into(),
        ));
    }
    if let Some(mode) = &request.usage_mode
        && !["burst", "single", "auto"].contains(&mode.as_str())
    {
        return Err(invalid(format!(
            "usageMode must be burst, single or auto, got {mode:?}"
        )));
    }
    let plan = Plan {
        combos: if request.combos.is_empty() {
            vec![Combo::default()]
        } else {
            request.combos.clone()
        },
        order: {
            let mut order: Vec<usize> = (0..request.sizes.len()).collect();
            order.sort_by_key(|&i| request.sizes[i].pixels());
            order
        },
        samples,
        request,
    };
    // Every image is checked as a request now, so a bad size or sampler fails before a start.
    for &i in &plan.order {
        super::request::parse(&plan.image(plan.request.sizes[i]), false)
            .map_err(|e| invalid(format!("sizes[{i}]: {}", e.0)))?;
    }
    Ok(plan)
}

impl Plan {
    fn image(&self, size: Size) -> Value {
        let generation = &self.request.generation;
        json!({
            "prompt": self.request.prompt.as_deref().unwrap_or(DEFAULT_PROMPT),
            "width": size.width,
            "height": size.height,
            "steps": generation.steps,
            "cfgScale": generation.cfg_scale,
            "sampler": generation.sampler,
            "seed": self.request.seed.unwrap_or(42),
        })
    }

    /// The backend measured: asked for, else as `usageMode` says, else resident.
    fn backend(&self) -> BackendKind {
        let single = self.request.usage_mode.as_deref() == Some("single");
        self.request.backend.unwrap_or(if single {
            BackendKind::OneShot
        } else {
            BackendKind::Resident
        })
    }

    fn start_request(&self, combo: &Combo) -> Result<StartRequest, CalibrationError> {
        let mut config = json!({
            "modelId": self.request.model_id,
            "backend": self.backend(),
            "port": "auto",
            // Never stopped for idleness between its images.
            "idleTimeout": 0,
        });
        let settings = serde_json::to_value(combo).expect("combos serialize");
        let fields = config.as_object_mut().expect("an object");
        fields.extend(settings.as_object().cloned().unwrap_or_default());
        fields.remove("label");
        if let Some(threads) = self.request.generation.threads {
            fields.insert("threads".into(), json!(threads));
        }
        serde_json::from_value(config)
            .map_err(|e| CalibrationError::Invalid(format!("combo {combo:?}: {e}")))
    }

    fn progress(&self, phase: Phase, combo: usize, size: usize, sample: Option<u32>) -> Progress {
        let sizes = self.order.len();
        let images_a_size = self.samples as usize + 1;
        let images = self.combos.len() * sizes * images_a_size;
        let done = match phase {
            Phase::Done => images,
            Phase::Preparing => (combo * sizes) * images_a_size,
            _ => (combo * sizes + size) * images_a_size + sample.map_or(0, |s| s as usize),
        };
        Progress {
            phase,
            combo_index: combo,
            combo_count: self.combos.len(),
            combo: self.combos.get(combo).cloned(),
            size_index: size,
            size_count: sizes,
            size: self.order.get(size).map(|&i| self.request.sizes[i]),
            sample,
            sample_count: self.samples,
            overall_percent: (1000.0 * done as f64 / images as f64).round() / 10.0,
        }
    }
}

/// What runs a calibration needs from the library.
pub struct Context<'a> {
    pub data: &'a DataPaths,
    pub system: &'a SystemInfo,
    pub binaries: &'a BinaryManager,
    pub cancel: CancellationToken,
    pub emit: &'a (dyn Fn(Progress) + Send + Sync),
}

/// Runs every combination at every size, stores the report beside the model and returns it.
/// Cancelled, it stops the server it runs and stores nothing.
pub async fn calibrate(
    request: CalibrationRequest,
    cx: Context<'_>,
) -> Result<Report, CalibrationError> {
    let plan = plan(request)?;
    let model_id = plan.request.model_id.clone();
    (cx.emit)(plan.progress(Phase::Preparing, 0, 0, None));
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for (c, combo) in plan.combos.iter().enumerate() {
        if cx.cancel.is_cancelled() {
            return Err(CalibrationError::Cancelled);
        }
        if c > 0 {
            (cx.emit)(plan.progress(Phase::Preparing, c, 0, None));
        }
        let request = plan.start_request(combo)?;
        let config = match resolve::resolve(request, cx.data, cx.system, cx.binaries).await {
            Ok(config) => config,
            Err(StartError::Resources(refused)) => {
                skipped.push(Skipped {
                    combo: combo.clone(),
                    reason: refused.to_string(),
                });
                continue;
            }
            Err(e) => return Err(CalibrationError::Start(Box::new(e))),
        };
        let measured = tokio::select! {
            runs = measure(&plan, c, config, &cx) => runs,
            _ = cx.cancel.cancelled() => None,
        };
        runs.extend(measured.ok_or(CalibrationError::Cancelled)?);
    }
    let gpu = cx.system.gpu().await;
    let report = Report {
        machine: Machine {
            gpu_type: gpu.vendor.map(|v| format!("{v:?}").to_lowercase()),
            gpu_name: gpu.name.clone(),
            vram_bytes: gpu.vram_total,
            vram_available_bytes: gpu.vram_free,
        },
        model_id: model_id.clone(),
        steps: plan.request.generation.steps,
        cfg_scale: plan.request.generation.cfg_scale,
        sampler: plan.request.generation.sampler.clone(),
        samples: plan.samples,
        usage_mode: plan
            .request
            .usage_mode
            .clone()
            .unwrap_or_else(|| "auto".into()),
        created_at: crate::clock::iso_now(),
        recommended: recommended(&runs),
        runs,
        skipped_combos: skipped,
    };
    let (dir, _) = crate::models::store::find(cx.data, &model_id)
        .await
        .map_err(|e| CalibrationError::Start(Box::new(StartError::Model(e))))?;
    calibration::store(&dir, REPORTS_FILE, &report)
        .await
        .map_err(|source| CalibrationError::Store {
            path: dir.join(REPORTS_FILE),
            source,
        })?;
    (cx.emit)(plan.progress(Phase::Done, 0, 0, None));
    Ok(report)
}

/// The fastest combination that made each size.
fn recommended(runs: &[Run]) -> Map<String, Value> {
    let mut best: Vec<(Size, f64, &Combo)> = Vec::new();
    for run in runs.iter().filter(|r| r.status == RunStatus::Ok) {
        let Some(time) = run.time_taken_ms else {
            continue;
        };
        match best.iter_mut().find(|(size, ..)| *size == run.size) {
            Some(entry) if entry.1 <= time => {}
            Some(entry) => *entry = (run.size, time, &run.combo),
            None => best.push((run.size, time, &run.combo)),
        }
    }
    best.into_iter()
        .map(|(size, _, combo)| {
            let key = format!("{}x{}", size.width, size.height);
            (key, serde_json::to_value(combo).expect("combos serialize"))
        })
        .collect()
}

/// One combination: a resident server of its own, every size smallest first; `None` when
/// cancelled (the server is stopped either way, by the caller's drop of this future and the
/// server's own stop below).
async fn measure(
    plan: &Plan,
    combo_index: usize,
    config: DiffusionConfig,
    cx: &Context<'_>,
) -> Option<Vec<Run>> {
    let server = Arc::new(DiffusionServer::new(None));
    let stopper = StopOnDrop(server.clone());
    let combo = &plan.combos[combo_index];
    let resolved = Resolved::of(&config);
    let binary = config.backend.binary.clone();
    let mut runs = Vec::new();
    if let Err(e) = server.start(config).await {
        runs.push(failed_run(
            plan.request.sizes[plan.order[0]],
            combo,
            e.to_string(),
        ));
        drop(stopper);
        return Some(runs);
    }
    let sampler = PeakSampler::start(server.clone());
    let mut failed = None::<String>;
    for (s, &i) in plan.order.iter().enumerate() {
        let size = plan.request.sizes[i];
        if let Some(error) = &failed {
            runs.push(failed_run(size, combo, error.clone()));
            continue;
        }
        let image = super::request::parse(&plan.image(size), false).expect("checked by plan()");
        let mut times = Vec::new();
        let mut error = None;
        // A one-shot image's sd-cli is gone when it is made: its peak is kept by the backend.
        let mut one_shot_peak = 0;
        for sample in 0..=plan.samples {
            let phase = if sample == 0 {
                Phase::Warmup
            } else {
                Phase::Sampling
            };
            (cx.emit)(plan.progress(phase, combo_index, s, (sample > 0).then_some(sample)));
            let started = Instant::now();
            match server.generate(image.clone(), None).await {
                Ok(_) => {
                    times.push(started.elapsed().as_secs_f64() * 1000.0);
                    let last = server
                        .engine()
                        .and_then(|e| e.backend().one_shot()?.last_peak());
                    one_shot_peak = one_shot_peak.max(last.unwrap_or(0));
                }
                Err(e) => {
                    error = Some(e.message.clone());
                    break;
                }
            }
        }
        let logs = server.logs(400);
        let status = match &error {
            None => RunStatus::Ok,
            Some(e) if out_of_memory(e) || logs.iter().any(|l| out_of_memory(l)) => RunStatus::Oom,
            Some(_) => RunStatus::Error,
        };
        if status != RunStatus::Ok {
            failed = error.clone();
            runs.push(Run {
                error,
                ..failed_run(size, combo, String::new())
            });
            continue;
        }
        let samples: Vec<f64> = times[1..].to_vec();
        let time = median(samples.iter().copied());
        let params = logs.iter().rev().find_map(|l| params_memory(l));
        let peak = sampler.peak();
        runs.push(Run {
            size,
            combo: combo.clone(),
            resolved: Some(resolved),
            status,
            time_taken_ms: time,
            stage_ms: time.map(|t| json!({ "loadMs": (times[0] - t).max(0.0).round() })),
            vram_peak_bytes: Some(peak.vram.max(params.map_or(0, |p| p.0))),
            ram_peak_bytes: Some(peak.rss.max(one_shot_peak)),
            params_ram_bytes: params.map(|p| p.1),
            samples_ms: Some(samples),
            error: None,
            binary: Some(binary.clone()),
        });
    }
    drop(sampler);
    server.stop().await;
    drop(stopper);
    Some(runs)
}

/// Stops the server when dropped (a cancelled calibration drops the future that runs it).
struct StopOnDrop(Arc<DiffusionServer>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let server = self.0.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { server.stop().await });
        }
    }
}

fn failed_run(size: Size, combo: &Combo, error: String) -> Run {
    Run {
        size,
        combo: combo.clone(),
        resolved: None,
        status: if out_of_memory(&error) {
            RunStatus::Oom
        } else {
            RunStatus::Error
        },
        time_taken_ms: None,
        stage_ms: None,
        vram_peak_bytes: None,
        ram_peak_bytes: None,
        params_ram_bytes: None,
        samples_ms: None,
        error: (!error.is_empty()).then_some(error),
        binary: None,
    }
}

fn out_of_memory(line: &str) -> bool {
    let line = line.to_ascii_lowercase();
    [
        "out of memory",
        "failed to allocate",
        "outofdevicememory",
        "outofhostmemory",
    ]
    .iter()
    .any(|words| line.contains(words))
}

/// `(VRAM, RAM)` bytes of sd's `total params memory size = 10.13MB (VRAM 0.00MB, RAM 10.13MB): …`.
fn params_memory(line: &str) -> Option<(u64, u64)> {
    let (_, rest) = line.split_once("total params memory size")?;
    let figure = |label: &str| -> Option<u64> {
        let (_, after) = rest.split_once(label)?;
        let number = after.trim_start().split("MB").next()?.trim();
        let mb: f64 = number.parse().ok()?;
        Some((mb * (1u64 << 20) as f64).round() as u64)
    };
    Some((figure("(VRAM")?, figure(", RAM")?))
}

/// What a lookup reads of a stored run.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredRun {
    size: Size,
    status: RunStatus,
    resolved: Option<Resolved>,
    ram_peak_bytes: Option<u64>,
    vram_peak_bytes: Option<u64>,
    binary: Option<PathBuf>,
}

#[derive(Deserialize)]
struct StoredReport {
    runs: Vec<StoredRun>,
}

/// The newest calibration of an image of `width` × `height` with `config`'s placement and
/// executable: `(RAM, VRAM)` bytes at its peak, the model's files included.
pub async fn measured(
    config: &DiffusionConfig,
    data: &DataPaths,
    width: u32,
    height: u32,
) -> Option<(u64, u64)> {
    let (dir, _) = crate::models::store::find(data, &config.model_id)
        .await
        .ok()?;
    let reports: Vec<StoredReport> = calibration::read(&dir, REPORTS_FILE).await?;
    let (size, resolved) = (Size { width, height }, Resolved::of(config));
    reports
        .into_iter()
        .flat_map(|r| r.runs)
        .find(|run| {
            run.status == RunStatus::Ok
                && run.size == size
                && run.resolved == Some(resolved)
                && run.binary.as_ref() == Some(&config.backend.binary)
        })
        .and_then(|run| Some((run.ram_peak_bytes?, run.vram_peak_bytes.unwrap_or(0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(value: Value) -> Result<Plan, CalibrationError> {
        let request: CalibrationRequest =
            serde_json::from_value(value).map_err(|e| CalibrationError::Invalid(e.to_string()))?;
        plan(request)
    }

    fn invalid(value: Value) -> String {
        match request(value) {
            Err(CalibrationError::Invalid(message)) => message,
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    fn base(extra: Value) -> Value {
        let mut v = json!({
            "modelId": "img",
            "sizes": [{ "width": 256, "height": 256 }, { "width": 64, "height": 64 }],
            "generation": { "steps": 2, "cfgScale": 1, "sampler": "euler" },
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    }

    #[test]
    fn the_backend_measured_is_the_one_asked_else_as_usage_mode_says_else_resident() {
        let backend = |extra: Value| request(base(extra)).unwrap().backend();
        assert_eq!(backend(json!({})), BackendKind::Resident);
        assert_eq!(
            backend(json!({ "usageMode": "burst" })),
            BackendKind::Resident
        );
        assert_eq!(
            backend(json!({ "usageMode": "single" })),
            BackendKind::OneShot
        );
        assert_eq!(
            backend(json!({ "usageMode": "single", "backend": "resident" })),
            BackendKind::Resident
        );
        assert_eq!(
            backend(json!({ "backend": "one-shot" })),
            BackendKind::OneShot
        );
        let plan = request(base(json!({ "backend": "one-shot" }))).unwrap();
        let start = plan.start_request(&Combo::default()).unwrap();
        assert_eq!(start.backend.as_deref(), Some("one-shot"));
    }

    #[test]
    fn sizes_run_smallest_first_and_progress_counts_every_image() {
        let plan = request(base(
            json!({ "samples": 2, "combos": [{}, { "vaeOnCpu": true }] }),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.order, [1, 0]);
        let first = plan.progress(Phase::Warmup, 0, 0, None);
        assert_eq!(
            first.size,
            Some(Size {
                width: 64,
                height: 64
            })
        );
        assert_eq!(first.overall_percent, 0.0);
        // 2 combos × 2 sizes × 3 images: at the second combo's first sample of its second size,
        // the first combo's 6, the first size's 3 and this size's warm-up are done.
        let later = plan.progress(Phase::Sampling, 1, 1, Some(1));
        assert_eq!(later.overall_percent, 83.3);
        assert_eq!(
            plan.progress(Phase::Done, 0, 0, None).overall_percent,
            100.0
        );
        let start = plan.start_request(&plan.combos[1]).unwrap();
        assert_eq!(start.vae_on_cpu, Some(true));
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        assert!(invalid(base(json!({ "sizes": [] }))).contains("sizes"));
        assert!(
            invalid(base(json!({ "sizes": [{ "width": 65, "height": 64 }] }))).contains("sizes[0]")
        );
        assert!(invalid(base(json!({ "samples": 11 }))).contains("samples"));
        assert!(invalid(base(json!({ "usageMode": "often" }))).contains("usageMode"));
        let batch = json!({ "generation": { "steps": 2, "cfgScale": 1, "sampler": "euler", "batchSize": 2 } });
        assert!(invalid(base(batch)).contains("batchSize"));
        let sampler = json!({ "generation": { "steps": 2, "cfgScale": 1, "sampler": "fast" } });
        assert!(invalid(base(sampler)).contains("sizes[1]"));
    }

    #[test]
    fn the_fastest_combination_of_each_size_is_recommended() {
        let run = |w: u32, time: f64, label: &str, status: RunStatus| Run {
            time_taken_ms: Some(time),
            status,
            ..failed_run(
                Size {
                    width: w,
                    height: w,
                },
                &Combo {
                    label: Some(label.into()),
                    ..Default::default()
                },
                String::new(),
            )
        };
        let runs = [
            run(64, 300.0, "a", RunStatus::Ok),
            run(64, 200.0, "b", RunStatus::Ok),
            run(256, 100.0, "c", RunStatus::Error),
            run(256, 900.0, "a", RunStatus::Ok),
        ];
        let best = recommended(&runs);
        assert_eq!(best["64x64"]["label"], "b");
        assert_eq!(best["256x256"]["label"], "a");
    }

    #[test]
    fn sds_params_line_gives_vram_and_ram() {
        let line = "[INFO] stable-diffusion.cpp:858  - total params memory size = 10.13MB (VRAM 2.20MB, RAM 7.93MB): text_encoders 3.24MB(RAM)";
        assert_eq!(params_memory(line), Some((2_306_867, 8_315_208)));
        assert_eq!(params_memory("model loaded"), None);
        assert!(out_of_memory("ggml_vulkan: ErrorOutOfDeviceMemory"));
        assert!(!out_of_memory("sampling completed"));
    }
}
