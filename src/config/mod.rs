//! Where the library keeps its files.
//!
//! The data directory is, in order: the folder given to `configure({ dataDir })`, the
//! `GENAI_ELECTRON_DATA_DIR` environment variable, Electron's `userData` folder when the addon
//! runs inside Electron's main process, and the OS data folder otherwise. Its sub-folders are
//! created on first use, not at load time.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::Serialize;
use serde_json::{Map, Value, json};
use ts_rs::TS;

use crate::error::{Coded, ErrorCode, io_suggestion};

pub const DATA_DIR_ENV: &str = "GENAI_ELECTRON_DATA_DIR";
const APP_FOLDER: &str = "genai-electron";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("dataDir must be a non-empty path")]
    EmptyDataDir,
    #[error("cannot create data folder {path}: {source}")]
    CreateFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no data folder could be chosen: set configure({{ dataDir }}) or {DATA_DIR_ENV}")]
    NoDataDir,
}

impl Coded for ConfigError {
    fn code(&self) -> ErrorCode {
        match self {
            ConfigError::EmptyDataDir => ErrorCode::InvalidArgument,
            ConfigError::CreateFolder { .. } | ConfigError::NoDataDir => ErrorCode::FileSystemError,
        }
    }

    fn suggestion(&self) -> Option<String> {
        Some(match self {
            ConfigError::EmptyDataDir => {
                "Pass an absolute folder path, e.g. configure({ dataDir: '/path/to/data' })".into()
            }
            ConfigError::CreateFolder { source, .. } => io_suggestion(source).into(),
            ConfigError::NoDataDir => format!("Set {DATA_DIR_ENV} to a writable folder"),
        })
    }

    fn details(&self) -> Map<String, Value> {
        match self {
            ConfigError::CreateFolder { path, .. } => json!({ "path": path })
                .as_object()
                .cloned()
                .unwrap_or_default(),
            _ => Map::new(),
        }
    }
}

/// Where the data directory came from; reported so users can tell why files landed where they did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
pub enum DataDirSource {
    #[serde(rename = "configure")]
    Configured,
    #[serde(rename = "env")]
    Environment,
    #[serde(rename = "electron")]
    Electron,
    #[serde(rename = "os")]
    OsDefault,
}

/// The inputs of the choice, gathered so the rule itself is a pure function.
#[derive(Debug, Default, Clone)]
pub struct DataDirInputs {
    pub configured: Option<PathBuf>,
    pub env: Option<PathBuf>,
    pub electron_user_data: Option<PathBuf>,
    pub os_data_dir: Option<PathBuf>,
}

/// Applies the documented order. Empty values count as unset.
pub fn choose_data_dir(inputs: &DataDirInputs) -> Option<(PathBuf, DataDirSource)> {
    let non_empty = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
    non_empty(&inputs.configured)
        .map(|p| (p, DataDirSource::Configured))
        .or_else(|| non_empty(&inputs.env).map(|p| (p, DataDirSource::Environment)))
        .or_else(|| non_empty(&inputs.electron_user_data).map(|p| (p, DataDirSource::Electron)))
        .or_else(|| {
            non_empty(&inputs.os_data_dir).map(|p| (p.join(APP_FOLDER), DataDirSource::OsDefault))
        })
}

/// The folders inside the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPaths {
    pub root: PathBuf,
    pub source: DataDirSource,
    pub models_llm: PathBuf,
    pub models_diffusion: PathBuf,
    /// LoRAs, one folder each: the diffusion backends' `--lora-model-dir`.
    pub models_lora: PathBuf,
    pub models_upscaler: PathBuf,
    pub binaries: PathBuf,
    pub logs: PathBuf,
    pub temp: PathBuf,
}

/// The folders the library uses, all absolute, as {@link getDataPaths} reports them.
#[derive(Debug, Clone, Serialize, TS)]
#[ts(rename = "DataPaths")]
pub struct DataPathsView {
    pub root: PathBuf,
    /// Which rule chose `root`: `configure()`, `GENAI_ELECTRON_DATA_DIR`, Electron, or the OS
    /// default.
    pub source: DataDirSource,
    pub models: ModelFolders,
    pub binaries: PathBuf,
    pub logs: PathBuf,
    pub temp: PathBuf,
}

/// A model folder for each model type.
#[derive(Debug, Clone, Serialize, TS)]
pub struct ModelFolders {
    pub llm: PathBuf,
    pub diffusion: PathBuf,
    pub lora: PathBuf,
    pub upscaler: PathBuf,
}

impl From<&DataPaths> for DataPathsView {
    fn from(p: &DataPaths) -> Self {
        DataPathsView {
            root: p.root.clone(),
            source: p.source,
            models: ModelFolders {
                llm: p.models_llm.clone(),
                diffusion: p.models_diffusion.clone(),
                lora: p.models_lora.clone(),
                upscaler: p.models_upscaler.clone(),
            },
            binaries: p.binaries.clone(),
            logs: p.logs.clone(),
            temp: p.temp.clone(),
        }
    }
}

impl DataPaths {
    pub fn new(root: PathBuf, source: DataDirSource) -> Self {
        DataPaths {
            models_llm: root.join("models").join("llm"),
            models_diffusion: root.join("models").join("diffusion"),
            models_lora: root.join("models").join("lora"),
            models_upscaler: root.join("models").join("upscaler"),
            binaries: root.join("binaries"),
            logs: root.join("logs"),
            temp: root.join("temp"),
            root,
            source,
        }
    }

    fn folders(&self) -> [&Path; 7] {
        [
            &self.models_llm,
            &self.models_diffusion,
            &self.models_lora,
            &self.models_upscaler,
            &self.binaries,
            &self.logs,
            &self.temp,
        ]
    }

