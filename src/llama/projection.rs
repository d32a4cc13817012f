//! llama.cpp's own projection of what a configuration will hold, per device and on the host.
//!
//! `llama-fit-params --fit-print on` (built with llama-server from the same sources, and shipped
//! beside it in llama.cpp's releases) makes the dry run llama-server makes before a load: it reads
//! the model's header, builds the graph and sizes every buffer without allocating one, then
//! prints a line per device and one for the host: `<name> <model> <context> <compute>` in MiB.
//! Those are the weights and KV cache llama-server then allocates (within a MiB each: the tool
//! rounds down, we round up), with the weights that stay on the host (the token embeddings), and
//! the KV cache of sliding-window and mixture-of-experts models as llama.cpp lays it out. Its
//! compute part is sized for the logits of every token of a batch, where llama-server keeps one
//! output a slot, so the caller caps it ([`Projection::compute_at_most`]) by the GGUF
//! arithmetic's, itself an over-estimate (+20 % of the RAM of a small model).
//!
//! It runs a process (a few hundred milliseconds, most of it backend start-up), so a projection
//! is kept per tool, model file and configuration: neither depends on free memory (the print
//! mode fits nothing). A tool that is missing or fails leaves the caller with the arithmetic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use crate::process::{ProcessSpec, spawn};
use crate::sync::lock;

const MIB: u64 = 1 << 20;
/// A dry run reads the header and sizes buffers; a busy machine may take a few seconds.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The tool's file name, beside llama-server.
pub fn tool_beside(llama_server: &Path) -> PathBuf {
    llama_server.with_file_name(format!("llama-fit-params{}", std::env::consts::EXE_SUFFIX))
}

/// Bytes one device (or the host) will hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Parts {
    pub model: u64,
    pub context: u64,
    pub compute: u64,
}

impl Parts {
    pub fn total(&self) -> u64 {
        self.model + self.context + self.compute
    }

    fn add(self, other: Parts) -> Parts {
        Parts {
            model: self.model + other.model,
            context: self.context + other.context,
            compute: self.compute + other.compute,
        }
    }
}

/// What a configuration will hold, as llama.cpp projects it (or, in [`Allocated`], holds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    /// Each device llama.cpp would use, by its name (`Vulkan0`, `CUDA0`, …).
    pub devices: Vec<(String, Parts)>,
    pub host: Parts,
}

impl Projection {
    /// All devices together.
    pub fn on_devices(&self) -> Parts {
        self.devices
            .iter()
            .fold(Parts::default(), |sum, (_, parts)| sum.add(*parts))
    }

    /// The same with no device's (nor the host's) compute part above `cap`.
    pub fn compute_at_most(self, cap: u64) -> Projection {
        let capped = |parts: Parts| Parts {
            compute: parts.compute.min(cap),
            ..parts
        };
        Projection {
            devices: self
                .devices
                .into_iter()
                .map(|(name, parts)| (name, capped(parts)))
                .collect(),
            host: capped(self.host),
        }
    }

    /// The whole configuration: devices and host.
    pub fn all(&self) -> Parts {
        self.on_devices().add(self.host)
    }
}

/// `Vulkan0 153 MiB (model 93 + context 46 + compute 14), host 34 MiB (…)`: what a refusal names.
impl std::fmt::Display for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let named = self
            .devices
            .iter()
            .map(|(name, parts)| (name.as_str(), parts));
        for (i, (name, parts)) in named.chain([("host", &self.host)]).enumerate() {
            let mib = |bytes: u64| bytes / MIB;
            write!(
                f,
                "{}{name} {} MiB (model {} + context {} + compute {})",
                if i > 0 { ", " } else { "" },
                mib(parts.total()),
                mib(parts.model),
                mib(parts.context),
                mib(parts.compute)
            )?;
        }
        Ok(())
    }
}

