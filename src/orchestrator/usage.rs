//! What each side uses or will use: a running process by what it holds (never less than its
//! RSS), otherwise by its estimate. For the LLM that is the estimate behind `canRunModel` with the
//! server's context, GPU layers and KV-cache types: llama.cpp's projection where its tool is
//! beside llama-server, else the GGUF arithmetic (split over RPC workers, only this machine's
//! share); for an image its model's files plus a working set that grows with width × height,
//! calibrated on the real sd-cli.

use serde::Serialize;
use ts_rs::TS;

use crate::config::DataPaths;
use crate::diffusion::backend::DeviceUse;
use crate::diffusion::request::ImageShape;
use crate::llama::LlamaConfig;
use crate::llama::tasks::Mode;
use crate::process::memory::TreeMemory;
use crate::system::estimate::{EstimateSource, MemoryEstimate, ModelSpec};

/// Where a {@link ResourceUsage} comes from: `measured`, a running process, or before it runs a
/// calibration of its configuration (a running process is never counted as
/// less than what it uses); `projected`, llama.cpp's own dry run of the LLM's configuration
/// (`llama-fit-params`); `estimated`, by arithmetic; `none`, nothing runs and nothing is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "lowercase")]
#[ts(rename = "UsageSource")]
pub enum Source {
    Measured,
    Projected,
    Estimated,
    None,
}

/// What one side uses or will use, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[ts(rename = "ResourceUsage")]
pub struct Usage {
    /// What counts: the larger of `estimated` and `measured`.
    pub ram: u64,
    pub vram: u64,
    pub source: Source,
    /// Before it runs: llama.cpp's projection for the LLM where its tool answers, else
    /// arithmetic (GGUF for the LLM; files and working set for an image).
    pub estimated: Memory,
    /// What the running process tree uses now; `null` when none runs.
    pub measured: Option<Memory>,
}

impl Usage {
    pub const NONE: Usage = Usage {
        ram: 0,
        vram: 0,
        source: Source::None,
        estimated: Memory { ram: 0, vram: 0 },
        measured: None,
    };

    pub fn of(estimated: Memory, measured: Option<&TreeMemory>) -> Usage {
        let measured = measured.map(Memory::held_by);
        Usage {
            ram: estimated.ram.max(measured.map_or(0, |m| m.ram)),
            vram: estimated.vram.max(measured.map_or(0, |m| m.vram)),
            source: if measured.is_some() {
                Source::Measured
            } else {
                Source::Estimated
            },
            estimated,
            measured,
        }
    }

    /// Several together: the sums, `measured` while every part is, and the least certain source
    /// (none for no parts).
    pub fn total<'a>(parts: impl IntoIterator<Item = &'a Usage>) -> Usage {
        let add = |a: Memory, b: Memory| Memory {
            ram: a.ram + b.ram,
            vram: a.vram + b.vram,
        };
        let zero = Memory { ram: 0, vram: 0 };
        let mut total: Option<Usage> = None;
        for part in parts {
            let sum = total.unwrap_or(Usage {
                source: Source::Measured,
                measured: Some(zero),
                ..Usage::NONE
            });
            total = Some(Usage {
                ram: sum.ram + part.ram,
                vram: sum.vram + part.vram,
                source: [Source::Estimated, Source::Projected]
                    .into_iter()
                    .find(|s| [sum.source, part.source].contains(s))
                    .unwrap_or(sum.source),
                estimated: add(sum.estimated, part.estimated),
                measured: sum.measured.zip(part.measured).map(|(a, b)| add(a, b)),
            });
        }
        total.unwrap_or(Usage::NONE)
    }

    /// The same, its estimate being llama.cpp's projection (where nothing measured counts).
    pub fn projected_by(self, source: EstimateSource) -> Usage {
        match (self.source, source) {
            (Source::Estimated, EstimateSource::Projected) => Usage {
                source: Source::Projected,
                ..self
            },
            (Source::Estimated, EstimateSource::Measured) => Usage {
                source: Source::Measured,
                ..self
            },
            _ => self,
        }
    }
}

