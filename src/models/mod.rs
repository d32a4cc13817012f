//! Model management: downloads from a URL or Hugging Face, split GGUF files and multi-component
//! diffusion models stored as one model, GGUF metadata, listing, verification and deletion.
//!
//! A model is listed only once every file is downloaded and verified: `model.json` is written
//! last, atomically. A failed download removes the model's folder, except after a broken
//! connection, where the `.part` files stay so the same download resumes later.

pub mod capabilities;
pub mod gguf;
pub mod hub;
pub mod import;
pub mod safetensors;
pub mod store;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use ts_rs::TS;

use crate::config::DataPaths;
use crate::download::{self, DownloadError};
use crate::error::{Coded, ErrorCode, io_suggestion};
use crate::events::EventSink;
use crate::sync::lock;
pub use capabilities::Capability;
pub use store::{Damaged, ModelInfo, ModelSource, ModelType, StoredFile};

/// Roles of a model's extra files: a diffusion model's (each passed to its stable-diffusion.cpp
/// flag), and an `llm` model's multimodal projector and draft model (llama-server's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(rename = "ComponentRole")]
pub enum ComponentRole {
    ClipL,
    ClipG,
    T5xxl,
    Llm,
    LlmVision,
    Vae,
    Taesd,
    /// An `llm` model's multimodal projector (vision or audio encoder, llama-server's `--mmproj`).
    Mmproj,
    /// An `llm` model's draft model for speculative decoding (llama-server's `--model-draft`).
    Draft,
}

impl ComponentRole {
    /// A diffusion model's roles.
    pub const DIFFUSION: [ComponentRole; 7] = [
        ComponentRole::ClipL,
        ComponentRole::ClipG,
        ComponentRole::T5xxl,
        ComponentRole::Llm,
        ComponentRole::LlmVision,
        ComponentRole::Vae,
        ComponentRole::Taesd,
    ];
    /// An `llm` model's roles.
    pub const LLM: [ComponentRole; 2] = [ComponentRole::Mmproj, ComponentRole::Draft];