    /// Creates every folder that is missing. Idempotent.
    pub async fn ensure(&self) -> Result<(), ConfigError> {
        for folder in self.folders() {
            tokio::fs::create_dir_all(folder).await.map_err(|source| {
                ConfigError::CreateFolder {
                    path: folder.to_path_buf(),
                    source,
                }
            })?;
        }
        Ok(())
    }
}

/// Process-wide settings changed by `configure()` and by the JS loader.
#[derive(Debug, Default)]
pub struct Settings {
    configured_data_dir: RwLock<Option<PathBuf>>,
    electron_user_data: RwLock<Option<PathBuf>>,
}

impl Settings {
    pub fn global() -> &'static Settings {
        static SETTINGS: Settings = Settings {
            configured_data_dir: RwLock::new(None),
            electron_user_data: RwLock::new(None),
        };
        &SETTINGS
    }

    /// Sets the data directory; a relative path is taken from the current working directory,
    /// so later `chdir` calls cannot move the data.
    pub fn set_data_dir(&self, dir: &str) -> Result<PathBuf, ConfigError> {
        if dir.trim().is_empty() {
            return Err(ConfigError::EmptyDataDir);
        }
        let path = std::path::absolute(dir).map_err(|source| ConfigError::CreateFolder {
            path: PathBuf::from(dir),
            source,
        })?;
        *write(&self.configured_data_dir) = Some(path.clone());
        Ok(path)
    }

    pub fn set_electron_user_data(&self, dir: Option<PathBuf>) {
        *write(&self.electron_user_data) = dir;
    }

    /// The data folders as things stand now (not created; see [`DataPaths::ensure`]).
    pub fn data_paths(&self) -> Result<DataPaths, ConfigError> {
        let inputs = DataDirInputs {
            configured: read(&self.configured_data_dir),
            env: std::env::var_os(DATA_DIR_ENV).map(PathBuf::from),
            electron_user_data: read(&self.electron_user_data),
            os_data_dir: dirs::data_dir(),
        };
        let (root, source) = choose_data_dir(&inputs).ok_or(ConfigError::NoDataDir)?;
        Ok(DataPaths::new(root, source))
    }
}

// A poisoned lock only means a writer panicked mid-assignment of an Option: the value is whole.
fn read(lock: &RwLock<Option<PathBuf>>) -> Option<PathBuf> {
    lock.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn write(lock: &RwLock<Option<PathBuf>>) -> std::sync::RwLockWriteGuard<'_, Option<PathBuf>> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(
        c: Option<&str>,
        e: Option<&str>,
        el: Option<&str>,
        os: Option<&str>,
    ) -> DataDirInputs {
        DataDirInputs {
            configured: c.map(PathBuf::from),
            env: e.map(PathBuf::from),
            electron_user_data: el.map(PathBuf::from),
            os_data_dir: os.map(PathBuf::from),
        }
    }

    #[test]
    fn order_is_configure_env_electron_os() {
        let all = inputs(Some("/c"), Some("/e"), Some("/el"), Some("/os"));
        assert_eq!(
            choose_data_dir(&all),
            Some(("/c".into(), DataDirSource::Configured))
        );
        let no_c = inputs(None, Some("/e"), Some("/el"), Some("/os"));
        assert_eq!(
            choose_data_dir(&no_c),
            Some(("/e".into(), DataDirSource::Environment))
        );
        let no_env = inputs(None, Some(""), Some("/el"), Some("/os"));
        assert_eq!(
            choose_data_dir(&no_env),
            Some(("/el".into(), DataDirSource::Electron))
        );
        let os = inputs(None, None, None, Some("/os"));
        assert_eq!(
            choose_data_dir(&os),
            Some(("/os/genai-electron".into(), DataDirSource::OsDefault))
        );
        assert_eq!(choose_data_dir(&inputs(None, None, None, None)), None);
    }

    #[tokio::test]
    async fn ensure_creates_the_layout_and_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = DataPaths::new(tmp.path().join("data"), DataDirSource::Configured);
        paths.ensure().await.unwrap();
        paths.ensure().await.unwrap();
        for rel in ["models/llm", "models/diffusion", "binaries", "logs", "temp"] {
            assert!(tmp.path().join("data").join(rel).is_dir(), "{rel}");
        }
    }

    #[tokio::test]
    async fn a_file_in_the_way_is_a_file_system_error() {
        let tmp = tempfile::tempdir().unwrap();
        let blocker = tmp.path().join("data");
        std::fs::write(&blocker, b"not a folder").unwrap();
        let err = DataPaths::new(blocker, DataDirSource::Configured)
            .ensure()
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FileSystemError);
        assert!(err.details().contains_key("path"));
        assert!(err.suggestion().is_some());
    }

    #[test]
    fn empty_data_dir_is_rejected_and_relative_is_made_absolute() {
        let settings = Settings::default();
        assert_eq!(
            settings.set_data_dir("  ").unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
        let abs = settings.set_data_dir("rel/dir").unwrap();
        assert!(abs.is_absolute());
        assert_eq!(settings.data_paths().unwrap().root, abs);
        assert_eq!(
            settings.data_paths().unwrap().source,
            DataDirSource::Configured
        );
    }

    #[test]
    fn data_paths_show_their_models_folders_nested_and_their_source_by_rule() {
        let paths = DataPaths::new(PathBuf::from("/data"), DataDirSource::Environment);
        let shown = serde_json::to_value(DataPathsView::from(&paths)).unwrap();
        assert_eq!(shown["source"], "env");
        assert_eq!(shown["models"]["llm"], "/data/models/llm");
        assert_eq!(shown["models"]["diffusion"], "/data/models/diffusion");
        assert_eq!(shown["temp"], "/data/temp");
    }
}
