//! What every server shares, knowing no particular server: the port request, the check that a
//! fixed port is free, the error that carries a model, binary or server refusal with its code,
//! and [`ManagedServer`], what every running server answers.

use std::future::Future;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::binaries::BinaryError;
use crate::config::DataPaths;
use crate::error::{Coded, ErrorCode};
use crate::models::{ModelError, ModelInfo, ModelType};
use crate::process::ServerLog;
use crate::process::memory::TreeMemory;

/// What every managed server answers the same way (llama-server, rpc-server and the diffusion
/// server): the binding gives each of their classes these methods from this one trait.
pub trait ManagedServer: Send + Sync + 'static {
    /// What `getInfo()` shows.
    type Info: Serialize;
    /// What `getConfig()` shows: the config of the last start.
    type Config: Serialize;

    fn info(&self) -> Self::Info;
    fn config(&self) -> Option<Self::Config>;
    fn log(&self) -> &ServerLog;
    /// What the server's process tree uses now; `None` when none runs.
    fn memory(&self) -> impl Future<Output = Option<TreeMemory>> + Send;
    /// Running and answering its health check now.
    fn is_healthy(&self) -> impl Future<Output = bool> + Send;
    /// Stops the server and waits until its processes are gone. Idempotent.
    fn shut_down(&self) -> impl Future<Output = ()> + Send;

    fn logs(&self, n: usize) -> Vec<String> {
        self.log().last(n)
    }

    fn clear_logs(&self) {
        self.log().clear();
    }
}

/// The parts of [`ManagedServer`] that a server run by one [`crate::process::ServerActor`]
/// answers from it: `config` (the last start's, from a `config: Mutex<Option<_>>` field), `log`
/// and `memory` (from an `actor` field). llama-server and rpc-server are such servers.
/// `actor_server_parts!(config, log)` leaves `memory` to the server.
macro_rules! actor_server_parts {
    () => {
        crate::launch::actor_server_parts!(config, log);

        async fn memory(&self) -> Option<crate::process::memory::TreeMemory> {
            self.actor.memory().await
        }
    };
    (config, log) => {
        fn config(&self) -> Option<Self::Config> {
            crate::sync::lock(&self.config).clone()
        }

        fn log(&self) -> &crate::process::ServerLog {
            self.actor.log()
        }
    };
}

pub(crate) use actor_server_parts;

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

/// Refuses `extraArgs` that name a flag the library sets itself (`reserved`, every spelling,
/// `--flag=value` included): a second `--port` or `--model` would take the server from under
/// its manager.
pub fn refuse_reserved_flags(extra_args: &[String], reserved: &[&str]) -> Result<(), String> {
    let taken = extra_args.iter().find(|arg| {
        let flag = arg.split_once('=').map_or(arg.as_str(), |(flag, _)| flag);
        reserved.contains(&flag)
    });
    match taken {
        Some(arg) => Err(format!(
            "extraArgs must not set {arg}: the library sets it from the config (the flags it owns: {})",
            reserved.join(" ")
        )),
        None => Ok(()),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("port {port} on {host} is already in use")]
pub struct PortInUse {
    pub host: String,
    pub port: u16,
}

impl Coded for PortInUse {
    fn code(&self) -> ErrorCode {
        ErrorCode::PortInUse
    }

    fn suggestion(&self) -> Option<String> {
        Some("Choose another port, or port: 'auto' for a free one".into())
    }

    fn details(&self) -> Map<String, Value> {
        let v = json!({ "host": self.host, "port": self.port });
        v.as_object().cloned().unwrap_or_default()
    }
}

/// A port for a child to listen on: a fixed one must be free now; `None` takes one the OS hands
/// out.
pub fn free_port(host: &str, port: Option<u16>) -> Result<u16, PortInUse> {
    let in_use = || PortInUse {
        host: host.into(),
        port: port.unwrap_or(0),
    };
    std::net::TcpListener::bind((host, port.unwrap_or(0)))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|_| in_use())
}

/// The installed model `id`, which must be of `kind`: `server` says who needs it, and `invalid`
/// makes the server's own error for a model of another kind.
pub async fn installed_model<E: std::error::Error + 'static>(
    data: &DataPaths,
    id: &str,
    kind: ModelType,
    server: &str,
    invalid: impl Fn(String) -> E,
) -> Result<ModelInfo, StartError<E>> {
    let info = crate::models::store::read(data, id).await?;
    if info.model_type != kind {
        let article = if kind == ModelType::Llm { "an" } else { "a" };
        return Err(StartError::Server(invalid(format!(
            "model {:?} is a {} model; {server} needs {article} {} model",
            info.id,
            info.model_type.as_str(),
            kind.as_str()
        ))));
    }
    Ok(info)
}

/// The machine cannot hold the model: what the start's estimate needs beside what there is.
/// A start passes `force: true` to go on regardless.
#[derive(Debug, thiserror::Error)]
#[error("this machine cannot run model {model:?}: {reason}")]
pub struct Insufficient {
    pub model: String,
    pub reason: String,
    pub suggestion: String,
    /// Bytes the estimate needs, and those it was compared with.
    pub required: Bytes,
    pub available: Bytes,
}

/// RAM, and VRAM where it counts.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Bytes {
    pub ram: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vram: Option<u64>,
}

impl Coded for Insufficient {
    fn code(&self) -> ErrorCode {
        ErrorCode::InsufficientResources
    }

    fn suggestion(&self) -> Option<String> {
        Some(format!(
            "{}; or pass force: true to start anyway",
            self.suggestion
        ))
    }

    fn details(&self) -> Map<String, Value> {
        let v = json!({ "modelId": self.model, "required": self.required, "available": self.available });
        v.as_object().cloned().unwrap_or_default()
    }
}

/// A refused start: the model, the executable, the machine, or the server's own error `E`.
#[derive(Debug, thiserror::Error)]
pub enum StartError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Binary(#[from] BinaryError),
    #[error(transparent)]
    Resources(#[from] Insufficient),
    #[error(transparent)]
    Server(E),
}

impl<E: Coded + std::error::Error + 'static> Coded for StartError<E> {
    fn code(&self) -> ErrorCode {
        match self {
            StartError::Model(e) => e.code(),
            StartError::Binary(e) => e.code(),
            StartError::Resources(e) => e.code(),
            StartError::Server(e) => e.code(),
        }
    }

    fn suggestion(&self) -> Option<String> {
        match self {
            StartError::Model(e) => e.suggestion(),
            StartError::Binary(e) => e.suggestion(),
            StartError::Resources(e) => e.suggestion(),
            StartError::Server(e) => e.suggestion(),
        }
    }

    fn details(&self) -> Map<String, Value> {
        match self {
            StartError::Model(e) => e.details(),
            StartError::Binary(e) => e.details(),
            StartError::Resources(e) => e.details(),
            StartError::Server(e) => e.details(),
        }
    }
}
