//! Obtaining the backend executables (`llama-server`, `sd-cli`, `sd-server`).
//!
//! Sources, in this order:
//! 1. an explicit path (`path` option, or the server config's binary path);
//! 2. the environment variable of the executable (`GENAI_ELECTRON_LLAMA_SERVER`, …);
//! 3. an earlier install in the data folder (no network, no probe);
//! 4. the pinned release variants for this platform, GPU first, each downloaded (resumable,
//!    sha256-checked), extracted safely and probed, until one runs;
//! 5. a build from a pinned source archive with CMake, when a `source` is given.
//!
//! Paths from 1 and 2 are probed and never silently replaced: asking for a broken path is an error.

pub mod cross;
pub mod extract;
pub mod manifest;
pub mod probe;
pub mod source;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::DataPaths;
use crate::download::{self, DownloadError};
use crate::error::{Coded, ErrorCode, io_suggestion};
use crate::events::{EventSink, Subscribers, Subscription};
use crate::sync::lock;
use crate::system::GpuInfo;
pub use cross::CrossPlatform;
pub use manifest::{Accel, Backend, BinaryKind, Variant};
pub use source::{SourceAccel, SourceSpec};

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("{kind} at {path} (from {origin}) does not exist")]
    NotFound {
        kind: &'static str,
        path: PathBuf,
        origin: String,
    },
    #[error("{kind} at {path} (from {origin}) does not run: {reason}")]
    ProbeFailed {
        kind: &'static str,
        path: PathBuf,
        origin: String,
        reason: String,
    },
    #[error("no {kind} release for {platform}")]
    NoRelease {
        kind: &'static str,
        platform: String,
    },
    #[error("no {kind} variant works on this machine; tried: {}", tried.iter().map(|(v, r)| format!("{v}: {r}")).collect::<Vec<_>>().join("; "))]
    NoWorkingVariant {
        kind: &'static str,
        tried: Vec<(String, String)>,
    },
    #[error("source archive {archive} has sha256 {actual}, expected {expected}")]
    SourceChecksum {
        archive: String,
        expected: String,
        actual: String,
    },
    #[error("cmake was not found on PATH")]
    CmakeMissing,
    #[error("a Vulkan build needs its toolchain: {missing}")]
    VulkanToolchain { missing: String },
    #[error("a build for {platform} needs {missing}")]
    CrossToolchain {
        platform: &'static str,
        missing: String,
    },
    #[error("source build failed at {step}: {reason}")]
    BuildFailed { step: String, reason: String },
    #[error(transparent)]
    Download(DownloadError),
    #[error(transparent)]
    Extract(extract::ExtractError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Coded for BinaryError {
    fn code(&self) -> ErrorCode {
        match self {
            BinaryError::NotFound { .. } => ErrorCode::BinaryNotFound,
            BinaryError::ProbeFailed { .. } => ErrorCode::BinaryBroken,
            BinaryError::NoRelease { .. } => ErrorCode::BinaryNoRelease,
            BinaryError::NoWorkingVariant { .. } => ErrorCode::BinaryNoWorkingVariant,
            BinaryError::SourceChecksum { .. } => ErrorCode::SourceChecksumMismatch,
            BinaryError::CmakeMissing => ErrorCode::CmakeMissing,
            BinaryError::VulkanToolchain { .. } => ErrorCode::VulkanToolchainMissing,
            BinaryError::CrossToolchain { .. } => ErrorCode::CrossToolchainMissing,
            BinaryError::BuildFailed { .. } => ErrorCode::BuildFailed,
            BinaryError::Download(e) => e.code(),
            BinaryError::Extract(_) => ErrorCode::ArchiveInvalid,
            BinaryError::Io { .. } => ErrorCode::FileSystemError,
        }
    }

    fn suggestion(&self) -> Option<String> {
        Some(match self {
            BinaryError::NotFound { origin, .. } => format!("Check the path given by {origin}, or unset it to use a managed download"),
            BinaryError::ProbeFailed { .. } => "Run it by hand with --version to see what is missing (a driver or a shared library), or point to another build".into(),
            BinaryError::NoRelease { .. } => "Build from source: pass { source: { archive, sha256 } } (needs cmake), or set the path of an executable you built".into(),
            BinaryError::NoWorkingVariant { .. } => "Update the GPU driver, or pass { source } to build one for this machine".into(),
            BinaryError::SourceChecksum { .. } => "The archive is not the pinned one: download it again from its official source".into(),
            BinaryError::CmakeMissing => "Install CMake (e.g. `pip install cmake`, or your package manager) and a C++ compiler".into(),
            BinaryError::VulkanToolchain { .. } => "Install the Vulkan SDK (or Debian's glslc, libvulkan-dev and spirv-headers), or build with accel: 'cpu' or 'auto'".into(),
            BinaryError::CrossToolchain { .. } => "Install the platform's cross compiler (the message names it), or build on that platform".into(),
            BinaryError::BuildFailed { .. } => "Check that a C++17 compiler is installed; the reason ends with the compiler's output".into(),
            BinaryError::Download(e) => return e.suggestion(),
            BinaryError::Extract(_) => "The archive is damaged or unsafe; it was not installed. Download it again".into(),
            BinaryError::Io { source, .. } => io_suggestion(source).into(),
        })
    }

    fn details(&self) -> Map<String, Value> {
        let v = match self {
            BinaryError::NotFound { path, origin, .. } => json!({ "path": path, "origin": origin }),
            BinaryError::ProbeFailed {
                path,
                origin,
                reason,
                ..
            } => json!({ "path": path, "origin": origin, "reason": reason }),
            BinaryError::NoRelease { platform, .. } => json!({ "platform": platform }),
            BinaryError::NoWorkingVariant { tried, .. } => {
                json!({ "tried": tried.iter().map(|(v, r)| json!({ "variant": v, "reason": r })).collect::<Vec<_>>() })
            }
            BinaryError::SourceChecksum {
                archive,
                expected,
                actual,
            } => json!({ "archive": archive, "expected": expected, "actual": actual }),
            BinaryError::BuildFailed { step, .. } => json!({ "step": step }),
            BinaryError::Download(e) => return e.details(),
            BinaryError::Io { path, .. } => json!({ "path": path }),
            BinaryError::VulkanToolchain { missing } => json!({ "missing": missing }),
            BinaryError::CrossToolchain { platform, missing } => {
                json!({ "platform": platform, "missing": missing })
            }
            BinaryError::CmakeMissing | BinaryError::Extract(_) => json!({}),
        };
        v.as_object().cloned().unwrap_or_default()
    }
}

/// What an install is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "lowercase")]
#[ts(rename = "BinaryStage")]
pub enum Stage {
    Download,
    Verify,
    Extract,
    Probe,
    Build,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Download => "download",
            Stage::Verify => "verify",
            Stage::Extract => "extract",
            Stage::Probe => "probe",
            Stage::Build => "build",
        }
    }
}

