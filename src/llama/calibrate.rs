//! `llamaServer.calibrate()`: the model runs in a llama-server of its own, once for each
//! combination of settings asked for, with a short workload, and what it really takes is
//! measured: peak RSS, the buffers llama.cpp allocated on each device and on the host, the load
//! time and the tokens per second. The report is stored beside the model; an estimate of the
//! same configuration (the same flags that decide memory, the same llama-server) then answers
//! with it (`source: 'measured'`) in place of llama.cpp's projection or the arithmetic.
//!
//! The request and report follow genai-electron 0.26's exact strategy (one profile, a list of
//! combinations); its adaptive search over GPU layers is not here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use ts_rs::TS;

use super::resolve::{self, StartRequest};
use super::{LlamaConfig, LlamaError, LlamaServer, args, projection};
use crate::binaries::BinaryManager;
use crate::calibration::{self, PeakSampler, median};
use crate::config::DataPaths;
use crate::launch::{ManagedServer, StartError};
use crate::process::LaunchError;
use crate::system::SystemInfo;
use crate::system::estimate::{EstimateSource, MemoryEstimate};

/// The stored reports, beside the model's files: the newest eight, the newest first.
pub const REPORTS_FILE: &str = "llama-calibration.json";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_SAMPLES: u32 = 20;

/// The keys of `LlamaServerConfig` a combination may set (genai-electron 0.26's overrides), and
/// those `fixedConfig` may set besides.
const OVERRIDE_KEYS: &[&str] = &[
    "gpuLayers",
    "swaFull",
    "cacheTypeK",
    "cacheTypeV",
    "flashAttention",
    "cpuMoe",
    "nCpuMoe",
    "overrideTensors",
    "threads",
    "batchSize",
    "cacheRam",
];
/// `extraArgs` loads a vision projector or a draft model beside the model (`--mmproj`,
/// `--model-draft`): the calibration measures them with it.
const FIXED_ONLY_KEYS: &[&str] = &["continuousBatching", "useMmap", "useMlock", "extraArgs"];

/// The context and parallel slots every combination runs with.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[ts(rename = "LlamaCalibrationProfile")]
pub struct Profile {
    pub context_size: u32,
    pub parallel_requests: u32,
}

/// One combination of settings to measure.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[ts(rename = "LlamaCalibrationCombo")]
pub struct Combo {
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `LlamaServerConfig` settings: `gpuLayers`, `swaFull`, `cacheTypeK`, `cacheTypeV`,
    /// `flashAttention`, `cpuMoe`, `nCpuMoe`, `overrideTensors`, `threads`, `batchSize`, `cacheRam`.
    #[serde(default)]
    #[ts(
        type = "Partial<Pick<LlamaServerConfig, 'gpuLayers' | 'swaFull' | 'cacheTypeK' | 'cacheTypeV' | 'flashAttention' | 'cpuMoe' | 'nCpuMoe' | 'overrideTensors' | 'threads' | 'batchSize' | 'cacheRam'>>"
    )]
    pub overrides: Map<String, Value>,
}

/// What each combination is asked to do, timed: `cold-prefill` sends `prompt` with no cache;
/// `shared-prefix` sends `sharedPrefix` + each suffix in turn, the prefix cached after the first.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, TS)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[ts(rename = "LlamaCalibrationWorkload")]
pub enum Workload {
    #[serde(rename_all = "camelCase")]
    ColdPrefill {
        id: String,
        prompt: String,
        n_predict: u32,
        /// Its share of the score (default 1).
        #[ts(optional)]
        #[serde(skip_serializing_if = "Option::is_none")]
        weight: Option<f64>,
    },
    #[serde(rename_all = "camelCase")]
    SharedPrefix {
        id: String,
        shared_prefix: String,
        suffixes: Vec<String>,
        n_predict: u32,
        #[ts(optional)]
        #[serde(skip_serializing_if = "Option::is_none")]
        weight: Option<f64>,
    },
}

impl Workload {
    fn id(&self) -> &str {
        match self {
            Workload::ColdPrefill { id, .. } | Workload::SharedPrefix { id, .. } => id,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Workload::ColdPrefill { .. } => "cold-prefill",
            Workload::SharedPrefix { .. } => "shared-prefix",
        }
    }

    fn weight(&self) -> f64 {
        match self {
            Workload::ColdPrefill { weight, .. } | Workload::SharedPrefix { weight, .. } => {
                weight.unwrap_or(1.0)
            }
        }
    }

    /// The prompts of one sample, and whether the server may reuse its cache for them.
    fn requests(&self) -> (Vec<String>, u32, bool) {
        match self {
            Workload::ColdPrefill {
                prompt, n_predict, ..
            } => (vec![prompt.clone()], *n_predict, false),
            Workload::SharedPrefix {
                shared_prefix,
                suffixes,
                n_predict,
                ..
            } => (
                suffixes
                    .iter()
                    .map(|s| format!("{shared_prefix}{s}"))
                    .collect(),
                *n_predict,
                true,
            ),
        }
    }
}

