//! The models a llama-server loads beside its main one, as its argument vector asks (from the
//! model's components, see [`super::tasks`], or `extraArgs`): a vision projector (`--mmproj`) and
//! a draft model for speculative decoding (`--model-draft`). Each is sized where it will run and added to the main model's estimate:
//! the draft by llama.cpp's dry run where the tool answers (its own model, its KV cache at the
//! main context, its compute), else by the GGUF arithmetic; the projector by its GGUF (weights,
//! and the compute buffer clip reserves for one image tile).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::models::gguf::{self, GgufMetadata, ParseOptions};
use crate::system::estimate::{
    GgufFacts, KvCache, KvCacheType, MemoryEstimate, ModelSpec, ProjectorSpec, SERVER_BASE_RAM,
    driver_ram, estimate,
};

use super::LlamaConfig;
use super::projection;

/// llama-server's flags for the extra models, and whether each takes a value. They change what
/// is allocated (a calibration is keyed by them), but the dry-run tool does not take them.
pub const FLAGS: &[(&str, bool)] = &[
    ("--mmproj", true),
    ("-mm", true),
    ("--no-mmproj", false),
    ("--no-mmproj-auto", false),
    ("--mmproj-offload", false),
    ("--no-mmproj-offload", false),
    ("--spec-draft-model", true),
    ("--model-draft", true),
    ("-md", true),
    ("--spec-draft-ngl", true),
    ("--gpu-layers-draft", true),
    ("--n-gpu-layers-draft", true),
    ("-ngld", true),
    ("--spec-draft-type-k", true),
    ("--cache-type-k-draft", true),
    ("-ctkd", true),
    ("--spec-draft-type-v", true),
    ("--cache-type-v-draft", true),
    ("-ctvd", true),
    ("--spec-draft-device", true),
    ("--device-draft", true),
    ("-devd", true),
];

/// The extra models of an argument vector; the last of a repeated flag wins, as in llama.cpp.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extras {
    pub projector: Option<Projector>,
    pub draft: Option<Draft>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Projector {
    pub path: PathBuf,
    /// On the main model's GPU (llama-server's default), unless `--no-mmproj-offload`.
    pub offload: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub path: PathBuf,
    /// `-ngld`: a count, or `None` for llama.cpp's default (every layer where the main model
    /// has a GPU).
    pub gpu_layers: Option<u32>,
    /// The draft's own KV-cache types (`-ctkd`, `-ctvd`; f16 by default, not the main's).
    pub cache_k: Option<KvCacheType>,
    pub cache_v: Option<KvCacheType>,
    /// `-devd none`: kept off every device.
    pub off_devices: bool,
}

impl Extras {
    pub fn of(args: &[String]) -> Extras {
        let mut projector_path = None;
        let mut offload = true;
        let mut draft_path = None;
        let mut draft = Draft {
            path: PathBuf::new(),
            gpu_layers: None,
            cache_k: None,
            cache_v: None,
            off_devices: false,
        };
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let Some(&(_, takes_value)) = FLAGS.iter().find(|(f, _)| f == flag) else {
                continue;
            };
            let value = if takes_value { rest.next() } else { None };
            match (flag.as_str(), value) {
                ("--mmproj" | "-mm", Some(path)) => projector_path = Some(PathBuf::from(path)),
                ("--no-mmproj" | "--no-mmproj-auto", _) => projector_path = None,
                ("--mmproj-offload", _) => offload = true,
                ("--no-mmproj-offload", _) => offload = false,
                ("--spec-draft-model" | "--model-draft" | "-md", Some(path)) => {
                    draft_path = Some(PathBuf::from(path));
                }
                (
                    "--spec-draft-ngl" | "--gpu-layers-draft" | "--n-gpu-layers-draft" | "-ngld",
                    Some(n),
                ) => draft.gpu_layers = n.parse().ok(),
                ("--spec-draft-type-k" | "--cache-type-k-draft" | "-ctkd", Some(t)) => {
                    draft.cache_k = cache_type(t);
                }
                ("--spec-draft-type-v" | "--cache-type-v-draft" | "-ctvd", Some(t)) => {
                    draft.cache_v = cache_type(t);
                }
                ("--spec-draft-device" | "--device-draft" | "-devd", Some(d)) => {
                    draft.off_devices = d == "none";
                }
                _ => {}
            }
        }
        Extras {
            projector: projector_path.map(|path| Projector { path, offload }),
            draft: draft_path.map(|path| Draft { path, ..draft }),
        }
    }
}

