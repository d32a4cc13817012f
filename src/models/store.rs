//! Models on disk: one folder per model (`models/<type>/<id>/`) holding its file(s) and a
//! `model.json` written atomically, last. A folder without `model.json` is an unfinished
//! download and is never listed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use ts_rs::TS;

use super::ModelError;
use crate::config::DataPaths;

pub const METADATA_FILE: &str = "model.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    Llm,
    Diffusion,
    /// A LoRA for diffusion models (a `.safetensors` or `.gguf` file), named in an image
    /// request's `loras`.
    Lora,
    /// An image upscaler of the ESRGAN family (a `.safetensors` or `.gguf` file), named by
    /// `upscaleImage`.
    Upscaler,
}

impl ModelType {
    pub const ALL: [ModelType; 4] = [
        ModelType::Llm,
        ModelType::Diffusion,
        ModelType::Lora,
        ModelType::Upscaler,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::Llm => "llm",
            ModelType::Diffusion => "diffusion",
            ModelType::Lora => "lora",
            ModelType::Upscaler => "upscaler",
        }
    }

    pub fn folder(self, data: &DataPaths) -> PathBuf {
        match self {
            ModelType::Llm => data.models_llm.clone(),
            ModelType::Diffusion => data.models_diffusion.clone(),
            ModelType::Lora => data.models_lora.clone(),
            ModelType::Upscaler => data.models_upscaler.clone(),
        }
    }
}

/// Where a file came from: enough to fetch the same bytes again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct ModelSource {
    #[serde(rename = "type")]
    /// `file`: imported from this machine (`importModel`), the url a `file://` one.
    #[ts(type = "'url' | 'huggingface' | 'file'")]
    pub kind: String,
    /// The exact URL the bytes came from (for Hugging Face, pinned to the commit).
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub repo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub file: Option<String>,
    /// The commit the revision resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub revision: Option<String>,
}

/// One file of a model: a shard of a split GGUF, or a component of a diffusion model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct StoredFile {
    pub path: PathBuf,
    pub size: u64,
    /// sha256, hex, computed while downloading.
    pub checksum: String,
    pub source: ModelSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub provenance: Option<super::Provenance>,
}

/// An installed model, as genai-electron's API shapes it (camelCase, `ggufMetadata`'s keys
/// snake_case as in GGUF).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub model_type: ModelType,
    /// Bytes of all the model's files.
    pub size: u64,
    /// The primary file: the model, its first shard, or the diffusion model.
    pub path: PathBuf,
    /// ISO 8601.
    pub downloaded_at: String,
    pub source: ModelSource,
    /// sha256 of the primary file, hex.
    pub checksum: String,
    /// The GGUF header's facts (for GGUF files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(type = "GGUFMetadata", optional)]
    pub gguf_metadata: Option<Value>,
    /// The extra files by role: a diffusion model's, or an `llm` model's `mmproj` and `draft`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[ts(type = "Partial<Record<ComponentRole, StoredFile>>", optional)]
    pub components: std::collections::BTreeMap<String, StoredFile>,
    /// Every shard of a split GGUF, in order, the first being `path`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[ts(as = "Option<Vec<StoredFile>>", optional)]
    pub shards: Vec<StoredFile>,
    /// The model file's license facts, as the download gave them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub provenance: Option<super::Provenance>,
    /// What an `llm` model can be asked to do, from its GGUF headers (see
    /// {@link ModelCapability}); empty for other types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[ts(as = "Option<Vec<super::Capability>>", optional)]
    pub capabilities: Vec<super::Capability>,
}

impl ModelInfo {
    /// The model file's GGUF header keys.
    pub fn raw_metadata(&self) -> Option<&serde_json::Map<String, Value>> {
        self.gguf_metadata.as_ref()?.get("raw")?.as_object()
    }

    /// Every file of the model with the size and sha256 it had when it was verified, and where
    /// it came from.
    pub fn sourced_files(&self) -> Vec<(&Path, u64, &str, &ModelSource)> {
        let sources = if self.shards.is_empty() {
            vec![&self.source]
        } else {
            self.shards.iter().map(|s| &s.source).collect()
        };
        let sources = sources
            .into_iter()
            .chain(self.components.values().map(|c| &c.source));
        self.files()
            .into_iter()
            .zip(sources)
            .map(|((path, size, checksum), source)| (path, size, checksum, source))
            .collect()
    }

    /// Every file of the model with the size and sha256 it had when it was verified.
    pub fn files(&self) -> Vec<(&Path, u64, &str)> {
        let component_bytes: u64 = self.components.values().map(|c| c.size).sum();
        let mut files: Vec<(&Path, u64, &str)> = if self.shards.is_empty() {
            vec![(
                self.path.as_path(),
                self.size.saturating_sub(component_bytes),
                self.checksum.as_str(),
            )]
        } else {
            self.shards
                .iter()
                .map(|s| (s.path.as_path(), s.size, s.checksum.as_str()))
                .collect()
        };
        files.extend(
            self.components
                .values()
                .map(|c| (c.path.as_path(), c.size, c.checksum.as_str())),
        );
        files
    }
}