/// The buffers llama-server reports as it loads, at `--log-verbosity 4`:
/// `load_tensors:      Vulkan0 model buffer size =    92.10 MiB`, `… KV buffer size …`,
/// `sched_reserve:    Vulkan0 compute buffer size =    13.26 MiB`; buffers of a `CPU…` or
/// `…_Host` type are the host's. A draft model's load follows the main model's and adds to it;
/// a vision projector's weights are one line (`load_hparams: model size: 1.01 MiB`) on the
/// backend clip said it uses. A restart's lines replace the last load's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocated {
    pub buffers: Projection,
    /// What the load says it runs with (the main model's).
    pub running: RunningWith,
    /// A compute buffer was seen: the load's last lines. Weights after it are a new load's,
    /// unless a draft model was announced.
    loaded: bool,
    /// The lines are a draft model's, loaded beside the main one.
    draft: bool,
    /// The backend the vision projector runs on (`CPU`, `Vulkan0`).
    clip_backend: Option<String>,
}

/// What llama-server says it runs with as it loads: `load_tensors: offloaded 31/31 layers to
/// GPU`, `llama_context: n_ctx = 2048`, `load_model: initializing, n_slots = 1, …`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "LlamaRunningWith")]
pub struct RunningWith {
    /// Layers on devices (llama.cpp's count: each block, then the output layer).
    pub gpu_layers: Option<u32>,
    /// The model's layers in that count.
    pub layers: Option<u32>,
    pub context_size: Option<u32>,
    pub parallel_requests: Option<u32>,
}

impl Allocated {
    pub fn read(&mut self, line: &str) {
        if line.contains("llama_server: initializing") {
            // A process's first line: a restart's load replaces the last one.
            *self = Allocated::default();
            return;
        }
        if line.contains("loading draft model") {
            self.draft = true;
            return;
        }
        if let Some(backend) = line
            .split_once("CLIP using ")
            .and_then(|(_, r)| r.split_once(" backend"))
        {
            self.clip_backend = Some(backend.0.to_string());
            return;
        }
        if let (Some(backend), Some(mib)) = (
            &self.clip_backend,
            mib_after(line, "load_hparams: model size:"),
        ) {
            let name = backend.clone();
            self.add(&name, "model", mib);
            return;
        }
        if let Some(layers) = offloaded(line) {
            // The first line of a load: without a draft announced, a restart's.
            if self.loaded && !self.draft {
                *self = Allocated::default();
            }
            if !self.draft {
                (self.running.gpu_layers, self.running.layers) = (Some(layers.0), Some(layers.1));
            }
            return;
        }
        if let Some(n) = number_after(line, "llama_context: n_ctx ", "=") {
            if !self.draft {
                self.running.context_size = Some(n);
            }
            return;
        }
        if let Some(n) = number_after(line, "initializing, n_slots", "=") {
            self.running.parallel_requests = Some(n);
            return;
        }
        let Some((name, kind, bytes)) = buffer_line(line) else {
            return;
        };
        if kind == "model" && self.loaded && !self.draft {
            *self = Allocated::default();
        }
        self.add(name, kind, bytes);
        self.loaded |= kind == "compute";
    }

    fn add(&mut self, name: &str, kind: &str, bytes: u64) {
        let add = |parts: &mut Parts| match kind {
            "model" => parts.model += bytes,
            "KV" | "RS" => parts.context += bytes,
            _ => parts.compute += bytes,
        };
        let devices = &mut self.buffers.devices;
        let parts = if name.starts_with("CPU") || name.ends_with("_Host") {
            &mut self.buffers.host
        } else {
            let at = devices
                .iter()
                .position(|(n, _)| n == name)
                .unwrap_or_else(|| {
                    devices.push((name.to_string(), Parts::default()));
                    devices.len() - 1
                });
            &mut devices[at].1
        };
        add(parts);
    }
}

/// The bytes of `… <marker> 1.01 MiB`.
fn mib_after(line: &str, marker: &str) -> Option<u64> {
    mib_of(line.split_once(marker)?.1)
}

/// The bytes of `= 92.10 MiB` (a number in MiB, after any `=` or `:`).
fn mib_of(text: &str) -> Option<u64> {
    let mut words = text.trim_start_matches([' ', '=', ':']).split_whitespace();
    let mib: f64 = words.next()?.parse().ok()?;
    (words.next() == Some("MiB")).then_some((mib * MIB as f64).round() as u64)
}