/// `llamaServer.calibrate(config)` (less `onProgress` and `signal`, which stay in JS).
#[derive(Debug, Clone, Deserialize, TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[ts(rename = "LlamaCalibrationRequest")]
pub struct CalibrationRequest {
    /// An installed `llm` model.
    pub model_id: String,
    pub profile: Option<Profile>,
    /// genai-electron 0.26's adaptive search: refused with a ValidationError.
    #[serde(default)]
    #[ts(skip)]
    pub profiles: Option<Value>,
    /// Each is started and measured in turn (default: one with no overrides).
    #[serde(default)]
    #[ts(as = "Option<Vec<Combo>>", optional)]
    pub combos: Vec<Combo>,
    /// Settings every combination shares: the overrides' keys, `continuousBatching`, `useMmap`
    /// and `useMlock`.
    #[serde(default)]
    #[ts(
        type = "Partial<Pick<LlamaServerConfig, 'gpuLayers' | 'swaFull' | 'cacheTypeK' | 'cacheTypeV' | 'flashAttention' | 'cpuMoe' | 'nCpuMoe' | 'overrideTensors' | 'threads' | 'batchSize' | 'cacheRam' | 'continuousBatching' | 'useMmap' | 'useMlock' | 'extraArgs'>>",
        optional
    )]
    pub fixed_config: Map<String, Value>,
    /// What each combination runs (default: a short cold prompt of 16 tokens).
    #[serde(default)]
    #[ts(as = "Option<Vec<Workload>>", optional)]
    pub workloads: Vec<Workload>,
    /// Timed runs of each workload after one warm-up (default 1, at most 20).
    pub samples: Option<u32>,
    /// Sampling seed of every request (default 42).
    pub seed: Option<u64>,
    /// Milliseconds a combination's server may take to load (default 60000).
    pub startup_timeout_ms: Option<u64>,
    /// Milliseconds one request may take (default 60000).
    pub request_timeout_ms: Option<u64>,
}

/// What a measured combination held, and the flags it was measured with.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "LlamaCalibrationMemory")]
pub struct Measured {
    /// The highest resident memory of llama-server while it loaded and served the workloads.
    pub peak_rss_bytes: u64,
    /// Its buffers on the devices as llama.cpp allocated them (or what NVML saw, if more).
    pub vram_bytes: u64,
    /// Per device (`Vulkan0`, `CUDA0`, …): the buffers llama.cpp allocated.
    pub devices: Vec<DeviceBuffers>,
    /// The buffers it allocated on the host (`CPU`, `…_Host`).
    pub host: DeviceBuffers,
    /// llama-server's arguments that decide what it allocates (the model's path left out): an
    /// estimate of a configuration with the same arguments and binary uses this measurement.
    pub args: Vec<String>,
    pub binary: PathBuf,
}

/// Bytes of one device's (or the host's) buffers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "LlamaBufferBytes")]
pub struct DeviceBuffers {
    pub name: String,
    pub model_bytes: u64,
    /// The KV cache (and recurrent state).
    pub context_bytes: u64,
    pub compute_bytes: u64,
}

impl DeviceBuffers {
    fn of(name: &str, parts: projection::Parts) -> Self {
        DeviceBuffers {
            name: name.into(),
            model_bytes: parts.model,
            context_bytes: parts.context,
            compute_bytes: parts.compute,
        }
    }
}

/// How a combination's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(rename = "LlamaCalibrationStatus")]
pub enum RunStatus {
    Ok,
    Oom,
    StartupTimeout,
    RequestTimeout,
    Crashed,
    Error,
}

/// One request's timings, as llama-server reported them.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "LlamaCalibrationRequestTiming")]
pub struct RequestTiming {
    pub wall_time_ms: f64,
    pub prompt_tokens: Option<u64>,
    pub prompt_ms: Option<f64>,
    pub prompt_tokens_per_second: Option<f64>,
    pub predicted_tokens: Option<u64>,
    pub predicted_ms: Option<f64>,
    pub predicted_tokens_per_second: Option<f64>,
    pub cached_tokens: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "LlamaCalibrationSample")]
pub struct Sample {
    pub wall_time_ms: f64,
    pub requests: Vec<RequestTiming>,
}

#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "LlamaCalibrationWorkloadResult")]
pub struct WorkloadResult {
    pub workload_id: String,
    #[ts(type = "LlamaCalibrationWorkload['kind']")]
    pub kind: &'static str,
    pub weight: f64,
    pub samples: Vec<Sample>,
    pub median_wall_time_ms: Option<f64>,
    pub error: Option<String>,
}