/// Downloads are not fsynced (see `download`); a file that a power loss cut short has another
/// size than the one recorded, and its model is not taken for complete.
async fn check_sizes(info: &ModelInfo) -> Result<(), String> {
    for (path, expected, _) in info.files() {
        match tokio::fs::metadata(path).await {
            Ok(meta) if meta.len() == expected => {}
            Ok(meta) => {
                return Err(format!(
                    "{} has {} bytes, {expected} were downloaded",
                    path.display(),
                    meta.len()
                ));
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    Ok(())
}

/// A stable, filesystem-safe id from a display name: lower case ASCII letters, digits, `-`,
/// `.` and `_`, at most 96 characters, never empty, never `.` or `..`.
pub fn model_id(name: &str) -> String {
    let mut id = String::new();
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        let keep = if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            c
        } else {
            '-'
        };
        if keep == '-' && (id.is_empty() || id.ends_with('-')) {
            continue;
        }
        id.push(keep);
    }
    let id: String = id
        .trim_matches(|c| c == '-' || c == '.')
        .chars()
        .take(96)
        .collect();
    if id.is_empty() {
        "model".to_string()
    } else {
        id
    }
}

/// Whether `id` is one that [`model_id`] derives: the only ids that ever reach a path.
pub fn is_valid_id(id: &str) -> bool {
    model_id(id) == id
}

pub fn model_dir(data: &DataPaths, model_type: ModelType, id: &str) -> PathBuf {
    debug_assert!(is_valid_id(id), "unchecked model id {id:?}");
    model_type.folder(data).join(id)
}

/// A model folder that listing skipped.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[ts(rename = "DamagedModel")]
pub struct Damaged {
    /// The folder; its name is the id to give {@link ModelManager.deleteModel} to remove it.
    pub path: PathBuf,
    /// Why: an unreadable record, one that names another id or type, a file outside the
    /// folder, a missing or resized file.
    pub reason: String,
}

/// Whether `path` lies inside `dir`: by its components, or else after resolving links (a data
/// folder reached through a symlink).
fn inside(dir: &Path, path: &Path) -> bool {
    use std::path::Component;
    let plain = path
        .components()
        .all(|c| !matches!(c, Component::ParentDir | Component::CurDir));
    if plain && path.starts_with(dir) && path != dir {
        return true;
    }
    match (std::fs::canonicalize(dir), std::fs::canonicalize(path)) {
        (Ok(dir), Ok(path)) => path.starts_with(&dir) && path != dir,
        _ => false,
    }
}

/// Parses a record found in `dir` (the folder of `id`, of `model_type`), trusting nothing in it:
/// its id and type must be those of its folder, and every file must lie inside the folder.
fn parse_record(
    bytes: &[u8],
    dir: &Path,
    id: &str,
    model_type: ModelType,
) -> Result<ModelInfo, String> {
    let mut info: ModelInfo = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if info.model_type == ModelType::Llm && info.capabilities.is_empty() {
        // Recorded before capabilities were: a projector of unknown encoders is taken for vision.
        let projector = info
            .components
            .contains_key("mmproj")
            .then_some((true, false));
        info.capabilities = super::capabilities::of(|key| info.raw_metadata()?.get(key), projector);
    }
    if info.id != id {
        return Err(format!("its record names another id, {:?}", info.id));
    }
    if info.model_type != model_type {
        return Err(format!(
            "its record says type {:?}, but it lies in the {} folder",
            info.model_type.as_str(),
            model_type.as_str()
        ));
    }
    if let Some((path, _, _)) = info.files().into_iter().find(|(p, _, _)| !inside(dir, p)) {
        return Err(format!(
            "its record points outside the model's folder: {}",
            path.display()
        ));
    }
    Ok(info)
}

/// A model whose files are all there with their recorded sizes.
pub async fn read(data: &DataPaths, id: &str) -> Result<ModelInfo, ModelError> {
    let info = read_record(data, id).await?;
    check_sizes(&info)
        .await
        .map_err(|reason| ModelError::Corrupt {
            id: id.into(),
            reason,
        })?;
    Ok(info)
}

/// [`parse_record`] on the blocking pool: resolving links to compare paths touches the disk.
async fn check_record(
    bytes: Vec<u8>,
    dir: PathBuf,
    id: &str,
    model_type: ModelType,
) -> Result<ModelInfo, String> {
    let id = id.to_string();
    tokio::task::spawn_blocking(move || parse_record(&bytes, &dir, &id, model_type))
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
}

/// The record alone, for verifying or deleting a model whose files are damaged. Only an id that
/// [`model_id`] could have made names a model; any other is not found, whatever is on disk.
pub async fn read_record(data: &DataPaths, id: &str) -> Result<ModelInfo, ModelError> {
    let (dir, model_type) = find(data, id).await?;
    let file = dir.join(METADATA_FILE);
    let bytes = tokio::fs::read(&file)
        .await
        .map_err(|source| ModelError::Io { path: file, source })?;
    check_record(bytes, dir, id, model_type)
        .await
        .map_err(|reason| ModelError::Corrupt {
            id: id.into(),
            reason,
        })
}

/// The folder of the model `id` that has a record, and its type.
pub async fn find(data: &DataPaths, id: &str) -> Result<(PathBuf, ModelType), ModelError> {
    if is_valid_id(id) {
        for model_type in ModelType::ALL {
            let dir = model_dir(data, model_type, id);
            // A link in place of the folder could lead anywhere: not a model.
            let is_folder = tokio::fs::symlink_metadata(&dir)
                .await
                .is_ok_and(|m| m.file_type().is_dir());
            match tokio::fs::symlink_metadata(dir.join(METADATA_FILE)).await {
                Ok(_) if is_folder => return Ok((dir, model_type)),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ModelError::Io { path: dir, source }),
            }
        }
    }
    Err(ModelError::NotFound { id: id.into() })
}

