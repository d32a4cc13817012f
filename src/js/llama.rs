use std::sync::Arc;

use napi_derive::napi;
use serde_json::{Value, json};

use super::config::data_paths;
use super::error::{from_js, to_js, to_napi};
use super::events::{EventCallback, sink, tagged};
use crate::binaries::BinaryManager;
use crate::llama::resolve::{self, StartRequest};
use crate::llama::{LlamaEvent, LlamaServer};

#[napi(js_name = "NativeLlamaServer")]
pub struct JsLlamaServer {
    inner: Arc<LlamaServer>,
    binaries: Arc<BinaryManager>,
}

fn event_to_js(event: LlamaEvent) -> Value {
    match event {
        LlamaEvent::Starting => json!({ "type": "starting" }),
        LlamaEvent::Started(info) => tagged("started", info),
        LlamaEvent::Stopped => json!({ "type": "stopped" }),
        LlamaEvent::Crashed { exit, tail, hang } => {
            json!({ "type": "crashed", "exitCode": exit.code, "signal": exit.signal, "logs": tail, "hang": hang })
        }
        LlamaEvent::Restarted(info) => tagged("restarted", info),
        LlamaEvent::RestartFailed { attempts, error } => {
            json!({ "type": "restart-failed", "attempts": attempts, "error": error })
        }
        LlamaEvent::Log(line) => json!({ "type": "log", "line": line }),
    }
}

#[napi]
impl JsLlamaServer {
    #[napi(constructor)]
    pub fn new(on_event: EventCallback) -> Self {
        let events = sink(Arc::new(on_event), event_to_js);
        JsLlamaServer {
            inner: Arc::new(LlamaServer::new(Some(events))),
            binaries: Arc::new(BinaryManager::new(None)),
        }
    }

    #[napi]
    pub async fn start(&self, config: Value) -> napi::Result<Value> {
        let req: StartRequest = from_js("config", config)?;
        let data = data_paths().await?;
        let config = resolve::resolve(req, &data, super::system::shared(), &self.binaries)
            .await
            .map_err(to_napi)?;
        let info = self.inner.start(config).await.map_err(to_napi)?;
        to_js(&info)
    }

    #[napi]
    pub async fn stop(&self) -> napi::Result<()> {
        self.inner.stop().await;
        Ok(())
    }

    #[napi]
    pub fn get_info(&self) -> napi::Result<Value> {
        to_js(&self.inner.info())
    }

    #[napi]
    pub fn get_config(&self) -> napi::Result<Value> {
        to_js(&self.inner.config())
    }

    #[napi]
    pub async fn is_healthy(&self) -> bool {
        self.inner.is_healthy().await
    }

    #[napi]
    pub fn get_logs(&self, lines: u32) -> Vec<String> {
        self.inner.logs(lines as usize)
    }

    #[napi]
    pub fn clear_logs(&self) {
        self.inner.clear_logs()
    }
}