    /// The name serde writes, which is also the key in [`ModelInfo::components`].
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentRole::ClipL => "clip_l",
            ComponentRole::ClipG => "clip_g",
            ComponentRole::T5xxl => "t5xxl",
            ComponentRole::Llm => "llm",
            ComponentRole::LlmVision => "llm_vision",
            ComponentRole::Vae => "vae",
            ComponentRole::Taesd => "taesd",
            ComponentRole::Mmproj => "mmproj",
            ComponentRole::Draft => "draft",
        }
    }

    /// The backend's flag for the file.
    pub fn flag(self) -> &'static str {
        match self {
            ComponentRole::ClipL => "--clip_l",
            ComponentRole::ClipG => "--clip_g",
            ComponentRole::T5xxl => "--t5xxl",
            ComponentRole::Llm => "--llm",
            ComponentRole::LlmVision => "--llm_vision",
            ComponentRole::Vae => "--vae",
            ComponentRole::Taesd => "--taesd",
            ComponentRole::Mmproj => "--mmproj",
            ComponentRole::Draft => "--model-draft",
        }
    }

    /// Refuses roles that models of `model_type` do not have (LoRAs and upscalers have none).
    pub fn check(
        roles: impl IntoIterator<Item = ComponentRole>,
        model_type: ModelType,
    ) -> Result<(), String> {
        let allowed: &[ComponentRole] = match model_type {
            ModelType::Diffusion => &Self::DIFFUSION,
            ModelType::Llm => &Self::LLM,
            ModelType::Lora | ModelType::Upscaler => &[],
        };
        let Some(role) = roles.into_iter().find(|r| !allowed.contains(r)) else {
            return Ok(());
        };
        let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        Err(match names.is_empty() {
            true => format!(
                "models of type '{}' have no components",
                model_type.as_str()
            ),
            false => format!(
                "component role {:?} is not for models of type '{}' (theirs: {})",
                role.as_str(),
                model_type.as_str(),
                names.join(", ")
            ),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("no model with id {id:?}")]
    NotFound { id: String },
    #[error("invalid download: {0}")]
    Invalid(String),
    #[error("invalid import: {0}")]
    InvalidImport(String),
    #[error("a model with id {id:?} already exists")]
    Exists { id: String },
    #[error("model {id:?} is being downloaded already")]
    Busy { id: String },
    #[error("model {id:?} is in use by a running server")]
    InUse { id: String },
    #[error("model {id:?} cannot be deleted: {path} is open in another program ({reason})")]
    FilesOpen {
        id: String,
        path: PathBuf,
        reason: String,
    },
    #[error("download {id} was cancelled")]
    Cancelled { id: String },
    #[error("metadata of model {id:?} is unreadable: {reason}")]
    Corrupt { id: String, reason: String },
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Coded for ModelError {
    fn code(&self) -> ErrorCode {
        match self {
            ModelError::NotFound { .. } => ErrorCode::ModelNotFound,
            ModelError::Invalid(_) | ModelError::InvalidImport(_) => ErrorCode::InvalidArgument,
            ModelError::Exists { .. } => ErrorCode::ModelExists,
            ModelError::Busy { .. } => ErrorCode::DownloadInProgress,
            ModelError::Cancelled { .. } => ErrorCode::Cancelled,
            ModelError::InUse { .. } | ModelError::FilesOpen { .. } => ErrorCode::ModelInUse,
            ModelError::Corrupt { .. } => ErrorCode::ModelDamaged,
            ModelError::Io { .. } => ErrorCode::FileSystemError,
            ModelError::Download(e) => e.code(),
        }
    }

    fn suggestion(&self) -> Option<String> {
        Some(match self {
            ModelError::NotFound { .. } => {
                "List the installed models with modelManager.listModels()".into()
            }
            ModelError::Invalid(_) => {
                "Compare the download config with DownloadConfig in index.d.ts".into()
            }
            ModelError::InvalidImport(_) => {
                "Check the paths, and compare the config with ImportModelRequest in index.d.ts"
                    .into()
            }
            ModelError::Exists { .. } => {
                "Use the installed model, delete it first, or choose another name".into()
            }
            ModelError::Busy { .. } => "Wait for the running download, or cancel it".into(),
            ModelError::InUse { .. } => "Stop the server that uses the model first".into(),
            ModelError::FilesOpen { .. } => "Close the program that has the file open (a llama-server or sd-server this app did not start, another app), then delete again; nothing was deleted".into(),
            ModelError::Cancelled { .. } => "Start the download again when wanted".into(),
            ModelError::Corrupt { .. } => "Delete the model and download it again".into(),
            ModelError::Download(e) => return e.suggestion(),
            ModelError::Io { source, .. } => io_suggestion(source).into(),
        })
    }

    fn details(&self) -> Map<String, Value> {
        let v = match self {
            ModelError::NotFound { id }
            | ModelError::Exists { id }
            | ModelError::Busy { id }
            | ModelError::InUse { id }
            | ModelError::Cancelled { id }
            | ModelError::Corrupt { id, .. } => json!({ "modelId": id }),
            ModelError::Download(e) => return e.details(),
            ModelError::Io { path, .. } => json!({ "path": path }),
            ModelError::FilesOpen { id, path, reason } => {
                json!({ "modelId": id, "path": path, "reason": reason })
            }
            ModelError::Invalid(_) | ModelError::InvalidImport(_) => json!({}),
        };
        v.as_object().cloned().unwrap_or_default()
    }
}

/// Where a file comes from: a plain URL, or a file of a Hugging Face repository.
#[derive(Debug, Clone, Default, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "FileSourceConfig")]
pub struct FileSpec {
    #[ts(type = "'url' | 'huggingface'")]
    pub source: String,
    /// With `source: 'url'`: an http(s) URL.
    #[ts(optional)]
    pub url: Option<String>,
    /// With `source: 'huggingface'`: `owner/name`.
    #[ts(optional)]
    pub repo: Option<String>,
    /// With `source: 'huggingface'`: the path of the file in the repository.
    #[ts(optional)]
    pub file: Option<String>,
    /// With `source: 'huggingface'`: branch, tag or commit (default `main`); resolved to a
    /// commit, which is recorded.
    #[ts(optional)]
    pub revision: Option<String>,
    /// Expected SHA-256: 64 hex digits in either case, optionally prefixed `sha256:`. The
    /// download fails, and nothing is kept, when it differs; a malformed one is a
    /// `ValidationError` before any byte is fetched.
    #[ts(optional)]
    pub checksum: Option<String>,
}

/// One extra file of a model: a diffusion model's text encoder, VAE, …, or an `llm` model's
/// `mmproj` projector or `draft` model.
#[derive(Debug, Clone, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "ComponentDownload")]
pub struct ComponentSpec {
    pub role: ComponentRole,
    #[serde(flatten)]
    pub file: FileSpec,
    /// Its license facts, recorded with it.
    #[ts(optional)]
    pub provenance: Option<Provenance>,
}

/// A file's license facts, as genai-electron 0.26 records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[ts(rename = "ArtifactProvenance")]
pub struct Provenance {
    pub license: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub license_url: Option<String>,
    /// When the license was last checked (ISO 8601).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub last_checked_on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub note: Option<String>,
}

/// The keys a download config may have (its fields are flattened, which serde cannot check):
/// any other is refused rather than ignored.
const FILE_KEYS: &[&str] = &["source", "url", "repo", "file", "revision", "checksum"];
const DOWNLOAD_KEYS: &[&str] = &[
    "name",
    "type",
    "components",
    "stallTimeout",
    "provenance",
    "shardFiles",
    "modelDirectory",
];
const COMPONENT_KEYS: &[&str] = &["role", "provenance"];

impl DownloadConfig {
    /// The first key of `config` (or of one of its components) that no field takes, as a path.
    pub fn unknown_key(config: &Value) -> Option<String> {
        let unknown = |object: &Value, own: &[&str]| {
            object.as_object().and_then(|o| {
                o.keys()
                    .find(|k| !FILE_KEYS.contains(&k.as_str()) && !own.contains(&k.as_str()))
                    .cloned()
            })
        };
        if let Some(key) = unknown(config, DOWNLOAD_KEYS) {
            return Some(key);
        }
        let components = config.get("components").and_then(Value::as_array)?;
        components.iter().enumerate().find_map(|(i, component)| {
            unknown(component, COMPONENT_KEYS).map(|key| format!("components[{i}].{key}"))
        })
    }
}

/// What {@link ModelManager.downloadModel} fetches. A name ending in `-00001-of-0000N.gguf`
/// brings all N shards.
#[derive(Debug, Clone, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "DownloadRequest")]
pub struct DownloadConfig {
    #[serde(flatten)]
    pub file: FileSpec,
    /// Display name; the model's id is derived from it (lower case, filesystem-safe).
    pub name: String,
    #[serde(rename = "type")]
    pub model_type: ModelType,
    /// Extra files: a diffusion model's (the top-level source is the diffusion model itself), or an
    /// `llm` model's `mmproj` (a multimodal projector made for it) and `draft` (a small model of
    /// the same vocabulary, for speculative decoding). Each is checked as the model is: its
    /// `checksum`, its GGUF header, and its place (a projector's architecture is `clip`; a
    /// draft's vocabulary is the model's); one that fails registers nothing.
    #[serde(default)]
    #[ts(as = "Option<Vec<ComponentSpec>>", optional)]
    pub components: Vec<ComponentSpec>,
    /// Milliseconds without a byte before the connection is given up and resumed (default
    /// 30000). After three resumptions (250 ms, 500 ms, 1 s apart) the download fails with a
    /// {@link DownloadError} and its `.part` stays, so calling `downloadModel` again resumes it.
    #[ts(optional)]
    pub stall_timeout: Option<u64>,
    /// The model file's license facts, recorded with the model.
    #[ts(optional)]
    pub provenance: Option<Provenance>,
    /// The file names of a split model's shards, in order, where the first's name does not
    /// say them (`-00001-of-0000N.gguf` does); they lie beside it (same folder of the URL or repo).
    #[serde(default)]
    #[ts(as = "Option<Vec<String>>", optional)]
    pub shard_files: Vec<String>,
    /// genai-electron 0.26's folder shared by the files of several models. Accepted, and not
    /// needed: each model keeps its files in its own folder, and a file already installed from
    /// the same URL is hard-linked instead of fetched again, so a shared file is kept once.
    #[ts(optional)]
    pub model_directory: Option<String>,
}

/// A SHA-256 checksum as users write it: 64 hex digits in either case, with or without the
/// `sha256:` prefix that genai-electron 0.26 prints; lower-case hex without the prefix.
fn sha256_checksum(checksum: Option<&str>, what: &str) -> Result<Option<String>, ModelError> {
    let Some(checksum) = checksum else {
        return Ok(None);
    };
    let trimmed = checksum.trim();
    let hex = match trimmed.split_once(':') {
        Some((algorithm, hex)) if algorithm.eq_ignore_ascii_case("sha256") => hex,
        Some((algorithm, _)) => {
            return Err(ModelError::Invalid(format!(
                "{what} uses {algorithm:?}; only SHA-256 is supported (\"sha256:<64 hex digits>\")"
            )));
        }
        None => trimmed,
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ModelError::Invalid(format!(
            "{what} must be a SHA-256 hash: 64 hex digits, optionally prefixed \"sha256:\" (got {checksum:?})"
        )));
    }
    Ok(Some(hex.to_ascii_lowercase()))
}

/// One file to fetch, resolved to a pinned URL.
#[derive(Debug, Clone)]
struct Planned {
    role: Option<String>,
    source: ModelSource,
    file_name: String,
    checksum: Option<String>,
}

/// How far a download is.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "DownloadProgress")]
pub struct ModelProgress {
    pub download_id: String,
    pub model_id: String,
    /// The file being fetched.
    pub file: String,
    /// Bytes of all the model's files so far.
    pub downloaded: u64,
    /// Bytes in all, as far as known (the current file and those before it).
    pub total: Option<u64>,
    pub percentage: Option<f64>,
    /// Bytes per second since the download started.
    pub speed: f64,
    /// Seconds left at the current speed, when the total is known.
    #[serde(rename = "estimatedTimeRemaining")]
    pub eta_seconds: Option<f64>,
}

/// Where `updateModelMetadata` reads a model's GGUF header (genai-electron 0.26's strategies):
/// its file, its source URL, or one then the other (default `local-remote`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(rename = "MetadataFetchStrategy")]
pub enum MetadataSource {
    LocalOnly,
    RemoteOnly,
    #[default]
    LocalRemote,
    RemoteLocal,
}

/// Each network read of `updateModelMetadata` waits at most this long.
const METADATA_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A file of a download begins.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct FileStart {
    pub download_id: String,
    pub model_id: String,
    /// A diffusion model's component role; `null` for the model file (or a shard of it).
    pub role: Option<String>,
    pub file: String,
    /// 1-based, of `total` files.
    pub index: usize,
    pub total: usize,
}

/// What a model manager reports while it works.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(tag = "type", rename_all = "lowercase")]
#[ts(rename = "ModelManagerEvent")]
pub enum ModelEvent {
    Progress(ModelProgress),
    /// A file of a download begins (genai-electron 0.26's `onComponentStart`).
    #[serde(rename = "file-start")]
    FileStart(FileStart),
    /// A model folder that listing skipped: its record cannot be trusted or its files are
    /// incomplete. `deleteModel` with the folder's name removes it.
    Damaged(Damaged),
}

/// Bytes the installed models take, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
pub struct StorageUsage {
    pub llm: u64,
    pub diffusion: u64,
    pub lora: u64,
    pub upscaler: u64,
    pub total: u64,
    /// Number of installed models.
    pub models: usize,
}

/// What {@link ModelManager.verifyModel} found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[ts(rename = "ModelVerification")]
pub struct Verification {
    pub valid: bool,
    /// Files that are missing or whose sha256 differs.
    pub problems: Vec<FileProblem>,
}

/// A file that failed verification: its sha256 differs, or it cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct FileProblem {
    pub path: PathBuf,
    /// The sha256 recorded at download.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub expected: Option<String>,
    /// The sha256 it has now.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub actual: Option<String>,
    /// Why it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub error: Option<String>,
}

