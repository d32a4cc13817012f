//! Rust error → JS error. Async napi functions can only reject with a `napi::Error`, so the code
//! and details travel in the message as `[CODE] {"message": …, "details": …}`; `index.js`
//! parses that prefix and rethrows the matching `GenaiElectronError` subclass.

use napi::Status;
use serde_json::{Value, json};

use crate::error::Coded;

pub fn to_napi<E: Coded>(err: E) -> napi::Error {
    let mut details = err.details();
    if let Some(suggestion) = err.suggestion() {
        details.insert("suggestion".into(), Value::String(suggestion));
    }
    let payload = json!({ "message": err.to_string(), "details": details });
    napi::Error::new(
        Status::GenericFailure,
        format!("[{}] {payload}", err.code().as_str()),
    )
}

/// Input the binding could not even decode (wrong JSON shape): an INVALID_ARGUMENT error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadArgument(pub String);

impl Coded for BadArgument {
    fn code(&self) -> crate::error::ErrorCode {
        crate::error::ErrorCode::InvalidArgument
    }

    fn suggestion(&self) -> Option<String> {
        Some("Compare the argument with its type in index.d.ts".into())
    }
}

/// Decodes `value` (the argument `what`); a refusal names the field, as `config.contextSize`.
pub fn from_js<T: serde::de::DeserializeOwned>(what: &str, value: Value) -> napi::Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            what.to_string()
        } else {
            format!("{what}.{path}")
        };
        to_napi(BadArgument(format!("{field}: {}", e.inner())))
    })
}

pub fn to_js<T: serde::Serialize>(value: &T) -> napi::Result<Value> {
    serde_json::to_value(value).map_err(|e| napi::Error::from_reason(e.to_string()))
}

pub trait OrEmpty {
    fn or_empty(self) -> Value;
}

impl OrEmpty for Value {
    /// `undefined`/`null` options mean "no options".
    fn or_empty(self) -> Value {
        if self.is_null() { json!({}) } else { self }
    }
}