fn cache_type(name: &str) -> Option<KvCacheType> {
    KvCacheType::deserialize(serde_json::Value::from(name)).ok()
}

impl Draft {
    /// Its layers on a GPU beside a main model of `config`, of `layers` blocks.
    fn layers_on_gpu(&self, config: &LlamaConfig, layers: u32) -> u32 {
        if self.off_devices || super::on_cpu_only(config) {
            return 0;
        }
        self.gpu_layers.unwrap_or(layers + 1)
    }

    /// Its own KV types; flash attention as the main model's.
    fn cache(&self, config: &LlamaConfig) -> KvCache {
        let k = self.cache_k.unwrap_or_default();
        KvCache {
            k,
            v: self.cache_v.unwrap_or(k),
            swa_full: false,
            flash_attention_off: super::kv_cache_of(config).flash_attention_off,
        }
    }
}

/// Bytes the extra models hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub ram: u64,
    pub vram: u64,
    pub weights: u64,
    pub kv_cache: u64,
    pub compute: u64,
}

impl Memory {
    fn add(self, other: Memory) -> Memory {
        Memory {
            ram: self.ram + other.ram,
            vram: self.vram + other.vram,
            weights: self.weights + other.weights,
            kv_cache: self.kv_cache + other.kv_cache,
            compute: self.compute + other.compute,
        }
    }

    /// `base` with these added; a GPU driver's memory is counted once.
    pub fn added_to(self, base: MemoryEstimate) -> MemoryEstimate {
        let vram = base.vram + self.vram;
        MemoryEstimate {
            ram: base.ram + self.ram + driver_ram(vram) - driver_ram(base.vram),
            vram,
            weights: base.weights + self.weights,
            kv_cache: base.kv_cache + self.kv_cache,
            compute: base.compute + self.compute,
            ..base
        }
    }
}

/// What the extra models of `config` hold, where they run. `projected`: the draft by llama.cpp's
/// dry run where its tool answers (else, and for the projector, the GGUF arithmetic). `Ok` with
/// nothing where `config` loads none; `Err` where a file named cannot be read.
pub async fn memory(config: &LlamaConfig, projected: bool) -> Result<Memory, String> {
    // The config's projector and draft, or those `extraArgs` name in their place.
    let extras = Extras::of(&super::args(config, "127.0.0.1", 0));
    let mut memory = Memory::default();
    if let Some(projector) = &extras.projector {
        let spec = projector_spec(&projector.path).await?;
        let compute = spec.compute_bytes(super::kv_cache_of(config).flash_attention_off);
        let bytes = spec.weights + compute;
        let on_gpu = projector.offload && !super::on_cpu_only(config);
        memory = memory.add(Memory {
            ram: if on_gpu { 0 } else { bytes },
            vram: if on_gpu { bytes } else { 0 },
            weights: spec.weights,
            kv_cache: 0,
            compute,
        });
    }
    if let Some(draft) = &extras.draft {
        let spec = model_spec_of(&draft.path).await?;
        let by_tool = match projected {
            true => draft_projected(config, draft, &spec).await,
            false => Err("not asked".into()),
        };
        memory = memory.add(match by_tool {
            Ok(memory) => memory,
            Err(why) => {
                tracing::debug!(%why, "the draft model is sized by the GGUF arithmetic");
                draft_arithmetic(config, draft, &spec)
            }
        });
    }
    Ok(memory)
}