/// How far an install of an executable is.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
pub struct BinaryProgress {
    pub kind: BinaryKind,
    pub stage: Stage,
    /// The variant (`cpu`, `vulkan`, …), or `source`.
    pub variant: String,
    /// URL, path or build step the stage works on.
    pub detail: String,
    /// Bytes downloaded so far (download stage).
    pub bytes: u64,
    /// Bytes to download in all, when the server says (download stage).
    pub total: Option<u64>,
    /// Build stage, while compiling: steps done and in all, as the build tool counts them
    /// (Ninja's `[12/345]`; Make's percentage as `{ done: 45, total: 100 }`).
    pub steps: Option<BuildSteps>,
}

/// Compile steps done and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct BuildSteps {
    pub done: u64,
    pub total: u64,
}

/// Where a resolved executable came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "lowercase")]
#[ts(rename = "BinaryOrigin")]
pub enum Origin {
    Path,
    Env,
    Installed,
    Download,
    Source,
}

/// An executable ready to run, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedBinary {
    pub kind: BinaryKind,
    /// Absolute path of the executable.
    pub path: PathBuf,
    /// What it runs on: `cpu`, `vulkan`, `cuda`, `metal` (a release or a source build; a Vulkan
    /// build runs on the CPU where no Vulkan device is usable), or `given` for a path you
    /// supplied.
    pub variant: String,
    /// `path` option, environment variable, earlier install, fresh download, or source build.
    pub origin: Origin,
    /// First line of `--version`, when it was probed during this call.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub version: Option<String>,
}

