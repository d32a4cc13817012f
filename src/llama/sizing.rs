//! `canRunModel` with llama.cpp's own projection where it can be asked: the arithmetic chooses
//! the configuration (context, GPU layers), and the dry run of llama-server's tool says what that
//! configuration holds. The verdict says which answered (`estimate.source`).

use crate::binaries::{BinaryKind, BinaryManager, EnsureOptions};
use crate::config::DataPaths;
use crate::system::estimate::{
    CanRun, MemoryEstimate, OptimalConfig, context_candidates, estimate, fit_gpu_layers, verdict,
};
use crate::system::gpu::GpuInfo;
use crate::system::memory::MemoryInfo;
use crate::system::{ModelSpec, RunOptions, SystemError, SystemInfo};

use super::LlamaConfig;
use super::tasks::ProjectorRequest;

/// The arithmetic's verdict, replaced by one on llama.cpp's projection where an installed
/// llama-server has the tool beside it and the model's file is known (a split over RPC workers
/// is sized from what each worker reports).
pub async fn can_run_model(
    system: &SystemInfo,
    binaries: &BinaryManager,
    data: &DataPaths,
    model: &ModelSpec,
    opts: &RunOptions,
) -> Result<CanRun, SystemError> {
    let arithmetic = system.can_run_model(model, opts).await?;
    if !opts.rpc_workers.is_empty() {
        return Ok(arithmetic);
    }
    let (memory, gpu) = (system.memory(), system.gpu().await);
    let binary = binaries
        .locate(BinaryKind::LlamaServer, &EnsureOptions::default(), data)
        .await;
    let config = config_of(model, opts, binary.clone().unwrap_or_default());
    let config = LlamaConfig {
        context_size: arithmetic.estimate.context_size,
        gpu_layers: arithmetic.estimate.gpu_layers,
        ..config
    };
    let askable = model.path.is_some() && binary.is_some();
    let sized = match askable && !beyond_machine(&arithmetic.estimate, &memory, &gpu) {
        true => {
            let compute = Some(arithmetic.estimate.compute);
            by_llama_cpp(&config, compute, data, opts, &memory, &gpu).await
        }
        false => None,
    };
    match sized {
        Some(sized) => Ok(sized),
        None => Ok(with_extras(arithmetic, &config, opts, &memory, &gpu).await),
    }
}

/// What llama-server would run for `model` with the options of `canRunModel` (its context and GPU
/// layers to be set).
fn config_of(model: &ModelSpec, opts: &RunOptions, binary: std::path::PathBuf) -> LlamaConfig {
    LlamaConfig {
        model_id: model.id.clone().unwrap_or_default(),
        model_path: model.path.clone().unwrap_or_default(),
        binary,
        parallel_requests: 1,
        cache_type_k: opts.cache_type_k,
        cache_type_v: opts.cache_type_v.or(opts.cache_type_k),
        tuning: super::tuning::Tuning {
            swa_full: opts.swa_full,
            cpu_moe: opts.cpu_moe,
            n_cpu_moe: opts.n_cpu_moe,
            ..Default::default()
        },
        extra_args: opts.extra_args.clone(),
        // The model's own projector and draft, loaded by a start unless it says otherwise.
        projector: model
            .component("mmproj")
            .filter(|_| opts.projector != Some(ProjectorRequest::Off))
            .map(|path| super::tasks::Projector {
                path: path.to_path_buf(),
                offload: opts.projector != Some(ProjectorRequest::Cpu),
            }),
        draft: model
            .component("draft")
            .filter(|_| opts.draft != Some(false))
            .map(|path| super::tasks::Draft {
                model_id: model.id.clone().unwrap_or_default(),
                path: path.to_path_buf(),
                gpu_layers: None,
                max_tokens: None,
                min_tokens: None,
            }),
        ..Default::default()
    }
}

