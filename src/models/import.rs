//! `modelManager.importModel`: a GGUF file, or a diffusion set, that the user already has.
//!
//! The files become the model's own: each is hard-linked into the model's folder (a second name
//! for the same bytes, costing no space: a file several models share is kept once), or copied
//! where a link cannot be made (another file system, or one without links). Either way the
//! model does not depend on the source afterwards: moving or deleting the source leaves it
//! whole, and a model is never a reference to a path outside its folder, which listing would
//! refuse. Editing a linked source in place edits the model too; `verifyModel` tells, against the
//! sha256 recorded at import.
//!
//! As a download, an import is all or nothing: the files go to a hidden folder beside the
//! models, which takes the model's name once every file is in and checked, and its record is
//! written last.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use ts_rs::TS;

use super::store::{self, ModelInfo, ModelSource, ModelType, StoredFile};
use super::{ComponentRole, ModelError, Provenance, Stored, gguf};
use crate::config::DataPaths;

/// What {@link ModelManager.importModel} registers.
#[derive(Debug, Clone, Deserialize, TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[ts(rename = "ImportModelRequest")]
pub struct ImportRequest {
    /// The model file (a diffusion set's diffusion model): a GGUF file for an LLM.
    #[ts(type = "string")]
    pub path: PathBuf,
    #[serde(rename = "type")]
    pub model_type: ModelType,
    /// Display name; the model's id is derived from it, as for a download.
    pub name: String,
    /// The model's other files, by role: a diffusion set's, or an `llm` model's `mmproj` and
    /// `draft`.
    #[serde(default)]
    #[ts(type = "Partial<Record<ComponentRole, string>>", optional)]
    pub components: BTreeMap<ComponentRole, PathBuf>,
}

/// One file of an import: where it is, and under which role (none for the model file).
struct Source {
    role: Option<ComponentRole>,
    path: PathBuf,
}

/// Checks the request, brings the files into a staging folder, then makes it the model.
pub async fn import(data: &DataPaths, request: &ImportRequest) -> Result<ModelInfo, ModelError> {
    let name = request.name.trim();
    if name.is_empty() {
        return Err(ModelError::InvalidImport("name must not be empty".into()));
    }
    ComponentRole::check(request.components.keys().copied(), request.model_type)
        .map_err(ModelError::InvalidImport)?;
    let id = store::model_id(name);
    if store::find(data, &id).await.is_ok() {
        return Err(ModelError::Exists { id });
    }
    let sources: Vec<Source> = std::iter::once(Source {
        role: None,
        path: request.path.clone(),
    })
    .chain(request.components.iter().map(|(role, path)| Source {
        role: Some(*role),
        path: path.clone(),
    }))
    .collect();
    for source in &sources {
        check_source(source).await?;
    }
    let folder = request.model_type.folder(data);
    let staging = folder.join(format!(".import-{id}-{:08x}", fastrand::u32(..)));
    let dir = store::model_dir(data, request.model_type, &id);
    let outcome = async {
        create_dir(&staging).await?;
        let mut stored = Vec::new();
        let mut names = HashSet::new();
        for source in &sources {
            stored.push(bring(source, &staging, &dir, &mut names, request.model_type).await?);
        }
        let info = super::assemble(&id, name, request.model_type, stored)
            .map_err(ModelError::InvalidImport)?;
        tokio::fs::rename(&staging, &dir).await.map_err(|e| {
            if dir.exists() {
                ModelError::Exists { id: id.clone() }
            } else {
                ModelError::Io {
                    path: dir.clone(),
                    source: e,
                }
            }
        })?;
        if let Err(err) = store::write(data, &info).await {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(err);
        }
        Ok(info)
    }
    .await;
    if outcome.is_err() {
        let _ = tokio::fs::remove_dir_all(&staging).await;
    }
    outcome
}