/// Options of {@link BinaryManager.ensureBinary}.
#[derive(Debug, Clone, Default, Deserialize, ts_rs::TS)]
#[serde(rename_all = "camelCase", default)]
#[ts(rename = "EnsureBinaryOptions", optional_fields)]
pub struct EnsureOptions {
    /// Use this executable (probed; an error if missing or broken, never replaced silently).
    pub path: Option<PathBuf>,
    /// Release variants to try instead of the pinned ones (a mirror, a newer release).
    pub variants: Option<Vec<Variant>>,
    /// Label of the release `variants` belong to; installs are kept per version.
    pub version: Option<String>,
    /// Build from source when no release variant works (or exists) here.
    pub source: Option<SourceSpec>,
}

/// What an install folder holds: the variant and the executables found in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InstallRecord {
    variant: String,
    executables: HashMap<String, PathBuf>,
}

pub struct BinaryManager {
    events: Subscribers<BinaryProgress>,
    /// One install at a time per backend: two callers must not download into the same folder.
    locks: HashMap<&'static str, tokio::sync::Mutex<()>>,
    /// Given paths that passed their probe, with the file's size and time when they did: an
    /// unchanged file is not probed again (a probe costs a process start per server start).
    probed: std::sync::Mutex<HashMap<PathBuf, (FileStamp, String)>>,
}

/// Size and modification time: enough to notice that an executable was replaced.
type FileStamp = (u64, Option<std::time::SystemTime>);

impl BinaryManager {
    pub fn new(events: Option<EventSink<BinaryProgress>>) -> Self {
        let locks = [Backend::Llama, Backend::Diffusion]
            .into_iter()
            .map(|b| (b.as_str(), tokio::sync::Mutex::new(())))
            .collect();
        let manager = BinaryManager {
            events: Subscribers::default(),
            locks,
            probed: Default::default(),
        };
        if let Some(events) = events {
            manager.subscribe(events).detach();
        }
        manager
    }

