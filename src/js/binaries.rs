use std::path::PathBuf;
use std::sync::Arc;

use napi_derive::napi;
use serde::Deserialize;
use serde_json::Value;

use super::config::data_paths;
use super::error::{BadArgument, OrEmpty, from_js, to_js, to_napi};
use super::events::{EventCallback, sink, tagged};
use crate::binaries::{BinaryKind, BinaryManager, BinaryProgress, EnsureOptions, SourceSpec};
use crate::events::Subscription;

/// Every JS `BinaryManager` is a view of the process's one manager (`BinaryManager::shared`).
#[napi(js_name = "NativeBinaryManager")]
pub struct JsBinaryManager {
    inner: &'static BinaryManager,
    _progress: Subscription,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct BuildOptions {
    work_dir: Option<PathBuf>,
}

fn parse_kind(kind: &str) -> napi::Result<BinaryKind> {
    BinaryKind::parse(kind).ok_or_else(|| {
        to_napi(BadArgument(format!(
            "unknown binary {kind:?}: expected one of {}",
            BinaryKind::ALL.map(|k| k.as_str()).join(", ")
        )))
    })
}

pub(super) fn progress_to_js(p: BinaryProgress) -> Value {
    tagged("binary-progress", p)
}

#[napi]
impl JsBinaryManager {
    #[napi(constructor)]
    pub fn new(on_event: EventCallback) -> Self {
        let inner = BinaryManager::shared();
        JsBinaryManager {
            inner,
            _progress: inner.subscribe(sink(Arc::new(on_event), progress_to_js)),
        }
    }

    #[napi(
        ts_args_type = "kind: Shapes.BinaryKind, options?: Shapes.EnsureBinaryOptions",
        ts_return_type = "Promise<Shapes.ResolvedBinary>"
    )]
    pub async fn ensure_binary(&self, kind: String, options: Option<Value>) -> napi::Result<Value> {
        let kind = parse_kind(&kind)?;
        let opts: EnsureOptions = from_js("options", options.unwrap_or(Value::Null).or_empty())?;
        let data = data_paths().await?;
        let gpu = super::system::shared().detect(false).await.gpu.clone();
        let resolved = self
            .inner
            .ensure(kind, &opts, &data, &gpu)
            .await
            .map_err(to_napi)?;
        to_js(&resolved)
    }

    #[napi(
        ts_args_type = "kind: Shapes.BinaryKind, spec: Shapes.SourceBuildSpec, options?: { workDir?: string }",
        ts_return_type = "Promise<Shapes.ResolvedBinary>"
    )]
    pub async fn build_from_source(
        &self,
        kind: String,
        spec: Value,
        options: Option<Value>,
    ) -> napi::Result<Value> {
        let kind = parse_kind(&kind)?;
        let spec: SourceSpec = from_js("source", spec)?;
        let opts: BuildOptions = from_js("options", options.unwrap_or(Value::Null).or_empty())?;
        let data = data_paths().await?;
        let resolved = self
            .inner
            .build_from_source(kind, &spec, &data, opts.work_dir.as_deref())
            .await
            .map_err(to_napi)?;
        to_js(&resolved)
    }
}