pub struct ModelManager {
    events: Option<EventSink<ModelEvent>>,
    active: Mutex<HashMap<String, (String, CancellationToken)>>,
    hub_endpoint: Option<String>,
}

impl ModelManager {
    pub fn new(events: Option<EventSink<ModelEvent>>) -> Self {
        ModelManager {
            events,
            active: Mutex::new(HashMap::new()),
            hub_endpoint: None,
        }
    }

    /// Points Hugging Face sources at another host (a mirror, or a test server).
    pub fn with_hub_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.hub_endpoint = Some(endpoint.into());
        self
    }

    /// Every complete model; folders that cannot be listed are reported as `Damaged` events.
    pub async fn list(
        &self,
        data: &DataPaths,
        filter: Option<ModelType>,
    ) -> Result<Vec<ModelInfo>, ModelError> {
        let (models, damaged) = store::list(data, filter).await?;
        if let Some(events) = &self.events {
            damaged
                .into_iter()
                .for_each(|d| events.emit(ModelEvent::Damaged(d)));
        }
        Ok(models)
    }

    pub async fn get(&self, data: &DataPaths, id: &str) -> Result<ModelInfo, ModelError> {
        store::read(data, id).await
    }

    /// Marks a model as used by a server, so it cannot be deleted until released. Process-wide:
    /// every manager instance and every server share one registry.
    pub fn acquire(&self, id: &str) {
        acquire(id);
    }

    pub fn release(&self, id: &str) {
        release(id);
    }

    /// Removes a model's folder; one whose record is damaged too (that is how it goes away).
    pub async fn delete(&self, data: &DataPaths, id: &str) -> Result<(), ModelError> {
        if lock(&IN_USE).iter().any(|m| m == id) {
            return Err(ModelError::InUse { id: id.into() });
        }
        // The folder of the id asked for, never one named by the record's contents.
        let (dir, _) = store::find(data, id).await?;
        // Windows keeps an open file: finding that out half-way would leave half a model.
        let held = crate::files::first_held_open(&dir)
            .await
            .map_err(|source| ModelError::Io {
                path: dir.clone(),
                source,
            })?;
        if let Some((path, reason)) = held {
            return Err(ModelError::FilesOpen {
                id: id.into(),
                path,
                reason,
            });
        }
        // model.json first: from here on the model is not listed, even if removing the rest fails.
        let meta = dir.join(store::METADATA_FILE);
        tokio::fs::remove_file(&meta)
            .await
            .map_err(|source| ModelError::Io { path: meta, source })?;
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(|source| ModelError::Io { path: dir, source })
    }

    /// Recomputes every file's sha256; says which files are missing or differ.
    pub async fn verify(&self, data: &DataPaths, id: &str) -> Result<Verification, ModelError> {
        let info = store::read_record(data, id).await?;
        let mut problems = Vec::new();
        for (path, _, expected) in info.files() {
            let problem = |actual: Option<String>, error: Option<String>| FileProblem {
                path: path.to_path_buf(),
                expected: error.is_none().then(|| expected.to_string()),
                actual,
                error,
            };
            match download::sha256_file(path).await {
                Ok(actual) if expected.eq_ignore_ascii_case(&actual) => {}
                Ok(actual) => problems.push(problem(Some(actual), None)),
                Err(e) => problems.push(problem(None, Some(e.to_string()))),
            }
        }
        Ok(Verification {
            valid: problems.is_empty(),
            problems,
        })
    }

    pub async fn storage_usage(&self, data: &DataPaths) -> Result<StorageUsage, ModelError> {
        let (models, _) = store::list(data, None).await?;
        let sum = |t: ModelType| {
            models
                .iter()
                .filter(|m| m.model_type == t)
                .map(|m| m.size)
                .sum()
        };
        let (llm, diffusion, lora, upscaler) = (
            sum(ModelType::Llm),
            sum(ModelType::Diffusion),
            sum(ModelType::Lora),
            sum(ModelType::Upscaler),
        );
        Ok(StorageUsage {
            llm,
            diffusion,
            lora,
            upscaler,
            total: llm + diffusion + lora + upscaler,
            models: models.len(),
        })
    }

    fn emit(&self, event: ModelEvent) {
        if let Some(events) = &self.events {
            events.emit(event);
        }
    }

    /// `updateModelMetadata`: reads the model's GGUF header again, from its file, its source URL,
    /// or one then the other, and records it.
    pub async fn update_metadata(
        &self,
        data: &DataPaths,
        id: &str,
        from: MetadataSource,
    ) -> Result<ModelInfo, ModelError> {
        let mut info = store::read(data, id).await?;
        let order: &[bool] = match from {
            MetadataSource::LocalOnly => &[true],
            MetadataSource::RemoteOnly => &[false],
            MetadataSource::LocalRemote => &[true, false],
            MetadataSource::RemoteLocal => &[false, true],
        };
        let mut failures = Vec::new();
        for &local in order {
            let read = if local {
                gguf::read_file(&info.path, gguf::ParseOptions::default()).await
            } else if info.source.url.starts_with("http") {
                gguf::read_url(
                    &info.source.url,
                    gguf::ParseOptions::default(),
                    METADATA_READ_TIMEOUT,
                )
                .await
            } else {
                Err(gguf::GgufError::Network(format!(
                    "its source {} is not a URL to read",
                    info.source.url
                )))
            };
            match read {
                Ok(metadata) => {
                    info.gguf_metadata =
                        Some(serde_json::to_value(metadata).expect("metadata serializes"));
                    store::write(data, &info).await?;
                    return Ok(info);
                }
                Err(e) if local => failures.push(format!("its file: {e}")),
                Err(e) => failures.push(format!("{}: {e}", info.source.url)),
            }
        }
        Err(ModelError::Corrupt {
            id: id.into(),
            reason: format!("no GGUF header could be read ({})", failures.join("; ")),
        })
    }

    /// Registers files the user already has as a model ([`import::import`]).
    pub async fn import(
        &self,
        data: &DataPaths,
        request: &import::ImportRequest,
    ) -> Result<ModelInfo, ModelError> {
        let id = store::model_id(&request.name);
        if lock(&self.active)
            .values()
            .any(|(model_id, _)| *model_id == id)
        {
            return Err(ModelError::Busy { id });
        }
        import::import(data, request).await
    }

    /// Adopts the models of a genai-electron 0.26 data folder ([`import::adopt`]).
    pub async fn adopt(
        &self,
        data: &DataPaths,
        legacy_root: &Path,
    ) -> Result<import::Adoption, ModelError> {
        import::adopt(data, legacy_root).await
    }

    /// Cancels a running download by its download id or its model id. Returns whether one ran.
    pub fn cancel(&self, id: &str) -> bool {
        let active = lock(&self.active);
        let found = active
            .iter()
            .find(|(download_id, (model_id, _))| download_id.as_str() == id || model_id == id);
        found.map(|(_, (_, token))| token.cancel()).is_some()
    }

    pub async fn download(
        &self,
        data: &DataPaths,
        download_id: &str,
        config: &DownloadConfig,
    ) -> Result<ModelInfo, ModelError> {
        let id = store::model_id(&config.name);
        let plan = self.plan(config).await?;
        if store::read_record(data, &id).await.is_ok() {
            return Err(ModelError::Exists { id });
        }
        let token = CancellationToken::new();
        {
            let mut active = lock(&self.active);
            if active.values().any(|(model_id, _)| model_id == &id) {
                return Err(ModelError::Busy { id });
            }
            active.insert(download_id.to_string(), (id.clone(), token.clone()));
        }
        let dir = store::model_dir(data, config.model_type, &id);
        // Files another model holds already, by the URL they came from.
        let installed = installed_files(data).await;
        let result = self
            .fetch_all(&dir, download_id, &id, config, &plan, &installed, &token)
            .await;
        lock(&self.active).remove(download_id);
        let info = match result {
            Ok(info) => info,
            Err(err) => {
                let broken_connection =
                    matches!(err, ModelError::Download(DownloadError::Network { .. }));
                if broken_connection {
                    keep_only_parts(&dir).await;
                } else {
                    let _ = tokio::fs::remove_dir_all(&dir).await;
                }
                return Err(err);
            }
        };
        if let Err(err) = store::write(data, &info).await {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(err);
        }
        Ok(info)
    }

    async fn plan(&self, config: &DownloadConfig) -> Result<Vec<Planned>, ModelError> {
        if config.name.trim().is_empty() {
            return Err(ModelError::Invalid("name must not be empty".into()));
        }
        if config.stall_timeout == Some(0) {
            return Err(ModelError::Invalid(
                "stallTimeout must be a positive number of milliseconds".into(),
            ));
        }
        ComponentRole::check(config.components.iter().map(|c| c.role), config.model_type)
            .map_err(ModelError::Invalid)?;
        // Checked before anything is asked of a server.
        let checksum = sha256_checksum(config.file.checksum.as_deref(), "checksum")?;
        let mut component_checksums = Vec::new();
        for component in &config.components {
            component_checksums.push(sha256_checksum(
                component.file.checksum.as_deref(),
                &format!("the {} component's checksum", component.role.as_str()),
            )?);
        }
        let mut primary = hub::resolve(&config.file, self.hub_endpoint.as_deref()).await?;
        if !config.shard_files.is_empty() {
            primary = hub::with_shards(primary, &config.shard_files)?;
        }
        let mut plan = Vec::new();
        for source in primary {
            plan.push(Planned {
                role: None,
                checksum: checksum.clone(),
                ..source
            });
        }
        if plan.len() > 1 && config.file.checksum.is_some() {
            // One checksum cannot cover several shards.
            return Err(ModelError::Invalid(
                "checksum applies to a single file, not to a split model".into(),
            ));
        }
        let mut roles = HashSet::new();
        for (component, checksum) in config.components.iter().zip(component_checksums) {
            if !roles.insert(component.role) {
                return Err(ModelError::Invalid(format!(
                    "component role {:?} given twice",
                    component.role.as_str()
                )));
            }
            let mut resolved = hub::resolve(&component.file, self.hub_endpoint.as_deref()).await?;
            if resolved.len() != 1 {
                return Err(ModelError::Invalid(format!(
                    "component {:?} must be a single file",
                    component.role
                )));
            }
            let source = resolved.remove(0);
            plan.push(Planned {
                role: Some(component.role.as_str().to_string()),
                checksum,
                ..source
            });
        }
        for file in &plan {
            // A LoRA of another format is refused before a byte is fetched.
            file_format(config.model_type, &file.file_name).map_err(ModelError::Invalid)?;
        }
        let mut names = HashSet::new();
        for file in &mut plan {
            // Two components may share a file name; keep them apart.
            if !names.insert(file.file_name.clone()) {
                file.file_name = format!(
                    "{}-{}",
                    file.role.as_deref().unwrap_or("file"),
                    file.file_name
                );
                names.insert(file.file_name.clone());
            }
        }
        Ok(plan)
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_all(
        &self,
        dir: &Path,
        download_id: &str,
        model_id: &str,
        config: &DownloadConfig,
        plan: &[Planned],
        installed: &HashMap<String, (PathBuf, String)>,
        token: &CancellationToken,
    ) -> Result<ModelInfo, ModelError> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| ModelError::Io {
                path: dir.into(),
                source,
            })?;
        let started = Instant::now();
        let mut done_bytes = 0u64;
        let mut stored: Vec<Stored> = Vec::new();
        for (index, file) in plan.iter().enumerate() {
            let dest = dir.join(&file.file_name);
            self.emit(ModelEvent::FileStart(FileStart {
                download_id: download_id.into(),
                model_id: model_id.into(),
                role: file.role.clone(),
                file: file.file_name.clone(),
                index: index + 1,
                total: plan.len(),
            }));
            let mut on_progress = |p: download::Progress| {
                let downloaded = done_bytes + p.downloaded;
                let speed = downloaded as f64 / started.elapsed().as_secs_f64().max(1e-3);
                // Only the current file's size is known; the total covers the files so far.
                let total = p.total.map(|t| done_bytes + t);
                let eta_seconds = total
                    .filter(|_| speed > 0.0)
                    .map(|t| t.saturating_sub(downloaded) as f64 / speed);
                if let Some(events) = &self.events {
                    events.emit(ModelEvent::Progress(ModelProgress {
                        download_id: download_id.into(),
                        model_id: model_id.into(),
                        file: file.file_name.clone(),
                        downloaded,
                        total,
                        percentage: total
                            .filter(|&t| t > 0)
                            .map(|t| downloaded as f64 * 100.0 / t as f64),
                        speed,
                        eta_seconds,
                    }));
                }
            };
            let format =
                file_format(config.model_type, &file.file_name).map_err(ModelError::Invalid)?;
            let check_start = move |head: &[u8]| format.check_start(head);
            let options = download::Options {
                sha256: file.checksum.as_deref(),
                stall_timeout: config.stall_timeout.map_or(
                    download::DEFAULT_STALL_TIMEOUT,
                    std::time::Duration::from_millis,
                ),
                check_start: (format != FileFormat::Unchecked).then_some(&check_start as _),
            };
            let shared = match installed.get(&file.source.url) {
                Some((held, recorded)) => {
                    share(held, &dest, recorded, file.checksum.as_deref()).await
                }
                None => None,
            };
            let got = match shared {
                Some(got) => {
                    on_progress(download::Progress {
                        downloaded: got.bytes,
                        total: Some(got.bytes),
                    });
                    got
                }
                None => tokio::select! {
                    got = download::download_with(&file.source.url, &dest, &options, &mut on_progress) => got?,
                    _ = token.cancelled() => return Err(ModelError::Cancelled { id: download_id.into() }),
                },
            };
            let metadata = match format {
                FileFormat::Gguf => Some(check_gguf(&file.source.url, &got).await?),
                FileFormat::Safetensors => {
                    safetensors::check(&got.path, got.bytes, &got.path)
                        .await
                        .map_err(ModelError::Invalid)?;
                    None
                }
                FileFormat::Unchecked => None,
            };
            done_bytes += got.bytes;
            stored.push((
                file.role.clone(),
                StoredFile {
                    path: got.path,
                    size: got.bytes,
                    checksum: got.sha256,
                    source: file.source.clone(),
                    provenance: None,
                },
                metadata,
            ));
        }
        let mut info = assemble(model_id, config.name.trim(), config.model_type, stored)
            .map_err(ModelError::Invalid)?;
        info.provenance = config.provenance.clone();
        for (role, file) in &mut info.components {
            let component = config.components.iter().find(|c| c.role.as_str() == role);
            file.provenance = component.and_then(|c| c.provenance.clone());
        }
        Ok(info)
    }
}