    /// The one manager of this process: every server and every JS `BinaryManager` uses it, so
    /// installs are serialised across all of them and each hears every install's progress.
    pub fn shared() -> &'static BinaryManager {
        static SHARED: std::sync::OnceLock<BinaryManager> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| BinaryManager::new(None))
    }

    /// Hears every install's progress until the subscription is dropped.
    pub fn subscribe(&self, events: EventSink<BinaryProgress>) -> Subscription {
        self.events.subscribe(events)
    }

    fn emit(
        &self,
        kind: BinaryKind,
        stage: Stage,
        variant: &str,
        detail: &str,
        bytes: u64,
        total: Option<u64>,
    ) {
        self.events.emit(BinaryProgress {
            kind,
            stage,
            variant: variant.into(),
            detail: detail.into(),
            bytes,
            total,
            steps: None,
        });
    }

    pub async fn ensure(
        &self,
        kind: BinaryKind,
        opts: &EnsureOptions,
        data: &DataPaths,
        gpu: &GpuInfo,
    ) -> Result<ResolvedBinary, BinaryError> {
        if let Some(path) = &opts.path {
            return self
                .given(kind, path, Origin::Path, "the path option")
                .await;
        }
        if let Some(path) = std::env::var_os(kind.env_var()).filter(|p| !p.is_empty()) {
            return self
                .given(kind, Path::new(&path), Origin::Env, kind.env_var())
                .await;
        }
        let backend = kind.backend();
        let _guard = self.locks[backend.as_str()].lock().await;
        let install_root = install_root(kind, opts, data);
        if let Some(found) = installed(&install_root, kind).await {
            return Ok(found);
        }
        let variants = opts
            .variants
            .clone()
            .unwrap_or_else(|| manifest::pinned_variants(backend, &manifest::platform_key()));
        let mut tried = Vec::new();
        for variant in variants.iter() {
            if let Some(reason) = unsupported(variant.accel, gpu) {
                tried.push((variant.accel.as_str().to_string(), reason));
                continue;
            }
            match self.install_variant(kind, variant, &install_root).await {
                Ok(resolved) => return Ok(resolved),
                // A broken disk is not a reason to try the next variant.
                Err(err @ BinaryError::Io { .. }) => return Err(err),
                Err(err) => tried.push((variant.accel.as_str().to_string(), err.to_string())),
            }
        }
        if let Some(spec) = &opts.source {
            return self.build_into(kind, spec, &install_root).await;
        }
        if variants.is_empty() {
            return Err(BinaryError::NoRelease {
                kind: kind.as_str(),
                platform: manifest::platform_key(),
            });
        }
        Err(BinaryError::NoWorkingVariant {
            kind: kind.as_str(),
            tried,
        })
    }

    /// The executable [`Self::ensure`] would answer with, where that needs no download or build:
    /// the path option, the environment's, or what is installed. Nothing is probed.
    pub async fn locate(
        &self,
        kind: BinaryKind,
        opts: &EnsureOptions,
        data: &DataPaths,
    ) -> Option<PathBuf> {
        let given = opts.path.clone().or_else(|| {
            std::env::var_os(kind.env_var())
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        });
        if let Some(path) = given {
            return tokio::fs::try_exists(&path)
                .await
                .unwrap_or(false)
                .then_some(path);
        }
        installed(&install_root(kind, opts, data), kind)
            .await
            .map(|found| found.path)
    }

    /// Builds from source into the data folder's install of `version` (default: `source`).
    pub async fn build_from_source(
        &self,
        kind: BinaryKind,
        spec: &SourceSpec,
        data: &DataPaths,
        work_dir: Option<&Path>,
    ) -> Result<ResolvedBinary, BinaryError> {
        let backend = kind.backend();
        let _guard = self.locks[backend.as_str()].lock().await;
        let install_root = data.binaries.join(backend.as_str()).join("source");
        match work_dir {
            Some(dir) => self.build_in(kind, spec, dir, &install_root).await,
            None => self.build_into(kind, spec, &install_root).await,
        }
    }

    async fn build_into(
        &self,
        kind: BinaryKind,
        spec: &SourceSpec,
        install_root: &Path,
    ) -> Result<ResolvedBinary, BinaryError> {
        self.build_in(kind, spec, &install_root.join("source-build"), install_root)
            .await
    }

    async fn build_in(
        &self,
        kind: BinaryKind,
        spec: &SourceSpec,
        work_dir: &Path,
        install_root: &Path,
    ) -> Result<ResolvedBinary, BinaryError> {
        tokio::fs::create_dir_all(work_dir)
            .await
            .map_err(|source| BinaryError::Io {
                path: work_dir.into(),
                source,
            })?;
        let plan = source::BuildPlan {
            kind,
            spec,
            work_dir,
        };
        let report = |stage: Stage, detail: &str| self.emit(kind, stage, "source", detail, 0, None);
        let events = self.events.sink();
        let steps = EventSink::new(move |steps: (u64, u64)| {
            events.emit(BinaryProgress {
                kind,
                stage: Stage::Build,
                variant: "source".into(),
                detail: "compile".into(),
                bytes: 0,
                total: None,
                steps: Some(BuildSteps {
                    done: steps.0,
                    total: steps.1,
                }),
            })
        });
        let built = source::build(&plan, &report, steps).await?;
        let suffix = spec
            .platform
            .map_or(std::env::consts::EXE_SUFFIX, CrossPlatform::exe_suffix);
        // A tool built beside the servers (llama-fit-params) is found there by name.
        let found: Vec<(BinaryKind, &PathBuf)> = built
            .executables
            .iter()
            .filter_map(|exe| {
                BinaryKind::ALL
                    .into_iter()
                    .find(|k| {
                        k.backend() == kind.backend()
                            && k.file_names_with(suffix).iter().any(|n| exe.ends_with(n))
                    })
                    .map(|k| (k, exe))
            })
            .collect();
        // Another platform's executables do not run here: nothing to probe, nothing to install.
        if spec.platform.is_none() {
            self.emit(kind, Stage::Probe, "source", "", 0, None);
            for (exe_kind, exe) in &found {
                probe::probe(exe, *exe_kind, Accel::Cpu)
                    .await
                    .map_err(|reason| BinaryError::BuildFailed {
                        step: "probe".into(),
                        reason,
                    })?;
            }
        }
        let executables = found
            .into_iter()
            .map(|(k, exe)| (k.as_str().to_string(), exe.clone()))
            .collect();
        let record = InstallRecord {
            variant: built.variant.clone(),
            executables,
        };
        if spec.platform.is_none() {
            write_record(install_root, &record).await?;
        }
        let path = record
            .executables
            .get(kind.as_str())
            .cloned()
            .ok_or_else(|| BinaryError::BuildFailed {
                step: "build".into(),
                reason: format!("{} was not built", kind.as_str()),
            })?;
        Ok(ResolvedBinary {
            kind,
            path,
            variant: built.variant,
            origin: Origin::Source,
            version: None,
        })
    }

    /// A path the caller chose: probed, and an error (never replaced) when it does not run.
    async fn given(
        &self,
        kind: BinaryKind,
        path: &Path,
        origin: Origin,
        label: &str,
    ) -> Result<ResolvedBinary, BinaryError> {
        let Ok(meta) = tokio::fs::metadata(path).await else {
            return Err(BinaryError::NotFound {
                kind: kind.as_str(),
                path: path.into(),
                origin: label.into(),
            });
        };
        let stamp = (meta.len(), meta.modified().ok());
        let known = lock(&self.probed).get(path).cloned();
        if let Some((probed_stamp, version)) = known
            && probed_stamp == stamp
        {
            return Ok(ResolvedBinary {
                kind,
                path: path.into(),
                variant: "given".into(),
                origin,
                version: Some(version),
            });
        }
        self.emit(
            kind,
            Stage::Probe,
            "given",
            &path.to_string_lossy(),
            0,
            None,
        );
        let version = probe::probe(path, kind, Accel::Cpu)
            .await
            .map_err(|reason| BinaryError::ProbeFailed {
                kind: kind.as_str(),
                path: path.into(),
                origin: label.into(),
                reason,
            })?;
        lock(&self.probed).insert(path.to_path_buf(), (stamp, version.clone()));
        Ok(ResolvedBinary {
            kind,
            path: path.into(),
            variant: "given".into(),
            origin,
            version: Some(version),
        })
    }

    /// Downloads, extracts and probes one variant. Its archives are removed afterwards, whether
    /// it worked or not: an install keeps only the extracted folder.
    async fn install_variant(
        &self,
        kind: BinaryKind,
        variant: &Variant,
        install_root: &Path,
    ) -> Result<ResolvedBinary, BinaryError> {
        let mut fetched = Vec::new();
        let result = self
            .try_variant(kind, variant, install_root, &mut fetched)
            .await;
        for (archive, _) in fetched {
            let _ = tokio::fs::remove_file(archive).await;
        }
        result
    }

    async fn try_variant(
        &self,
        kind: BinaryKind,
        variant: &Variant,
        install_root: &Path,
        fetched: &mut Vec<(PathBuf, extract::ArchiveKind)>,
    ) -> Result<ResolvedBinary, BinaryError> {
        let accel = variant.accel.as_str();
        let downloads = install_root.join("downloads");
        let staging = install_root.join(format!("{accel}.partial"));
        let target = install_root.join(accel);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BinaryError::Io { path, source }
        };
        let _ = tokio::fs::remove_dir_all(&staging).await;
        tokio::fs::create_dir_all(&downloads)
            .await
            .map_err(io(&downloads))?;

        let archives = std::iter::once((variant.url.as_str(), variant.sha256.as_str())).chain(
            variant
                .dependencies
                .iter()
                .map(|d| (d.url.as_str(), d.sha256.as_str())),
        );
        for (url, sha256) in archives {
            let name = url
                .rsplit('/')
                .next()
                .filter(|n| !n.is_empty())
                .unwrap_or("archive");
            let kind_of_archive =
                extract::ArchiveKind::from_name(name).ok_or_else(|| BinaryError::BuildFailed {
                    step: "extract".into(),
                    reason: format!("{name} is neither .tar.gz nor .zip"),
                })?;
            let dest = downloads.join(name);
            self.emit(kind, Stage::Download, accel, url, 0, None);
            let mut on_progress = |p: download::Progress| {
                self.emit(kind, Stage::Download, accel, url, p.downloaded, p.total)
            };
            download::download(url, &dest, Some(sha256), &mut on_progress)
                .await
                .map_err(BinaryError::Download)?;
            fetched.push((dest, kind_of_archive));
        }
        for (archive, archive_kind) in fetched.iter() {
            self.emit(
                kind,
                Stage::Extract,
                accel,
                &archive.to_string_lossy(),
                0,
                None,
            );
            let (archive, dest, archive_kind) = (archive.clone(), staging.clone(), *archive_kind);
            let result = tokio::task::spawn_blocking(move || {
                extract::extract(&archive, archive_kind, &dest)
            })
            .await
            .map_err(|e| BinaryError::BuildFailed {
                step: "extract".into(),
                reason: e.to_string(),
            })?;
            if let Err(err) = result {
                let _ = tokio::fs::remove_dir_all(&staging).await;
                return Err(BinaryError::Extract(err));
            }
        }
        let _ = tokio::fs::remove_dir_all(&target).await;
        tokio::fs::rename(&staging, &target)
            .await
            .map_err(io(&target))?;

        let mut executables = HashMap::new();
        for k in BinaryKind::ALL
            .into_iter()
            .filter(|k| k.backend() == kind.backend())
        {
            if let Some(exe) = find_file(&target, &k.file_names()).await {
                executables.insert(k.as_str().to_string(), exe);
            }
        }
        let Some(exe) = executables.get(kind.as_str()).cloned() else {
            let _ = tokio::fs::remove_dir_all(&target).await;
            return Err(BinaryError::BuildFailed {
                step: "extract".into(),
                reason: format!("the archive has no {}", kind.as_str()),
            });
        };
        self.emit(kind, Stage::Probe, accel, &exe.to_string_lossy(), 0, None);
        let version = match probe::probe(&exe, kind, variant.accel).await {
            Ok(version) => version,
            Err(reason) => {
                let _ = tokio::fs::remove_dir_all(&target).await;
                return Err(BinaryError::ProbeFailed {
                    kind: kind.as_str(),
                    path: exe,
                    origin: format!("{accel} release"),
                    reason,
                });
            }
        };
        write_record(
            install_root,
            &InstallRecord {
                variant: accel.into(),
                executables,
            },
        )
        .await?;
        Ok(ResolvedBinary {
            kind,
            path: exe,
            variant: accel.into(),
            origin: Origin::Download,
            version: Some(version),
        })
    }
}

