use std::sync::Arc;

use napi::Env;
use napi::bindgen_prelude::{ClassInstance, PromiseRaw};
use napi_derive::napi;
use serde_json::Value;

use super::config::data_paths;
use super::diffusion::{ImageBatch, JsDiffusionServer, image_request, image_shape, images};
use super::error::{from_js, to_js, to_napi};
use super::events::{EventCallback, serialized, sink};
use super::llama::JsLlamaServer;
use crate::binaries::BinaryManager;
use crate::llama::resolve::StartRequest;
use crate::orchestrator::{Options, OptionsRequest, Orchestrator, OrchestratorEvent, Servers};

#[napi(js_name = "NativeResourceOrchestrator")]
pub struct JsResourceOrchestrator {
    inner: Arc<Orchestrator>,
}

#[napi]
impl JsResourceOrchestrator {
    #[napi(
        constructor,
        ts_args_type = "llamas: NativeLlamaServer[], diffusion: NativeDiffusionServer, options: Shapes.OrchestratorOptions, onEvent: EventCallback"
    )]
    pub fn new(
        llamas: Vec<ClassInstance<JsLlamaServer>>,
        diffusion: &JsDiffusionServer,
        options: Value,
        on_event: EventCallback,
    ) -> napi::Result<Self> {
        let request: OptionsRequest = from_js("options", options)?;
        let options = Options::resolve(request).map_err(to_napi)?;
        let events = sink(Arc::new(on_event), serialized::<OrchestratorEvent>);
        let servers = Servers {
            llamas: llamas.iter().map(|llama| llama.inner.clone()).collect(),
            diffusion: diffusion.inner.clone(),
            system: super::system::shared(),
            binaries: BinaryManager::shared(),
        };
        Ok(JsResourceOrchestrator {
            inner: Arc::new(Orchestrator::new(servers, options, Some(events))),
        })
    }

    #[napi(
        ts_args_type = "config: Pick<Shapes.ImageRequest, 'width' | 'height' | 'loras'> & { size?: string }",
        ts_return_type = "Promise<Shapes.ResourceEstimate>"
    )]
    pub async fn estimate(&self, config: Value) -> napi::Result<Value> {
        let data = data_paths().await?;
        let shape = image_shape(&config)?;
        to_js(&self.inner.estimate(&shape, &data).await)
    }

    /// Takes the image's place in the queue at once (concurrent calls keep their order), and its
    /// id can be cancelled from the moment this returns.
    #[napi(
        ts_args_type = "config: Shapes.ImageRequest, id: string",
        ts_return_type = "Promise<ImageBatch>"
    )]
    pub fn orchestrate<'env>(
        &self,
        env: &'env Env,
        config: Value,
        id: String,
    ) -> napi::Result<PromiseRaw<'env, ImageBatch>> {
        let pending = self.inner.queue_image(image_request(&config)?, id);
        images(env, pending.outcome())
    }

    /// `start(config)` of llama server `server` (its place in the constructor's list) in the
    /// orchestrator's turn, an idle resident sd-server yielding first when the two do not fit.
    #[napi(
        ts_args_type = "server: number, config: Shapes.LlamaServerConfig",
        ts_return_type = "Promise<Shapes.ServerInfo>"
    )]
    pub async fn start_llama(&self, server: u32, config: Value) -> napi::Result<Value> {
        let request: StartRequest = from_js("config", config)?;
        let data = data_paths().await?;
        let info = self
            .inner
            .start_llm(server as usize, request, &data)
            .await
            .map_err(to_napi)?;
        to_js(&info)
    }

    /// Stops deciding the diffusion server's images.
    #[napi]
    pub fn dispose(&self) {
        self.inner.dispose()
    }

    /// The app's own offload: true when the LLM was running and is out now.
    #[napi]
    pub async fn offload_llm(&self) -> bool {
        self.inner.offload_llm().await
    }

    /// Ends the app's hold; resolves once the LLM is back.
    #[napi]
    pub async fn reload_llm(&self) {
        self.inner.reload_llm().await
    }

    #[napi]
    pub fn cancel(&self, id: String) -> bool {
        self.inner.cancel(&id)
    }

    #[napi(ts_return_type = "Shapes.OrchestratorInfo")]
    pub fn get_info(&self) -> napi::Result<Value> {
        to_js(&self.inner.info())
    }

    /// The first llama server out (`llamaServer` when it is), as it was.
    #[napi(ts_return_type = "Shapes.SavedState | null")]
    pub fn get_saved_state(&self) -> napi::Result<Value> {
        to_js(&self.inner.saved_state())
    }

    /// Every llama server out, as it was, in the order they went.
    #[napi(ts_return_type = "Shapes.SavedState[]")]
    pub fn get_saved_states(&self) -> napi::Result<Value> {
        to_js(&self.inner.saved_states())
    }

    #[napi]
    pub fn clear_saved_state(&self) {
        self.inner.clear_saved_state()
    }
}