/// One file brought into a model's folder: its component role (none for the model file or a
/// shard of it), the file, and its GGUF header when it is GGUF.
pub(crate) type Stored = (Option<String>, StoredFile, Option<gguf::GgufMetadata>);

/// The record of a model's files (a download's or an import's): the model file, or the first of
/// its shards, with its header; the components by role; the size of them all.
fn assemble(
    id: &str,
    name: &str,
    model_type: ModelType,
    stored: Vec<Stored>,
) -> Result<ModelInfo, String> {
    let (primary_files, components): (Vec<_>, Vec<_>) =
        stored.into_iter().partition(|(role, _, _)| role.is_none());
    let (_, primary, primary_metadata) = primary_files
        .first()
        .cloned()
        .ok_or_else(|| "no model file".to_string())?;
    let shards: Vec<StoredFile> = if primary_files.len() > 1 {
        primary_files.iter().map(|(_, f, _)| f.clone()).collect()
    } else {
        Vec::new()
    };
    let size = primary_files
        .iter()
        .chain(components.iter())
        .map(|(_, f, _)| f.size)
        .sum();
    let capabilities = match model_type {
        ModelType::Llm => llm_capabilities(primary_metadata.as_ref(), &components)?,
        _ => Vec::new(),
    };
    Ok(ModelInfo {
        id: id.into(),
        name: name.into(),
        model_type,
        size,
        path: primary.path.clone(),
        downloaded_at: crate::clock::iso_now(),
        source: primary.source.clone(),
        checksum: primary.checksum.clone(),
        gguf_metadata: primary_metadata
            .map(|m| serde_json::to_value(m).expect("metadata serializes")),
        components: components
            .into_iter()
            .map(|(role, f, _)| (role.unwrap_or_default(), f))
            .collect::<BTreeMap<_, _>>(),
        shards,
        provenance: None,
        capabilities,
    })
}