async fn metadata(path: &Path) -> Result<GgufMetadata, String> {
    gguf::read_file(path, ParseOptions::default())
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

async fn projector_spec(path: &Path) -> Result<ProjectorSpec, String> {
    let meta = metadata(path).await?;
    let number = |key: &str| {
        meta.raw
            .get(&format!("clip.vision.{key}"))
            .and_then(|v| v.as_u64())
            .map_or(0, |n| n as u32)
    };
    Ok(ProjectorSpec {
        weights: meta.tensor_data_size.unwrap_or(meta.required_file_size),
        image_size: number("image_size"),
        patch_size: number("patch_size"),
        embedding_length: number("embedding_length"),
        feed_forward_length: number("feed_forward_length"),
        head_count: number("attention.head_count"),
    })
}

/// The draft's own dry run: its model at the main model's context and slots, with its layers
/// and KV types, on the main model's devices.
async fn draft_projected(
    config: &LlamaConfig,
    draft: &Draft,
    spec: &ModelSpec,
) -> Result<Memory, String> {
    let cache = draft.cache(config);
    let mut args: Vec<String> = vec![
        "--model".into(),
        draft.path.to_string_lossy().into_owned(),
        "--ctx-size".into(),
        config.context_size.to_string(),
        "--n-gpu-layers".into(),
        draft.layers_on_gpu(config, spec.layers()).to_string(),
        "--parallel".into(),
        config.parallel_requests.to_string(),
        "--cache-type-k".into(),
        cache.k.as_str().into(),
        "--cache-type-v".into(),
        cache.v.as_str().into(),
    ];
    if let Some(fa) = &config.flash_attention {
        args.extend(["--flash-attn".into(), fa.clone()]);
    }
    if draft.off_devices || super::on_cpu_only(config) {
        args.extend(["--device".into(), "none".into()]);
    }
    let tool = projection::tool_beside(&config.binary);
    let env = super::tool_env(config);
    let projection = projection::project(&tool, &draft.path, &args, &env).await?;
    let cap = spec.compute_bytes(config.context_size, cache);
    let projection = projection.compute_at_most(cap.unwrap_or(u64::MAX));
    let (devices, all) = (projection.on_devices(), projection.all());
    Ok(Memory {
        ram: projection.host.total(),
        vram: devices.total(),
        weights: all.model,
        kv_cache: all.context,
        compute: all.compute,
    })
}

/// The draft by the arithmetic of any model, less what the main model's process already counts.
fn draft_arithmetic(config: &LlamaConfig, draft: &Draft, spec: &ModelSpec) -> Memory {
    let layers = draft.layers_on_gpu(config, spec.layers());
    let e = estimate(spec, config.context_size, layers, draft.cache(config));
    Memory {
        ram: e.ram - SERVER_BASE_RAM - driver_ram(e.vram),
        vram: e.vram,
        weights: e.weights,
        kv_cache: e.kv_cache,
        compute: e.compute,
    }
}

/// The sizing facts of a model's GGUF file.
pub async fn model_spec_of(path: &Path) -> Result<ModelSpec, String> {
    let meta = metadata(path).await?;
    let facts = serde_json::to_value(&meta)
        .ok()
        .and_then(|v| GgufFacts::deserialize(v).ok());
    Ok(ModelSpec {
        id: None,
        size: meta.tensor_data_size.unwrap_or(meta.required_file_size) as f64,
        gguf_metadata: facts,
        path: Some(path.to_path_buf()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_extra_models_are_read_from_the_flags_as_llama_cpp_reads_them() {
        assert_eq!(Extras::of(&args("--jinja -c 4096")), Extras::default());
        let extras = Extras::of(&args(
            "--mmproj a.gguf --no-mmproj-offload -md d.gguf -ngld 3 -ctkd q8_0 --jinja",
        ));
        assert_eq!(
            extras.projector,
            Some(Projector {
                path: "a.gguf".into(),
                offload: false
            })
        );
        let draft = extras.draft.unwrap();
        assert_eq!(draft.path, PathBuf::from("d.gguf"));
        assert_eq!(draft.gpu_layers, Some(3));
        assert_eq!(
            (draft.cache_k, draft.cache_v),
            (Some(KvCacheType::Q8_0), None)
        );
        assert!(!draft.off_devices);
        // The last of a repeated flag wins; --no-mmproj drops the projector.
        let extras = Extras::of(&args(
            "-mm a.gguf --mmproj b.gguf --model-draft d.gguf --spec-draft-model e.gguf -devd none",
        ));
        assert_eq!(extras.projector.unwrap().path, PathBuf::from("b.gguf"));
        let draft = extras.draft.unwrap();
        assert_eq!(draft.path, PathBuf::from("e.gguf"));
        assert!(draft.off_devices);
        assert!(
            Extras::of(&args("--mmproj a.gguf --no-mmproj"))
                .projector
                .is_none()
        );
        // `auto`/`all` leave llama.cpp's default (every layer where the main model has a GPU).
        let draft = Extras::of(&args("-md d.gguf -ngld all")).draft.unwrap();
        assert_eq!(draft.gpu_layers, None);
    }

    /// The chat model's config on `gpu_layers` with `extra` flags, the real llama-server beside.
    fn config_with(real: &serde_json::Value, gpu_layers: u32, extra: &str) -> LlamaConfig {
        let path = |key: &str| real[key].as_str().unwrap().to_string();
        let mut config =
            crate::llama::tests::config(path("llamaServer").into(), path("chatModel").into());
        config.context_size = 2048;
        config.gpu_layers = gpu_layers;
        config.extra_args = args(
            &extra
                .replace("MMPROJ", real["shapedModels"]["mmproj"].as_str().unwrap())
                .replace("DRAFT", real["shapedModels"]["draft"].as_str().unwrap()),
        );
        config
    }

    #[tokio::test]
    async fn the_real_projector_and_draft_are_sized_where_they_run() {
        let Some(real) = crate::testing::real_backends("shaped models") else {
            return;
        };
        let sized = |gpu_layers, extra: &str, projected| {
            let config = config_with(&real, gpu_layers, extra);
            async move { memory(&config, projected).await.unwrap() }
        };
        assert_eq!(sized(0, "--jinja", false).await, Memory::default());
        // The tiny projector: its weights (its file less the header), its compute buffer, on
        // the model's GPU unless told otherwise, on the CPU where the model is.
        let on_cpu = sized(0, "--mmproj MMPROJ", false).await;
        assert_eq!(on_cpu.vram, 0);
        let file = std::fs::metadata(real["shapedModels"]["mmproj"].as_str().unwrap()).unwrap();
        assert!(
            on_cpu.weights <= file.len() && on_cpu.weights > file.len() - 8192,
            "{on_cpu:?}"
        );
        assert_eq!(on_cpu.ram, on_cpu.weights + on_cpu.compute);
        let on_gpu = sized(31, "--mmproj MMPROJ", false).await;
        assert_eq!((on_gpu.ram, on_gpu.vram), (0, on_cpu.ram));
        let kept = sized(31, "--mmproj MMPROJ --no-mmproj-offload", false).await;
        assert_eq!((kept.ram, kept.vram), (on_cpu.ram, 0));
        // The tiny draft: every layer on the model's GPU by default, none with -ngld 0 or
        // -devd none; its KV cache at the main context (2 layers, 64 wide, f16: 1 MiB), and
        // q8_0 with -ctkd/-ctvd.
        let draft = sized(31, "-md DRAFT", false).await;
        assert!(
            draft.vram > draft.weights && draft.ram < 1 << 20,
            "{draft:?}"
        );
        assert_eq!(draft.kv_cache, 1 << 20);
        for kept in ["-md DRAFT -ngld 0", "-md DRAFT -devd none"] {
            let draft = sized(31, kept, false).await;
            assert_eq!(draft.vram, 0, "{kept}");
        }
        let quantized = sized(0, "-md DRAFT -ctkd q8_0 -ctvd q8_0", false).await;
        assert_eq!(quantized.kv_cache, (1 << 20) * 34 / 64);
        // llama.cpp's dry run of the draft agrees with the arithmetic on its weights and KV.
        let projected = sized(0, "-md DRAFT", true).await;
        let arithmetic = sized(0, "-md DRAFT", false).await;
        assert_eq!(projected.vram, 0);
        assert!(
            projected.kv_cache >= arithmetic.kv_cache
                && projected.kv_cache <= arithmetic.kv_cache + (1 << 20)
        );
        assert!(
            projected.weights.abs_diff(arithmetic.weights) < 2 << 20,
            "{projected:?} {arithmetic:?}"
        );
        // A file that is not there is an error that names it.
        let config = config_with(&real, 0, "--mmproj /no/such.gguf");
        assert!(
            memory(&config, false)
                .await
                .unwrap_err()
                .contains("/no/such.gguf")
        );
    }

    #[test]
    fn the_extras_count_where_they_run_and_the_driver_once() {
        let base = MemoryEstimate {
            ram: 300,
            vram: 0,
            weights: 100,
            kv_cache: 50,
            compute: 10,
            context_size: 2048,
            gpu_layers: 0,
            source: crate::system::estimate::EstimateSource::Estimated,
        };
        let on_cpu = Memory {
            ram: 40,
            vram: 0,
            weights: 30,
            kv_cache: 0,
            compute: 10,
        };
        let sum = on_cpu.added_to(base);
        assert_eq!(
            (sum.ram, sum.vram, sum.weights, sum.compute),
            (340, 0, 130, 20)
        );
        let on_gpu = Memory {
            ram: 0,
            vram: 40,
            ..on_cpu
        };
        // The main model on the CPU, its projector on a GPU: the driver comes with the projector.
        let sum = on_gpu.added_to(base);
        assert_eq!((sum.ram, sum.vram), (300 + driver_ram(40), 40));
        // Both on a GPU: the driver was counted with the main model.
        let sum = on_gpu.added_to(MemoryEstimate { vram: 60, ..base });
        assert_eq!((sum.ram, sum.vram), (300, 100));
    }
}