/// A regular file that can be read (a link to one counts).
async fn check_source(source: &Source) -> Result<(), ModelError> {
    let what = match source.role {
        Some(role) => format!("the {} component", role.as_str()),
        None => "path".to_string(),
    };
    match tokio::fs::metadata(&source.path).await {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(ModelError::InvalidImport(format!(
            "{what} {} is not a file",
            source.path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ModelError::InvalidImport(
            format!("{what} {} does not exist", source.path.display()),
        )),
        Err(e) => Err(ModelError::Io {
            path: source.path.clone(),
            source: e,
        }),
    }
}

async fn create_dir(dir: &Path) -> Result<(), ModelError> {
    if let Some(parent) = dir.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|source| ModelError::Io {
                path: parent.into(),
                source,
            })?;
    }
    tokio::fs::create_dir(dir)
        .await
        .map_err(|source| ModelError::Io {
            path: dir.into(),
            source,
        })
}

/// Links (else copies) one file into the staging folder and checks it; its record names the
/// path it will have in the model's folder `dir`.
async fn bring(
    source: &Source,
    staging: &Path,
    dir: &Path,
    names: &mut HashSet<String>,
    model_type: ModelType,
) -> Result<Stored, ModelError> {
    let mut file_name = source
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model.gguf".into());
    // Two components may share a file name; keep them apart.
    if !names.insert(file_name.clone()) {
        let role = source.role.map_or("file", ComponentRole::as_str);
        file_name = format!("{role}-{file_name}");
        names.insert(file_name.clone());
    }
    let format = super::file_format(model_type, &file_name).map_err(ModelError::InvalidImport)?;
    let staged = staging.join(&file_name);
    if tokio::fs::hard_link(&source.path, &staged).await.is_err() {
        tokio::fs::copy(&source.path, &staged)
            .await
            .map_err(|e| ModelError::Io {
                path: source.path.clone(),
                source: e,
            })?;
    }
    let size = tokio::fs::metadata(&staged)
        .await
        .map_err(|e| ModelError::Io {
            path: staged.clone(),
            source: e,
        })?
        .len();
    let metadata = match format {
        super::FileFormat::Gguf => Some(check_gguf(&source.path, &staged, size).await?),
        super::FileFormat::Safetensors => {
            super::safetensors::check(&staged, size, &source.path)
                .await
                .map_err(ModelError::InvalidImport)?;
            None
        }
        super::FileFormat::Unchecked => None,
    };
    let checksum = crate::download::sha256_file(&staged)
        .await
        .map_err(|e| ModelError::Io {
            path: source.path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
    let stored = StoredFile {
        path: dir.join(&file_name),
        size,
        checksum,
        source: file_source(&source.path),
        provenance: None,
    };
    Ok((
        source.role.map(|r| r.as_str().to_string()),
        stored,
        metadata,
    ))
}

/// A whole GGUF file, not the first shard of a split one.
async fn check_gguf(
    original: &Path,
    staged: &Path,
    size: u64,
) -> Result<gguf::GgufMetadata, ModelError> {
    let invalid = |reason: String| {
        ModelError::InvalidImport(format!(
            "{} is not a valid GGUF file: {reason}",
            original.display()
        ))
    };
    let meta = gguf::read_file(staged, gguf::ParseOptions::default())
        .await
        .map_err(|e| invalid(e.to_string()))?;
    gguf::check_complete(&meta, size).map_err(|e| invalid(e.to_string()))?;
    let split_count = meta
        .raw
        .get("split.count")
        .and_then(serde_json::Value::as_u64);
    if split_count.is_some_and(|n| n > 1) {
        return Err(ModelError::InvalidImport(format!(
            "{} is one shard of a split GGUF model: download it with modelManager.downloadModel, which brings every shard",
            original.display()
        )));
    }
    Ok(meta)
}

/// Where an imported file came from: its absolute path, as a `file:` URL.
fn file_source(path: &Path) -> ModelSource {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let slashed = absolute.to_string_lossy().replace('\\', "/");
    // `file:///home/…` and `file:///C:/…`.
    let url = format!(
        "file://{}{slashed}",
        if slashed.starts_with('/') { "" } else { "/" }
    );
    ModelSource {
        kind: "file".into(),
        url,
        repo: None,
        file: None,
        revision: None,
    }
}

/// A model as genai-electron 0.26 recorded it (`models/<type>/<id>.json`, beside its files): what
/// adoption reads of it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyRecord {
    name: String,
    #[serde(rename = "type")]
    model_type: ModelType,
    path: PathBuf,
    source: Option<ModelSource>,
    provenance: Option<Provenance>,
    checksum: Option<String>,
    #[serde(default)]
    components: BTreeMap<String, LegacyFile>,
    #[serde(default)]
    shards: Vec<LegacyFile>,
}

#[derive(Debug, Deserialize)]
struct LegacyFile {
    path: PathBuf,
}

/// What {@link ModelManager.adoptModels} did with each model of the folder.
#[derive(Debug, Default, serde::Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct Adoption {
    pub adopted: Vec<ModelInfo>,
    pub skipped: Vec<Skipped>,
}