/// Checks that each file of an `llm` model is what its place asks (the model, a projector, a
/// draft of the same vocabulary), and says what the model can do.
fn llm_capabilities(
    model: Option<&gguf::GgufMetadata>,
    components: &[Stored],
) -> Result<Vec<Capability>, String> {
    let name = |file: &StoredFile| {
        file.path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    };
    let mut projector = None;
    for (role, file, meta) in components {
        let Some(meta) = meta else { continue };
        capabilities::check_file(role.as_deref(), meta, &name(file))?;
        match (role.as_deref(), model) {
            (Some("mmproj"), _) => projector = Some(capabilities::projector_modalities(&meta.raw)),
            (Some("draft"), Some(model)) => {
                capabilities::check_draft(model, meta, &name(file))?;
            }
            _ => {}
        }
    }
    if let Some(meta) = model {
        capabilities::check_file(None, meta, "the model file")?;
    }
    Ok(capabilities::of(|key| model?.raw.get(key), projector))
}

/// Every file of the installed models and its recorded sha256, by the URL it came from (one of
/// them where several do).
async fn installed_files(data: &DataPaths) -> HashMap<String, (PathBuf, String)> {
    let Ok((models, _)) = store::list(data, None).await else {
        return HashMap::new();
    };
    models
        .iter()
        .flat_map(|m| {
            m.sourced_files()
                .into_iter()
                .map(|(path, _, checksum, source)| {
                    (
                        source.url.clone(),
                        (path.to_path_buf(), checksum.to_string()),
                    )
                })
        })
        .collect()
}

