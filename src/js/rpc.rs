use std::sync::Arc;

use napi_derive::napi;
use serde_json::{Value, json};

use super::config::data_paths;
use super::error::{OrEmpty, from_js, to_js, to_napi};
use super::events::{EventCallback, crashed, sink, tagged};
use crate::binaries::BinaryManager;
use crate::process::ServerEvent;
use crate::rpc::{self, RpcEvent, RpcServer, StartRequest};

#[napi(js_name = "NativeRpcServer")]
pub struct JsRpcServer {
    inner: Arc<RpcServer>,
}

fn event_to_js(event: RpcEvent) -> Value {
    match event {
        RpcEvent::Server(ServerEvent::State(transition)) => tagged("state", transition),
        RpcEvent::Server(ServerEvent::Starting) => json!({ "type": "starting" }),
        RpcEvent::Started(info) => tagged("started", info),
        RpcEvent::Server(ServerEvent::Started(snapshot)) => tagged("started", snapshot),
        RpcEvent::Server(ServerEvent::Stopped) => json!({ "type": "stopped" }),
        RpcEvent::Server(ServerEvent::Crashed { exit, tail, .. }) => crashed(&exit, tail),
        RpcEvent::Server(ServerEvent::Restarted(snapshot)) => tagged("restarted", snapshot),
        RpcEvent::Server(ServerEvent::RestartFailed { attempts, error }) => {
            json!({ "type": "restart-failed", "attempts": attempts, "error": error })
        }
        RpcEvent::Log(line) => json!({ "type": "log", "line": line }),
    }
}

#[napi]
impl JsRpcServer {
    #[napi(constructor)]
    pub fn new(on_event: EventCallback) -> Self {
        JsRpcServer {
            inner: Arc::new(RpcServer::new(Some(sink(Arc::new(on_event), event_to_js)))),
        }
    }

    #[napi]
    pub async fn start(&self, config: Value) -> napi::Result<Value> {
        let req: StartRequest = from_js("config", config.or_empty())?;
        let data = data_paths().await?;
        let config = rpc::resolve(req, &data, super::system::shared(), BinaryManager::shared())
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
    pub async fn get_memory_usage(&self) -> napi::Result<Value> {
        to_js(&self.inner.memory().await)
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