/// One combination, started and measured.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "LlamaCalibrationRun")]
pub struct Run {
    pub combo: Combo,
    /// The profile, the fixed settings and the combination's, and the GPU layers it ran with.
    #[ts(type = "Partial<LlamaServerConfig>")]
    pub resolved_config: Map<String, Value>,
    pub status: RunStatus,
    pub load_time_ms: Option<u64>,
    /// `/props`: the context and slots llama-server runs with.
    pub effective_context_size: Option<u64>,
    pub effective_parallel_requests: Option<u64>,
    pub workload_results: Vec<WorkloadResult>,
    /// The workloads' median wall times, weighted and summed: lower is faster.
    pub score_ms: Option<f64>,
    /// What it held; `null` where it did not load.
    pub memory: Option<Measured>,
    pub error: Option<String>,
    /// llama-server's last lines, where the run failed.
    pub stderr_tail: Option<String>,
}

/// A combination not started: its configuration was refused before (the memory check).
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[ts(rename = "LlamaCalibrationSkippedCombo")]
pub struct Skipped {
    pub combo: Combo,
    pub reason: String,
}

/// The fastest combination that ran, and how to start it.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "LlamaCalibrationRecommendation")]
pub struct Recommendation {
    pub combo: Combo,
    /// Settings for `llamaServer.start()`, with the model's id.
    #[ts(type = "LlamaServerConfig")]
    pub start_config: Map<String, Value>,
    pub score_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(rename = "LlamaCalibrationReportStatus")]
pub enum ReportStatus {
    Complete,
    NoViableCandidate,
}

/// What `calibrate()` resolves with, as stored beside the model.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "LlamaCalibrationReport")]
pub struct Report {
    #[ts(type = "'report'")]
    pub result_kind: &'static str,
    #[ts(type = "'exact'")]
    pub strategy: &'static str,
    pub status: ReportStatus,
    /// ISO 8601.
    pub created_at: String,
    pub model: ModelIdentity,
    pub profile: Profile,
    #[ts(
        type = "Partial<Pick<LlamaServerConfig, 'gpuLayers' | 'swaFull' | 'cacheTypeK' | 'cacheTypeV' | 'flashAttention' | 'cpuMoe' | 'nCpuMoe' | 'overrideTensors' | 'threads' | 'batchSize' | 'cacheRam' | 'continuousBatching' | 'useMmap' | 'useMlock' | 'extraArgs'>>"
    )]
    pub fixed_config: Map<String, Value>,
    pub combos: Vec<Combo>,
    pub runs: Vec<Run>,
    pub skipped_combos: Vec<Skipped>,
    pub selected: Option<Recommendation>,
    #[ts(type = "'single-launch-measurement'")]
    pub confidence: &'static str,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "LlamaCalibrationModelIdentity")]
pub struct ModelIdentity {
    pub id: String,
    pub name: String,
    pub size: u64,
}

/// Where a calibration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(rename = "LlamaCalibrationPhase")]
pub enum Phase {
    Preparing,
    Starting,
    Warmup,
    Sampling,
    Stopping,
    Done,
}

/// The active combination of a progress event.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "LlamaCalibrationCandidate")]
pub struct Candidate {
    pub combo_index: usize,
    pub combo: Combo,
}

/// A `calibration-progress` event, and `onProgress`'s argument.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "LlamaCalibrationProgress")]
pub struct Progress {
    #[ts(type = "'exact'")]
    pub strategy: &'static str,
    pub phase: Phase,
    pub overall_percent: f64,
    pub elapsed_ms: u64,
    pub combo_count: usize,
    pub active_candidate: Option<Candidate>,
    pub workload_index: Option<usize>,
    pub workload_count: usize,
    pub sample_index: Option<u32>,
    pub sample_count: u32,
}

/// The calibration of llama-server: what its errors say.
#[derive(Debug)]
pub struct Llama;

impl crate::calibration::Calibrates for Llama {
    const NAME: &'static str = "llamaServer";
    const REQUEST: &'static str = "{ modelId, profile: { contextSize, parallelRequests }, combos: [{ overrides }] } (LlamaCalibrationRequest in index.d.ts)";
    type StartError = StartError<LlamaError>;
}

/// Why a calibration did not give a report.
pub type CalibrationError = crate::calibration::CalibrationError<Llama>;

/// A request checked: every combination's start config, built before anything runs.
struct Plan {
    profile: Profile,
    fixed_config: Map<String, Value>,
    combos: Vec<(Combo, Map<String, Value>)>,
    workloads: Vec<Workload>,
    samples: u32,
    seed: u64,
    request_timeout: Duration,
}

