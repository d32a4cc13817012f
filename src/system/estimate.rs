//! Pure arithmetic: what a model needs in RAM and VRAM, and what the machine can offer.
//!
//! Weights come from the file size; the KV cache from GGUF metadata
//! (`layers × 2 × kv_heads × head_dim × context × bytes per element`, within 3% of what
//! llama-server really allocates); compute buffers from a fixed share. Where metadata is missing
//! we assume a Llama-3-8B-like 128 KiB of KV cache per token, which overestimates small models.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use super::gpu::GpuInfo;
use super::memory::MemoryInfo;
use crate::models::store::ModelInfo;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Bytes of KV cache per token assumed when a model has no GGUF metadata.
const FALLBACK_KV_BYTES_PER_TOKEN: u64 = 128 * 1024;
/// Layers assumed when a model has no GGUF metadata.
const FALLBACK_LAYERS: u32 = 32;
/// Context assumed when a model does not declare one.
const FALLBACK_CONTEXT: u32 = 4096;
/// The context we start from when choosing a configuration; larger windows cost memory that
/// most chat apps never use.
const PREFERRED_CONTEXT: u32 = 8192;
const MIN_CONTEXT: u32 = 2048;
/// Kept free for the OS and the app itself.
const RAM_RESERVE: u64 = 512 * MIB;
/// Kept free on the GPU for the driver and fragmentation.
const VRAM_RESERVE: u64 = 512 * MIB;

/// The part of a model's info that sizing reads. A full `ModelInfo` from the model manager fits
/// (other keys are ignored).
#[derive(Debug, Clone, Default, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "ModelSizingInfo")]
pub struct ModelSpec {
    /// The installed model's id: a stored calibration of it (`llamaServer.calibrate()`) answers
    /// for the configuration it measured.
    #[serde(default)]
    #[ts(optional)]
    pub id: Option<String>,
    /// File size in bytes (all shards).
    pub size: f64,
    #[serde(default)]
    #[ts(type = "Partial<GGUFMetadata>", optional)]
    pub gguf_metadata: Option<GgufFacts>,
    /// The model file. Sizing a split (`rpcWorkers`) reads its tensor index for what each layer
    /// weighs; without it, or when it cannot be read, the layers are taken to weigh the same.
    #[serde(default)]
    #[ts(optional)]
    pub path: Option<std::path::PathBuf>,
    /// Read from the file at `path` when a split is sized; uniform layers are assumed without.
    #[serde(skip)]
    #[ts(skip)]
    pub layer_bytes: Option<crate::models::gguf::LayerBytes>,
    /// An `llm` model's `mmproj` and `draft` files (as {@link ModelInfo.components} has them): not
    /// counted in `size`'s weights, and loaded beside the model as a start loads them.
    #[serde(default)]
    #[ts(
        type = "Partial<Record<ComponentRole, { path: string; size: number }>>",
        optional
    )]
    pub components: std::collections::BTreeMap<String, ComponentFile>,
}

/// A file of a model besides its own: where it is, and its bytes.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ComponentFile {
    pub path: std::path::PathBuf,
    #[serde(default)]
    pub size: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GgufFacts {
    pub architecture: Option<String>,
    pub block_count: Option<u32>,
    pub context_length: Option<u32>,
    pub embedding_length: Option<u32>,
    pub feed_forward_length: Option<PerLayer>,
    pub expert_used_count: Option<u32>,
    pub expert_feed_forward_length: Option<u32>,
    pub attention_head_count: Option<PerLayer>,
    pub attention_head_count_kv: Option<PerLayer>,
    pub attention_key_length: Option<PerLayer>,
    pub attention_value_length: Option<PerLayer>,
    pub attention_sliding_window: Option<u32>,
    pub attention_sliding_window_pattern: Option<SwaPattern>,
}

/// Which layers attend to a sliding window (`{arch}.attention.sliding_window_pattern`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SwaPattern {
    /// Every n-th layer attends to all tokens (0: none does).
    Period(u32),
    /// One flag a layer: true where it slides.
    Layers(Vec<bool>),
}

/// The architectures whose layers llama.cpp (the pinned one, `load_swa_pattern`) runs with
/// sliding-window attention where the GGUF gives a window: their period (every n-th layer
/// attends to all), and whether that full layer comes first in each period.
const SLIDING_ARCHITECTURES: [(&str, u32, bool); 16] = [
    ("gemma2", 2, false),
    ("gemma3", 6, false),
    ("gemma3n", 5, false),
    ("gemma-embedding", 6, false),
    ("cohere2", 4, false),
    ("cohere2moe", 4, true),
    ("exaone4", 4, false),
    ("exaone-moe", 4, false),
    ("olmo2", 4, false),
    ("gpt-oss", 2, false),
    ("afmoe", 4, false),
    ("mellum", 4, false),
    ("muse-glimmer", 4, false),
    ("plamo3", 8, false),
    ("smallthinker", 4, true),
    ("laguna", 4, true),
];

/// The micro-batch llama-server runs with (`--ubatch-size`, which the library does not set): a
/// sliding-window layer keeps its window and one micro-batch of tokens.
const UBATCH: u64 = 512;

/// GGUF stores some attention facts per layer; sizing uses the largest.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PerLayer {
    One(u32),
    Many(Vec<u32>),
}

impl PerLayer {
    fn max(&self) -> Option<u32> {
        match self {
            PerLayer::One(n) => Some(*n),
            PerLayer::Many(v) => v.iter().copied().max(),
        }
    }
}