/// `(on devices, of all)` of `… offloaded 31/31 layers to GPU`.
fn offloaded(line: &str) -> Option<(u32, u32)> {
    let (_, rest) = line.split_once("load_tensors: offloaded ")?;
    let (count, _) = rest.split_once(" layers to GPU")?;
    let (on, of) = count.split_once('/')?;
    Some((on.trim().parse().ok()?, of.trim().parse().ok()?))
}

/// The number after `sep` following `marker` in `line` (up to a comma or the end).
fn number_after(line: &str, marker: &str, sep: &str) -> Option<u32> {
    let (_, rest) = line.split_once(marker)?;
    let (_, value) = rest.split_once(sep)?;
    value.split(',').next()?.trim().parse().ok()
}

/// `(buffer type, kind, bytes)` of a buffer line: kinds `model`, `KV`, `RS` (a recurrent
/// state), `output`, `compute`.
fn buffer_line(line: &str) -> Option<(&str, &str, u64)> {
    let (left, right) = line.split_once(" buffer size")?;
    let mut words = left.split_whitespace().rev();
    let kind = words.next()?;
    let name = words.next()?;
    if !matches!(kind, "model" | "KV" | "RS" | "output" | "compute") {
        return None;
    }
    Some((name, kind, mib_of(right)?))
}

/// Reads the tool's lines: the device lines, then `Host`, each `<name> <model> <context>
/// <compute>` in MiB. Log lines around them are skipped.
pub fn parse(output: &str) -> Result<Projection, String> {
    let mut devices = Vec::new();
    for line in output.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, model, context, compute] = fields[..] else {
            continue;
        };
        // The tool rounds down: a part it prints as n MiB holds less than n + 1, taken as that
        // so that a projection never falls short (an empty buffer prints 0 and stays 0).
        let mib = |s: &str| {
            s.parse::<u64>()
                .ok()
                .map(|n| if n == 0 { 0 } else { (n + 1) * MIB })
        };
        let (Some(model), Some(context), Some(compute)) = (mib(model), mib(context), mib(compute))
        else {
            continue;
        };
        let parts = Parts {
            model,
            context,
            compute,
        };
        if name == "Host" {
            return Ok(Projection {
                devices,
                host: parts,
            });
        }
        devices.push((name.to_string(), parts));
    }
    Err("llama-fit-params printed no projection (no `Host` line)".into())
}

/// llama-server's flags that change what is allocated, and whether each takes a value: the
/// dry run is given these of the server's argument vector and nothing else (the tool refuses
/// server-only flags such as `--port`).
const MEMORY_FLAGS: &[(&str, bool)] = &[
    ("--model", true),
    ("-m", true),
    ("--ctx-size", true),
    ("-c", true),
    ("--n-gpu-layers", true),
    ("--gpu-layers", true),
    ("-ngl", true),
    ("--parallel", true),
    ("-np", true),
    ("--flash-attn", true),
    ("-fa", true),
    ("--cache-type-k", true),
    ("-ctk", true),
    ("--cache-type-v", true),
    ("-ctv", true),
    ("--device", true),
    ("-dev", true),
    ("--batch-size", true),
    ("-b", true),
    ("--ubatch-size", true),
    ("-ub", true),
    ("--split-mode", true),
    ("-sm", true),
    ("--tensor-split", true),
    ("-ts", true),
    ("--main-gpu", true),
    ("-mg", true),
    ("--n-cpu-moe", true),
    ("-ncmoe", true),
    ("--override-tensor", true),
    ("-ot", true),
    ("--swa-full", false),
    ("--cpu-moe", false),
    ("-cmoe", false),
    ("--no-kv-offload", false),
    ("-nkvo", false),
];

/// The dry run's arguments for a llama-server argument vector: the main model's (the extra
/// models are sized by [`super::extras`]).
pub fn tool_args(server_args: &[String]) -> Vec<String> {
    let mut args = picked(server_args, &[MEMORY_FLAGS]);
    args.extend(["--fit-print".into(), "on".into()]);
    args
}

