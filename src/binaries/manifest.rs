//! Which executables exist, and the pinned official releases that carry them: per platform, an
//! ordered list of variants (GPU first, CPU last), each an archive with its sha256 and, for
//! CUDA on Windows, the runtime archive it needs. The pins are those of genai-electron 0.26
//! (llama.cpp `b9860`, stable-diffusion.cpp `master-782-b290693`).

use serde::{Deserialize, Serialize};

/// The backend executables the library runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ts_rs::TS)]
#[serde(rename_all = "kebab-case")]
pub enum BinaryKind {
    LlamaServer,
    /// llama.cpp's RPC worker: lends this machine's memory to another machine's llama-server.
    RpcServer,
    SdCli,
    SdServer,
}

/// The project whose release archives carry an executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Llama,
    Diffusion,
}

impl BinaryKind {
    pub const ALL: [BinaryKind; 4] = [
        BinaryKind::LlamaServer,
        BinaryKind::RpcServer,
        BinaryKind::SdCli,
        BinaryKind::SdServer,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BinaryKind::LlamaServer => "llama-server",
            BinaryKind::RpcServer => "rpc-server",
            BinaryKind::SdCli => "sd-cli",
            BinaryKind::SdServer => "sd-server",
        }
    }

    pub fn backend(self) -> Backend {
        match self {
            BinaryKind::LlamaServer | BinaryKind::RpcServer => Backend::Llama,
            BinaryKind::SdCli | BinaryKind::SdServer => Backend::Diffusion,
        }
    }

    /// File names to look for in a release, newest name first (`sd-cli` was `sd` before; the
    /// RPC worker's CMake target is `ggml-rpc-server`, and releases have called it `rpc-server`).
    pub fn file_names(self) -> Vec<String> {
        self.file_names_with(std::env::consts::EXE_SUFFIX)
    }

    /// [`Self::file_names`] on a platform whose executables end with `exe_suffix`.
    pub fn file_names_with(self, exe_suffix: &str) -> Vec<String> {
        let names: &[&str] = match self {
            BinaryKind::LlamaServer => &["llama-server"],
            BinaryKind::RpcServer => &["ggml-rpc-server", "rpc-server"],
            BinaryKind::SdCli => &["sd-cli", "sd"],
            BinaryKind::SdServer => &["sd-server"],
        };
        names.iter().map(|n| format!("{n}{exe_suffix}")).collect()
    }

    pub fn env_var(self) -> &'static str {
        match self {
            BinaryKind::LlamaServer => "GENAI_ELECTRON_LLAMA_SERVER",
            BinaryKind::RpcServer => "GENAI_ELECTRON_RPC_SERVER",
            BinaryKind::SdCli => "GENAI_ELECTRON_SD_CLI",
            BinaryKind::SdServer => "GENAI_ELECTRON_SD_SERVER",
        }
    }

    /// CMake targets that build it from source.
    pub fn cmake_targets(self) -> &'static [&'static str] {
        match self.backend() {
            Backend::Llama => &["llama-server"],
            Backend::Diffusion => &["sd-cli", "sd-server"],
        }
    }

    /// Targets built when the source has them: llama.cpp's RPC worker is `ggml-rpc-server` in
    /// some versions, `rpc-server` in others, and absent without `GGML_RPC`; `llama-fit-params`
    /// (its dry run of a configuration's memory, which sizing asks beside llama-server) is in
    /// newer sources.
    pub fn optional_cmake_targets(self) -> &'static [&'static str] {
        match self.backend() {
            Backend::Llama => &["ggml-rpc-server", "rpc-server", "llama-fit-params"],
            Backend::Diffusion => &[],
        }
    }
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Llama => "llama",
            Backend::Diffusion => "diffusion",
        }
    }

    /// CMake options for a lean CPU-or-GPU server build: no tests, no examples we do not run,
    /// no network dependencies, static so the executable can be moved; llama.cpp with its RPC
    /// backend, so that a model can be split over machines.
    pub fn default_cmake_args(self) -> &'static [&'static str] {
        match self {
            Backend::Llama => &[
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF",
                "-DLLAMA_BUILD_APP=OFF",
                "-DLLAMA_CURL=OFF",
                "-DLLAMA_OPENSSL=OFF",
                "-DLLAMA_USE_PREBUILT_UI=OFF",
                "-DBUILD_SHARED_LIBS=OFF",
                "-DGGML_RPC=ON",
            ],
            Backend::Diffusion => &[
                "-DSD_BUILD_EXAMPLES=ON",
                "-DSD_WEBP=OFF",
                "-DSD_WEBM=OFF",
                "-DBUILD_SHARED_LIBS=OFF",
            ],
        }
    }
}