impl ModelSpec {
    /// The facts of an installed model. Metadata that does not have the expected shape (a
    /// hand-edited record) is an error: the figures would be wrong without it.
    pub fn of(info: &ModelInfo) -> Result<ModelSpec, String> {
        let gguf_metadata = info
            .gguf_metadata
            .as_ref()
            .map(GgufFacts::deserialize)
            .transpose()
            .map_err(|e| format!("model {:?} has unusable metadata: {e}", info.id))?;
        let components = info
            .components
            .iter()
            .map(|(role, file)| {
                let file = ComponentFile {
                    path: file.path.clone(),
                    size: file.size as f64,
                };
                (role.clone(), file)
            })
            .collect();
        Ok(ModelSpec {
            id: Some(info.id.clone()),
            size: info.size as f64,
            gguf_metadata,
            path: Some(info.path.clone()),
            layer_bytes: None,
            components,
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.size.is_finite() || self.size <= 0.0 {
            return Err(format!(
                "model size must be a positive number of bytes, got {}",
                self.size
            ));
        }
        Ok(())
    }

    /// The model's own files (a model's `size` counts its components too).
    pub(crate) fn size_bytes(&self) -> u64 {
        let components: f64 = self.components.values().map(|c| c.size).sum();
        (self.size - components).max(0.0) as u64
    }

    /// The file of component `role` (`mmproj`, `draft`).
    pub fn component(&self, role: &str) -> Option<&std::path::Path> {
        self.components.get(role).map(|c| c.path.as_path())
    }

    fn meta(&self) -> Option<&GgufFacts> {
        self.gguf_metadata.as_ref()
    }

    pub fn layers(&self) -> u32 {
        self.meta()
            .and_then(|m| m.block_count)
            .filter(|&n| n > 0)
            .unwrap_or(FALLBACK_LAYERS)
    }

    pub fn context_length(&self) -> u32 {
        self.meta()
            .and_then(|m| m.context_length)
            .filter(|&n| n > 0)
            .unwrap_or(FALLBACK_CONTEXT)
    }

    /// K and V elements stored per token per layer, when the metadata allows computing it.
    fn kv_elements_per_token_layer(&self) -> Option<u64> {
        let m = self.meta()?;
        let heads = m.attention_head_count.as_ref()?.max()?.max(1) as u64;
        let kv_heads = m
            .attention_head_count_kv
            .as_ref()
            .and_then(PerLayer::max)
            .map(u64::from)
            .unwrap_or(heads);
        let embd = m.embedding_length? as u64;
        let key = m
            .attention_key_length
            .as_ref()
            .and_then(PerLayer::max)
            .map(u64::from);
        let value = m
            .attention_value_length
            .as_ref()
            .and_then(PerLayer::max)
            .map(u64::from);
        let head_dim = embd / heads;
        Some(kv_heads * (key.unwrap_or(head_dim) + value.or(key).unwrap_or(head_dim)))
    }

    /// The KV cache of `context` tokens, as llama.cpp lays it out: every layer holds the whole
    /// context, but a sliding-window layer holds its window and a micro-batch (for one
    /// sequence: a window a slot with several), rounded up to 256 cells, unless `--swa-full`.
    pub fn kv_cache_bytes(&self, context: u32, cache: KvCache) -> u64 {
        let Some(elements) = self.kv_elements_per_token_layer() else {
            let per_token = FALLBACK_KV_BYTES_PER_TOKEN as f64 * cache.bytes_per_element() / 2.0;
            return (per_token * context as f64) as u64;
        };
        let kv = self.kv_layout(context, cache);
        let cells = kv.full_layers * kv.context + kv.sliding_layers * kv.window_cells;
        (cells as f64 * elements as f64 * cache.bytes_per_element()) as u64
    }

    fn kv_layout(&self, context: u32, cache: KvCache) -> KvLayout {
        let context = u64::from(context);
        let (sliding, window) = match self.sliding_layers() {
            Some((sliding, window)) if !cache.swa_full => (sliding, window),
            _ => (0, 0),
        };
        KvLayout {
            context,
            full_layers: u64::from(self.layers()) - sliding,
            sliding_layers: sliding,
            window_cells: ((window + UBATCH).min(context).div_ceil(256) * 256).min(context),
        }
    }

    /// The compute buffers llama-server reserves on each device that runs layers of the model (the
    /// CPU included): its graph for one micro-batch of 512 tokens. With flash attention (llama.cpp's
    /// `auto` turns it on where the device has it) that is the attention mask, 2 bytes a KV cell of
    /// each cache a token, and 3 rows of the feed-forward width and 4 of the embedding a token;
    /// without, the attention scores of every head over the context, the mask in f32, and 5 rows
    /// of the embedding and 2 of the K width a token. Measured with the
    /// pinned llama-server on the CPU, these figures are what it reserved for Llama 2 7B-, Llama 3
    /// 8B-, Llama 3.2 1B- and Qwen 2.5 0.5B-shaped models at 2048 and 8192 tokens (exactly with flash
    /// attention, 4 % above at most without), and at most 2.2 MiB above it for SmolLM2-135M and
    /// the tiny sliding-window and expert models; 10 % and 1 MiB are added. `None` where the header
    /// does not give the shape.
    pub fn compute_bytes(&self, context: u32, cache: KvCache) -> Option<u64> {
        let m = self.meta()?;
        let embd = u64::from(m.embedding_length?);
        let mut ff = u64::from(m.feed_forward_length.as_ref()?.max()?);
        if let Some(used) = m.expert_used_count.filter(|&n| n > 0) {
            let expert = m.expert_feed_forward_length.map_or(ff, u64::from);
            ff = ff.max(u64::from(used) * expert);
        }
        let heads = u64::from(m.attention_head_count.as_ref()?.max()?);
        let kv = self.kv_layout(context, cache);
        let full = if kv.full_layers > 0 { kv.context } else { 0 };
        let sliding = if kv.sliding_layers > 0 {
            kv.window_cells
        } else {
            0
        };
        let row = 4 * UBATCH;
        let activations = row * (3 * ff + 4 * embd);
        let graph = if cache.flash_attention_off {
            let scores = row * heads * full.max(sliding);
            let kv_width = self.kv_elements_per_token_layer()? / 2;
            activations.max(row * (5 * embd + 2 * kv_width) + scores) + row * (full + sliding)
        } else {
            activations + 2 * UBATCH * (full + sliding)
        };
        Some(graph + graph / 10 + MIB)
    }

    /// How many layers attend to a sliding window, and its size in tokens; `None` where no
    /// layer does (or llama.cpp would not use the window the GGUF gives).
    fn sliding_layers(&self) -> Option<(u64, u64)> {
        let m = self.meta()?;
        let window = u64::from(m.attention_sliding_window.filter(|&w| w > 0)?);
        let arch = m.architecture.as_deref()?;
        let &(_, period, full_first) = SLIDING_ARCHITECTURES.iter().find(|(a, ..)| *a == arch)?;
        let layers = self.layers();
        let sliding = match &m.attention_sliding_window_pattern {
            Some(SwaPattern::Layers(flags)) => {
                flags.iter().take(layers as usize).filter(|f| **f).count() as u32
            }
            Some(SwaPattern::Period(period)) => sliding_of(layers, *period, full_first),
            None => sliding_of(layers, period, full_first),
        };
        (sliding > 0).then_some((u64::from(sliding), window))
    }
}

/// The KV caches of a configuration, in cells: the whole context for the layers that attend to
/// all, the window for the sliding ones.
struct KvLayout {
    context: u64,
    full_layers: u64,
    sliding_layers: u64,
    window_cells: u64,
}

/// Layers that slide where every `period`-th attends to all (llama.cpp's `set_swa_pattern`).
fn sliding_of(layers: u32, period: u32, full_first: bool) -> u32 {
    if period == 0 {
        return layers;
    }
    (0..layers)
        .filter(|il| {
            if full_first {
                il % period != 0
            } else {
                il % period < period - 1
            }
        })
        .count() as u32
}

/// llama.cpp's KV cache element types (`--cache-type-k/-v`).
/// A vision projector's facts (`clip.vision.*` of its GGUF), as sizing reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectorSpec {
    /// Its tensors' bytes.
    pub weights: u64,
    /// The side of the square image tile its encoder takes, and of a patch, in pixels.
    pub image_size: u32,
    pub patch_size: u32,
    pub embedding_length: u32,
    pub feed_forward_length: u32,
    pub head_count: u32,
}

impl ProjectorSpec {
    /// The compute buffer clip reserves as it loads: its encoder's graph for one image of
    /// `image_size` pixels, a token a patch. With flash attention (clip's default where the
    /// device has it, as llama-server's) a layer's activations, 4 bytes a token for each of the
    /// feed-forward width and 3 × the embedding; without it the scores of every head over the
    /// tokens and 6 rows of the embedding. Exact against the pinned llama-server for SigLIP
    /// encoders of 64 to 1152 wide over 256 to 4096 patches (1.75 to 121.25 MiB); 1 MiB is
    /// added for what follows the encoder (a pooling, a pixel shuffle: 0.8 MiB at most seen).
    pub fn compute_bytes(&self, flash_attention_off: bool) -> u64 {
        let tokens = match self.patch_size {
            0 => 0,
            p => (self.image_size as u64 / p as u64).pow(2),
        };
        let (embd, ff) = (
            self.embedding_length as u64,
            self.feed_forward_length as u64,
        );
        let activations = 4 * tokens * ff + 12 * tokens * embd;
        let scores = 4 * self.head_count as u64 * tokens * tokens + 24 * tokens * embd;
        let graph = if flash_attention_off {
            activations.max(scores)
        } else {
            activations
        };
        graph + MIB
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
#[ts(rename = "KVCacheType")]
pub enum KvCacheType {
    F32,
    #[default]
    F16,
    Bf16,
    Q8_0,
    Q5_1,
    Q5_0,
    Q4_1,
    Q4_0,
    Iq4Nl,
}

impl KvCacheType {
    /// The name llama.cpp's `--cache-type-k/-v` take.
    pub fn as_str(self) -> &'static str {
        match self {
            KvCacheType::F32 => "f32",
            KvCacheType::F16 => "f16",
            KvCacheType::Bf16 => "bf16",
            KvCacheType::Q8_0 => "q8_0",
            KvCacheType::Q5_1 => "q5_1",
            KvCacheType::Q5_0 => "q5_0",
            KvCacheType::Q4_1 => "q4_1",
            KvCacheType::Q4_0 => "q4_0",
            KvCacheType::Iq4Nl => "iq4_nl",
        }
    }

    /// Block sizes of ggml's quantized types: bytes per 32 elements.
    fn bytes_per_element(self) -> f64 {
        match self {
            KvCacheType::F32 => 4.0,
            KvCacheType::F16 | KvCacheType::Bf16 => 2.0,
            KvCacheType::Q8_0 => 34.0 / 32.0,
            KvCacheType::Q5_1 => 24.0 / 32.0,
            KvCacheType::Q5_0 => 22.0 / 32.0,
            KvCacheType::Q4_1 => 20.0 / 32.0,
            KvCacheType::Q4_0 | KvCacheType::Iq4Nl => 18.0 / 32.0,
        }
    }
}

/// The KV cache of a configuration and how it is attended to: the K and V element types
/// (`cacheTypeK`, `cacheTypeV`), whether sliding-window layers keep the whole context
/// (`swaFull`), and whether flash attention is off (its scores then take memory by the context).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvCache {
    pub k: KvCacheType,
    pub v: KvCacheType,
    pub swa_full: bool,
    pub flash_attention_off: bool,
}

impl KvCache {
    pub fn uniform(t: KvCacheType) -> Self {
        KvCache {
            k: t,
            v: t,
            ..KvCache::default()
        }
    }