/// A model of the folder that was not adopted, and why.
#[derive(Debug, serde::Serialize, TS)]
#[ts(rename = "SkippedModel")]
pub struct Skipped {
    /// Its record (`models/<type>/<id>.json`).
    #[ts(type = "string")]
    pub path: PathBuf,
    pub reason: String,
}

/// Adopts the models of a genai-electron 0.26 data folder: each record's files are imported (as
/// [`import`] does) under its name, keeping the source it was downloaded from. A model already
/// here, a record that cannot be read, a split model, a file that is missing or whose sha256 is
/// not the one recorded, is skipped with the reason; one never stops the others.
pub async fn adopt(data: &DataPaths, legacy_root: &Path) -> Result<Adoption, ModelError> {
    let mut adoption = Adoption::default();
    for model_type in ModelType::ALL {
        let folder = legacy_root.join("models").join(model_type.as_str());
        let Some(mut entries) = store::entries(&folder).await? else {
            continue;
        };
        let mut records = Vec::new();
        while let Ok(Some(entry)) = entries.next_entry().await {
            let path = entry.path();
            let is_file = entry.file_type().await.is_ok_and(|t| t.is_file());
            if is_file && path.extension().is_some_and(|e| e == "json") {
                records.push(path);
            }
        }
        records.sort();
        for record in records {
            match adopt_one(data, &record, model_type).await {
                Ok(info) => adoption.adopted.push(info),
                Err(reason) => {
                    tracing::info!("not adopted: {}: {reason}", record.display());
                    adoption.skipped.push(Skipped {
                        path: record,
                        reason,
                    });
                }
            }
        }
    }
    Ok(adoption)
}

async fn adopt_one(
    data: &DataPaths,
    record: &Path,
    folder_type: ModelType,
) -> Result<ModelInfo, String> {
    let bytes = tokio::fs::read(record).await.map_err(|e| e.to_string())?;
    let legacy: LegacyRecord = serde_json::from_slice(&bytes)
        .map_err(|e| format!("not a genai-electron 0.26 model record: {e}"))?;
    if legacy.model_type != folder_type {
        return Err(format!(
            "its record says type {:?}, but it lies in the {} folder",
            legacy.model_type.as_str(),
            folder_type.as_str()
        ));
    }
    if legacy.shards.len() > 1 {
        return Err("a split model: download it again with modelManager.downloadModel".into());
    }
    // 0.26 names the diffusion model itself as a component too.
    let mut components = BTreeMap::new();
    for (role, file) in legacy.components {
        if role == "diffusion_model" {
            continue;
        }
        let role: ComponentRole =
            serde_json::from_value(serde_json::Value::String(role.clone()))
                .map_err(|_| format!("a component role this library does not know: {role:?}"))?;
        components.insert(role, file.path);
    }
    let request = ImportRequest {
        path: legacy.path,
        model_type: legacy.model_type,
        name: legacy.name,
        components,
    };
    let mut info = import(data, &request).await.map_err(|e| e.to_string())?;
    let expected = legacy
        .checksum
        .as_deref()
        .map(|c| c.trim().trim_start_matches("sha256:").to_ascii_lowercase());
    if expected.as_ref().is_some_and(|e| *e != info.checksum) {
        let _ = tokio::fs::remove_dir_all(store::model_dir(data, info.model_type, &info.id)).await;
        return Err(format!(
            "{} is damaged: its sha256 is {}, the record says {}",
            info.path.display(),
            info.checksum,
            expected.unwrap_or_default()
        ));
    }
    // Where the bytes came from and their license, as 0.26 recorded them.
    if legacy.source.is_some() || legacy.provenance.is_some() {
        info.source = legacy.source.unwrap_or(info.source);
        info.provenance = legacy.provenance;
        store::write(data, &info).await.map_err(|e| e.to_string())?;
    }
    Ok(info)
}

#[cfg(test)]
mod tests;
