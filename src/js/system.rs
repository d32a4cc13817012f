use std::sync::Arc;
use std::time::Duration;

use napi_derive::napi;
use serde_json::Value;

use super::error::{OrEmpty, from_js, to_js, to_napi};
use super::events::{EventCallback, serialized, sink};
use crate::system::{ModelSpec, RunOptions, SystemEvent, SystemInfo};

/// The detection other managers consult (GPU hints for binaries); JS's `SystemInfo` instances
/// have their own caches.
pub fn shared() -> &'static SystemInfo {
    static SHARED: std::sync::OnceLock<SystemInfo> = std::sync::OnceLock::new();
    SHARED.get_or_init(SystemInfo::with_default_probes)
}

#[napi(js_name = "NativeSystemInfo")]
pub struct JsSystemInfo {
    inner: Arc<SystemInfo>,
    events: Arc<EventCallback>,
}

#[napi]
impl JsSystemInfo {
    #[napi(constructor)]
    pub fn new(on_event: EventCallback) -> Self {
        JsSystemInfo {
            inner: Arc::new(SystemInfo::with_default_probes()),
            events: Arc::new(on_event),
        }
    }

    #[napi(ts_return_type = "Promise<Shapes.SystemCapabilities>")]
    pub async fn detect(&self, force_refresh: Option<bool>) -> napi::Result<Value> {
        to_js(&*self.inner.detect(force_refresh.unwrap_or(false)).await)
    }

    #[napi]
    pub fn clear_cache(&self) {
        self.inner.clear_cache();
    }

    #[napi(ts_return_type = "Shapes.MemoryInfo")]
    pub fn get_memory_info(&self) -> napi::Result<Value> {
        to_js(&self.inner.memory())
    }

    #[napi(js_name = "getGPUInfo", ts_return_type = "Promise<Shapes.GPUInfo>")]
    pub async fn get_gpu_info(&self) -> napi::Result<Value> {
        to_js(&self.inner.gpu().await)
    }

    #[napi(
        ts_args_type = "modelInfo: Shapes.ModelSizingInfo, options?: Shapes.CanRunModelOptions",
        ts_return_type = "Promise<Shapes.CanRunModelResult>"
    )]
    pub async fn can_run_model(
        &self,
        model_info: Value,
        options: Option<Value>,
    ) -> napi::Result<Value> {
        let model: ModelSpec = from_js("modelInfo", model_info)?;
        let opts: RunOptions = from_js("options", options.unwrap_or(Value::Null).or_empty())?;
        let data = super::config::data_paths().await?;
        let binaries = crate::binaries::BinaryManager::shared();
        let verdict =
            crate::llama::sizing::can_run_model(&self.inner, binaries, &data, &model, &opts)
                .await
                .map_err(to_napi)?;
        to_js(&verdict)
    }

    #[napi(
        ts_args_type = "modelInfo: Shapes.ModelSizingInfo, hints?: Shapes.CanRunModelOptions",
        ts_return_type = "Promise<Shapes.OptimalLlamaConfig>"
    )]
    pub async fn get_optimal_config(
        &self,
        model_info: Value,
        hints: Option<Value>,
    ) -> napi::Result<Value> {
        let model: ModelSpec = from_js("modelInfo", model_info)?;
        let hints: RunOptions = from_js("hints", hints.unwrap_or(Value::Null).or_empty())?;
        let data = super::config::data_paths().await?;
        let binaries = crate::binaries::BinaryManager::shared();
        let config =
            crate::llama::sizing::optimal_config(&self.inner, binaries, &data, &model, &hints)
                .await
                .map_err(to_napi)?;
        to_js(&config)
    }

    /// Must be called from JS (the napi runtime is entered for the spawn).
    #[napi]
    pub fn start_monitoring(&self, interval_ms: u32) -> napi::Result<()> {
        let events = sink(self.events.clone(), serialized::<SystemEvent>);
        let inner = self.inner.clone();
        napi::bindgen_prelude::within_runtime_if_available(move || {
            inner.start_monitoring(Duration::from_millis(interval_ms.into()), events)
        })
        .map_err(to_napi)
    }

    #[napi]
    pub fn stop_monitoring(&self) -> bool {
        self.inner.stop_monitoring()
    }
}