    /// K and V hold the same number of elements (for equal key and value head sizes).
    fn bytes_per_element(self) -> f64 {
        (self.k.bytes_per_element() + self.v.bytes_per_element()) / 2.0
    }
}

/// Bytes a configuration needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct MemoryEstimate {
    /// Bytes of RAM: what stays on the CPU, and, where any part is on a GPU, 128 MiB for the
    /// GPU driver's own memory in the server's process (measured with Vulkan drivers).
    pub ram: u64,
    /// Bytes on the GPUs.
    pub vram: u64,
    pub weights: u64,
    pub kv_cache: u64,
    pub compute: u64,
    pub context_size: u32,
    pub gpu_layers: u32,
    /// Who answered: a stored calibration, llama.cpp's own dry run of the configuration, or our
    /// arithmetic.
    pub source: EstimateSource,
}

/// Where a {@link MemoryEstimate} comes from: `measured`, a calibration of the same configuration
/// (`llamaServer.calibrate()`, stored beside the model: peak RSS and the buffers llama.cpp
/// allocated); `projected`, llama.cpp's own dry run of the
/// configuration (`llama-fit-params`, beside llama-server: the buffers it will allocate, per
/// device and on the host); `estimated`, arithmetic from the GGUF header (the weights by layer,
/// the KV cache, and a fixed share for compute buffers), where the tool is missing or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum EstimateSource {
    Measured,
    Projected,
    Estimated,
}

/// RAM that a GPU driver takes in the process that uses the GPU, beside the buffers: its
/// libraries, its shader compiler, the device memory it maps. Measured as llama-server's RSS
/// with every layer of the tiny model on the device against none: 137 MiB with NVIDIA's Vulkan
/// driver 580 on an H200 (158 against 32 MiB, 11 MiB of buffers having gone to the device),
/// 118 MiB with Mesa's lavapipe (160 against 31 MiB, its buffers in RAM).
pub const GPU_DRIVER_RAM: u64 = 128 * MIB;

/// [`GPU_DRIVER_RAM`] where `vram` bytes are on a GPU.
pub fn driver_ram(vram: u64) -> u64 {
    if vram > 0 { GPU_DRIVER_RAM } else { 0 }
}