/// A file another model holds already, hard-linked in place of a download (a second name for
/// the same bytes: kept once), when it is intact (its sha256 the one recorded) and the one
/// expected. `None`: download it.
async fn share(
    held: &Path,
    dest: &Path,
    recorded: &str,
    expected: Option<&str>,
) -> Option<download::Downloaded> {
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent).await.ok()?;
    }
    let _ = tokio::fs::remove_file(dest).await;
    tokio::fs::hard_link(held, dest).await.ok()?;
    let sha256 = download::sha256_file(dest).await.ok();
    let matches = sha256.as_deref().is_some_and(|s| {
        s.eq_ignore_ascii_case(recorded) && expected.is_none_or(|e| e.eq_ignore_ascii_case(s))
    });
    let bytes = tokio::fs::metadata(dest).await.map(|m| m.len()).ok();
    match (matches, sha256, bytes) {
        (true, Some(sha256), Some(bytes)) => Some(download::Downloaded {
            path: dest.to_path_buf(),
            bytes,
            sha256,
            resumed_from: 0,
        }),
        _ => {
            let _ = tokio::fs::remove_file(dest).await;
            None
        }
    }
}

/// How a model file's bytes are checked, by the model's type and the file's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileFormat {
    Gguf,
    Safetensors,
    /// A diffusion model's file in another format (`.safetensors`, `.ckpt`): left to the backend.
    Unchecked,
}