fn plan(request: CalibrationRequest) -> Result<Plan, CalibrationError> {
    let invalid = |m: String| CalibrationError::Invalid(m);
    if request.profiles.is_some() {
        return Err(invalid(
            "the adaptive search (profiles) is not supported: give one profile and the combos to measure"
                .into(),
        ));
    }
    let profile = request
        .profile
        .ok_or_else(|| invalid("profile ({ contextSize, parallelRequests }) is required".into()))?;
    if profile.context_size == 0 || profile.parallel_requests == 0 {
        return Err(invalid(
            "profile.contextSize and profile.parallelRequests must be at least 1".into(),
        ));
    }
    check_keys("fixedConfig", &request.fixed_config, true)?;
    let combos = if request.combos.is_empty() {
        vec![Combo {
            label: None,
            overrides: Map::new(),
        }]
    } else {
        request.combos
    };
    let samples = request.samples.unwrap_or(1);
    if !(1..=MAX_SAMPLES).contains(&samples) {
        return Err(invalid(format!(
            "samples must be 1 to {MAX_SAMPLES}, got {samples}"
        )));
    }
    let workloads = if request.workloads.is_empty() {
        vec![Workload::ColdPrefill {
            id: "default".into(),
            prompt: "Write one sentence about the sea.".into(),
            n_predict: 16,
            weight: None,
        }]
    } else {
        request.workloads
    };
    for workload in &workloads {
        if let Workload::SharedPrefix { suffixes, id, .. } = workload
            && suffixes.is_empty()
        {
            return Err(invalid(format!("workload {id} has no suffixes")));
        }
    }
    let startup = request
        .startup_timeout_ms
        .unwrap_or(DEFAULT_TIMEOUT.as_millis() as u64);
    let mut planned = Vec::new();
    for (i, combo) in combos.into_iter().enumerate() {
        check_keys(&format!("combos[{i}].overrides"), &combo.overrides, false)?;
        let mut config = Map::new();
        config.insert("modelId".into(), json!(request.model_id));
        config.insert("contextSize".into(), json!(profile.context_size));
        config.insert("parallelRequests".into(), json!(profile.parallel_requests));
        config.extend(request.fixed_config.clone());
        config.extend(combo.overrides.clone());
        config.insert("startupTimeout".into(), json!(startup));
        // Checked now: a mistyped value is refused before the first combination runs.
        start_request(&config).map_err(|e| invalid(format!("combos[{i}]: {e}")))?;
        planned.push((combo, config));
    }
    Ok(Plan {
        profile,
        fixed_config: request.fixed_config,
        combos: planned,
        workloads,
        samples,
        seed: request.seed.unwrap_or(42),
        request_timeout: Duration::from_millis(
            request
                .request_timeout_ms
                .unwrap_or(DEFAULT_TIMEOUT.as_millis() as u64),
        ),
    })
}