/// RAM llama-server holds whatever its model: its code, its libraries, its heap (measured: 21 MiB
/// beside the buffers of the tiny model on the CPU).
pub const SERVER_BASE_RAM: u64 = 24 * MIB;

/// Compute buffers of a device holding `weights` bytes of a model whose shape is not known: a
/// fixed share.
pub fn compute_bytes(weights: u64) -> u64 {
    64 * MIB + weights / 20
}

/// Offloaded layers take their share of weights and KV cache to the GPU, and with them the
/// compute buffers; the rest stays in RAM.
pub fn estimate(
    model: &ModelSpec,
    context: u32,
    gpu_layers: u32,
    cache: KvCache,
) -> MemoryEstimate {
    let layers = model.layers();
    // llama.cpp counts the output layer as one more: `block_count + 1` puts everything there.
    let gpu_layers = gpu_layers.min(layers + 1);
    let weights = model.size_bytes();
    let kv = model.kv_cache_bytes(context, cache);
    let compute = model
        .compute_bytes(context, cache)
        .unwrap_or_else(|| compute_bytes(weights));
    let on_gpu = gpu_layers.min(layers);
    let share = |bytes: u64| (bytes as u128 * on_gpu as u128 / layers as u128) as u64;
    let (gpu_weights, gpu_kv) = (share(weights), share(kv));
    let gpu_compute = if gpu_layers > 0 { compute } else { 0 };
    let vram = gpu_weights + gpu_kv + gpu_compute;
    MemoryEstimate {
        ram: (weights - gpu_weights)
            + (kv - gpu_kv)
            + (compute - gpu_compute)
            + driver_ram(vram)
            + SERVER_BASE_RAM,
        vram,
        weights,
        kv_cache: kv,
        compute,
        context_size: context,
        gpu_layers,
        source: EstimateSource::Estimated,
    }
}

/// The GPU memory a new model may use now, if the GPU reports it.
pub(super) fn vram_budget(gpu: &GpuInfo) -> Option<u64> {
    if !gpu.available {
        return None;
    }
    gpu.vram_free
        .or(gpu.vram_total)
        .map(|v| v.saturating_sub(VRAM_RESERVE))
}

fn ram_budget(memory: &MemoryInfo, against_total: bool) -> u64 {
    let base = if against_total {
        memory.total
    } else {
        memory.available
    };
    base.saturating_sub(RAM_RESERVE)
}

/// The most layers whose share fits the GPU budget at this context, in llama.cpp's count: with
/// every block, the output layer too (`block_count + 1`; with only `block_count`, llama.cpp
/// leaves the first block on the CPU).
pub fn fit_gpu_layers(model: &ModelSpec, context: u32, cache: KvCache, gpu: &GpuInfo) -> u32 {
    let Some(budget) = vram_budget(gpu) else {
        return 0;
    };
    let layers = model.layers();
    (0..=layers + 1)
        .rev()
        .find(|&n| estimate(model, context, n, cache).vram <= budget)
        .unwrap_or(0)
}

/// Options of {@link SystemInfo.canRunModel}; also the hints of
/// {@link SystemInfo.getOptimalConfig}. Other keys are ignored, so a whole
/// {@link LlamaServerConfig} can be passed.
#[derive(Debug, Clone, Default, Deserialize, TS)]
#[serde(rename_all = "camelCase", default)]
#[ts(rename = "CanRunModelOptions")]
pub struct RunOptions {
    /// Context window in tokens (default: the model's, at most 4096; for hints, the largest up to
    /// 8192 that fits).
    #[ts(optional)]
    pub context_size: Option<u32>,
    /// Without `contextSize`: the smallest context to consider (default 2048).
    #[ts(optional)]
    pub minimum_context_size: Option<u32>,
    /// Without `contextSize`: the context to start from, halving while it does not fit
    /// (default 8192, or the model's own if smaller).
    #[ts(optional)]
    pub preferred_context_size: Option<u32>,
    /// Without `contextSize`: the largest context to consider.
    #[ts(optional)]
    pub maximum_context_size: Option<u32>,
    /// Layers to offload to the GPU (default: as many as fit in free VRAM).
    #[ts(optional)]
    pub gpu_layers: Option<u32>,
    #[ts(optional)]
    pub cache_type_k: Option<KvCacheType>,
    /// Defaults to `cacheTypeK`.
    #[ts(optional)]
    pub cache_type_v: Option<KvCacheType>,
    /// Sliding-window layers keep the whole context (llama-server's `--swa-full`), as
    /// {@link LlamaServerConfig.swaFull}.
    #[ts(optional)]
    pub swa_full: Option<bool>,
    /// Every layer's experts stay on the CPU, as {@link LlamaServerConfig.cpuMoe}: counted by
    /// llama.cpp's projection (the arithmetic places experts with their layers).
    #[ts(optional)]
    pub cpu_moe: Option<bool>,
    /// The experts of the first `nCpuMoe` layers stay on the CPU, as
    /// {@link LlamaServerConfig.nCpuMoe}: counted by llama.cpp's projection.
    #[ts(optional)]
    pub n_cpu_moe: Option<u32>,
    /// Compare with total RAM instead of free RAM: "could this machine ever run it?".
    #[ts(as = "Option<bool>", optional)]
    pub check_total_memory: bool,
    /// `host:port` of rpc-servers the model is to be split over, as
    /// {@link LlamaServerConfig.rpcWorkers}. Each is asked what memory it lends (ggml's RPC
    /// protocol, a few milliseconds), the layers are placed as llama.cpp places them
    /// (`gpuLayers` default: all), and the verdict weighs this machine's share against its
    /// memory and each worker's share against what it reports free. A worker that does not
    /// answer is a {@link ServerError}: `RPC_WORKER_UNREACHABLE`, `RPC_WORKER_BUSY` (another
    /// llama-server holds it) or `RPC_WORKER_INCOMPATIBLE`.
    #[ts(as = "Option<Vec<String>>", optional)]
    pub rpc_workers: Vec<String>,
    /// llama-server's own flags, as {@link LlamaServerConfig.extraArgs}: a vision projector
    /// (`--mmproj`) or a draft model (`--model-draft`, `-ngld`) named there is counted beside
    /// the model, where it will run.
    #[ts(as = "Option<Vec<String>>", optional)]
    pub extra_args: Vec<String>,
    /// The model's `mmproj` component, as {@link LlamaServerConfig.projector}: counted with the
    /// model's layers (`auto`, the default), on the CPU (`cpu`), or not at all (`off`).
    #[ts(optional)]
    pub projector: Option<crate::models::capabilities::ProjectorRequest>,
    /// The model's `draft` component, as {@link LlamaServerConfig.draft}: counted unless `false`.
    #[ts(optional)]
    pub draft: Option<bool>,
}