impl FileFormat {
    /// Judges a download's first bytes as they arrive.
    fn check_start(self, head: &[u8]) -> Result<(), String> {
        match self {
            FileFormat::Gguf => gguf::check_start(head).map_err(|e| e.to_string()),
            FileFormat::Safetensors => safetensors::check_start(head),
            FileFormat::Unchecked => Ok(()),
        }
    }
}

/// What a file named `name` of a `model_type` model must be: an LLM is GGUF, a LoRA or an
/// upscaler GGUF or safetensors, any `.gguf` GGUF.
fn file_format(model_type: ModelType, name: &str) -> Result<FileFormat, String> {
    let extension = Path::new(name)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    Ok(match (model_type, extension.as_deref()) {
        (ModelType::Llm, _) | (_, Some("gguf")) => FileFormat::Gguf,
        (ModelType::Lora | ModelType::Upscaler, Some("safetensors")) => FileFormat::Safetensors,
        (ModelType::Lora | ModelType::Upscaler, _) => {
            let kind = if model_type == ModelType::Lora {
                "a LoRA"
            } else {
                "an upscaler"
            };
            return Err(format!(
                "{kind} is a .safetensors or .gguf file, and {name:?} is neither (pickled .pt, .pth and .ckpt files can run code when they are loaded: convert one to safetensors first)"
            ));
        }
        (ModelType::Diffusion, _) => FileFormat::Unchecked,
    })
}

