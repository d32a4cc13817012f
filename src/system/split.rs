//! Sizing a model split over RPC workers: which layers llama.cpp gives each device, and so what
//! this machine holds and what each worker must hold.
//!
//! llama.cpp (`llama_model::load_tensors`) puts the RPC workers' devices first and this machine's
//! GPU after them, and spreads the last `gpuLayers` of the `layers + 1` layers (the output layer
//! last) over them in proportion to the free memory each reports; the rest, and always the input
//! layer (the token embeddings), stay on this machine's CPU. Each layer's KV cache lives with it.

use super::estimate::{
    CanRun, EstimateSource, KvCache, MemoryEstimate, ModelSpec, OptimalConfig, RunOptions,
    WorkerShare, compute_bytes, context_candidates, gib, refusal, verdict, vram_budget,
};
use super::gpu::GpuInfo;
use super::memory::MemoryInfo;
use super::rpc_probe::DeviceMemory;
use crate::models::gguf::LayerBytes;

/// A sized split: this machine's share and each worker's.
#[derive(Debug, Clone, PartialEq)]
pub struct Shares {
    pub local: MemoryEstimate,
    pub workers: Vec<WorkerShare>,
}

impl std::fmt::Display for Shares {
    /// One line for the server's log: where the layers go.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = |bytes: u64| format!("{:.1} MB", bytes as f64 / 1e6);
        for share in &self.workers {
            write!(
                f,
                "{}: {} layers, {}; ",
                share.worker,
                share.layers,
                mb(share.required)
            )?;
        }
        write!(f, "here: the token embeddings")?;
        if self.local.gpu_layers > 0 {
            write!(f, " and {} layers on the GPU", self.local.gpu_layers)?;
        }
        write!(f, ", {} of RAM", mb(self.local.ram))?;
        if self.local.vram > 0 {
            write!(f, " and {} of VRAM", mb(self.local.vram))?;
        }
        Ok(())
    }
}

/// The device of each of the `layers + 1` layers (the output layer last): `None` for this
/// machine's CPU, else an index into `free`.
pub fn place_layers(layers: u32, gpu_layers: u32, free: &[u64]) -> Vec<Option<usize>> {
    let all = layers + 1;
    if free.is_empty() {
        return vec![None; all as usize];
    }
    // llama.cpp sums and compares in f32; so do we, to draw the same boundaries.
    let sum: f32 = free.iter().map(|&f| f as f32).sum();
    let mut running = 0.0f32;
    let bounds: Vec<f32> = free
        .iter()
        .map(|&f| {
            running += f as f32;
            if sum > 0.0 { running / sum } else { 1.0 }
        })
        .collect();
    let first = all.saturating_sub(gpu_layers);
    let offloaded = gpu_layers.min(all);
    (0..all)
        .map(|layer| {
            if layer < first || layer - first >= offloaded {
                return None;
            }
            let at = (layer - first) as f32 / offloaded as f32;
            // `std::upper_bound`: the first device whose bound is above `at`.
            Some(bounds.partition_point(|&b| b <= at).min(free.len() - 1))
        })
        .collect()
}

/// What one place (this CPU, this GPU, a worker's device) holds.
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    layers: u32,
    weights: u64,
    kv: u64,
}

impl Held {
    /// Compute buffers: a device with layers computes; one without is not used.
    fn compute(&self) -> u64 {
        if self.layers > 0 {
            compute_bytes(self.weights)
        } else {
            0
        }
    }

    fn bytes(&self) -> u64 {
        self.weights + self.kv + self.compute()
    }
}