impl RunOptions {
    /// The context a check uses: the one asked, else the model's up to 4096.
    pub(super) fn context(&self, model: &ModelSpec) -> u32 {
        self.context_size
            .unwrap_or_else(|| model.context_length().min(PREFERRED_CONTEXT / 2))
    }

    pub fn kv_cache(&self) -> KvCache {
        let k = self.cache_type_k.unwrap_or_default();
        KvCache {
            k,
            v: self.cache_type_v.unwrap_or(k),
            swa_full: self.swa_full == Some(true),
            flash_attention_off: false,
        }
    }
}

/// The verdict of {@link SystemInfo.canRunModel}.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "CanRunModelResult")]
pub struct CanRun {
    pub possible: bool,
    /// Why not, when `possible` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub suggestion: Option<String>,
    /// The estimate the verdict is based on; for a split model, this machine's share.
    pub estimate: MemoryEstimate,
    /// With `rpcWorkers`: each worker's share, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[ts(as = "Option<Vec<WorkerShare>>", optional)]
    pub workers: Vec<WorkerShare>,
}

/// A split model's share on one RPC worker ({@link CanRunModelResult.workers}).
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "RpcWorkerShare")]
pub struct WorkerShare {
    /// `host:port`.
    pub worker: String,
    /// Layers placed there (the output layer counts as one).
    pub layers: u32,
    /// Bytes it must hold: its layers' weights and KV cache, and a compute buffer.
    pub required: u64,
    /// Bytes free over its devices, as it reports them (a CPU device reports all its RAM as
    /// free).
    pub free: u64,
    pub total: u64,
}

pub fn can_run(model: &ModelSpec, opts: &RunOptions, memory: &MemoryInfo, gpu: &GpuInfo) -> CanRun {
    let cache = opts.kv_cache();
    let context = opts.context(model);
    let gpu_layers = opts
        .gpu_layers
        .unwrap_or_else(|| fit_gpu_layers(model, context, cache, gpu));
    verdict(
        estimate(model, context, gpu_layers, cache),
        opts,
        memory,
        gpu,
    )
}

/// Whether `estimate` fits in this machine's free (or total) memory.
pub fn verdict(
    estimate: MemoryEstimate,
    opts: &RunOptions,
    memory: &MemoryInfo,
    gpu: &GpuInfo,
) -> CanRun {
    let ram = ram_budget(memory, opts.check_total_memory);
    let which = if opts.check_total_memory {
        "total"
    } else {
        "available"
    };
    let refuse = |reason: String, suggestion: &str| refusal(estimate, reason, suggestion);
    if estimate.vram > 0 {
        match vram_budget(gpu) {
            None => {
                return refuse(
                    "GPU layers were requested but no GPU with known memory was found".into(),
                    "Set gpuLayers to 0 to run on the CPU",
                );
            }
            Some(budget) if estimate.vram > budget => {
                return refuse(
                    format!(
                        "Needs {} of VRAM, {} is free",
                        gib(estimate.vram),
                        gib(budget)
                    ),
                    "Offload fewer layers (gpuLayers), use a smaller context, or a quantized KV cache (cacheTypeK/V: 'q8_0')",
                );
            }
            Some(_) => {}
        }
    }
    if estimate.ram > ram {
        return refuse(
            format!(
                "Needs {} of RAM, {} is {which}",
                gib(estimate.ram),
                gib(ram)
            ),
            if opts.check_total_memory {
                "This model is too large for this machine: choose a smaller model or quantization"
            } else {
                "Close other applications, use a smaller context, or a smaller quantization (e.g. Q4_K_M)"
            },
        );
    }
    CanRun {
        possible: true,
        reason: None,
        suggestion: None,
        estimate,
        workers: Vec::new(),
    }
}

pub(super) fn refusal(estimate: MemoryEstimate, reason: String, suggestion: &str) -> CanRun {
    CanRun {
        possible: false,
        reason: Some(reason),
        suggestion: Some(suggestion.to_string()),
        estimate,
        workers: Vec::new(),
    }
}

/// A starting llama-server configuration: the largest context up to 8192 that fits, with as
/// many GPU layers as fit at that context.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "OptimalLlamaConfig")]
pub struct OptimalConfig {
    pub threads: u32,
    pub context_size: u32,
    pub gpu_layers: u32,
    pub parallel_requests: u32,
    /// Kept out of the JS result, which must be a valid server config; `canRunModel` reports it.
    #[serde(skip)]
    #[ts(skip)]
    pub estimate: MemoryEstimate,
}

pub fn optimal_config(
    model: &ModelSpec,
    hints: &RunOptions,
    memory: &MemoryInfo,
    gpu: &GpuInfo,
    threads: u32,
) -> OptimalConfig {
    let cache = hints.kv_cache();
    let candidates = context_candidates(model, hints);
    let plan = |context: u32| {
        let layers = hints
            .gpu_layers
            .unwrap_or_else(|| fit_gpu_layers(model, context, cache, gpu));
        estimate(model, context, layers, cache)
    };
    let ram = ram_budget(memory, hints.check_total_memory);
    let chosen = candidates
        .iter()
        .map(|&c| plan(c))
        .find(|e| e.ram <= ram)
        .unwrap_or_else(|| plan(*candidates.last().unwrap_or(&MIN_CONTEXT)));
    OptimalConfig {
        threads,
        context_size: chosen.context_size,
        gpu_layers: chosen.gpu_layers,
        parallel_requests: 1,
        estimate: chosen,
    }
}

/// The contexts to try, largest first: the one hinted, else the preferred one (the model's, up
/// to 8192, within the maximum) halving down to the minimum (2048), which is tried last.
pub fn context_candidates(model: &ModelSpec, hints: &RunOptions) -> Vec<u32> {
    if let Some(ctx) = hints.context_size {
        return vec![ctx];
    }
    let top = model
        .context_length()
        .min(hints.preferred_context_size.unwrap_or(PREFERRED_CONTEXT))
        .min(hints.maximum_context_size.unwrap_or(u32::MAX))
        .max(1);
    let floor = hints.minimum_context_size.unwrap_or(MIN_CONTEXT).min(top);
    let mut candidates: Vec<u32> =
        std::iter::successors(Some(top), |&c| (c / 2 >= floor).then_some(c / 2)).collect();
    if candidates.last() != Some(&floor) {
        candidates.push(floor);
    }
    candidates
}

