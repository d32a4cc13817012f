//! What the server managers share when they resolve a start request: the port request and the
//! one error type that carries a model, binary or server refusal with its code.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::binaries::BinaryError;
use crate::diffusion::DiffusionError;
use crate::error::{Coded, ErrorCode};
use crate::llama::LlamaError;
use crate::models::ModelError;

/// `port: 8080` or `port: 'auto'`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PortRequest {
    Fixed(u16),
    Auto(String),
}

impl PortRequest {
    /// Unset → `default`; `'auto'` → `None` (a free port, chosen at start).
    pub fn choose(request: Option<&PortRequest>, default: u16) -> Result<Option<u16>, String> {
        match request {
            None => Ok(Some(default)),
            Some(PortRequest::Fixed(0)) => Err("port must be 1-65535, or 'auto'".into()),
            Some(PortRequest::Fixed(p)) => Ok(Some(*p)),
            Some(PortRequest::Auto(s)) if s == "auto" => Ok(None),
            Some(PortRequest::Auto(s)) => {
                Err(format!("port must be a number or 'auto', got {s:?}"))
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Binary(#[from] BinaryError),
    #[error(transparent)]
    Llama(#[from] LlamaError),
    #[error(transparent)]
    Diffusion(#[from] DiffusionError),
}

impl Coded for StartError {
    fn code(&self) -> ErrorCode {
        match self {
            StartError::Model(e) => e.code(),
            StartError::Binary(e) => e.code(),
            StartError::Llama(e) => e.code(),
            StartError::Diffusion(e) => e.code(),
        }
    }

    fn suggestion(&self) -> Option<String> {
        match self {
            StartError::Model(e) => e.suggestion(),
            StartError::Binary(e) => e.suggestion(),
            StartError::Llama(e) => e.suggestion(),
            StartError::Diffusion(e) => e.suggestion(),
        }
    }

    fn details(&self) -> Map<String, Value> {
        match self {
            StartError::Model(e) => e.details(),
            StartError::Binary(e) => e.details(),
            StartError::Llama(e) => e.details(),
            StartError::Diffusion(e) => e.details(),
        }
    }
}