/// Bytes of RAM and of VRAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[ts(rename = "ResourceBytes")]
pub struct Memory {
    pub ram: u64,
    pub vram: u64,
}

impl Memory {
    /// What a process tree holds (VRAM 0 where NVML cannot tell).
    pub fn held_by(tree: &TreeMemory) -> Memory {
        Memory {
            ram: tree.rss_bytes,
            vram: tree.vram_bytes.unwrap_or(0),
        }
    }
}

/// What runs out first: VRAM when either side uses the GPU, else RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum Bottleneck {
    Ram,
    Vram,
}

impl Bottleneck {
    /// What `usage` needs of it.
    pub fn of(self, usage: &Usage) -> u64 {
        self.of_memory(Memory {
            ram: usage.ram,
            vram: usage.vram,
        })
    }

    pub fn of_memory(self, memory: Memory) -> u64 {
        match self {
            Bottleneck::Ram => memory.ram,
            Bottleneck::Vram => memory.vram,
        }
    }
}

/// What the running llama servers and an image need, what is free, and which servers must make
/// room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "ResourceEstimate")]
pub struct Estimate {
    /// The running llama servers together.
    pub llm: Usage,
    /// Each running llama server, and whether this image needs it offloaded.
    pub servers: Vec<ServerUsage>,
    pub diffusion: Usage,
    /// Free now, as the system reports it.
    pub available: Memory,
    /// What the servers together may use: the budget, or what is free plus what they hold.
    pub budget: Memory,
    pub bottleneck: Bottleneck,
    /// A llama server runs, and they and the image plus the headroom exceed the budget: the
    /// servers marked `offload` go.
    pub needs_offload: bool,
}

/// One running llama server as the orchestrator weighs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct ServerUsage {
    /// Its place among the orchestrator's llama servers (0: `llamaServer`, the first given).
    pub server: usize,
    pub mode: Mode,
    /// Its public port.
    pub port: Option<u16>,
    pub usage: Usage,
    /// Milliseconds since its gateway last served a request (or since it started).
    #[ts(type = "number")]
    pub idle_ms: u64,
    /// The image needs it offloaded (chosen by the policy in `docs/API.md`).
    pub offload: bool,
}

/// What the running LLM uses: by its estimate (or its share of a split), never less than what
/// its process holds.
pub async fn llm(config: &LlamaConfig, data: &DataPaths, measured: Option<&TreeMemory>) -> Usage {
    // Split over RPC workers, most of the model lives elsewhere: only this machine's share
    // counts, as sized from what the workers reported at start.
    let (ram, vram, source) = match (&config.shares, config.rpc_workers.is_empty()) {
        (_, true) => llm_estimate(config, data)
            .await
            .map_or((0, 0, EstimateSource::Estimated), |e| {
                (e.ram, e.vram, e.source)
            }),
        (Some(shares), false) => (shares.local.ram, shares.local.vram, shares.local.source),
        // Unsized (a worker's protocol unknown here): what its process holds is all we know.
        (None, false) => (0, 0, EstimateSource::Estimated),
    };
    Usage::of(Memory { ram, vram }, measured).projected_by(source)
}

/// A diffusion model's files, in bytes: all of them, and those a GPU would hold (the text
/// encoders and the VAE stay on the CPU when sd is told so).
#[derive(Debug, Clone, Copy)]
pub struct ImageModel {
    pub files: u64,
    pub on_device: u64,
    /// Made by sd-cli or by a resident sd-server (which holds a little more).
    pub backend: crate::diffusion::backend::BackendKind,
}

/// What an image of `width` × `height` needs beside its `model`. On a GPU (`device`: what it may
/// take of one usable here) the files it holds and the working set go to VRAM too, up to
/// `--max-vram`'s cap; the RAM figure stays whole, as the files are read through it (and a
/// software device such as lavapipe is RAM).
pub fn image(
    model: ImageModel,
    shape: &ImageShape,
    device: Option<DeviceUse>,
    measured: Option<&TreeMemory>,
) -> Usage {
    let working_set = crate::diffusion::working_set_of(model.backend, shape.width, shape.height)
        + shape.encoding_bytes();
    let on_device = model.on_device + working_set;
    let vram = match device {
        None | Some(DeviceUse::None) => 0,
        Some(DeviceUse::Capped(cap)) => on_device.min(cap),
        Some(DeviceUse::Whole) => on_device,
    };
    let ram = model.files + working_set;
    Usage::of(Memory { ram, vram }, measured)
}