/// Threads for llama.cpp: physical cores, leaving one (two on bigger machines) for the app,
/// because llama.cpp's worker threads spin and collapse when a core is taken from them.
pub fn suggested_threads(physical_cores: u32) -> u32 {
    let n = physical_cores.max(1);
    match n {
        1 => 1,
        2..=8 => n - 1,
        9..=16 => n - 2,
        _ => n * 85 / 100,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "SystemRecommendations")]
pub struct Recommendations {
    /// Largest GGUF file in bytes that fits where it would run (free VRAM with a GPU, else free
    /// RAM).
    pub max_model_bytes: u64,
    /// The same as a model size class at Q4_K_M (~4.85 bits per weight), e.g. `"7B"`.
    pub max_model_size: String,
    pub recommended_quantization: Vec<String>,
    /// Threads for llama.cpp: physical cores less one on up to 8 cores, less two on 9–16, 85%
    /// beyond (room for the app).
    pub threads: u32,
    /// A GPU with known memory is available for offloading layers.
    pub gpu_acceleration: bool,
}

pub fn recommend(memory: &MemoryInfo, gpu: &GpuInfo, physical_cores: u32) -> Recommendations {
    let gpu_budget = vram_budget(gpu).filter(|&b| b > 0);
    let budget = gpu_budget.unwrap_or_else(|| ram_budget(memory, false));
    // Weights plus ~20% for KV cache and compute buffers at a moderate context.
    let max_model_bytes = budget * 5 / 6;
    let quantization: &[&str] = if budget >= 16 * GIB {
        &["Q8_0", "Q6_K", "Q5_K_M"]
    } else if budget >= 6 * GIB {
        &["Q5_K_M", "Q4_K_M"]
    } else {
        &["Q4_K_M", "Q4_K_S", "Q3_K_M"]
    };
    Recommendations {
        max_model_bytes,
        max_model_size: parameter_label(max_model_bytes),
        recommended_quantization: quantization.iter().map(|s| s.to_string()).collect(),
        threads: suggested_threads(physical_cores),
        gpu_acceleration: gpu_budget.is_some(),
    }
}

/// The largest common model size class whose Q4_K_M file fits in `bytes`.
pub fn parameter_label(bytes: u64) -> String {
    let billions = bytes as f64 * 8.0 / 4.85 / 1e9;
    const CLASSES: [f64; 12] = [
        0.5, 1.0, 1.5, 3.0, 4.0, 7.0, 8.0, 13.0, 14.0, 32.0, 70.0, 120.0,
    ];
    match CLASSES.iter().rev().find(|&&c| c <= billions) {
        Some(c) if *c < 1.0 => format!("{}M", (c * 1000.0) as u32),
        Some(c) => format!("{c}B"),
        None => "<0.5B".to_string(),
    }
}