impl Backend {
    /// CMake options that choose what a source build is for. The CPU's are explicit, so that a
    /// build folder configured for Vulkan before is built for the CPU (and, on macOS, so that
    /// ggml leaves out Metal, which it builds by default there).
    pub fn accel_cmake_args(self, accel: Accel) -> &'static [&'static str] {
        let macos = cfg!(target_os = "macos");
        match (self, accel) {
            (Backend::Llama, Accel::Vulkan) => &["-DGGML_VULKAN=ON"],
            (Backend::Llama, _) if macos => &["-DGGML_VULKAN=OFF", "-DGGML_METAL=OFF"],
            (Backend::Llama, _) => &["-DGGML_VULKAN=OFF"],
            (Backend::Diffusion, Accel::Vulkan) => &["-DSD_VULKAN=ON"],
            (Backend::Diffusion, _) if macos => &[
                "-DSD_VULKAN=OFF",
                "-DGGML_VULKAN=OFF",
                "-DSD_METAL=OFF",
                "-DGGML_METAL=OFF",
            ],
            (Backend::Diffusion, _) => &["-DSD_VULKAN=OFF", "-DGGML_VULKAN=OFF"],
        }
    }
}

/// What a variant needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Cuda,
    Vulkan,
    Metal,
    Cpu,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Cuda => "cuda",
            Accel::Vulkan => "vulkan",
            Accel::Metal => "metal",
            Accel::Cpu => "cpu",
        }
    }

    /// The device name llama-server's `--list-devices` prints for this backend.
    pub fn device_marker(self) -> Option<&'static str> {
        match self {
            Accel::Cuda => Some("CUDA"),
            Accel::Vulkan => Some("Vulkan"),
            Accel::Metal => Some("Metal"),
            Accel::Cpu => None,
        }
    }
}

/// An archive and its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[ts(rename = "BinaryArchive")]
pub struct Archive {
    pub url: String,
    /// sha256 of the archive, hex.
    pub sha256: String,
}

/// One release archive of a backend, in the shape of genai-electron's release manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "BinaryVariant")]
pub struct Variant {
    /// What the build needs from the machine; variants whose needs are not met are skipped.
    #[serde(rename = "type")]
    #[ts(type = "'cuda' | 'vulkan' | 'metal' | 'cpu'")]
    pub accel: Accel,
    /// `.zip` or `.tar.gz` URL.
    pub url: String,
    /// sha256 of the archive, hex.
    pub sha256: String,
    /// Runtime archives extracted next to the executable (the CUDA runtime on Windows).
    #[serde(default)]
    #[ts(as = "Option<Vec<Archive>>", optional)]
    pub dependencies: Vec<Archive>,
}

/// Node-style platform key: `linux-x64`, `darwin-arm64`, `win32-x64`, …
pub fn platform_key() -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        "windows" => "win32",
        other => other,
    };
    format!(
        "{os}-{}",
        crate::system::cpu::node_arch(std::env::consts::ARCH)
    )
}

pub fn pinned_version(backend: Backend) -> &'static str {
    match backend {
        Backend::Llama => "b9860",
        Backend::Diffusion => "master-782-b290693",
    }
}