/// {@link SystemInfo.getOptimalConfig} by llama.cpp's own figures where they can be had: the
/// largest context that they say fits, with the GPU layers the arithmetic fits at it. The
/// arithmetic's choice where llama.cpp cannot be asked (no installed llama-server or its tool,
/// no model file, a split over RPC workers) or says that nothing fits.
pub async fn optimal_config(
    system: &SystemInfo,
    binaries: &BinaryManager,
    data: &DataPaths,
    model: &ModelSpec,
    hints: &RunOptions,
) -> Result<OptimalConfig, SystemError> {
    let arithmetic = system.optimal_config(model, hints).await?;
    if !hints.rpc_workers.is_empty() || model.path.is_none() {
        return Ok(arithmetic);
    }
    let Some(binary) = binaries
        .locate(BinaryKind::LlamaServer, &EnsureOptions::default(), data)
        .await
    else {
        return Ok(arithmetic);
    };
    let (memory, gpu) = (system.memory(), system.gpu().await);
    let base = config_of(model, hints, binary);
    let fitting = first_fitting(&base, model, hints, data, &memory, &gpu).await;
    Ok(match fitting {
        Some((config, check)) => OptimalConfig {
            context_size: config.context_size,
            gpu_layers: config.gpu_layers,
            estimate: check.estimate,
            ..arithmetic
        },
        None => arithmetic,
    })
}

/// The first configuration, `base` at each context `hints` allow, largest first (with
/// `hints.gpuLayers`, or the layers the arithmetic fits at that context), that llama.cpp's own
/// figures (a calibration, else its dry run) say fits; `None` where none does or llama.cpp
/// cannot be asked. Each dry run is kept, so a start that asks again costs nothing.
pub async fn first_fitting(
    base: &LlamaConfig,
    model: &ModelSpec,
    hints: &RunOptions,
    data: &DataPaths,
    memory: &MemoryInfo,
    gpu: &GpuInfo,
) -> Option<(LlamaConfig, CanRun)> {
    let cache = hints.kv_cache();
    for context_size in context_candidates(model, hints) {
        let gpu_layers = hints
            .gpu_layers
            .unwrap_or_else(|| fit_gpu_layers(model, context_size, cache, gpu));
        let arithmetic = estimate(model, context_size, gpu_layers, cache);
        if beyond_machine(&arithmetic, memory, gpu) {
            continue;
        }
        let config = LlamaConfig {
            context_size,
            gpu_layers,
            ..base.clone()
        };
        let compute = arithmetic.compute;
        let check = by_llama_cpp(&config, Some(compute), data, hints, memory, gpu).await?;
        if check.possible {
            return Some((config, check));
        }
    }
    None
}

/// The arithmetic's `check` with the extra models of `config` (a projector, a draft) counted:
/// the verdict again on the sum. An extra model whose file cannot be read is left out (the
/// start then fails on it, naming it).
pub async fn with_extras(
    check: CanRun,
    config: &LlamaConfig,
    opts: &RunOptions,
    memory: &MemoryInfo,
    gpu: &GpuInfo,
) -> CanRun {
    match super::extras::memory(config, false).await {
        Ok(extras) if extras == super::extras::Memory::default() => check,
        Ok(extras) => CanRun {
            workers: check.workers,
            ..verdict(extras.added_to(check.estimate), opts, memory, gpu)
        },
        Err(why) => {
            tracing::warn!(%why, "an extra model is not counted");
            check
        }
    }
}

/// The verdict on llama.cpp's own figures for `config`: a stored calibration's
/// (`calibrate()`), else its dry run's; a "no" names the figures (each device's, for the dry
/// run). `None` where neither can be had: the arithmetic answers then.
pub async fn by_llama_cpp(
    config: &LlamaConfig,
    compute_cap: Option<u64>,
    data: &DataPaths,
    opts: &RunOptions,
    memory: &MemoryInfo,
    gpu: &GpuInfo,
) -> Option<CanRun> {
    let (estimate, figures) = match super::calibrate::measured(config, data).await {
        Some(measured) => {
            let figures = format!(
                "calibrate() measured it at {} MiB of RAM and {} MiB on the devices",
                measured.ram >> 20,
                measured.vram >> 20
            );
            (measured, figures)
        }
        None => match super::projected(config, compute_cap).await {
            Ok((projected, projection)) => (projected, format!("llama.cpp projects {projection}")),
            Err(why) => {
                tracing::debug!(%why, "sized by the GGUF arithmetic");
                return None;
            }
        },
    };
    let check = verdict(estimate, opts, memory, gpu);
    if check.possible {
        return Some(check);
    }
    let reason = format!("{figures}: {}", check.reason.as_deref().unwrap_or_default());
    Some(CanRun {
        reason: Some(reason),
        ..check
    })
}

