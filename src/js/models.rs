use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use napi_derive::napi;
use serde_json::Value;

use super::config::data_paths;
use super::error::{BadArgument, OrEmpty, from_js, to_js, to_napi};
use super::events::{EventCallback, serialized, sink};
use crate::models::import::ImportRequest;
use crate::models::{DownloadConfig, MetadataSource, ModelEvent, ModelManager, ModelType, gguf};

#[napi(js_name = "NativeModelManager")]
pub struct JsModelManager {
    inner: Arc<ModelManager>,
}

fn parse_type(model_type: Option<String>) -> napi::Result<Option<ModelType>> {
    model_type
        .map(|t| {
            ModelType::ALL
                .into_iter()
                .find(|m| m.as_str() == t)
                .ok_or_else(|| {
                    let known: Vec<String> = ModelType::ALL
                        .iter()
                        .map(|m| format!("'{}'", m.as_str()))
                        .collect();
                    to_napi(BadArgument(format!(
                        "unknown model type {t:?}: expected one of {}",
                        known.join(", ")
                    )))
                })
        })
        .transpose()
}

#[napi]
impl JsModelManager {
    #[napi(constructor)]
    pub fn new(on_event: EventCallback) -> Self {
        let events = sink(Arc::new(on_event), serialized::<ModelEvent>);
        JsModelManager {
            inner: Arc::new(ModelManager::new(Some(events))),
        }
    }

    /// JSON text of the models (see [`json_text`]).
    #[napi]
    pub async fn list_models(&self, model_type: Option<String>) -> napi::Result<String> {
        let filter = parse_type(model_type)?;
        let models = self
            .inner
            .list(&data_paths().await?, filter)
            .await
            .map_err(to_napi)?;
        Ok(json_text(&models))
    }

    #[napi]
    pub async fn get_model_info(&self, id: String) -> napi::Result<String> {
        let info = self
            .inner
            .get(&data_paths().await?, &id)
            .await
            .map_err(to_napi)?;
        Ok(json_text(&info))
    }

    #[napi(ts_args_type = "downloadId: string, config: Shapes.DownloadRequest")]
    pub async fn download_model(&self, download_id: String, config: Value) -> napi::Result<String> {
        if let Some(key) = DownloadConfig::unknown_key(&config) {
            return Err(to_napi(BadArgument(format!(
                "config.{key}: unknown field (see DownloadConfig in index.d.ts)"
            ))));
        }
        let config: DownloadConfig = from_js("config", config)?;
        let info = self
            .inner
            .download(&data_paths().await?, &download_id, &config)
            .await
            .map_err(to_napi)?;
        Ok(json_text(&info))
    }

    #[napi(ts_args_type = "id: string, from: Shapes.MetadataFetchStrategy")]
    pub async fn update_model_metadata(&self, id: String, from: Value) -> napi::Result<String> {
        let from: MetadataSource = from_js("options.source", from)?;
        let info = self
            .inner
            .update_metadata(&data_paths().await?, &id, from)
            .await
            .map_err(to_napi)?;
        Ok(json_text(&info))
    }

    #[napi(ts_args_type = "config: Shapes.ImportModelRequest")]
    pub async fn import_model(&self, config: Value) -> napi::Result<String> {
        let request: ImportRequest = from_js("config", config)?;
        let info = self
            .inner
            .import(&data_paths().await?, &request)
            .await
            .map_err(to_napi)?;
        Ok(json_text(&info))
    }

    #[napi(ts_return_type = "Promise<Shapes.Adoption>")]
    pub async fn adopt_models(&self, folder: Option<String>) -> napi::Result<Value> {
        let data = data_paths().await?;
        let folder = folder.map_or_else(|| data.root.clone(), std::path::PathBuf::from);
        let adoption = self.inner.adopt(&data, &folder).await.map_err(to_napi)?;
        to_js(&adoption)
    }

    #[napi]
    pub async fn delete_model(&self, id: String) -> napi::Result<()> {
        self.inner
            .delete(&data_paths().await?, &id)
            .await
            .map_err(to_napi)
    }

    #[napi(ts_return_type = "Promise<Shapes.ModelVerification>")]
    pub async fn verify_model(&self, id: String) -> napi::Result<Value> {
        let verification = self
            .inner
            .verify(&data_paths().await?, &id)
            .await
            .map_err(to_napi)?;
        to_js(&verification)
    }

    #[napi]
    pub fn cancel_download(&self, id: String) -> bool {
        self.inner.cancel(&id)
    }

    #[napi(ts_return_type = "Promise<Shapes.StorageUsage>")]
    pub async fn get_storage_usage(&self) -> napi::Result<Value> {
        let usage = self
            .inner
            .storage_usage(&data_paths().await?)
            .await
            .map_err(to_napi)?;
        to_js(&usage)
    }

    /// JSON text of the GGUF header facts of a local file or an http(s) URL (Range requests
    /// only). `options`: `{ fullArrays?: boolean, timeout?: number }` (ms, per network read).
    #[napi(
        js_name = "readGGUFMetadata",
        ts_args_type = "location: string, options?: Shapes.ReadGGUFOptions"
    )]
    pub async fn read_gguf_metadata(
        &self,
        location: String,
        options: Option<Value>,
    ) -> napi::Result<String> {
        let options: gguf::ReadOptions =
            from_js("options", options.unwrap_or(Value::Null).or_empty())?;
        let parse = gguf::ParseOptions {
            full_arrays: options.full_arrays.unwrap_or(false),
        };
        let result = if location.starts_with("http://") || location.starts_with("https://") {
            let timeout = match options.timeout {
                None => DEFAULT_READ_TIMEOUT,
                Some(ms) if ms > 0.0 && ms.is_finite() => Duration::from_secs_f64(ms / 1000.0),
                Some(ms) => {
                    return Err(to_napi(BadArgument(format!(
                        "timeout must be a positive number of milliseconds, not {ms}"
                    ))));
                }
            };
            gguf::read_url(&location, parse, timeout).await
        } else {
            gguf::read_file(&PathBuf::from(&location), parse).await
        };
        Ok(json_text(&result.map_err(to_napi)?))
    }
}

/// Every network read of `readGGUFMetadata` waits at most this long (the whole read ten times it).
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Results that hold GGUF metadata cross as JSON text that `index.js` parses: `JSON.parse`
/// makes every key an own property, so a key such as `__proto__` from a hostile file cannot
/// replace an object's prototype (setting properties one by one would), and no value count
/// limit of the conversion applies.
fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("model data always serializes")
}