/// Reads the header of a downloaded GGUF file and checks that the file holds every tensor it
/// lists. A short file (a connection closed early, with no length to tell) goes back to being a
/// `.part`, so the next try resumes it.
async fn check_gguf(
    url: &str,
    got: &download::Downloaded,
) -> Result<gguf::GgufMetadata, ModelError> {
    let invalid = |e: gguf::GgufError| {
        ModelError::Invalid(format!(
            "{} is not a valid GGUF file: {e}",
            got.path.display()
        ))
    };
    let meta = gguf::read_file(&got.path, gguf::ParseOptions::default())
        .await
        .map_err(invalid)?;
    if let Err(short) = gguf::check_complete(&meta, got.bytes) {
        let part = download::part_path(&got.path);
        tokio::fs::rename(&got.path, &part)
            .await
            .map_err(|source| ModelError::Io { path: part, source })?;
        return Err(ModelError::Download(DownloadError::Network {
            url: url.into(),
            reason: short.to_string(),
        }));
    }
    Ok(meta)
}

/// After a broken connection: keeps the `.part` files that hold bytes (the next download resumes
/// them) and removes everything else, the folder too when nothing is left.
async fn keep_only_parts(dir: &Path) {
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            let path = entry.path();
            let resumable = path.extension().is_some_and(|e| e == "part")
                && entry
                    .metadata()
                    .await
                    .is_ok_and(|m| m.is_file() && m.len() > 0);
            if !resumable {
                let _ = match entry.file_type().await {
                    Ok(t) if t.is_dir() => tokio::fs::remove_dir_all(&path).await,
                    _ => tokio::fs::remove_file(&path).await,
                };
            }
        }
    }
    // Fails, as it should, while parts remain.
    let _ = tokio::fs::remove_dir(dir).await;
}

static IN_USE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A server holds the model (counted: two servers may use one model).
pub fn acquire(id: &str) {
    lock(&IN_USE).push(id.to_string());
}

pub fn release(id: &str) {
    let mut in_use = lock(&IN_USE);
    if let Some(at) = in_use.iter().position(|m| m == id) {
        in_use.remove(at);
    }
}

/// UTC time as ISO 8601 with milliseconds, as JavaScript's `toISOString()`.
#[cfg(test)]
mod tests;
