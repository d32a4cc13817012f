use std::path::PathBuf;
use std::sync::Arc;

use napi_derive::napi;
use serde_json::{Value, json};

use super::config::data_paths;
use super::error::{BadArgument, from_js, to_js, to_napi};
use super::events::{EventCallback, sink};
use crate::models::{DownloadConfig, ModelManager, ModelProgress, ModelType, gguf};

#[napi(js_name = "NativeModelManager")]
pub struct JsModelManager {
    inner: Arc<ModelManager>,
}

fn progress_to_js(p: ModelProgress) -> Value {
    let percentage = p
        .total
        .filter(|&t| t > 0)
        .map(|t| p.downloaded as f64 * 100.0 / t as f64);
    json!({
        "type": "progress",
        "downloadId": p.download_id,
        "modelId": p.model_id,
        "file": p.file,
        "downloaded": p.downloaded,
        "total": p.total,
        "percentage": percentage,
        "speed": p.speed,
        "estimatedTimeRemaining": p.eta_seconds,
    })
}

fn parse_type(model_type: Option<String>) -> napi::Result<Option<ModelType>> {
    model_type
        .map(|t| {
            ModelType::ALL
                .into_iter()
                .find(|m| m.as_str() == t)
                .ok_or_else(|| {
                    to_napi(BadArgument(format!(
                        "unknown model type {t:?}: expected 'llm' or 'diffusion'"
                    )))
                })
        })
        .transpose()
}

#[napi]
impl JsModelManager {
    #[napi(constructor)]
    pub fn new(on_event: EventCallback) -> Self {
        let events = sink(Arc::new(on_event), progress_to_js);
        JsModelManager {
            inner: Arc::new(ModelManager::new(Some(events))),
        }
    }

    #[napi]
    pub async fn list_models(&self, model_type: Option<String>) -> napi::Result<Value> {
        let filter = parse_type(model_type)?;
        to_js(
            &self
                .inner
                .list(&data_paths().await?, filter)
                .await
                .map_err(to_napi)?,
        )
    }

    #[napi]
    pub async fn get_model_info(&self, id: String) -> napi::Result<Value> {
        to_js(
            &self
                .inner
                .get(&data_paths().await?, &id)
                .await
                .map_err(to_napi)?,
        )
    }

    #[napi]
    pub async fn download_model(&self, download_id: String, config: Value) -> napi::Result<Value> {
        let config: DownloadConfig = from_js("config", config)?;
        let info = self
            .inner
            .download(&data_paths().await?, &download_id, &config)
            .await
            .map_err(to_napi)?;
        to_js(&info)
    }

    #[napi]
    pub async fn delete_model(&self, id: String) -> napi::Result<()> {
        self.inner
            .delete(&data_paths().await?, &id)
            .await
            .map_err(to_napi)
    }

    #[napi]
    pub async fn verify_model(&self, id: String) -> napi::Result<Value> {
        let problems = self
            .inner
            .verify(&data_paths().await?, &id)
            .await
            .map_err(to_napi)?;
        Ok(json!({ "valid": problems.is_empty(), "problems": problems }))
    }

    #[napi]
    pub fn cancel_download(&self, id: String) -> bool {
        self.inner.cancel(&id)
    }

    #[napi]
    pub async fn get_storage_usage(&self) -> napi::Result<Value> {
        let usage = self
            .inner
            .storage_usage(&data_paths().await?)
            .await
            .map_err(to_napi)?;
        Ok(
            json!({ "llm": usage.llm, "diffusion": usage.diffusion, "total": usage.llm + usage.diffusion, "models": usage.models }),
        )
    }

    /// GGUF header facts of a local file or an http(s) URL (Range requests only).
    #[napi(js_name = "readGGUFMetadata")]
    pub async fn read_gguf_metadata(&self, location: String) -> napi::Result<Value> {
        let result = if location.starts_with("http://") || location.starts_with("https://") {
            gguf::read_url(&location).await
        } else {
            gguf::read_file(&PathBuf::from(&location)).await
        };
        let meta = result.map_err(to_napi)?;
        to_js(&meta)
    }
}