/// What the LLM's configuration needs: a stored calibration of it, else llama.cpp's projection
/// where its tool answers, else the GGUF arithmetic behind `canRunModel`.
pub async fn llm_estimate(config: &LlamaConfig, data: &DataPaths) -> Option<MemoryEstimate> {
    if let Some(measured) = crate::llama::calibrate::measured(config, data).await {
        return Some(measured);
    }
    let arithmetic = match crate::models::store::read(data, &config.model_id).await {
        Ok(info) => ModelSpec::of(&info).ok().map(|spec| {
            crate::system::estimate::estimate(
                &spec,
                config.context_size,
                config.gpu_layers,
                crate::llama::kv_cache_of(config),
            )
        }),
        Err(_) => None,
    };
    match crate::llama::projected(config, arithmetic.map(|a| a.compute)).await {
        Ok((projected, _)) => return Some(projected),
        Err(why) => tracing::debug!(%why, "the LLM is sized by the GGUF arithmetic"),
    }
    let extras = crate::llama::extras::memory(config, false)
        .await
        .unwrap_or_else(|why| {
            tracing::warn!(%why, "an extra model is not counted");
            Default::default()
        });
    arithmetic.map(|a| extras.added_to(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projected_estimate_says_so_until_a_process_is_measured() {
        let need = Memory { ram: 5, vram: 7 };
        let before = Usage::of(need, None).projected_by(EstimateSource::Projected);
        assert_eq!(
            (before.source, before.ram, before.vram),
            (Source::Projected, 5, 7)
        );
        let arithmetic = Usage::of(need, None).projected_by(EstimateSource::Estimated);
        assert_eq!(arithmetic.source, Source::Estimated);
        let tree = TreeMemory {
            pids: vec![1],
            rss_bytes: 9,
            vram_bytes: None,
        };
        let running = Usage::of(need, Some(&tree)).projected_by(EstimateSource::Projected);
        assert_eq!((running.source, running.ram), (Source::Measured, 9));
    }

    #[test]
    fn an_image_on_a_gpu_takes_its_model_and_working_set_there_up_to_the_cap() {
        let working_set = crate::diffusion::working_set(256, 256);
        // 300 MiB of files, of which 200 MiB go to the GPU (the rest kept on the CPU).
        let model = ImageModel {
            files: 300 << 20,
            on_device: 200 << 20,
            backend: crate::diffusion::backend::BackendKind::OneShot,
        };
        let side = ImageShape {
            width: 256,
            height: 256,
            ..Default::default()
        };
        let vram = |device| image(model, &side, device, None).vram;
        assert_eq!(vram(None), 0, "no GPU usable here");
        assert_eq!(vram(Some(DeviceUse::None)), 0, "gpuLayers: 0");
        assert_eq!(vram(Some(DeviceUse::Whole)), (200 << 20) + working_set);
        assert_eq!(vram(Some(DeviceUse::Capped(100 << 20))), 100 << 20);
        assert_eq!(
            vram(Some(DeviceUse::Capped(u64::MAX))),
            (200 << 20) + working_set
        );
        let on_gpu = image(model, &side, Some(DeviceUse::Whole), None);
        assert_eq!(
            (on_gpu.ram, on_gpu.source),
            ((300 << 20) + working_set, Source::Estimated)
        );
        // An init image and a reference image to encode.
        let edit = ImageShape {
            encoded_images: 2,
            ..side
        };
        let encoding = 2 * crate::diffusion::ENCODE_PER_IMAGE;
        assert_eq!(image(model, &edit, None, None).ram, on_gpu.ram + encoding);
    }
}