/// The arithmetic asks for more than twice all the machine's memory (RAM and VRAM): no answer of
/// llama.cpp's could make it fit (the arithmetic overstates by 40 % at most), and its dry run
/// would itself take memory by the context's length (10 GB and 17 s for the chat model at
/// 200 million tokens). Such a configuration is refused by the arithmetic.
pub fn beyond_machine(arithmetic: &MemoryEstimate, memory: &MemoryInfo, gpu: &GpuInfo) -> bool {
    let machine = memory.total + gpu.vram_total.unwrap_or(0);
    arithmetic.ram + arithmetic.vram > machine.saturating_mul(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::estimate::EstimateSource;

    const GIB: u64 = 1 << 30;

    fn needing(ram: u64, vram: u64) -> MemoryEstimate {
        MemoryEstimate {
            ram,
            vram,
            weights: 0,
            kv_cache: 0,
            compute: 0,
            context_size: 2048,
            gpu_layers: 0,
            source: EstimateSource::Estimated,
        }
    }

    #[tokio::test]
    async fn the_context_chosen_is_the_largest_that_llama_cpp_says_fits() {
        let Some(real) = crate::testing::real_backends("llama-fit-params") else {
            return;
        };
        let path = |key: &str| std::path::PathBuf::from(real[key].as_str().unwrap());
        let model = super::super::extras::model_spec_of(&path("chatModel"))
            .await
            .unwrap();
        let base = crate::llama::tests::config(path("llamaServer"), path("chatModel"));
        let tmp = tempfile::tempdir().unwrap();
        let data = DataPaths::new(tmp.path().into(), crate::config::DataDirSource::Configured);
        let hints = RunOptions {
            gpu_layers: Some(0),
            ..Default::default()
        };
        let gpu = GpuInfo::default();
        let with_free = |available: u64| MemoryInfo {
            total: 64 * GIB,
            available,
            used: 64 * GIB - available,
        };
        let choose = |available: u64| {
            let (base, model, hints, data, gpu) = (&base, &model, &hints, &data, &gpu);
            async move {
                first_fitting(base, model, hints, data, &with_free(available), gpu)
                    .await
                    .map(|(config, check)| (config.context_size, check.estimate))
            }
        };
        let (context, at_8192) = choose(64 * GIB).await.unwrap();
        assert_eq!((context, at_8192.source), (8192, EstimateSource::Projected));
        // Free RAM between what llama.cpp projects at 4096 and at 8192 tokens: 4096 is chosen.
        let (_, at_4096) = {
            let small = RunOptions {
                context_size: Some(4096),
                ..hints.clone()
            };
            let (base, model, data) = (&base, &model, &data);
            first_fitting(base, model, &small, data, &with_free(64 * GIB), &gpu)
                .await
                .unwrap()
        };
        let reserve = 512 << 20;
        let between = (at_4096.estimate.ram + at_8192.ram) / 2 + reserve;
        let (context, estimate) = choose(between).await.unwrap();
        assert_eq!(context, 4096);
        assert_eq!(estimate, at_4096.estimate);
        // Less than the smallest context needs: nothing fits.
        assert!(choose(reserve + (10 << 20)).await.is_none());
    }

    #[test]
    fn only_what_twice_the_whole_machine_cannot_hold_is_past_asking() {
        let memory = MemoryInfo {
            total: 16 * GIB,
            available: 4 * GIB,
            used: 12 * GIB,
        };
        let gpu = GpuInfo {
            vram_total: Some(8 * GIB),
            ..Default::default()
        };
        // More than is free, but llama.cpp may still say it fits: it is asked.
        assert!(!beyond_machine(&needing(20 * GIB, 0), &memory, &gpu));
        assert!(!beyond_machine(&needing(30 * GIB, 18 * GIB), &memory, &gpu));
        assert!(beyond_machine(&needing(30 * GIB, 19 * GIB), &memory, &gpu));
        assert!(beyond_machine(
            &needing(33 * GIB, 0),
            &memory,
            &GpuInfo::default()
        ));
    }
}