/// Every complete model, and the folders skipped because their record cannot be trusted or their
/// files are not all there: one damaged model never hides the others.
pub async fn list(
    data: &DataPaths,
    filter: Option<ModelType>,
) -> Result<(Vec<ModelInfo>, Vec<Damaged>), ModelError> {
    let mut models = Vec::new();
    let mut damaged = Vec::new();
    for model_type in ModelType::ALL
        .into_iter()
        .filter(|t| filter.is_none_or(|f| f == *t))
    {
        let Some(mut entries) = entries(&model_type.folder(data)).await? else {
            continue;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let dir = entry.path();
            let Ok(bytes) = tokio::fs::read(dir.join(METADATA_FILE)).await else {
                // No record: an unfinished download (or not a model folder at all).
                continue;
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_link = entry.file_type().await.is_ok_and(|t| t.is_symlink());
            let checked = if is_link {
                Err("the model's folder is a link".to_string())
            } else if is_valid_id(&name) {
                check_record(bytes, dir.clone(), &name, model_type).await
            } else {
                Err(format!("{name:?} is not a model id"))
            };
            let checked = match checked {
                Ok(info) => check_sizes(&info).await.map(|()| info),
                Err(reason) => Err(reason),
            };
            match checked {
                Ok(info) => models.push(info),
                Err(reason) => {
                    tracing::warn!("skipping model folder {}: {reason}", dir.display());
                    damaged.push(Damaged { path: dir, reason });
                }
            }
        }
    }
    models.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((models, damaged))
}

/// The entries of `folder`; `None` when it does not exist (no model of its type yet).
pub async fn entries(folder: &Path) -> Result<Option<tokio::fs::ReadDir>, ModelError> {
    match tokio::fs::read_dir(folder).await {
        Ok(entries) => Ok(Some(entries)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ModelError::Io {
            path: folder.into(),
            source,
        }),
    }
}

pub async fn write(data: &DataPaths, info: &ModelInfo) -> Result<(), ModelError> {
    if !is_valid_id(&info.id) {
        return Err(ModelError::Invalid(format!(
            "{:?} is not a model id",
            info.id
        )));
    }
    let path = model_dir(data, info.model_type, &info.id).join(METADATA_FILE);
    let json = serde_json::to_vec_pretty(info).expect("model info always serializes");
    crate::files::write_atomic(&path, &json)
        .await
        .map_err(|source| ModelError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_safe() {
        assert_eq!(
            model_id("SmolLM2 135M Instruct (Q4_1)"),
            "smollm2-135m-instruct-q4_1"
        );
        assert_eq!(model_id("../../etc/passwd"), "etc-passwd");
        assert_eq!(model_id("  ..  "), "model");
        assert_eq!(model_id("Ünïcödé"), "n-c-d");
        assert_eq!(model_id(&"x".repeat(200)).len(), 96);
        assert_eq!(model_id("a/b\\c:d"), "a-b-c-d");
    }

    #[test]
    fn only_derived_ids_are_valid() {
        for id in ["smollm2-135m-instruct-q4_1", "model", "a.b_c"] {
            assert!(is_valid_id(id), "{id}");
        }
        for id in [
            "", ".", "..", "../x", "a/b", "a\\b", "A", "-a", "a--b", "/abs", "a\0b",
        ] {
            assert!(!is_valid_id(id), "{id:?}");
        }
    }
}