fn check_keys(
    what: &str,
    settings: &Map<String, Value>,
    fixed: bool,
) -> Result<(), CalibrationError> {
    let allowed =
        |key: &str| OVERRIDE_KEYS.contains(&key) || (fixed && FIXED_ONLY_KEYS.contains(&key));
    match settings.keys().find(|key| !allowed(key)) {
        Some(key) => Err(CalibrationError::Invalid(format!(
            "{what} cannot set {key}: it takes {}",
            OVERRIDE_KEYS
                .iter()
                .chain(if fixed { FIXED_ONLY_KEYS } else { &[] })
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        None => Ok(()),
    }
}

/// A combination's start: on a free loopback port of its own, without the gateway.
fn start_request(config: &Map<String, Value>) -> Result<StartRequest, String> {
    let mut full = config.clone();
    full.insert("port".into(), json!("auto"));
    full.insert("gateway".into(), json!(false));
    serde_json::from_value(Value::Object(full)).map_err(|e| e.to_string())
}

/// Reports progress, timed from the calibration's start.
struct Reporter<'a> {
    started: Instant,
    plan: &'a Plan,
    emit: &'a (dyn Fn(Progress) + Send + Sync),
}

impl Reporter<'_> {
    fn report(
        &self,
        phase: Phase,
        combo: Option<usize>,
        workload: Option<usize>,
        sample: Option<u32>,
    ) {
        let plan = self.plan;
        let combos = plan.combos.len();
        // Each combination's share: its start, then its workloads' warm-ups and samples.
        let steps_a_combo = 1 + plan.workloads.len() * (plan.samples as usize + 1);
        let done_in_combo = match (phase, workload, sample) {
            (Phase::Warmup | Phase::Sampling, Some(w), s) => {
                1 + w * (plan.samples as usize + 1) + s.map_or(0, |s| s as usize + 1)
            }
            (Phase::Stopping, ..) => steps_a_combo,
            _ => 0,
        };
        let overall = match (phase, combo) {
            (Phase::Done, _) => 100.0,
            (_, Some(c)) => {
                100.0 * (c * steps_a_combo + done_in_combo) as f64 / (combos * steps_a_combo) as f64
            }
            (_, None) => 0.0,
        };
        (self.emit)(Progress {
            strategy: "exact",
            phase,
            overall_percent: (overall * 10.0).round() / 10.0,
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            combo_count: combos,
            active_candidate: combo.map(|i| Candidate {
                combo_index: i,
                combo: plan.combos[i].0.clone(),
            }),
            workload_index: workload,
            workload_count: plan.workloads.len(),
            sample_index: sample,
            sample_count: plan.samples,
        });
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

/// Runs every combination of `request` in turn, stores the report beside the model and
/// returns it. Cancelled, it stops the server it runs and stores nothing.
pub async fn calibrate(
    request: CalibrationRequest,
    cx: Context<'_>,
) -> Result<Report, CalibrationError> {
    let model_id = request.model_id.clone();
    let plan = plan(request)?;
    let info = crate::models::store::read(cx.data, &model_id)
        .await
        .map_err(|e| CalibrationError::Start(Box::new(StartError::Model(e))))?;
    let reporter = Reporter {
        started: Instant::now(),
        plan: &plan,
        emit: cx.emit,
    };
    reporter.report(Phase::Preparing, None, None, None);
    let (mut runs, mut skipped) = (Vec::new(), Vec::new());
    for (index, (combo, settings)) in plan.combos.iter().enumerate() {
        if cx.cancel.is_cancelled() {
            return Err(CalibrationError::Cancelled);
        }
        let request = start_request(settings).map_err(CalibrationError::Invalid)?;
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
        let config = LlamaConfig {
            log_file: Some(cx.data.logs.join("llama-calibration.log")),
            ..config
        };
        reporter.report(Phase::Starting, Some(index), None, None);
        let run = measure(
            &config, combo, settings, &plan, &reporter, index, &cx.cancel,
        )
        .await?;
        runs.push(run);
    }
    let selected = runs
        .iter()
        .filter(|r| r.status == RunStatus::Ok)
        .filter_map(|r| r.score_ms.map(|s| (r, s)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(run, score_ms)| Recommendation {
            combo: run.combo.clone(),
            start_config: run.resolved_config.clone(),
            score_ms,
        });
    let report = Report {
        result_kind: "report",
        strategy: "exact",
        status: if selected.is_some() {
            ReportStatus::Complete
        } else {
            ReportStatus::NoViableCandidate
        },
        created_at: crate::clock::iso_now(),
        model: ModelIdentity {
            id: info.id.clone(),
            name: info.name.clone(),
            size: info.size,
        },
        profile: plan.profile.clone(),
        fixed_config: plan.fixed_config.clone(),
        combos: plan.combos.iter().map(|(c, _)| c.clone()).collect(),
        runs,
        skipped_combos: skipped,
        selected,
        confidence: "single-launch-measurement",
        warnings: Vec::new(),
    };
    store(cx.data, &model_id, &report).await?;
    reporter.report(Phase::Done, None, None, None);
    Ok(report)
}

/// Starts one combination, runs the workloads, reads what it held, and stops it, also when
/// cancelled.
async fn measure(
    config: &LlamaConfig,
    combo: &Combo,
    settings: &Map<String, Value>,
    plan: &Plan,
    reporter: &Reporter<'_>,
    index: usize,
    cancel: &CancellationToken,
) -> Result<Run, CalibrationError> {
    let server = Arc::new(LlamaServer::new(None));
    let sampler = PeakSampler::start(server.clone());
    let outcome = tokio::select! {
        outcome = serve(&server, config, plan, reporter, index) => Some(outcome),
        _ = cancel.cancelled() => None,
    };
    let hwm = server.info().pid.and_then(crate::process::memory::peak_rss);
    let sampled = sampler.peak();
    drop(sampler);
    let allocated = crate::sync::lock(&server.allocated).buffers.clone();
    let tail = server.logs(20).join("\n");
    reporter.report(Phase::Stopping, Some(index), None, None);
    server.stop().await;
    let Some(outcome) = outcome else {
        return Err(CalibrationError::Cancelled);
    };
    let mut resolved = settings.clone();
    resolved.remove("startupTimeout");
    resolved.insert("gpuLayers".into(), json!(config.gpu_layers));
    let mut run = Run {
        combo: combo.clone(),
        resolved_config: resolved,
        status: outcome.status,
        load_time_ms: outcome.load_time_ms,
        effective_context_size: outcome.props.0,
        effective_parallel_requests: outcome.props.1,
        score_ms: None,
        workload_results: outcome.workloads,
        memory: None,
        error: outcome.error,
        stderr_tail: None,
    };
    if run.status == RunStatus::Ok {
        run.score_ms = Some(
            run.workload_results
                .iter()
                .map(|w| w.weight * w.median_wall_time_ms.unwrap_or(0.0))
                .sum(),
        );
        let on_devices = allocated.on_devices().total();
        run.memory = Some(Measured {
            peak_rss_bytes: sampled.rss.max(hwm.unwrap_or(0)),
            vram_bytes: sampled.vram.max(on_devices),
            devices: allocated
                .devices
                .iter()
                .map(|(name, parts)| DeviceBuffers::of(name, *parts))
                .collect(),
            host: DeviceBuffers::of("host", allocated.host),
            args: memory_key(config),
            binary: config.binary.clone(),
        });
    } else {
        run.stderr_tail = Some(tail);
    }
    Ok(run)
}

struct Outcome {
    status: RunStatus,
    load_time_ms: Option<u64>,
    props: (Option<u64>, Option<u64>),
    workloads: Vec<WorkloadResult>,
    error: Option<String>,
}

impl Outcome {
    fn failed(status: RunStatus, error: String) -> Outcome {
        Outcome {
            status,
            load_time_ms: None,
            props: (None, None),
            workloads: Vec::new(),
            error: Some(error),
        }
    }
}

async fn serve(
    server: &LlamaServer,
    config: &LlamaConfig,
    plan: &Plan,
    reporter: &Reporter<'_>,
    index: usize,
) -> Outcome {
    let info = match server.start(config.clone()).await {
        Ok(info) => info,
        Err(e) => {
            let status = match &e {
                LlamaError::Launch(LaunchError::Timeout { .. }) => RunStatus::StartupTimeout,
                LlamaError::Launch(LaunchError::ExitedDuringStart { tail, .. }) => {
                    if tail.iter().any(|l| out_of_memory(l)) {
                        RunStatus::Oom
                    } else {
                        RunStatus::Crashed
                    }
                }
                _ => RunStatus::Error,
            };
            return Outcome::failed(status, e.to_string());
        }
    };
    let base = crate::http::local_base("127.0.0.1", info.port.unwrap_or_default());
    let props = props(&base).await;
    let mut results = Vec::new();
    let mut failure = None;
    for (w, workload) in plan.workloads.iter().enumerate() {
        let (prompts, n_predict, cache) = workload.requests();
        let mut result = WorkloadResult {
            workload_id: workload.id().into(),
            kind: workload.kind(),
            weight: workload.weight(),
            samples: Vec::new(),
            median_wall_time_ms: None,
            error: None,
        };
        // One warm-up, not kept, then the samples.
        for sample in 0..=plan.samples {
            let (phase, index_of_sample) = match sample {
                0 => (Phase::Warmup, None),
                s => (Phase::Sampling, Some(s - 1)),
            };
            reporter.report(phase, Some(index), Some(w), index_of_sample);
            let started = Instant::now();
            let mut requests = Vec::new();
            for (i, prompt) in prompts.iter().enumerate() {
                // A shared prefix is evaluated anew at each sample's first request.
                let body = json!({
                    "prompt": prompt,
                    "n_predict": n_predict,
                    "seed": plan.seed,
                    "temperature": 0,
                    // Every sample makes n_predict tokens: tokens per second are comparable.
                    "ignore_eos": true,
                    "cache_prompt": cache && i > 0,
                });
                match complete(&base, &body, plan.request_timeout).await {
                    Ok(timing) => requests.push(timing),
                    Err((status, error)) => {
                        let alive = server.info().status == crate::process::ServerState::Running;
                        let status = if alive { status } else { RunStatus::Crashed };
                        result.error = Some(error.clone());
                        failure.get_or_insert((status, error));
                        break;
                    }
                }
            }
            if result.error.is_some() {
                break;
            }
            if sample > 0 {
                result.samples.push(Sample {
                    wall_time_ms: started.elapsed().as_secs_f64() * 1000.0,
                    requests,
                });
            }
        }
        result.median_wall_time_ms = median(result.samples.iter().map(|s| s.wall_time_ms));
        results.push(result);
        if failure.is_some() {
            break;
        }
    }
    let (status, error) = match failure {
        Some((status, error)) => (status, Some(error)),
        None => (RunStatus::Ok, None),
    };
    Outcome {
        status,
        load_time_ms: info.load_time_ms,
        props,
        workloads: results,
        error,
    }
}

fn out_of_memory(line: &str) -> bool {
    let line = line.to_ascii_lowercase();
    [
        "failed to allocate",
        "out of memory",
        "outofdevicememory",
        "outofhostmemory",
    ]
    .iter()
    .any(|words| line.contains(words))
}

/// `(context, slots)` from `/props`.
async fn props(base: &str) -> (Option<u64>, Option<u64>) {
    let answer = crate::http::local_client()
        .get(format!("{base}/props"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    let Ok(props) = answer.and_then(|r| r.error_for_status()) else {
        return (None, None);
    };
    let Some(props) = read_json(props).await else {
        return (None, None);
    };
    (
        props["default_generation_settings"]["n_ctx"].as_u64(),
        props["total_slots"].as_u64(),
    )
}

async fn complete(
    base: &str,
    body: &Value,
    timeout: Duration,
) -> Result<RequestTiming, (RunStatus, String)> {
    let started = Instant::now();
    let sent = crate::http::local_client()
        .post(format!("{base}/completion"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(timeout)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) if e.is_timeout() => {
            return Err((
                RunStatus::RequestTimeout,
                format!("a request took longer than {} ms", timeout.as_millis()),
            ));
        }
        Err(e) => return Err((RunStatus::Error, format!("a request failed: {e}"))),
    };
    let status = answer.status();
    let answer = read_json(answer)
        .await
        .ok_or_else(|| (RunStatus::Error, "an answer was not JSON".to_string()))?;
    if !status.is_success() {
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        return Err((
            RunStatus::Error,
            format!("llama-server answered {status}: {message}"),
        ));
    }
    let timings = &answer["timings"];
    Ok(RequestTiming {
        wall_time_ms: started.elapsed().as_secs_f64() * 1000.0,
        prompt_tokens: timings["prompt_n"].as_u64(),
        prompt_ms: timings["prompt_ms"].as_f64(),
        prompt_tokens_per_second: timings["prompt_per_second"].as_f64(),
        predicted_tokens: timings["predicted_n"].as_u64(),
        predicted_ms: timings["predicted_ms"].as_f64(),
        predicted_tokens_per_second: timings["predicted_per_second"].as_f64(),
        cached_tokens: timings["cache_n"].as_u64(),
    })
}

async fn read_json(response: reqwest::Response) -> Option<Value> {
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

/// The arguments that decide what `config` allocates, the model's path left out (the
/// calibration is stored with the model).
pub fn memory_key(config: &LlamaConfig) -> Vec<String> {
    let mut key = Vec::new();
    let mut flags = projection::memory_args(&args(config, "127.0.0.1", 0)).into_iter();
    while let Some(flag) = flags.next() {
        if flag == "--model" || flag == "-m" {
            flags.next();
        } else {
            key.push(flag);
        }
    }
    key
}

/// Adds `report` to the model's stored reports, the newest first.
async fn store(data: &DataPaths, model_id: &str, report: &Report) -> Result<(), CalibrationError> {
    let (dir, _) = crate::models::store::find(data, model_id)
        .await
        .map_err(|e| CalibrationError::Start(Box::new(StartError::Model(e))))?;
    calibration::store(&dir, REPORTS_FILE, report)
        .await
        .map_err(|source| CalibrationError::Store {
            path: dir.join(REPORTS_FILE),
            source,
        })
}

/// What a lookup reads of a stored report: each run's status and memory.
#[derive(Deserialize)]
struct StoredReport {
    runs: Vec<StoredRun>,
}

#[derive(Deserialize)]
struct StoredRun {
    status: RunStatus,
    memory: Option<Measured>,
}

/// The newest calibration of `config` (its model, binary and memory flags), as an estimate.
pub async fn measured(config: &LlamaConfig, data: &DataPaths) -> Option<MemoryEstimate> {
    // canRunModel of a model that is not installed (no id, or one of its own).
    if config.model_id.is_empty() || !crate::models::store::is_valid_id(&config.model_id) {
        return None;
    }
    let (dir, _) = crate::models::store::find(data, &config.model_id)
        .await
        .ok()?;
    let reports: Vec<StoredReport> = calibration::read(&dir, REPORTS_FILE).await?;
    let key = memory_key(config);
    let memory = reports
        .into_iter()
        .flat_map(|r| r.runs)
        .filter(|run| run.status == RunStatus::Ok)
        .filter_map(|run| run.memory)
        .find(|m| m.args == key && m.binary == config.binary)?;
    Some(estimate_of(&memory, config))
}

fn estimate_of(memory: &Measured, config: &LlamaConfig) -> MemoryEstimate {
    let all = memory.devices.iter().chain([&memory.host]);
    let sum = |part: fn(&DeviceBuffers) -> u64| all.clone().map(part).sum::<u64>();
    MemoryEstimate {
        // The process holds its host buffers and what else it maps and allocates.
        ram: memory.peak_rss_bytes,
        vram: memory.vram_bytes,
        weights: sum(|b| b.model_bytes),
        kv_cache: sum(|b| b.context_bytes),
        compute: sum(|b| b.compute_bytes),
        context_size: config.context_size,
        gpu_layers: config.gpu_layers,
        source: EstimateSource::Measured,
    }
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

    #[test]
    fn a_plan_has_a_start_config_for_each_combination() {
        let plan = request(json!({
            "modelId": "chat",
            "profile": { "contextSize": 2048, "parallelRequests": 1 },
            "fixedConfig": { "threads": 1, "useMmap": true },
            "combos": [{ "label": "f16", "overrides": {} }, { "overrides": { "cacheTypeK": "q8_0" } }],
            "samples": 2,
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.combos.len(), 2);
        let second = &plan.combos[1].1;
        assert_eq!(second["cacheTypeK"], "q8_0");
        assert_eq!(second["contextSize"], 2048);
        assert_eq!(second["threads"], 1);
        assert_eq!(plan.samples, 2);
        assert_eq!(plan.workloads.len(), 1, "a default workload");
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let base = |extra: Value| {
            let mut v = json!({ "modelId": "chat", "profile": { "contextSize": 512, "parallelRequests": 1 } });
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v
        };
        assert!(invalid(json!({ "modelId": "chat" })).contains("profile"));
        assert!(invalid(json!({ "modelId": "chat", "profiles": [] })).contains("adaptive"));
        assert!(
            invalid(base(json!({ "combos": [{ "overrides": { "port": 1 } }] }))).contains("port")
        );
        assert!(
            invalid(base(
                json!({ "combos": [{ "overrides": { "useMmap": false } }] })
            ))
            .contains("useMmap")
        );
        assert!(
            invalid(base(
                json!({ "combos": [{ "overrides": { "gpuLayers": "all" } }] })
            ))
            .contains("combos[0]")
        );
        assert!(invalid(base(json!({ "samples": 0 }))).contains("samples"));
        let shared = json!({ "workloads": [{ "kind": "shared-prefix", "id": "s", "sharedPrefix": "a", "suffixes": [], "nPredict": 1 }] });
        assert!(invalid(base(shared)).contains("no suffixes"));
        assert!(
            invalid(
                json!({ "modelId": "chat", "profile": { "contextSize": 0, "parallelRequests": 1 } })
            )
            .contains("at least 1")
        );
    }

    #[test]
    fn a_shared_prefix_sends_each_suffix_after_it() {
        let workload = Workload::SharedPrefix {
            id: "s".into(),
            shared_prefix: "Once ".into(),
            suffixes: vec!["upon".into(), "more".into()],
            n_predict: 3,
            weight: Some(2.0),
        };
        assert_eq!(
            workload.requests(),
            (vec!["Once upon".into(), "Once more".into()], 3, true)
        );
        assert_eq!((workload.kind(), workload.weight()), ("shared-prefix", 2.0));
    }

    #[test]
    fn the_memory_key_leaves_the_model_path_and_what_does_not_allocate_out() {
        let config = LlamaConfig {
            model_path: "/models/chat.gguf".into(),
            context_size: 2048,
            parallel_requests: 1,
            threads: 3,
            ..Default::default()
        };
        let key = memory_key(&config);
        assert!(!key.iter().any(|a| a.contains("chat.gguf")), "{key:?}");
        assert!(!key.contains(&"--threads".to_string()), "{key:?}");
        assert!(
            key.windows(2).any(|w| w == ["--ctx-size", "2048"]),
            "{key:?}"
        );
        let other = LlamaConfig {
            threads: 1,
            model_path: "/elsewhere/chat.gguf".into(),
            ..config.clone()
        };
        assert_eq!(memory_key(&other), key);
        let larger = LlamaConfig {
            context_size: 4096,
            ..config
        };
        assert_ne!(memory_key(&larger), key);
    }

    #[test]
    fn an_estimate_of_a_measurement_sums_its_buffers() {
        let parts = |model, context, compute| DeviceBuffers {
            name: "x".into(),
            model_bytes: model,
            context_bytes: context,
            compute_bytes: compute,
        };
        let memory = Measured {
            peak_rss_bytes: 1000,
            vram_bytes: 60,
            devices: vec![parts(30, 20, 10)],
            host: parts(5, 0, 2),
            args: vec![],
            binary: PathBuf::new(),
        };
        let config = LlamaConfig {
            context_size: 512,
            gpu_layers: 31,
            ..Default::default()
        };
        let estimate = estimate_of(&memory, &config);
        assert_eq!(
            (
                estimate.ram,
                estimate.vram,
                estimate.weights,
                estimate.kv_cache,
                estimate.compute
            ),
            (1000, 60, 35, 20, 12)
        );
        assert_eq!(estimate.source, EstimateSource::Measured);
        assert_eq!((estimate.context_size, estimate.gpu_layers), (512, 31));
    }

    #[test]
    fn out_of_memory_lines_are_told_from_others() {
        assert!(out_of_memory(
            "ggml_vulkan: Device memory allocation of size 1 failed: ErrorOutOfDeviceMemory"
        ));
        assert!(out_of_memory("llama_model_load: failed to allocate buffer"));
        assert!(!out_of_memory("main: model loaded"));
    }
}