/// Why a variant cannot run here, judged from detection before downloading hundreds of MB.
fn unsupported(accel: Accel, gpu: &GpuInfo) -> Option<String> {
    match accel {
        Accel::Cuda if !gpu.cuda => Some("skipped: no NVIDIA GPU with a driver".into()),
        Accel::Vulkan if !gpu.vulkan => Some("skipped: no Vulkan driver and GPU".into()),
        Accel::Metal if !gpu.metal => Some("skipped: Metal needs macOS with a GPU".into()),
        _ => None,
    }
}

/// Where the backend's `opts.version` (default: the pinned one) is installed.
fn install_root(kind: BinaryKind, opts: &EnsureOptions, data: &DataPaths) -> PathBuf {
    let backend = kind.backend();
    let version = opts
        .version
        .clone()
        .unwrap_or_else(|| manifest::pinned_version(backend).to_string());
    data.binaries
        .join(backend.as_str())
        .join(sanitize(&version))
}

async fn installed(install_root: &Path, kind: BinaryKind) -> Option<ResolvedBinary> {
    let text = tokio::fs::read_to_string(install_root.join("installed.json"))
        .await
        .ok()?;
    let record: InstallRecord = serde_json::from_str(&text).ok()?;
    let path = record.executables.get(kind.as_str())?.clone();
    tokio::fs::try_exists(&path)
        .await
        .ok()?
        .then_some(ResolvedBinary {
            kind,
            path,
            variant: record.variant,
            origin: Origin::Installed,
            version: None,
        })
}

async fn write_record(install_root: &Path, record: &InstallRecord) -> Result<(), BinaryError> {
    tokio::fs::create_dir_all(install_root)
        .await
        .map_err(|source| BinaryError::Io {
            path: install_root.into(),
            source,
        })?;
    let json = serde_json::to_vec_pretty(record).expect("an install record always serializes");
    source::write_atomic(&install_root.join("installed.json"), &json).await
}

/// Depth-first search for the first file with one of `names` (in order of preference).
pub(crate) async fn find_file(root: &Path, names: &[String]) -> Option<PathBuf> {
    let root = root.to_path_buf();
    let names = names.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut found: Vec<(usize, PathBuf)> = Vec::new();
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(file_type) = entry.file_type() else {
                    continue;
                };
                if file_type.is_dir() {
                    stack.push(path);
                } else if let Some(rank) = names
                    .iter()
                    .position(|n| entry.file_name().to_string_lossy() == n.as_str())
                {
                    found.push((rank, path));
                }
            }
        }
        found.sort();
        found.into_iter().next().map(|(_, p)| p)
    })
    .await
    .ok()
    .flatten()
}

fn sanitize(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
