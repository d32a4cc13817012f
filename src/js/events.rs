//! One ThreadsafeFunction per manager carries its events to JS. The JS side passes a
//! dispatcher that never throws (it catches listener errors itself), and the function is weak,
//! so a manager never keeps Node's event loop alive on its own.

use napi::Status;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use serde_json::{Value, json};
use std::sync::Arc;

use crate::events::EventSink;
use crate::process::{ExitInfo, ServerEvent};

/// `(event: { type: string, ... }) => void`
#[napi]
pub type EventCallback = ThreadsafeFunction<Value, (), Value, Status, false, true>;

/// An event for JS: the fields of `value`, with `type` set to `kind`.
pub fn tagged(kind: &str, value: impl serde::Serialize) -> Value {
    let mut event = serde_json::to_value(value).unwrap_or_default();
    event["type"] = Value::from(kind);
    event
}

/// Wraps the manager's callback into a domain event sink.
pub fn sink<E: 'static>(callback: Arc<EventCallback>, to_js: fn(E) -> Value) -> EventSink<E> {
    EventSink::new(move |event| {
        // NonBlocking never waits on the JS thread; `Closing` means Node is shutting down and
        // the event has nowhere to go.
        let status = callback.call(to_js(event), ThreadsafeFunctionCallMode::NonBlocking);
        if status != Status::Ok && status != Status::Closing {
            tracing::warn!("event dropped: {status}");
        }
    })
}

/// A `crashed` event: how the process ended and its last lines.
pub fn crashed(exit: &ExitInfo, tail: Vec<String>) -> Value {
    json!({ "type": "crashed", "exitCode": exit.code, "signal": exit.signal, "logs": tail })
}

/// A `log` event: one line of a server's log.
pub fn log(line: String) -> Value {
    json!({ "type": "log", "line": line })
}

/// A managed server's lifecycle event, the same for every server: `state`, `starting`,
/// `started` and `restarted` (with the server's info), `stopped`, `crashed`, `restart-failed`.
pub fn lifecycle<I: serde::Serialize>(event: ServerEvent<I>) -> Value {
    match event {
        ServerEvent::State(transition) => tagged("state", transition),
        ServerEvent::Starting => json!({ "type": "starting" }),
        ServerEvent::Started(info) => tagged("started", info),
        ServerEvent::Stopped => json!({ "type": "stopped" }),
        ServerEvent::Crashed { exit, tail, hang } => {
            let mut event = crashed(&exit, tail);
            event["hang"] = json!(hang);
            event
        }
        ServerEvent::Restarted(info) => tagged("restarted", info),
        ServerEvent::RestartFailed { attempts, error } => {
            json!({ "type": "restart-failed", "attempts": attempts, "error": error })
        }
    }
}
