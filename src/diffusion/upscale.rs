//! Upscaling an image with an installed ESRGAN-family model: `sd-cli` in its upscale mode
//! (`-M upscale --upscale-model`), which `sd-server` has no route for. It runs as a process of
//! its own beside the image queue, in a request folder under `temp/` removed however it ends.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::DiffusionError;
use super::backend::{BackendConfig, BackendKind, TempDir, png_size};
use super::request::{self, InputImage};
use crate::events::EventSink;
use crate::models::store::{self, ModelType};
use crate::process::{self, ProcessSpec, inherit_all};

/// The most times one request may run the upscaler over its own output.
pub const MAX_REPEATS: u32 = 4;

/// `upscaleImage`'s config, checked.
#[derive(Debug, Clone)]
pub struct UpscaleRequest {
    pub image: InputImage,
    /// An installed model of type `upscaler`.
    pub model_id: String,
    /// How many times the upscaler runs over its own output (1–4, default 1).
    pub repeats: u32,
}

/// The upscaled image.
#[derive(Debug)]
pub struct Upscaled {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub time_taken: Duration,
}

/// Checks `{ image, modelId, repeats }` (the image as base64 or a data URL).
pub fn parse(body: &Value) -> Result<UpscaleRequest, DiffusionError> {
    let invalid = |message: String| DiffusionError::Invalid(message);
    let obj: &Map<String, Value> = body
        .as_object()
        .ok_or_else(|| invalid("the upscale config must be an object".into()))?;
    if let Some(key) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "image" | "modelId" | "repeats"))
    {
        return Err(invalid(format!("unknown field {key:?}")));
    }
    let image = request::image(obj, "image")
        .map_err(|e| invalid(e.0))?
        .ok_or_else(|| invalid("image is required: the PNG, JPEG or WebP to upscale".into()))?;
    let model_id = match obj.get("modelId") {
        Some(Value::String(id)) if store::is_valid_id(id) => id.clone(),
        Some(Value::String(id)) => {
            return Err(invalid(format!("modelId {id:?} is not a model id")));
        }
        _ => {
            return Err(invalid(
                "modelId is required: the id of an installed upscaler (type 'upscaler')".into(),
            ));
        }
    };
    let repeats = match obj.get("repeats") {
        None | Some(Value::Null) => 1,
        Some(Value::Number(n))
            if n.as_u64()
                .is_some_and(|r| (1..=u64::from(MAX_REPEATS)).contains(&r)) =>
        {
            n.as_u64().unwrap_or(1) as u32
        }
        Some(other) => {
            return Err(invalid(format!(
                "repeats must be a whole number from 1 to {MAX_REPEATS}, got {other}"
            )));
        }
    };
    Ok(UpscaleRequest {
        image,
        model_id,
        repeats,
    })
}

/// Upscales with `sd-cli` as the running server's config says (threads, GPUs); `id` names the
/// request's folder. A cancel stops the process.
pub async fn upscale(
    config: &BackendConfig,
    request: &UpscaleRequest,
    id: &str,
    cancel: &CancellationToken,
    log: EventSink<String>,
) -> Result<Upscaled, DiffusionError> {
    let model = upscaler_file(config, &request.model_id).await?;
    let binary = sd_cli(config)?;
    let dir = TempDir::create(&config.temp_dir, id).await?;
    let input = dir.write_image("input", &request.image).await?;
    let output = dir.0.join("upscaled.png");
    let args = [
        "-M",
        "upscale",
        "--upscale-model",
        &model.to_string_lossy(),
        "--upscale-repeats",
        &request.repeats.to_string(),
        "--threads",
        &config.threads.to_string(),
        "-i",
        &input.to_string_lossy(),
        "-o",
        &output.to_string_lossy(),
    ];
    let spec = ProcessSpec {
        program: binary.clone(),
        args: args.iter().map(|a| a.to_string()).collect(),
        guarded: false,
        env: config.env.clone(),
        unset: inherit_all,
    };
    let began = Instant::now();
    let child = process::spawn(spec, Some(log))
        .map_err(|source| DiffusionError::Spawn { binary, source })?;
    let exit = tokio::select! {
        exit = child.wait() => exit,
        _ = cancel.cancelled() => {
            child.stop(Duration::from_millis(150)).await;
            return Err(DiffusionError::Cancelled);
        }
    };
    let failed = |message: String| DiffusionError::BackendFailed {
        message,
        logs: child.logs.last(crate::process::actor::LOG_TAIL),
    };
    if exit.code != Some(0) {
        return Err(failed(format!("sd-cli could not upscale ({exit})")));
    }
    let png = tokio::fs::read(&output)
        .await
        .map_err(|e| failed(format!("sd-cli wrote no upscaled image: {e}")))?;
    let (width, height) =
        png_size(&png).ok_or_else(|| failed("sd-cli's output is not a PNG".into()))?;
    Ok(Upscaled {
        png,
        width,
        height,
        time_taken: began.elapsed(),
    })
}

/// The file of the installed upscaler `id`.
async fn upscaler_file(
    config: &BackendConfig,
    id: &str,
) -> Result<std::path::PathBuf, DiffusionError> {
    let info = super::lora::installed(&config.data, "modelId", id, ModelType::Upscaler).await?;
    Ok(info.path)
}

/// `sd-cli`: the one-shot backend's own, or the one beside a resident `sd-server` (both come
/// from the same build and archive).
fn sd_cli(config: &BackendConfig) -> Result<std::path::PathBuf, DiffusionError> {
    if config.kind == BackendKind::OneShot {
        return Ok(config.binary.clone());
    }
    let name = if cfg!(windows) {
        "sd-cli.exe"
    } else {
        "sd-cli"
    };
    let beside = config.binary.with_file_name(name);
    if beside.is_file() {
        return Ok(beside);
    }
    Err(DiffusionError::Spawn {
        binary: beside,
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "upscaling runs sd-cli, which is not beside sd-server",
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_upscale_config_is_checked_field_by_field() {
        use base64::Engine as _;
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend(64u32.to_be_bytes());
        png.extend(48u32.to_be_bytes());
        let image = base64::engine::general_purpose::STANDARD.encode(&png);
        let read = parse(&json!({ "image": image, "modelId": "x2" })).unwrap();
        assert_eq!(
            (read.image.width, read.model_id.as_str(), read.repeats),
            (64, "x2", 1)
        );
        let repeats = parse(&json!({ "image": image, "modelId": "x2", "repeats": 4 })).unwrap();
        assert_eq!(repeats.repeats, 4);
        let refused = |body: Value| parse(&body).unwrap_err().to_string();
        assert!(refused(json!([])).contains("must be an object"));
        assert!(refused(json!({ "modelId": "x2" })).contains("image is required"));
        assert!(refused(json!({ "image": 3, "modelId": "x2" })).contains("image must be an image"));
        assert!(refused(json!({ "image": image })).contains("modelId is required"));
        assert!(refused(json!({ "image": image, "modelId": "../x" })).contains("not a model id"));
        assert!(
            refused(json!({ "image": image, "modelId": "x2", "repeats": 0 }))
                .contains("from 1 to 4")
        );
        assert!(
            refused(json!({ "image": image, "modelId": "x2", "repeats": 1.5 }))
                .contains("from 1 to 4")
        );
        assert!(
            refused(json!({ "image": image, "modelId": "x2", "tile": 1 }))
                .contains("unknown field \"tile\"")
        );
    }
}
