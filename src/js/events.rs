//! One ThreadsafeFunction per manager carries its events to JS. The JS side passes a
//! dispatcher that never throws (it catches listener errors itself), and the function is weak,
//! so a manager never keeps Node's event loop alive on its own.

use napi::Status;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use serde_json::{Value, json};
use std::sync::Arc;

use crate::events::EventSink;
use crate::process::ExitInfo;

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
    let mut event = tagged("crashed", exit);
    event["logs"] = json!(tail);
    event
}

/// A `log` event: one line of a server's log.
pub fn log(line: String) -> Value {
    json!({ "type": "log", "line": line })
}

/// An event whose shape is its Rust type's (serde's `type` tag; generated into the typings):
/// a server's lifecycle, a queue change, an image job, an orchestrator step, …
pub fn serialized<E: serde::Serialize>(event: E) -> Value {
    serde_json::to_value(event).expect("events serialize")
}