pub(super) fn gib(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / GIB as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projectors_compute_buffer_is_what_clip_reserved_and_at_most_a_mib_more() {
        // (width, feed-forward, heads, image, patch, flash attention off, MiB the pinned
        // llama-server's clip reserved): SmolVLM's, SigLIP so400m's at 384 and 896 pixels (two
        // of its layers), a small one; Gemma 3's projector type (its pooling after the encoder).
        let measured = [
            (768, 3072, 12, 512, 16, false, 21.00),
            (1152, 4304, 16, 384, 14, false, 21.58),
            (1152, 4304, 16, 896, 14, false, 121.25),
            (256, 1024, 4, 224, 14, false, 2.53),
            (768, 3072, 12, 512, 16, true, 66.00),
            (256, 1024, 4, 224, 14, true, 2.53),
            (64, 128, 2, 64, 16, false, 0.16),
        ];
        for (embd, ff, heads, image, patch, fa_off, mib) in measured {
            let spec = ProjectorSpec {
                weights: 0,
                image_size: image,
                patch_size: patch,
                embedding_length: embd,
                feed_forward_length: ff,
                head_count: heads,
            };
            let estimate = spec.compute_bytes(fa_off) as f64 / MIB as f64;
            assert!(
                estimate >= mib && estimate <= mib + 1.0,
                "{embd} wide, {image} px: {estimate:.2} MiB against {mib}"
            );
        }
    }
    use crate::system::gpu::{GpuDevice, GpuVendor, RuntimeHints, summarize};

    /// SmolLM2-135M-Instruct Q4_1 as its GGUF header describes it.
    fn smollm2() -> ModelSpec {
        serde_json::from_value(serde_json::json!({
            "size": 98_362_432,
            "ggufMetadata": {
                "block_count": 30, "context_length": 8192, "embedding_length": 576,
                "feed_forward_length": 1536, "attention_head_count": 9, "attention_head_count_kv": 3
            }
        }))
        .unwrap()
    }

    #[test]
    fn context_hints_bound_the_contexts_tried() {
        let model = smollm2();
        let tried = |hints: RunOptions| context_candidates(&model, &hints);
        assert_eq!(tried(RunOptions::default()), [8192, 4096, 2048]);
        let within = RunOptions {
            minimum_context_size: Some(3000),
            maximum_context_size: Some(6000),
            ..RunOptions::default()
        };
        assert_eq!(tried(within), [6000, 3000]);
        let preferred = RunOptions {
            preferred_context_size: Some(4096),
            minimum_context_size: Some(1024),
            ..RunOptions::default()
        };
        assert_eq!(tried(preferred), [4096, 2048, 1024]);
        // The model's own context caps them all; a minimum above it is the model's.
        let above = RunOptions {
            preferred_context_size: Some(32768),
            minimum_context_size: Some(16384),
            ..RunOptions::default()
        };
        assert_eq!(tried(above), [8192]);
        let exact = RunOptions {
            context_size: Some(777),
            minimum_context_size: Some(4096),
            ..RunOptions::default()
        };
        assert_eq!(tried(exact), [777]);
    }

    fn mem(total_gib: u64, available_gib: u64) -> MemoryInfo {
        MemoryInfo {
            total: total_gib * GIB,
            available: available_gib * GIB,
            used: (total_gib - available_gib) * GIB,
        }
    }

    fn nvidia(total_gib: u64, free_gib: u64) -> GpuInfo {
        summarize(
            vec![GpuDevice {
                vendor: GpuVendor::Nvidia,
                name: "Fake RTX".into(),
                vram_total: Some(total_gib * GIB),
                vram_free: Some(free_gib * GIB),
                unified_memory: false,
                device_type: None,
                vulkan_index: None,
                uuid: None,
            }],
            RuntimeHints::default(),
        )
    }

    #[test]
    fn kv_cache_matches_the_formula_measured_against_llama_server() {
        // 30 layers × 2 × 3 KV heads × 64 dims × 2 bytes = 23,040 bytes per token.
        let m = smollm2();
        assert_eq!(m.kv_cache_bytes(2048, KvCache::default()), 23_040 * 2048);
        // llama-server's RSS grew by 138 MB from -c 2048 to -c 8192; the formula says 142 MB.
        let growth =
            m.kv_cache_bytes(8192, KvCache::default()) - m.kv_cache_bytes(2048, KvCache::default());
        assert!((growth as f64 / 138e6 - 1.0).abs() < 0.05, "{growth}");
        assert!(
            m.kv_cache_bytes(2048, KvCache::uniform(KvCacheType::Q8_0))
                < m.kv_cache_bytes(2048, KvCache::default())
        );
    }

    #[test]
    fn per_layer_head_counts_use_the_largest() {
        let m: ModelSpec = serde_json::from_value(serde_json::json!({
            "size": 1e9,
            "ggufMetadata": { "block_count": 2, "embedding_length": 256,
                "attention_head_count": [4, 4], "attention_head_count_kv": [1, 2] }
        }))
        .unwrap();
        assert_eq!(
            m.kv_cache_bytes(1, KvCache::uniform(KvCacheType::F32)),
            2 * 2 * 2 * 64 * 4
        );
    }

    #[test]
    fn estimate_without_gpu_layers_is_all_ram() {
        let e = estimate(&smollm2(), 2048, 0, KvCache::default());
        assert_eq!(e.vram, 0);
        assert_eq!(e.ram, e.weights + e.kv_cache + e.compute + SERVER_BASE_RAM);
        // llama-server's RSS for this model at -c 2048 was 177–185 MB: we must not underestimate.
        assert!(e.ram >= 185_000_000 && e.ram < 205_000_000, "{}", e.ram);
    }

    fn sliding(arch: &str, window: u32, pattern: Option<serde_json::Value>) -> ModelSpec {
        let mut meta = serde_json::json!({
            "architecture": arch, "block_count": 6, "embedding_length": 256,
            "attention_head_count": 4, "attention_head_count_kv": 4,
            "attention_sliding_window": window,
        });
        if let Some(pattern) = pattern {
            meta["attention_sliding_window_pattern"] = pattern;
        }
        ModelSpec {
            size: 1e6,
            gguf_metadata: Some(GgufFacts::deserialize(meta).unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn sliding_window_layers_keep_their_window_and_a_micro_batch() {
        // 4 heads × (64 + 64) × 2 bytes = 1 KiB a token a layer.
        let per_cell = 1024;
        let full = |ctx: u64| 6 * ctx * per_cell;
        // gemma3: every sixth layer attends to all; the five others keep 128 + 512 tokens,
        // rounded up to 768 cells.
        let gemma3 = sliding("gemma3", 128, None);
        assert_eq!(
            gemma3.kv_cache_bytes(8192, KvCache::default()),
            (8192 + 5 * 768) * per_cell
        );
        // A window larger than the context: every layer holds the context.
        assert_eq!(gemma3.kv_cache_bytes(512, KvCache::default()), full(512));
        // --swa-full keeps the whole context everywhere.
        let swa_full = KvCache {
            swa_full: true,
            ..KvCache::default()
        };
        assert_eq!(gemma3.kv_cache_bytes(8192, swa_full), full(8192));
        // The GGUF's own pattern wins: a period, or a flag a layer.
        let every_other = sliding("gemma3", 128, Some(serde_json::json!(2)));
        assert_eq!(
            every_other.kv_cache_bytes(8192, KvCache::default()),
            (3 * 8192 + 3 * 768) * per_cell
        );
        let flags = sliding(
            "gemma3",
            128,
            Some(serde_json::json!([true, false, false, false, false, false])),
        );
        assert_eq!(
            flags.kv_cache_bytes(8192, KvCache::default()),
            (5 * 8192 + 768) * per_cell
        );
        // The full layer first in each period (cohere2moe): layers 1–3 and 5 slide.
        assert_eq!(
            sliding("cohere2moe", 128, None).kv_cache_bytes(8192, KvCache::default()),
            (2 * 8192 + 4 * 768) * per_cell
        );
        // An architecture llama.cpp runs without sliding attention ignores the key (a Qwen2
        // GGUF carries a window it does not use); so does a window of 0.
        assert_eq!(
            sliding("qwen2", 128, None).kv_cache_bytes(8192, KvCache::default()),
            full(8192)
        );
        assert_eq!(
            sliding("gemma3", 0, None).kv_cache_bytes(8192, KvCache::default()),
            full(8192)
        );
    }

    /// A model of the shape, as its GGUF header says it.
    fn shaped(embd: u32, ff: u32, heads: u32, kv_heads: u32) -> ModelSpec {
        let meta = serde_json::json!({
            "block_count": 2, "embedding_length": embd, "feed_forward_length": ff,
            "attention_head_count": heads, "attention_head_count_kv": kv_heads,
        });
        ModelSpec {
            size: 1e9,
            gguf_metadata: Some(GgufFacts::deserialize(meta).unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn compute_buffers_follow_the_models_shape_as_llama_server_reserves_them() {
        // (shape, context, flash attention off, MiB the pinned llama-server reserved on the CPU)
        let measured = [
            (shaped(4096, 11008, 32, 32), 2048, false, 98.51),
            (shaped(4096, 11008, 32, 32), 8192, false, 104.51),
            (shaped(4096, 11008, 32, 32), 8192, true, 584.01),
            (shaped(4096, 14336, 32, 8), 8192, false, 124.01),
            (shaped(4096, 14336, 32, 8), 2048, true, 176.01),
            (shaped(2048, 8192, 32, 8), 8192, false, 72.01),
            (shaped(2048, 8192, 32, 8), 8192, true, 550.01),
            (shaped(896, 4864, 14, 2), 2048, false, 37.51),
            (shaped(896, 4864, 14, 2), 8192, true, 249.26),
            (smollm2(), 2048, false, 13.3),
            (smollm2(), 8192, false, 19.3),
        ];
        for (model, context, off, reserved) in measured {
            let cache = KvCache {
                flash_attention_off: off,
                ..KvCache::default()
            };
            let ours = model.compute_bytes(context, cache).unwrap() as f64 / MIB as f64;
            assert!(
                ours >= reserved && ours <= reserved * 1.16 + 4.0,
                "{context} tokens, flash attention off: {off}: ours {ours:.1} MiB, llama-server's {reserved}"
            );
        }
        // Experts: the widest of the dense FFN and the experts a token runs.
        let mut moe = shaped(64, 128, 4, 4);
        let meta = moe.gguf_metadata.as_mut().unwrap();
        meta.expert_used_count = Some(2);
        let ours = moe.compute_bytes(8192, KvCache::default()).unwrap() as f64 / MIB as f64;
        assert!((10.01..=12.5).contains(&ours), "{ours}");
        // Without the shape there is no figure (the callers fall back to a share of the weights).
        assert_eq!(
            ModelSpec::default().compute_bytes(2048, KvCache::default()),
            None
        );
    }

    #[test]
    fn gpu_layers_move_memory_to_vram() {
        let m = smollm2();
        let all = estimate(&m, 4096, 30, KvCache::default());
        let half = estimate(&m, 4096, 15, KvCache::default());
        // Only llama-server's own memory and the driver's stay in RAM.
        assert_eq!(all.ram, SERVER_BASE_RAM + GPU_DRIVER_RAM);
        assert!(half.vram > 0 && half.ram > SERVER_BASE_RAM + GPU_DRIVER_RAM);
        assert_eq!(estimate(&m, 4096, 0, KvCache::default()).vram, 0);
        // llama.cpp's count: 30 blocks and the output layer.
        assert_eq!(estimate(&m, 4096, 99, KvCache::default()).gpu_layers, 31);
        assert_eq!(estimate(&m, 4096, 31, KvCache::default()).vram, all.vram);
    }

    #[test]
    fn can_run_refuses_with_reason_and_suggestion() {
        let big = ModelSpec {
            size: 20.0 * GIB as f64,
            gguf_metadata: None,
            ..Default::default()
        };
        let no_gpu = GpuInfo::default();
        let verdict = can_run(&big, &RunOptions::default(), &mem(16, 8), &no_gpu);
        assert!(!verdict.possible);
        assert!(verdict.reason.unwrap().contains("RAM"));
        assert!(verdict.suggestion.is_some());
        let verdict = can_run(&smollm2(), &RunOptions::default(), &mem(16, 8), &no_gpu);
        assert!(verdict.possible && verdict.reason.is_none());
        let forced = RunOptions {
            gpu_layers: Some(10),
            ..Default::default()
        };
        let verdict = can_run(&smollm2(), &forced, &mem(16, 8), &no_gpu);
        assert!(!verdict.possible && verdict.reason.unwrap().contains("GPU"));
    }

    #[test]
    fn can_run_uses_the_gpu_and_checks_vram() {
        let big = ModelSpec {
            size: 20.0 * GIB as f64,
            gguf_metadata: None,
            ..Default::default()
        };
        let verdict = can_run(&big, &RunOptions::default(), &mem(64, 60), &nvidia(8, 8));
        assert!(verdict.possible);
        assert!(verdict.estimate.gpu_layers > 0 && verdict.estimate.gpu_layers < 32);
        let forced = RunOptions {
            gpu_layers: Some(32),
            ..Default::default()
        };
        let verdict = can_run(&big, &forced, &mem(64, 60), &nvidia(8, 8));
        assert!(!verdict.possible && verdict.reason.unwrap().contains("VRAM"));
    }

    #[test]
    fn optimal_config_shrinks_context_to_fit() {
        let m = smollm2();
        let roomy = optimal_config(
            &m,
            &RunOptions::default(),
            &mem(16, 8),
            &GpuInfo::default(),
            3,
        );
        assert_eq!(
            (roomy.context_size, roomy.gpu_layers, roomy.threads),
            (8192, 0, 3)
        );
        // 800 MiB free leaves 288 MiB after the reserve: 8192 needs ~359 MB, 4096 ~264 MB.
        let tight = MemoryInfo {
            total: GIB,
            available: 800 * MIB,
            used: 224 * MIB,
        };
        let cfg = optimal_config(&m, &RunOptions::default(), &tight, &GpuInfo::default(), 1);
        assert_eq!(cfg.context_size, 4096, "{cfg:?}");
        assert!(cfg.estimate.ram <= 288 * MIB);
        // Every block and the output layer (llama.cpp leaves the first block on the CPU at 30).
        let gpu = optimal_config(&m, &RunOptions::default(), &mem(16, 8), &nvidia(8, 8), 3);
        assert_eq!(gpu.gpu_layers, 31);
    }

    #[test]
    fn threads_leave_room_for_the_app() {
        assert_eq!(suggested_threads(0), 1);
        assert_eq!(suggested_threads(1), 1);
        assert_eq!(suggested_threads(2), 1);
        assert_eq!(suggested_threads(8), 7);
        assert_eq!(suggested_threads(16), 14);
        assert_eq!(suggested_threads(64), 54);
    }

    #[test]
    fn recommendations_follow_the_memory_that_runs_the_model() {
        let r = recommend(&mem(16, 12), &GpuInfo::default(), 4);
        assert!(!r.gpu_acceleration);
        assert_eq!(r.threads, 3);
        assert_eq!(r.max_model_bytes, (12 * GIB - RAM_RESERVE) * 5 / 6);
        assert_eq!(r.max_model_size, "14B");
        let r = recommend(&mem(16, 12), &nvidia(24, 23), 8);
        assert!(r.gpu_acceleration);
        assert_eq!(r.recommended_quantization[0], "Q8_0");
        assert_eq!(parameter_label(100 * MIB), "<0.5B");
        assert_eq!(parameter_label(400 * MIB), "500M");
    }

    #[test]
    fn bad_sizes_are_rejected() {
        assert!(
            ModelSpec {
                size: -1.0,
                gguf_metadata: None,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            ModelSpec {
                size: f64::NAN,
                gguf_metadata: None,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(smollm2().validate().is_ok());
        let opts: RunOptions = serde_json::from_value(
            serde_json::json!({ "cacheTypeK": "q8_0", "cacheTypeV": "iq4_nl", "port": 8080 }),
        )
        .unwrap();
        assert_eq!(
            opts.kv_cache(),
            KvCache {
                k: KvCacheType::Q8_0,
                v: KvCacheType::Iq4Nl,
                ..KvCache::default()
            }
        );
        assert!(
            serde_json::from_value::<RunOptions>(serde_json::json!({ "cacheTypeK": "q9" }))
                .is_err()
        );
    }
}