const LLAMA: &str = "https://github.com/ggml-org/llama.cpp/releases/download/b9860";
const SD: &str =
    "https://github.com/leejet/stable-diffusion.cpp/releases/download/master-782-b290693";

fn v(accel: Accel, url: String, sha256: &str, dependencies: Vec<Archive>) -> Variant {
    Variant {
        accel,
        url,
        sha256: sha256.into(),
        dependencies,
    }
}

fn dep(url: String, sha256: &str) -> Archive {
    Archive {
        url,
        sha256: sha256.into(),
    }
}

/// The pinned variants for a backend on a platform, in the order to try them.
pub fn pinned_variants(backend: Backend, platform: &str) -> Vec<Variant> {
    use Accel::*;
    match (backend, platform) {
        (Backend::Llama, "darwin-arm64") => vec![v(
            Metal,
            format!("{LLAMA}/llama-b9860-bin-macos-arm64.tar.gz"),
            "35a2e8c3528adc71db5044e7ad7de8d8b96a4221e737958915e31538a005f1d9",
            vec![],
        )],
        (Backend::Llama, "darwin-x64") => vec![v(
            Cpu,
            format!("{LLAMA}/llama-b9860-bin-macos-x64.tar.gz"),
            "d442123d5441c82b23b412a58d91e149f60723adfc20a7cc9df04a3908cb5113",
            vec![],
        )],
        (Backend::Llama, "win32-x64") => vec![
            v(
                Cuda,
                format!("{LLAMA}/llama-b9860-bin-win-cuda-12.4-x64.zip"),
                "70c433fcb55bcb0e0ff0d4a4fc5f02c11a14303445e0525b526071bccdc6c848",
                vec![dep(
                    format!("{LLAMA}/cudart-llama-bin-win-cuda-12.4-x64.zip"),
                    "8c79a9b226de4b3cacfd1f83d24f962d0773be79f1e7b75c6af4ded7e32ae1d6",
                )],
            ),
            v(
                Vulkan,
                format!("{LLAMA}/llama-b9860-bin-win-vulkan-x64.zip"),
                "c3f0703c8fca8fa4cbc01a347d7180fca092e889fe693268bf1192fd07350c13",
                vec![],
            ),
            v(
                Cpu,
                format!("{LLAMA}/llama-b9860-bin-win-cpu-x64.zip"),
                "d33871623713345cd90b54e516ebada79039cab636e51b22c8c9feae72567837",
                vec![],
            ),
        ],
        (Backend::Llama, "linux-x64") => vec![
            v(
                Vulkan,
                format!("{LLAMA}/llama-b9860-bin-ubuntu-vulkan-x64.tar.gz"),
                "4aaa4ca2ed9f608cf26cb6ba0cdad9c5b8e8f2d1e95c4f04bb3fa9a1a8c86806",
                vec![],
            ),
            v(
                Cpu,
                format!("{LLAMA}/llama-b9860-bin-ubuntu-x64.tar.gz"),
                "b68e8072eb88d1cc8b8e9d6ea8237aae87b34c6d8bbffda958c870e4dc949714",
                vec![],
            ),
        ],
        (Backend::Diffusion, "darwin-arm64") => vec![v(
            Metal,
            format!("{SD}/sd-master-b290693-bin-Darwin-macOS-26.4-arm64.zip"),
            "61620d31fa787d318ca1ec67ba73ef77b3236bc3a2dc891d66c161c7b075e45c",
            vec![],
        )],
        (Backend::Diffusion, "win32-x64") => vec![
            v(
                Cuda,
                format!("{SD}/sd-master-b290693-bin-win-cuda12-x64.zip"),
                "bc7aa2f6d471b324bfbc76f108a5cb3b76de29cb892d12609647e11b041f8a02",
                vec![dep(
                    format!("{SD}/cudart-sd-bin-win-cu12-x64.zip"),
                    "fe20366827d357c00797eebb58244dddab7fd9a348d70090c3871004c320f38d",
                )],
            ),
            v(
                Vulkan,
                format!("{SD}/sd-master-b290693-bin-win-vulkan-x64.zip"),
                "431dd14e12cc5fb1abdc20ab213bbfdf390f18766ed7f54ecfd61d6b467a7915",
                vec![],
            ),
            v(
                Cpu,
                format!("{SD}/sd-master-b290693-bin-win-cpu-x64.zip"),
                "38da3539d3af6918f4c218fd198ac6e26cd71249e54feb3a491d184d3ca94ea0",
                vec![],
            ),
        ],
        (Backend::Diffusion, "linux-x64") => vec![
            v(
                Vulkan,
                format!("{SD}/sd-master-b290693-bin-Linux-Ubuntu-24.04-x86_64-vulkan.zip"),
                "e49466d0c0c5f985d9ca9f82c18bb55e8e02885c654210f918ca0c0098ea2829",
                vec![],
            ),
            v(
                Cpu,
                format!("{SD}/sd-master-b290693-bin-Linux-Ubuntu-24.04-x86_64.zip"),
                "16547f8ffb35547f9058e2ea831a2eb36cfcb99594043fc97ad2895c6c485aaf",
                vec![],
            ),
        ],
        // No official build (macOS x64 diffusion, Linux arm64, CUDA on Linux): build from source.
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pinned_variant_is_well_formed_and_gpu_first() {
        for backend in [Backend::Llama, Backend::Diffusion] {
            for platform in ["linux-x64", "win32-x64", "darwin-arm64", "darwin-x64"] {
                let variants = pinned_variants(backend, platform);
                for v in &variants {
                    assert!(v.url.starts_with("https://github.com/"), "{}", v.url);
                    assert!(
                        v.url
                            .contains(pinned_version(backend).trim_start_matches("master-782-"))
                    );
                    for sha in
                        std::iter::once(&v.sha256).chain(v.dependencies.iter().map(|d| &d.sha256))
                    {
                        assert_eq!(sha.len(), 64);
                        assert!(sha.bytes().all(|b| b.is_ascii_hexdigit()));
                    }
                }
                if let Some(cpu) = variants.iter().position(|v| v.accel == Accel::Cpu) {
                    assert_eq!(cpu, variants.len() - 1, "CPU comes last");
                }
            }
        }
        assert!(pinned_variants(Backend::Diffusion, "darwin-x64").is_empty());
    }

    #[test]
    fn names_and_env_vars() {
        assert_eq!(BinaryKind::parse("sd-server"), Some(BinaryKind::SdServer));
        assert_eq!(BinaryKind::parse("rpc-server"), Some(BinaryKind::RpcServer));
        assert_eq!(
            BinaryKind::RpcServer.backend(),
            BinaryKind::LlamaServer.backend()
        );
        assert_eq!(BinaryKind::RpcServer.env_var(), "GENAI_ELECTRON_RPC_SERVER");
        assert_eq!(BinaryKind::parse("sd"), None);
        assert_eq!(BinaryKind::SdCli.env_var(), "GENAI_ELECTRON_SD_CLI");
        assert_eq!(BinaryKind::SdCli.backend(), BinaryKind::SdServer.backend());
        assert!(BinaryKind::SdCli.file_names()[1].starts_with("sd"));
        assert_eq!(
            platform_key(),
            format!(
                "{}-{}",
                crate::system::node_platform(),
                crate::system::cpu::node_arch(std::env::consts::ARCH)
            )
        );
    }

    #[test]
    fn variants_read_the_anchor_shape() {
        let v: Variant = serde_json::from_value(serde_json::json!({
            "type": "cuda", "url": "https://x/y.zip", "sha256": "ab",
            "dependencies": [{ "url": "https://x/rt.zip", "sha256": "cd" }]
        }))
        .unwrap();
        assert_eq!(v.accel, Accel::Cuda);
        assert_eq!(v.dependencies.len(), 1);
    }
}