/// This machine's share and each worker's, for `workers` in the order llama-server is given
/// them, with this machine's GPU after them when it has one with known free memory.
pub fn estimate_split(
    model: &ModelSpec,
    opts: &RunOptions,
    gpu: &GpuInfo,
    workers: &[(String, Vec<DeviceMemory>)],
) -> Shares {
    let layers = model.layers();
    let context = opts.context(model);
    let cache: KvCache = opts.kv_cache();
    let gpu_layers = opts.gpu_layers.unwrap_or(layers + 1);
    let mut free: Vec<u64> = workers
        .iter()
        .flat_map(|(_, devices)| devices.iter().map(|d| d.free))
        .collect();
    let remote = free.len();
    // llama.cpp weighs this GPU by what it reports free, without our reserve.
    free.extend(vram_budget(gpu).and(gpu.vram_free));
    let placement = place_layers(layers, gpu_layers, &free);

    let weights = layer_weights(model, layers);
    let kv_per_layer = model.kv_cache_bytes(context, cache) / layers as u64;
    let mut cpu = Held {
        weights: weights.input + weights.other,
        ..Default::default()
    };
    let mut devices = vec![Held::default(); free.len()];
    for (layer, device) in placement.iter().enumerate() {
        let held = match device {
            Some(d) => &mut devices[*d],
            None => &mut cpu,
        };
        held.layers += 1;
        match weights.blocks.get(layer) {
            Some(&block) => {
                held.weights += block;
                held.kv += kv_per_layer;
            }
            None => held.weights += weights.output,
        }
    }
    // Host buffers for the input and the results: this machine always computes a little. A
    // split keeps the fixed share of the weights rather than the model's graph: each process
    // holds more than its buffers (llama-server reads every weight to send it; a worker has its
    // own code and backends), which the share happens to cover (measured: the graph alone put
    // each share 38–46 % under its RSS).
    let cpu_compute = compute_bytes(cpu.weights);
    let gpu_held = devices.get(remote).copied().unwrap_or_default();
    let local = MemoryEstimate {
        ram: cpu.weights
            + cpu.kv
            + cpu_compute
            + super::estimate::driver_ram(gpu_held.bytes())
            + super::estimate::SERVER_BASE_RAM,
        vram: gpu_held.bytes(),
        weights: cpu.weights + gpu_held.weights,
        kv_cache: cpu.kv + gpu_held.kv,
        compute: cpu_compute + gpu_held.compute(),
        context_size: context,
        gpu_layers: gpu_held.layers,
        source: EstimateSource::Estimated,
    };

    let mut next = 0;
    let workers = workers
        .iter()
        .map(|(worker, reported)| {
            let held = &devices[next..next + reported.len()];
            next += reported.len();
            WorkerShare {
                worker: worker.clone(),
                layers: held.iter().map(|h| h.layers).sum(),
                required: held.iter().map(Held::bytes).sum(),
                free: reported.iter().map(|d| d.free).sum(),
                total: reported.iter().map(|d| d.total).sum(),
            }
        })
        .collect();
    Shares { local, workers }
}

/// What each layer weighs: from the file's tensor index when it was read and matches the
/// metadata (the first file of a sharded model holds only part), else the whole size spread
/// evenly over the blocks.
fn layer_weights(model: &ModelSpec, layers: u32) -> LayerBytes {
    let size = model.size_bytes();
    match &model.layer_bytes {
        Some(l) if l.blocks.len() == layers as usize && l.total() >= size / 10 * 9 => l.clone(),
        _ => LayerBytes {
            blocks: vec![size / layers as u64; layers as usize],
            ..Default::default()
        },
    }
}

/// Whether each worker can hold its share and this machine its own.
pub fn can_run_split(
    model: &ModelSpec,
    opts: &RunOptions,
    memory: &MemoryInfo,
    gpu: &GpuInfo,
    workers: &[(String, Vec<DeviceMemory>)],
) -> CanRun {
    let Shares {
        local,
        workers: shares,
    } = estimate_split(model, opts, gpu, workers);
    let short = shares.iter().find(|s| s.required > s.free);
    let mut verdict = match short {
        Some(share) => refusal(
            local,
            format!(
                "The RPC worker {} needs {} for its {} layers, it reports {} free",
                share.worker,
                gib(share.required),
                share.layers,
                gib(share.free)
            ),
            "Add a worker (rpcWorkers), use one with more free memory, or keep layers on this machine (gpuLayers)",
        ),
        None => verdict(local, opts, memory, gpu),
    };
    verdict.workers = shares;
    verdict
}

