use std::sync::Arc;

use napi_derive::napi;
use serde_json::Value;

use super::events::{EventCallback, log, serialized, sink};
use crate::rpc::{RpcEvent, RpcServer};

#[napi(js_name = "NativeRpcServer")]
pub struct JsRpcServer {
    inner: Arc<RpcServer>,
}

fn event_to_js(event: RpcEvent) -> Value {
    match event {
        RpcEvent::Server(event) => serialized(event),
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
}

super::server::managed_server_methods!(
    JsRpcServer,
    request: crate::rpc::StartRequest,
    resolve: crate::rpc::resolve,
    start: "config?: Shapes.RpcServerConfig" => "Promise<Shapes.RpcServerInfo>",
    info: "Shapes.RpcServerInfo",
    config: "Shapes.ResolvedRpcConfig | null"
);
