//! The orchestrator's options, as JS passes them (`OrchestratorOptions`) and resolved.

use std::time::Duration;

use serde::Deserialize;
use ts_rs::TS;

use crate::error::{Coded, ErrorCode};
use crate::llama::gateway::QueueBounds;

const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("{0}")]
    Invalid(String),
}

impl Coded for OrchestratorError {
    fn code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }

    fn suggestion(&self) -> Option<String> {
        Some("Compare with OrchestratorOptions in index.d.ts".into())
    }
}

/// The options of a `ResourceOrchestrator` (its last constructor argument).
// Byte counts are f64: JS numbers beyond 2^32 arrive as floating point; `resolve` checks them.
#[derive(Debug, Clone, Default, Deserialize, TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[ts(rename = "OrchestratorOptions", optional_fields)]
pub struct OptionsRequest {
    /// Bytes the two servers together may use in RAM (default: what is free plus what they hold).
    pub ram_budget_bytes: Option<f64>,
    /// The same for VRAM.
    pub vram_budget_bytes: Option<f64>,
    /// Bytes kept free beside the two (default 512 MiB).
    pub headroom: Option<f64>,
    /// Milliseconds to wait for an offloaded LLM's memory to be reported free (default 10000).
    pub memory_release_timeout: Option<u64>,
    /// Milliseconds the chat requests in flight get to finish before an offload stops the LLM (default 30000).
    pub drain_timeout: Option<u64>,
    /// Milliseconds a chat request may wait while the LLM is offloaded before a 503 `QUEUE_TIMEOUT`;
    /// default: the llamaServer's own `queueTimeout` (300000).
    pub queue_timeout: Option<u64>,
    /// Chat requests that may wait at the LLM's gateway while it is offloaded (0: refuse them at
    /// once with 503 `QUEUE_FULL`); default: the llamaServer's own `maxQueuedRequests`.
    pub max_queued_requests: Option<u32>,
    /// What happens to images queued behind an offload. `'collate'` (default): they run back to
    /// back while the LLM is out, and it returns once none waits (or a chat request has waited
    /// `maxChatWait`), so a burst costs one offload and one reload. `'fifo'`: the LLM returns after
    /// every image, and the next image offloads it again.
    #[ts(optional, type = "'collate' | 'fifo'")]
    pub policy: Option<String>,
    /// Milliseconds a chat request waits for queued images before the LLM comes back between them
    /// (default 30000): chat waits at most this plus the image being made and the reload.
    pub max_chat_wait: Option<u64>,
    /// Milliseconds: when set, the LLM stays offloaded after the images (its memory free for the
    /// next one) until a chat request comes to its gateway or the orchestrator has been idle this
    /// long, then it is reloaded (a warm start). Unset (default): it is reloaded as soon as no
    /// image waits.
    pub reload_after_idle: Option<u64>,
}

/// How the images queued behind an offload are ordered against the LLM's return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Back to back while the LLM is out; it returns when none waits (or a chat waits too long).
    Collate,
    /// The LLM returns after every image.
    Fifo,
}

/// A byte count from JS: a whole number from 0 (or from 1 with `positive`).
fn bytes(name: &str, value: Option<f64>, positive: bool) -> Result<Option<u64>, OrchestratorError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && v.fract() == 0.0 && v >= f64::from(u8::from(positive)) => {
            Ok(Some(v as u64))
        }
        Some(v) => Err(OrchestratorError::Invalid(format!(
            "{name} must be a whole number of bytes{}, got {v}",
            if positive {
                " above 0 (leave it unset for what the machine has)"
            } else {
                ""
            }
        ))),
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// What the two servers together may use; `None`: what the machine has.
    pub ram_budget: Option<u64>,
    pub vram_budget: Option<u64>,
    /// Kept free beside the two.
    pub headroom: u64,
    pub memory_release_timeout: Duration,
    pub drain_timeout: Duration,
    /// The gateway's queue while the LLM is offloaded; unset parts are the server's own.
    pub queue: QueueBounds,
    pub policy: Policy,
    pub max_chat_wait: Duration,
    /// `None`: the LLM returns as soon as no image waits.
    pub reload_after_idle: Option<Duration>,
}

impl Options {
    pub fn resolve(req: OptionsRequest) -> Result<Options, OrchestratorError> {
        let policy = match req.policy.as_deref() {
            None | Some("collate") => Policy::Collate,
            Some("fifo") => Policy::Fifo,
            Some(other) => {
                return Err(OrchestratorError::Invalid(format!(
                    "policy must be 'collate' or 'fifo', got {other:?}"
                )));
            }
        };
        Ok(Options {
            policy,
            max_chat_wait: Duration::from_millis(req.max_chat_wait.unwrap_or(30_000)),
            reload_after_idle: req.reload_after_idle.map(Duration::from_millis),
            ram_budget: bytes("ramBudgetBytes", req.ram_budget_bytes, true)?,
            vram_budget: bytes("vramBudgetBytes", req.vram_budget_bytes, true)?,
            headroom: bytes("headroom", req.headroom, false)?.unwrap_or(512 * MIB),
            memory_release_timeout: Duration::from_millis(
                req.memory_release_timeout.unwrap_or(10_000),
            ),
            drain_timeout: Duration::from_millis(req.drain_timeout.unwrap_or(30_000)),
            queue: QueueBounds {
                max_queued: req.max_queued_requests.map(|n| n as usize),
                timeout: req.queue_timeout.map(Duration::from_millis),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_options_have_defaults_and_a_policy_is_checked() {
        let defaults = Options::resolve(OptionsRequest::default()).unwrap();
        assert_eq!(defaults.policy, Policy::Collate);
        assert_eq!(defaults.max_chat_wait, Duration::from_secs(30));
        assert_eq!(defaults.reload_after_idle, None);
        let err = Options::resolve(OptionsRequest {
            policy: Some("lifo".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(err.to_string().contains("'collate' or 'fifo'"), "{err}");
    }

    #[test]
    fn options_are_whole_byte_counts() {
        let bad = |req: OptionsRequest| Options::resolve(req).unwrap_err().code();
        assert_eq!(
            bad(OptionsRequest {
                ram_budget_bytes: Some(0.0),
                ..Default::default()
            }),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            bad(OptionsRequest {
                headroom: Some(1.5),
                ..Default::default()
            }),
            ErrorCode::InvalidArgument
        );
        let big = Options::resolve(OptionsRequest {
            ram_budget_bytes: Some(2f64.powi(50)),
            headroom: Some(0.0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((big.ram_budget, big.headroom), (Some(1 << 50), 0));
        let defaults = Options::resolve(OptionsRequest::default()).unwrap();
        assert_eq!(defaults.headroom, 512 * MIB);
        assert_eq!(defaults.drain_timeout, Duration::from_secs(30));
    }
}