/// The arguments of a llama-server argument vector that decide what it allocates, the extra
/// models' included.
pub fn memory_args(server_args: &[String]) -> Vec<String> {
    picked(server_args, &[MEMORY_FLAGS, super::extras::FLAGS])
}

fn picked(server_args: &[String], lists: &[&[(&str, bool)]]) -> Vec<String> {
    let mut args = Vec::new();
    let mut rest = server_args.iter();
    while let Some(arg) = rest.next() {
        let known = lists.iter().flat_map(|list| list.iter());
        let Some(&(_, takes_value)) = known.into_iter().find(|(flag, _)| flag == arg) else {
            continue;
        };
        args.push(arg.clone());
        if takes_value && let Some(value) = rest.next() {
            args.push(value.clone());
        }
    }
    args
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    tool: (PathBuf, Option<SystemTime>),
    model: (PathBuf, u64, Option<SystemTime>),
    args: Vec<String>,
    env: Vec<(String, String)>,
}

static CACHE: LazyLock<Mutex<HashMap<Key, Result<Projection, String>>>> =
    LazyLock::new(Default::default);

fn stamp(path: &Path) -> (u64, Option<SystemTime>) {
    std::fs::metadata(path).map_or((0, None), |m| (m.len(), m.modified().ok()))
}

/// What llama-server started with `server_args` (and `env` on top of ours) would hold, as the
/// tool at `tool` projects it; `Err` says why there is no projection (no tool, it failed).
pub async fn project(
    tool: &Path,
    model: &Path,
    server_args: &[String],
    env: &[(String, String)],
) -> Result<Projection, String> {
    let (tool_file, model_file) = (tool.to_path_buf(), model.to_path_buf());
    let (tool_stamp, model_stamp) =
        tokio::task::spawn_blocking(move || (stamp(&tool_file), stamp(&model_file)))
            .await
            .map_err(|e| e.to_string())?;
    if tool_stamp.1.is_none() {
        return Err(format!("{} is not there", tool.display()));
    }
    let key = Key {
        tool: (tool.to_path_buf(), tool_stamp.1),
        model: (model.to_path_buf(), model_stamp.0, model_stamp.1),
        args: tool_args(server_args),
        env: env.to_vec(),
    };
    if let Some(known) = lock(&CACHE).get(&key) {
        return known.clone();
    }
    let result = run(tool, &key.args, env).await;
    // A tool that could not start is not kept: it may be there on the next call.
    if !matches!(&result, Err(why) if why.starts_with("cannot start")) {
        lock(&CACHE).insert(key, result.clone());
    }
    result
}