/// A starting configuration for a split model: every layer on a device unless hinted, and the
/// largest context whose shares fit, here and on each worker.
pub fn optimal_split_config(
    model: &ModelSpec,
    hints: &RunOptions,
    memory: &MemoryInfo,
    gpu: &GpuInfo,
    threads: u32,
    workers: &[(String, Vec<DeviceMemory>)],
) -> OptimalConfig {
    let gpu_layers = hints.gpu_layers.unwrap_or(model.layers() + 1);
    let check = |context: u32| {
        let opts = RunOptions {
            context_size: Some(context),
            gpu_layers: Some(gpu_layers),
            ..hints.clone()
        };
        can_run_split(model, &opts, memory, gpu, workers)
    };
    let candidates = context_candidates(model, hints);
    let chosen = candidates
        .iter()
        .map(|&c| check(c))
        .find(|c| c.possible)
        .unwrap_or_else(|| check(*candidates.last().expect("one context at least")));
    OptimalConfig {
        threads,
        context_size: chosen.estimate.context_size,
        gpu_layers,
        parallel_requests: 1,
        estimate: chosen.estimate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// SmolLM2-135M-Instruct Q4_1, with the tensor bytes of its file.
    fn smollm2() -> ModelSpec {
        let mut spec: ModelSpec = serde_json::from_value(serde_json::json!({
            "size": 98_362_432,
            "ggufMetadata": {
                "block_count": 30, "context_length": 8192, "embedding_length": 576,
                "attention_head_count": 9, "attention_head_count_kv": 3
            }
        }))
        .unwrap();
        spec.layer_bytes = Some(LayerBytes {
            input: 30_081_024,
            blocks: vec![2_216_448; 30],
            output: 2_304 + 30_081_024,
            other: 0,
        });
        spec
    }

    /// A worker with one device reporting `free` of `total` bytes.
    fn worker(name: &str, free: u64, total: u64) -> (String, Vec<DeviceMemory>) {
        (name.into(), vec![DeviceMemory { free, total }])
    }

    /// A CPU worker: all of its RAM reported free.
    fn cpu_worker(name: &str, gib_total: u64) -> (String, Vec<DeviceMemory>) {
        worker(name, gib_total * GIB, gib_total * GIB)
    }

    fn roomy_ram() -> MemoryInfo {
        MemoryInfo {
            total: 24 * GIB,
            available: 20 * GIB,
            used: 4 * GIB,
        }
    }

    fn check(workers: &[(String, Vec<DeviceMemory>)]) -> CanRun {
        let opts = RunOptions::default();
        can_run_split(
            &smollm2(),
            &opts,
            &roomy_ram(),
            &GpuInfo::default(),
            workers,
        )
    }

    fn optimal(workers: &[(String, Vec<DeviceMemory>)]) -> OptimalConfig {
        let opts = RunOptions::default();
        optimal_split_config(
            &smollm2(),
            &opts,
            &roomy_ram(),
            &GpuInfo::default(),
            3,
            workers,
        )
    }

    #[test]
    fn layers_follow_llama_cpp_boundaries() {
        // What llama-server logged for SmolLM2 over two equal workers: 16 layers on the first,
        // 14 and the output on the second.
        let placed = place_layers(30, 999, &[24 * GIB, 24 * GIB]);
        assert_eq!(placed.iter().filter(|d| **d == Some(0)).count(), 16);
        assert_eq!(placed.iter().filter(|d| **d == Some(1)).count(), 15);
        assert_eq!(placed[30], Some(1), "the output layer goes last");
        // A worker with three times the memory takes three times the layers.
        let placed = place_layers(30, 999, &[GIB, 3 * GIB]);
        assert_eq!(placed.iter().filter(|d| **d == Some(0)).count(), 8);
        // gpuLayers keeps the first layers on the CPU; none leaves all of them there.
        let placed = place_layers(30, 11, &[GIB]);
        assert_eq!(placed.iter().filter(|d| d.is_none()).count(), 20);
        assert!(placed[..20].iter().all(Option::is_none));
        assert!(place_layers(30, 0, &[GIB]).iter().all(Option::is_none));
        assert!(place_layers(30, 999, &[]).iter().all(Option::is_none));
    }

    #[test]
    fn this_machine_keeps_only_the_input_layer_of_a_fully_split_model() {
        let workers = [
            cpu_worker("10.0.0.2:50052", 24),
            cpu_worker("10.0.0.3:50052", 24),
        ];
        let opts = RunOptions {
            context_size: Some(2048),
            ..Default::default()
        };
        let Shares {
            local,
            workers: shares,
        } = estimate_split(&smollm2(), &opts, &GpuInfo::default(), &workers);
        assert_eq!(local.weights, 30_081_024);
        assert_eq!(local.kv_cache, 0);
        assert_eq!((local.vram, local.gpu_layers), (0, 0));
        // llama-server logged 28.69 MiB CPU_Mapped and a 13.67 MiB CPU compute buffer; its RSS
        // was 124–130 MB (it reads every weight to send it to the workers).
        assert!(
            local.ram > 110 * MIB && local.ram < 140 * MIB,
            "{}",
            local.ram
        );
        assert_eq!(shares[0].layers, 16);
        assert_eq!(shares[1].layers, 15);
        // Logged: 33.82 MiB of weights + 24 MiB of KV cache on the first; 58.28 + 21 on the
        // second (its output layer repeats the tied embeddings). Plus compute buffers (24.91).
        let first = 16 * 2_216_448 + 16 * (2048 * 23_040 / 30);
        assert_eq!(shares[0].required, first + compute_bytes(16 * 2_216_448));
        assert!(shares[1].required > shares[0].required + 20 * MIB);
        assert_eq!(shares[0].free, 24 * GIB);
    }

    #[test]
    fn a_worker_short_of_memory_is_named() {
        // The second worker reports almost nothing free, so it gets no layer.
        let workers = [
            cpu_worker("10.0.0.2:50052", 24),
            worker("10.0.0.3:50052", 10 * MIB, 8 * GIB),
        ];
        let verdict = check(&workers);
        assert!(verdict.possible, "{verdict:?}");
        assert_eq!(verdict.workers[1].layers, 0);

        // A single worker takes every layer, whatever it reports.
        let verdict = check(&[worker("10.0.0.9:50052", MIB, MIB)]);
        assert!(!verdict.possible);
        assert!(verdict.reason.unwrap().contains("10.0.0.9:50052"));
        assert_eq!(verdict.workers[0].layers, 31);
    }

    #[test]
    fn the_optimal_split_takes_the_largest_context_whose_shares_fit() {
        let config = optimal(&[cpu_worker("a:1", 8), cpu_worker("b:1", 8)]);
        assert_eq!(
            (config.context_size, config.gpu_layers, config.threads),
            (8192, 31, 3)
        );
        // KV cache at 8192 is 189 MB in all; a worker of 150 MiB takes the layers only at a
        // smaller context.
        let config = optimal(&[worker("a:1", 150 * MIB, 150 * MIB)]);
        assert!(config.context_size < 8192, "{config:?}");
        assert_eq!(
            config.estimate.kv_cache, 0,
            "the KV cache lives with the layers"
        );
    }

    #[test]
    fn this_gpu_comes_after_the_workers_and_takes_its_share() {
        use crate::system::gpu::{GpuDevice, GpuVendor, RuntimeHints, summarize};
        let gpu = summarize(
            vec![GpuDevice {
                vendor: GpuVendor::Nvidia,
                name: "Fake RTX".into(),
                vram_total: Some(8 * GIB),
                vram_free: Some(8 * GIB),
                unified_memory: false,
                device_type: None,
                vulkan_index: None,
                uuid: None,
            }],
            RuntimeHints::default(),
        );
        let opts = RunOptions {
            context_size: Some(2048),
            ..Default::default()
        };
        let split = estimate_split(&smollm2(), &opts, &gpu, &[cpu_worker("a:1", 8)]);
        let (local, shares) = (split.local, &split.workers);
        // Equal memory: the worker takes the first 16 layers, this GPU 14 and the output.
        assert_eq!(shares[0].layers, 16);
        assert_eq!(local.gpu_layers, 15);
        assert_eq!(local.kv_cache, 14 * (2048 * 23_040 / 30));
        assert!(local.vram > 14 * 2_216_448 + 30_083_328, "{local:?}");
        assert_eq!(local.weights, 30_081_024 + 14 * 2_216_448 + 30_083_328);
        let line = split.to_string();
        assert!(
            line.contains("and 15 layers on the GPU") && line.contains("of VRAM"),
            "{line}"
        );
    }

    #[test]
    fn without_the_tensor_index_layers_weigh_the_same() {
        let mut model = smollm2();
        model.layer_bytes = None;
        let workers = [cpu_worker("a:1", 8), cpu_worker("b:1", 8)];
        let Shares {
            local,
            workers: shares,
        } = estimate_split(
            &model,
            &RunOptions::default(),
            &GpuInfo::default(),
            &workers,
        );
        assert_eq!(local.weights, 0);
        let weights = |s: &WorkerShare| s.layers as u64 * (98_362_432 / 30);
        assert!(shares.iter().all(|s| s.required > weights(s)));
    }
}
