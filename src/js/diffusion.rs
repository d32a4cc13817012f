use std::sync::Arc;

use napi::Env;
use napi::bindgen_prelude::{Buffer, PromiseRaw};
use napi_derive::napi;
use serde_json::{Value, json};

use super::binaries::progress_to_js;
use super::error::to_napi;
use super::events::{EventCallback, crashed, log, serialized, sink, tagged};
use crate::binaries::BinaryManager;
use crate::diffusion::calibrate::CalibrationRequest;
use crate::diffusion::engine::{Bound, ImageOutput, JobError};
use crate::diffusion::request::{self, ImageRequest};
use crate::diffusion::{DiffusionError, DiffusionEvent, DiffusionServer};
use crate::events::Subscription;

/// A promise of the images `outcome` makes.
pub(super) fn images<'env>(
    env: &'env Env,
    outcome: impl Future<Output = Result<Arc<ImageOutput>, JobError>> + Send + 'static,
) -> napi::Result<PromiseRaw<'env, ImageBatch>> {
    env.spawn_future(async move {
        let output = outcome.await.map_err(to_napi)?;
        Ok(ImageBatch::from(&*output))
    })
}

/// An image config from JS, checked by the same parser as an HTTP body.
pub(super) fn image_request(config: &Value) -> napi::Result<ImageRequest> {
    request::parse(config, false).map_err(invalid_image)
}

/// What an image config from JS needs memory for, checked as [`image_request`] checks it.
pub(super) fn image_shape(config: &Value) -> napi::Result<request::ImageShape> {
    request::shape(config).map_err(invalid_image)
}

fn invalid_image(invalid: request::Invalid) -> napi::Error {
    to_napi(DiffusionError::Invalid(invalid.0))
}

#[napi(js_name = "NativeDiffusionServer")]
pub struct JsDiffusionServer {
    pub(super) inner: Arc<DiffusionServer>,
    /// Installs that a start triggers report `binary-progress` here too.
    _binary_progress: Subscription,
}

/// The images of one request, as Buffers (no base64 in-process).
#[napi(object)]
pub struct ImageBatch {
    pub images: Vec<Buffer>,
    pub seeds: Vec<i64>,
    pub width: u32,
    pub height: u32,
    pub time_taken: f64,
    pub backend_time: f64,
}

impl From<&ImageOutput> for ImageBatch {
    fn from(output: &ImageOutput) -> Self {
        ImageBatch {
            images: output
                .images
                .iter()
                .map(|png| Buffer::from(png.clone()))
                .collect(),
            seeds: output.seeds.clone(),
            width: output.width,
            height: output.height,
            time_taken: output.time_taken.as_secs_f64() * 1000.0,
            backend_time: output.backend_time.as_secs_f64() * 1000.0,
        }
    }
}

fn event_to_js(event: DiffusionEvent) -> Value {
    match event {
        DiffusionEvent::Server(event) => serialized(event),
        DiffusionEvent::BackendState(transition) => tagged("backend-state", transition),
        DiffusionEvent::Crashed { exit, tail } => {
            let mut event = crashed(&exit, tail);
            event["backend"] = json!("sd-server");
            event
        }
        DiffusionEvent::Engine(event) => serialized(event),
        DiffusionEvent::Calibration(progress) => tagged("calibration-progress", progress),
        DiffusionEvent::Log(line) => log(line),
    }
}

#[napi]
impl JsDiffusionServer {
    #[napi(constructor)]
    pub fn new(on_event: EventCallback) -> Self {
        let callback = Arc::new(on_event);
        JsDiffusionServer {
            inner: Arc::new(DiffusionServer::new(Some(sink(
                callback.clone(),
                event_to_js,
            )))),
            _binary_progress: BinaryManager::shared().subscribe(sink(callback, progress_to_js)),
        }
    }

    /// Queues the request before returning, so its id can be cancelled at once.
    #[napi(
        ts_args_type = "config: Shapes.ImageRequest, id?: string",
        ts_return_type = "Promise<ImageBatch>"
    )]
    pub fn generate_image<'env>(
        &self,
        env: &'env Env,
        config: Value,
        id: Option<String>,
    ) -> napi::Result<PromiseRaw<'env, ImageBatch>> {
        let submitted = self
            .inner
            .submit(image_request(&config)?, id, Bound::MaxQueue, None)
            .map_err(to_napi)?;
        images(env, submitted.outcome())
    }

    #[napi]
    pub fn cancel(&self, id: Option<String>) -> bool {
        self.inner.cancel(id.as_deref())
    }

    #[napi(
        ts_args_type = "config: Shapes.DiffusionCalibrationRequest",
        ts_return_type = "Promise<Shapes.DiffusionCalibrationReport>"
    )]
    pub async fn calibrate(&self, config: Value) -> napi::Result<Value> {
        use super::error::OrEmpty;
        let request: CalibrationRequest = super::error::from_js("config", config.or_empty())?;
        let data = super::config::data_paths().await?;
        let report = self
            .inner
            .calibrate(
                request,
                &data,
                super::system::shared(),
                BinaryManager::shared(),
            )
            .await
            .map_err(to_napi)?;
        super::error::to_js(&report)
    }

    #[napi]
    pub fn cancel_calibration(&self) -> bool {
        self.inner.cancel_calibration()
    }

    /// `config`'s image is base64 (the library encodes a Buffer); `id` names it for
    /// `cancelUpscale`.
    #[napi(
        ts_args_type = "config: { image: string; modelId: string; repeats?: number }, id: string",
        ts_return_type = "Promise<UpscaledImage>"
    )]
    pub async fn upscale_image(&self, config: Value, id: String) -> napi::Result<UpscaledImage> {
        let request = crate::diffusion::upscale::parse(&config).map_err(to_napi)?;
        let upscaled = self.inner.upscale(request, id).await.map_err(to_napi)?;
        Ok(UpscaledImage {
            image: Buffer::from(upscaled.png),
            width: upscaled.width,
            height: upscaled.height,
            time_taken: upscaled.time_taken.as_secs_f64() * 1000.0,
        })
    }

    #[napi]
    pub fn cancel_upscale(&self, id: String) -> bool {
        self.inner.cancel_upscale(&id)
    }
}

/// An upscaled image: a PNG.
#[napi(object)]
pub struct UpscaledImage {
    pub image: Buffer,
    pub width: u32,
    pub height: u32,
    pub time_taken: f64,
}

super::server::managed_server_methods!(
    JsDiffusionServer,
    request: crate::diffusion::resolve::StartRequest,
    resolve: crate::diffusion::resolve::resolve,
    start: "config: Shapes.DiffusionServerConfig" => "Promise<Shapes.DiffusionServerInfo>",
    info: "Shapes.DiffusionServerInfo",
    config: "Shapes.ResolvedDiffusionConfig | null"
);