async fn run(tool: &Path, args: &[String], env: &[(String, String)]) -> Result<Projection, String> {
    let spec = ProcessSpec {
        program: tool.to_path_buf(),
        args: args.to_vec(),
        guarded: false,
        env: env.to_vec(),
        unset: super::overrides_the_library,
    };
    let child = spawn(spec, None).map_err(|e| format!("cannot start {}: {e}", tool.display()))?;
    let exit = match tokio::time::timeout(TIMEOUT, child.wait()).await {
        Ok(exit) => exit,
        Err(_) => {
            child.stop(Duration::from_millis(500)).await;
            return Err(format!(
                "llama-fit-params did not finish within {} s",
                TIMEOUT.as_secs()
            ));
        }
    };
    let output = child.logs.last(usize::MAX).join("\n");
    if exit.code != Some(0) {
        return Err(format!(
            "llama-fit-params failed ({exit}): {}",
            crate::binaries::probe::tail(&output)
        ));
    }
    parse(&output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_then_the_host_in_mib_amid_log_lines() {
        let output = "load_backend: loaded Vulkan backend\n\
            llama_fit_params: printing estimated memory in MiB to stdout (device, model, context, compute) ...\n\
            Vulkan0 92 45 13 \n\
            Host 28 0 4 \n";
        let p = parse(output).unwrap();
        let vulkan = Parts {
            model: 93 * MIB,
            context: 46 * MIB,
            compute: 14 * MIB,
        };
        assert_eq!(p.devices, vec![("Vulkan0".to_string(), vulkan)]);
        assert_eq!(
            p.host.total(),
            34 * MIB,
            "rounded up, an empty part left empty"
        );
        assert_eq!(p.all().total(), 187 * MIB);
        assert_eq!(
            p.to_string(),
            "Vulkan0 153 MiB (model 93 + context 46 + compute 14), \
             host 34 MiB (model 29 + context 0 + compute 5)"
        );
        let capped = p.clone().compute_at_most(10 * MIB);
        assert_eq!(
            (capped.devices[0].1.compute, capped.host.compute),
            (10 * MIB, 5 * MIB)
        );
        assert_eq!(capped.devices[0].1.model, 93 * MIB);
        let cpu_only = parse("Host 120 45 18\n").unwrap();
        assert!(cpu_only.devices.is_empty());
        assert_eq!(cpu_only.on_devices().total(), 0);
        assert!(parse("error: invalid argument: --port\n").is_err());
    }

    #[test]
    fn a_draft_models_buffers_and_a_projectors_add_to_the_main_models() {
        // As the pinned llama-server prints them with a draft and a projector on the CPU.
        let load = "0.00.002.982 I srv  llama_server: initializing ...
            0.00.095.989 I load_tensors: offloaded 0/31 layers to GPU
            0.00.095.992 I load_tensors:   CPU_Mapped model buffer size =    92.10 MiB
            0.00.096.833 I llama_context: n_ctx                 = 2048
            0.00.096.919 I llama_kv_cache:        CPU KV buffer size =    45.00 MiB
            0.00.123.034 I sched_reserve:        CPU compute buffer size =    15.51 MiB
            0.00.143.283 I common_speculative_init_result: loading draft model '/m/tiny-draft.gguf'
            0.00.219.336 I load_tensors: offloaded 3/3 layers to GPU
            0.00.219.343 I load_tensors:   CPU_Mapped model buffer size =    12.31 MiB
            0.00.219.769 I llama_context: n_ctx                 = 4096
            0.00.219.825 I llama_kv_cache:        CPU KV buffer size =     1.00 MiB
            0.00.220.587 I sched_reserve:        CPU compute buffer size =     3.01 MiB
            0.00.168.620 I clip_ctx: CLIP using CPU backend
            0.00.168.625 I load_hparams: model size:         1.01 MiB
            0.00.171.245 I reserve_compute_meta:        CPU compute buffer size =     0.16 MiB";
        let mut allocated = Allocated::default();
        for line in load.lines() {
            allocated.read(line);
        }
        let mib = |x: f64| (x * MIB as f64).round() as u64;
        assert!(allocated.buffers.devices.is_empty());
        assert_eq!(
            allocated.buffers.host,
            Parts {
                model: mib(92.10) + mib(12.31) + mib(1.01),
                context: mib(45.0) + mib(1.0),
                compute: mib(15.51) + mib(3.01) + mib(0.16),
            }
        );
        // What it runs with is the main model's.
        assert_eq!(allocated.running.gpu_layers, Some(0));
        assert_eq!(allocated.running.layers, Some(31));
        assert_eq!(allocated.running.context_size, Some(2048));
    }

    #[test]
    fn the_buffers_of_a_load_by_device_and_host_and_a_restart_replaces_them() {
        let load = "0.00.194.779 I load_tensors: offloaded 31/31 layers to GPU
            0.00.192.579 I load_tensors:   CPU_Mapped model buffer size =    28.69 MiB
            0.00.192.580 I load_tensors:      Vulkan0 model buffer size =    92.10 MiB
            0.00.264.322 I llama_context: Vulkan_Host  output buffer size =     0.19 MiB
            0.00.264.554 I llama_context: n_ctx                 = 2048
            0.00.264.555 I llama_context: n_ctx_seq             = 4096
            0.00.264.429 I llama_kv_cache:    Vulkan0 KV buffer size =    45.00 MiB
            0.00.264.500 I llama_kv_cache: buffer size is not a line of ours
            0.00.317.591 I sched_reserve:    Vulkan0 compute buffer size =    13.26 MiB
            0.00.317.615 I sched_reserve: Vulkan_Host compute buffer size =     4.26 MiB
            0.03.444.367 I srv    load_model: initializing, n_slots = 1, n_ctx_slot = 2048, kv_unified = 'false'";
        let mut allocated = Allocated::default();
        for line in load.lines() {
            allocated.read(line);
        }
        let mib = |x: f64| (x * MIB as f64).round() as u64;
        let vulkan = &allocated.buffers.devices;
        assert_eq!(vulkan.len(), 1);
        assert_eq!(vulkan[0].0, "Vulkan0");
        assert_eq!(
            vulkan[0].1,
            Parts {
                model: mib(92.10),
                context: mib(45.0),
                compute: mib(13.26)
            }
        );
        assert_eq!(allocated.buffers.host.model, mib(28.69));
        assert_eq!(
            allocated.running,
            RunningWith {
                gpu_layers: Some(31),
                layers: Some(31),
                context_size: Some(2048),
                parallel_requests: Some(1),
            }
        );
        assert_eq!(allocated.buffers.host.compute, mib(0.19) + mib(4.26));
        for line in load.lines() {
            allocated.read(line);
        }
        assert_eq!(
            allocated.buffers.devices[0].1.model,
            mib(92.10),
            "a restart's load"
        );
        allocated.read("load_tensors: offloaded 10/31 layers to GPU");
        assert_eq!(allocated.buffers.devices.len(), 0, "a new load begins");
        assert_eq!(allocated.running.gpu_layers, Some(10));
        assert_eq!(allocated.running.context_size, None);
        // A new process's first line replaces a load too.
        for line in load.lines() {
            allocated.read(line);
        }
        allocated.read("0.00.002.982 I srv  llama_server: initializing ...");
        assert_eq!(allocated, Allocated::default());
        let mut cpu = Allocated::default();
        cpu.read("load_tensors:   CPU_Mapped model buffer size =    98.36 MiB");
        cpu.read("llama_kv_cache:        CPU KV buffer size =    45.00 MiB");
        assert!(cpu.buffers.devices.is_empty());
        assert_eq!(cpu.buffers.host.context, mib(45.0));
    }

    #[test]
    fn the_dry_run_gets_the_servers_memory_flags_only() {
        let server: Vec<String> = [
            "--model",
            "/m.gguf",
            "--host",
            "127.0.0.1",
            "--port",
            "8080",
            "--ctx-size",
            "2048",
            "--n-gpu-layers",
            "31",
            "--fit",
            "off",
            "--swa-full",
            "--alias",
            "chat",
            "-ub",
            "256",
            "--api-key",
            "secret",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            tool_args(&server).join(" "),
            "--model /m.gguf --ctx-size 2048 --n-gpu-layers 31 --swa-full -ub 256 --fit-print on"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_projection_is_run_once_per_configuration_and_failures_say_why() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let tool = dir.path().join("llama-fit-params");
        std::fs::write(
            &tool,
            format!(
                "#!/bin/sh\necho run >> '{}'\ncase \"$*\" in *-c\\ 0*) echo 'bad context' >&2; exit 1;; esac\n\
                 echo \"Vulkan0 10 $GGML_TEST_CONTEXT 3\"\necho 'Host 1 0 2'\n",
                runs.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"GGUF").unwrap();
        let env = [("GGML_TEST_CONTEXT".to_string(), "5".to_string())];
        let args = |c: &str| ["-c", c].map(String::from).to_vec();
        let first = project(&tool, &model, &args("2048"), &env).await.unwrap();
        assert_eq!(first.devices[0].1.context, 6 * MIB);
        assert_eq!(project(&tool, &model, &args("2048"), &env).await, Ok(first));
        let runs_of = || std::fs::read_to_string(&runs).unwrap().lines().count();
        assert_eq!(runs_of(), 1, "the second call is answered from the cache");
        let bad = project(&tool, &model, &args("0"), &env).await.unwrap_err();
        assert!(
            bad.contains("bad context") && bad.contains("exit code 1"),
            "{bad}"
        );
        assert_eq!(runs_of(), 2);
        let missing = project(&dir.path().join("nope"), &model, &args("1"), &env).await;
        assert!(missing.unwrap_err().contains("is not there"));
    }
}
