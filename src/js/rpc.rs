use std::sync::Arc;

use napi_derive::napi;
use serde_json::Value;

use super::config::data_paths;
use super::error::{OrEmpty, from_js, to_js, to_napi};
use super::events::{EventCallback, lifecycle, log, sink};
use crate::binaries::BinaryManager;
use crate::rpc::{self, RpcEvent, RpcServer, StartRequest};

#[napi(js_name = "NativeRpcServer")]
pub struct JsRpcServer {
    inner: Arc<RpcServer>,
}

fn event_to_js(event: RpcEvent) -> Value {
    match event {
        RpcEvent::Server(event) => lifecycle(event),
        RpcEvent::Log(line) => log(line),
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

    #[napi(
        ts_args_type = "config: Shapes.RpcServerConfig",
        ts_return_type = "Promise<Shapes.RpcServerInfo>"
    )]
    pub async fn start(&self, config: Value) -> napi::Result<Value> {
        let req: StartRequest = from_js("config", config.or_empty())?;
        let data = data_paths().await?;
        let config = rpc::resolve(req, &data, super::system::shared(), BinaryManager::shared())
            .await
            .map_err(to_napi)?;
        let info = self.inner.start(config).await.map_err(to_napi)?;
        to_js(&info)
    }
}

super::server::managed_server_methods!(
    JsRpcServer,
    info: "Shapes.RpcServerInfo",
    config: "Shapes.ResolvedRpcConfig | null"
);
