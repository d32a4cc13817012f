use std::path::PathBuf;

use napi_derive::napi;
use serde_json::Value;

use super::error::{to_js, to_napi};
use crate::config::{DataPaths, DataPathsView, Settings};

/// Sets the data directory; returns it, absolute.
#[napi(js_name = "setDataDir")]
pub fn set_data_dir(data_dir: String) -> napi::Result<String> {
    let path = Settings::global()
        .set_data_dir(&data_dir)
        .map_err(to_napi)?;
    Ok(path.to_string_lossy().into_owned())
}

/// Called by the JS loader inside Electron's main process.
#[napi(js_name = "setElectronUserData")]
pub fn set_electron_user_data(dir: Option<String>) {
    Settings::global().set_electron_user_data(dir.map(PathBuf::from));
}

/// The data folders, created if missing.
#[napi(js_name = "getDataPaths", ts_return_type = "Promise<Shapes.DataPaths>")]
pub async fn get_data_paths() -> napi::Result<Value> {
    to_js(&DataPathsView::from(&data_paths().await?))
}

/// The data folders as configured now, created if missing: what every manager works in.
pub async fn data_paths() -> napi::Result<DataPaths> {
    let paths = Settings::global().data_paths().map_err(to_napi)?;
    paths.ensure().await.map_err(to_napi)?;
    // The library's own lines (downloads, the model store, …) go beside the servers' logs.
    crate::process::log::library().set_file(Some(&paths.logs.join(LIBRARY_LOG)));
    Ok(paths)
}

const LIBRARY_LOG: &str = "genai-electron.log";
