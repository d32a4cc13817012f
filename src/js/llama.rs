use std::sync::Arc;

use napi_derive::napi;
use serde_json::Value;

use super::binaries::progress_to_js;
use super::error::{OrEmpty, from_js, to_js, to_napi};
use super::events::{EventCallback, log, serialized, sink, tagged};
use crate::binaries::BinaryManager;
use crate::events::Subscription;
use crate::llama::calibrate::CalibrationRequest;
use crate::llama::{LlamaEvent, LlamaServer};

#[napi(js_name = "NativeLlamaServer")]
pub struct JsLlamaServer {
    pub(super) inner: Arc<LlamaServer>,
    /// Installs that a start triggers report `binary-progress` here too.
    _binary_progress: Subscription,
}

fn event_to_js(event: LlamaEvent) -> Value {
    match event {
        LlamaEvent::Server(event) => serialized(event),
        LlamaEvent::Queue(event) => serialized(event),
        LlamaEvent::Calibration(progress) => tagged("calibration-progress", progress),
        LlamaEvent::Log(line) => log(line),
    }
}

#[napi]
impl JsLlamaServer {
    #[napi(constructor)]
    pub fn new(on_event: EventCallback) -> Self {
        let callback = Arc::new(on_event);
        JsLlamaServer {
            inner: Arc::new(LlamaServer::new(Some(sink(callback.clone(), event_to_js)))),
            _binary_progress: BinaryManager::shared().subscribe(sink(callback, progress_to_js)),
        }
    }

    #[napi(ts_return_type = "Promise<Shapes.ServerInfo>")]
    pub async fn restart(&self) -> napi::Result<Value> {
        let info = self.inner.restart().await.map_err(to_napi)?;
        to_js(&info)
    }

    #[napi(
        ts_args_type = "config: Shapes.LlamaCalibrationRequest",
        ts_return_type = "Promise<Shapes.LlamaCalibrationReport>"
    )]
    pub async fn calibrate(&self, config: Value) -> napi::Result<Value> {
        let request: CalibrationRequest = from_js("config", config.or_empty())?;
        let data = super::config::data_paths().await?;
        let report = self
            .inner
            .calibrate(
                request,
                &data,
                super::system::shared(),
                BinaryManager::shared(),
            )
            .await
            .map_err(to_napi)?;
        to_js(&report)
    }

    #[napi]
    pub fn cancel_calibration(&self) -> bool {
        self.inner.cancel_calibration()
    }
}

super::server::managed_server_methods!(
    JsLlamaServer,
    request: crate::llama::resolve::StartRequest,
    resolve: crate::llama::resolve::resolve,
    start: "config: Shapes.LlamaServerConfig" => "Promise<Shapes.ServerInfo>",
    info: "Shapes.ServerInfo",
    config: "Shapes.ResolvedLlamaConfig | null"
);
