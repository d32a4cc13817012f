//! The HTTP contract of the diffusion wrapper (DESIGN.md, docs/API.md): health, synchronous and
//! asynchronous generation, job status, Server-Sent Events of progress, cancel, in the words of
//! genai-electron 0.26's API (`pending`, `in_progress`, `complete`, `result.images`,
//! `progress.percentage`), which its clients (genai-lite) poll. Every POST makes a job with an
//! id: a synchronous answer carries it, and the job stays pollable. Every error is
//! `{"error": {"message", "code", "type"}}` with a 4xx/5xx status; a browser origin that was
//! not allowed is refused.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::engine::{
    Bound, Engine, ImageOutput, Job, JobError, JobSnapshot, JobUpdate, unix_millis, unix_seconds,
};
use super::{DiffusionConfig, DiffusionError, request};
use crate::error::{Coded, ErrorCode};
use crate::http::access::{Access, HostCheck};
use crate::http::{self, Body, BodyError};

const GENERATIONS: &str = "/v1/images/generations";
/// OpenAI's image edits: a multipart form (`image`, `prompt`, `n`, `size`, …), as the `openai`
/// client's `images.edit()` sends it.
const EDITS: &str = "/v1/images/edits";
/// An image enlarged by an installed upscaler: `{ image, modelId, repeats }` in JSON.
const UPSCALES: &str = "/v1/images/upscales";

struct Context {
    engine: Arc<Engine>,
    access: Access,
    max_body_bytes: usize,
}

type Handler = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

pub fn handler(
    engine: Arc<Engine>,
    config: &DiffusionConfig,
) -> impl Fn(Request<Incoming>) -> Handler + Clone + Send + Sync + 'static {
    let ctx = Arc::new(Context {
        engine,
        access: Access {
            hosts: HostCheck::new(&config.host, &config.allowed_hosts),
            api_key: config.api_key.clone(),
            allowed_origins: config.allowed_origins.clone(),
            methods: "GET, POST, DELETE, OPTIONS",
        },
        max_body_bytes: config.max_body_bytes,
    });
    move |req| {
        let ctx = ctx.clone();
        Box::pin(async move { ctx.handle(req).await })
    }
}

impl Context {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        self.access
            .serve(req, |path| path == "/health", |req| self.route(req))
            .await
    }

    async fn route(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let rest = path.strip_prefix(GENERATIONS);
        match (rest, path.as_str()) {
            (_, "/health") => match method {
                Method::GET => http::json(
                    StatusCode::OK,
                    &json!({ "status": "ok", "busy": self.engine.busy(), "queued": self.engine.queued() }),
                ),
                _ => not_allowed("GET"),
            },
            (Some(""), _) => match method {
                Method::POST => self.generate(req).await,
                _ => not_allowed("POST"),
            },
            (_, EDITS) => match method {
                Method::POST => self.edit(req).await,
                _ => not_allowed("POST"),
            },
            (_, UPSCALES) => match method {
                Method::POST => self.upscale(req).await,
                _ => not_allowed("POST"),
            },
            (Some(rest), _) if rest.starts_with('/') => {
                let rest = &rest[1..];
                let (id, events) = match rest.strip_suffix("/events") {
                    Some(id) => (id, true),
                    None => (rest, false),
                };
                let Some(job) = self.engine.get(id) else {
                    return http::error(
                        ErrorCode::NotFound,
                        &format!(
                            "no image job {id:?} (finished jobs are kept for a while, then forgotten)"
                        ),
                    );
                };
                match (method, events) {
                    (Method::GET, true) => events_of(job),
                    (Method::GET, false) => http::json(StatusCode::OK, &job_view(&job)),
                    (Method::DELETE, false) => self.cancel(&job).await,
                    (_, true) => not_allowed("GET"),
                    _ => not_allowed("GET, DELETE"),
                }
            }
            _ => http::error(
                ErrorCode::NotFound,
                &format!("no route {path}: see GET /health and {GENERATIONS}"),
            ),
        }
    }

    /// The body, at most `max_body_bytes`, or the error response to give instead.
    async fn body(&self, req: Request<Incoming>) -> Result<bytes::Bytes, Response<Body>> {
        match http::read_body(req, self.max_body_bytes).await {
            Ok(body) => Ok(body),
            Err(BodyError::TooLarge) => Err(http::error(
                ErrorCode::BodyTooLarge,
                &format!("the request body is over {} bytes", self.max_body_bytes),
            )),
            Err(BodyError::Unreadable) => Err(http::error(
                ErrorCode::InvalidArgument,
                "the request body could not be read",
            )),
        }
    }

    async fn generate(&self, req: Request<Incoming>) -> Response<Body> {
        let req_prefer = req.headers().get("prefer").cloned();
        let body = match self.body(req).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let parsed = serde_json::from_slice::<Value>(&body)
            .map_err(|e| format!("the request body is not JSON: {e}"));
        self.submit(parsed, req_prefer).await
    }

    /// OpenAI's `images.edit()`: the form's `image` is the init image, its other fields those of
    /// a generation; answered as a generation is.
    async fn edit(&self, req: Request<Incoming>) -> Response<Body> {
        let req_prefer = req.headers().get("prefer").cloned();
        let boundary = req
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| multer::parse_boundary(v).ok());
        let Some(boundary) = boundary else {
            return http::error(
                ErrorCode::InvalidArgument,
                &format!("{EDITS} takes a multipart/form-data body (image, prompt, …)"),
            );
        };
        let body = match self.body(req).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        self.submit(edit_request(body, boundary).await, req_prefer)
            .await
    }

    /// `diffusionServer.upscaleImage` over HTTP: answered once the image is upscaled, as a
    /// generation is (`data: [{ b64_json }]`), with its size.
    async fn upscale(&self, req: Request<Incoming>) -> Response<Body> {
        let body = match self.body(req).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let parsed = serde_json::from_slice::<Value>(&body)
            .map_err(|e| DiffusionError::Invalid(format!("the request body is not JSON: {e}")))
            .and_then(|body| super::upscale::parse(&body));
        let request = match parsed {
            Ok(request) => request,
            Err(e) => return submit_error(&e),
        };
        let id = format!("upscale_{:016x}", fastrand::u64(..));
        match self.engine.upscale(&request, id).await {
            Ok(upscaled) => http::json(
                StatusCode::OK,
                &json!({
                    "created": unix_seconds(std::time::SystemTime::now()),
                    "data": [{ "b64_json": base64::engine::general_purpose::STANDARD.encode(&upscaled.png) }],
                    "width": upscaled.width,
                    "height": upscaled.height,
                    "timeTaken": upscaled.time_taken.as_millis() as u64,
                }),
            ),
            Err(e) => http::error_with(e.code(), &e.to_string(), e.suggestion().as_deref()),
        }
    }

    /// Makes a job of a parsed body and answers it: its images, or 202 where asked.
    async fn submit(
        &self,
        parsed: Result<Value, String>,
        req_prefer: Option<HeaderValue>,
    ) -> Response<Body> {
        let parsed = parsed.and_then(|v| request::parse(&v, true).map_err(|e| e.0));
        let request = match parsed {
            Ok(r) => r,
            Err(message) => {
                return http::error(ErrorCode::InvalidArgument, &message);
            }
        };
        let asynchronous = request.asynchronous || prefers_async(req_prefer.as_ref());
        let job = match self.engine.submit(request, None, Bound::MaxQueue, None) {
            Ok(job) => job,
            Err(err) => return submit_error(&err),
        };
        if asynchronous {
            return accepted(&job);
        }
        // A client that hangs up cancels its job.
        let mut guard = CancelOnDrop(Some((self.engine.clone(), job.id.clone())));
        let outcome = job.wait().await;
        guard.0 = None;
        match outcome {
            Ok(output) => {
                let mut answer = result_json(&output);
                answer
                    .as_object_mut()
                    .expect("an object")
                    .extend(job_fields(&job, &job.snapshot()));
                http::json(StatusCode::OK, &answer)
            }
            Err(err) => {
                let mut response = error_response(&err);
                response.headers_mut().insert(
                    "x-image-job",
                    HeaderValue::from_str(&job.id).expect("ids are ASCII"),
                );
                response
            }
        }
    }

    /// Cancels the job and answers once it has stopped (a running one stops its backend first).
    async fn cancel(&self, job: &Arc<Job>) -> Response<Body> {
        let status = job.snapshot().status;
        if status.is_final() {
            return http::error(
                ErrorCode::JobFinished,
                &format!("job {} is already {}", job.id, status.as_str()),
            );
        }
        self.engine.cancel(Some(&job.id));
        let _ = tokio::time::timeout(CANCEL_WAIT, job.wait()).await;
        http::json(
            StatusCode::OK,
            &json!({ "id": job.id, "status": job.snapshot().status }),
        )
    }
}

/// The generation an edit form asks for: one `image` (a file) as `initImage`, several (`image[]`,
/// as OpenAI's newer models take them) as `referenceImages`, `mask` as `mask` (its
/// transparency made the grey levels sd reads, see [`mask_of_alpha`]), text fields as they are
/// (`n`, `strength` and the request's other numbers as numbers).
async fn edit_request(body: bytes::Bytes, boundary: String) -> Result<Value, String> {
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut fields = Map::new();
    let mut images = Vec::new();
    let unreadable = |e: multer::Error| format!("the multipart body cannot be read: {e}");
    while let Some(field) = form.next_field().await.map_err(unreadable)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "image" | "image[]" => {
                let bytes = field.bytes().await.map_err(unreadable)?;
                images.push(json!(
                    base64::engine::general_purpose::STANDARD.encode(&bytes)
                ));
            }
            "mask" => {
                let bytes = field.bytes().await.map_err(unreadable)?;
                let mask = mask_of_alpha(&bytes)?;
                let encoded = base64::engine::general_purpose::STANDARD.encode(&mask);
                fields.insert("mask".into(), json!(encoded));
            }
            _ => {
                let text = field.text().await.map_err(unreadable)?;
                let number = |value: Option<Value>| {
                    value.ok_or_else(|| format!("{name} must be a number, got {text:?}"))
                };
                let value = match name.as_str() {
                    // A form's fields are text; the request's numbers are read as numbers
                    // (their ranges are checked with the rest of the request).
                    "n" | "count" | "strength" | "seed" | "steps" | "cfgScale" | "width"
                    | "height" => number(
                        text.trim()
                            .parse::<serde_json::Number>()
                            .ok()
                            .map(Value::Number),
                    )?,
                    _ => json!(text),
                };
                fields.insert(name, value);
            }
        }
    }
    match images.len() {
        0 => {
            return Err("image is required: the picture to edit, a PNG, JPEG or WebP file".into());
        }
        1 => fields.insert("initImage".into(), images.remove(0)),
        _ => fields.insert("referenceImages".into(), Value::Array(images)),
    };
    Ok(Value::Object(fields))
}

/// OpenAI's mask says with transparency what is edited (alpha 0: redrawn); sd reads a mask's
/// grey levels (white: redrawn), and a transparent pixel is usually black. A PNG with an alpha
/// channel becomes a grey PNG of `255 - alpha`; any other image is sd's kind of mask already.
fn mask_of_alpha(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if !matches!(imagesize::image_type(bytes), Ok(imagesize::ImageType::Png)) {
        return Ok(bytes.to_vec());
    }
    let unreadable = |e: png::DecodingError| format!("mask is not a readable PNG: {e}");
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    // Palettes with transparency gain an alpha channel; 16-bit samples become 8-bit.
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(unreadable)?;
    let (color, _) = reader.output_color_type();
    if !matches!(color, png::ColorType::Rgba | png::ColorType::GrayscaleAlpha) {
        return Ok(bytes.to_vec());
    }
    let size = reader
        .output_buffer_size()
        .ok_or("mask is too large to read")?;
    if size > request::MAX_INPUT_IMAGE_BYTES * 4 {
        return Err(format!(
            "mask is too large: at most {} MiB of pixels",
            request::MAX_INPUT_IMAGE_BYTES >> 18
        ));
    }
    let mut pixels = vec![0; size];
    let frame = reader.next_frame(&mut pixels).map_err(unreadable)?;
    let samples = color.samples();
    let grey: Vec<u8> = pixels[..frame.buffer_size()]
        .chunks_exact(samples)
        .map(|pixel| 255 - pixel[samples - 1])
        .collect();
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, frame.width, frame.height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let encoded = encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&grey));
    encoded.map_err(|e| format!("the mask cannot be converted: {e}"))?;
    Ok(out)
}

/// How long `DELETE` waits for a running job's backend to stop before it answers.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// RFC 7240's `Prefer: respond-async`: the job's id now, its images by polling or events.
fn prefers_async(prefer: Option<&HeaderValue>) -> bool {
    prefer.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split([',', ';'])
            .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
    })
}

/// 202 with the job as it is (`pending`), where to poll it, and where its events stream.
fn accepted(job: &Job) -> Response<Body> {
    let url = format!("{GENERATIONS}/{}", job.id);
    let mut body = job_fields(job, &job.snapshot());
    body.insert("url".into(), json!(url));
    body.insert("events".into(), json!(format!("{url}/events")));
    let mut response = http::json(StatusCode::ACCEPTED, &Value::Object(body));
    let headers = response.headers_mut();
    headers.insert(
        "location",
        HeaderValue::from_str(&url).expect("ids are ASCII"),
    );
    headers.insert(
        "preference-applied",
        HeaderValue::from_static("respond-async"),
    );
    response
}

struct CancelOnDrop(Option<(Arc<Engine>, String)>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some((engine, id)) = self.0.take() {
            engine.cancel(Some(&id));
        }
    }
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = http::error(ErrorCode::MethodNotAllowed, &format!("use {allow} here"));
    r.headers_mut()
        .insert("allow", HeaderValue::from_static(allow));
    r
}

fn submit_error(err: &DiffusionError) -> Response<Body> {
    http::error(err.code(), &err.to_string())
}

fn error_response(err: &JobError) -> Response<Body> {
    http::error_with(err.code(), &err.message, err.suggestion.as_deref())
}

/// The seed's result (`image`, `format`, `timeTaken`, `seed`, `width`, `height`) plus the
/// OpenAI fields (`created`, `data[].b64_json`): the synchronous answer.
pub fn result_json(output: &ImageOutput) -> Value {
    let b64 = base64_images(output);
    json!({
        "image": b64.first(),
        "format": "png",
        "timeTaken": output.time_taken.as_millis() as u64,
        "backendTime": output.backend_time.as_millis() as u64,
        "seed": output.seeds.first(),
        "width": output.width,
        "height": output.height,
        "count": output.images.len(),
        "created": unix_seconds(output.created),
        "data": b64.iter().zip(&output.seeds).map(|(b, seed)| json!({ "b64_json": b, "seed": seed })).collect::<Vec<_>>(),
    })
}

fn base64_images(output: &ImageOutput) -> Vec<String> {
    output
        .images
        .iter()
        .map(|png| base64::engine::general_purpose::STANDARD.encode(png))
        .collect()
}

/// The job's `result` when polled (genai-electron 0.26's shape).
fn job_result(output: &ImageOutput) -> Value {
    let images: Vec<Value> = base64_images(output)
        .into_iter()
        .zip(&output.seeds)
        .map(|(image, seed)| {
            json!({ "image": image, "seed": seed, "width": output.width, "height": output.height })
        })
        .collect();
    json!({
        "images": images,
        "format": "png",
        "timeTaken": output.time_taken.as_millis() as u64,
        "backendTime": output.backend_time.as_millis() as u64,
    })
}

/// What every view of a job says: its id, status and times (milliseconds since the epoch).
fn job_fields(job: &Job, snapshot: &JobSnapshot) -> Map<String, Value> {
    let fields = json!({
        "id": job.id,
        "status": snapshot.status,
        "createdAt": unix_millis(job.created),
        "updatedAt": unix_millis(snapshot.updated),
    });
    match fields {
        Value::Object(map) => map,
        _ => unreachable!("an object"),
    }
}

fn job_view(job: &Job) -> Value {
    view_of(job, &job.snapshot())
}

/// `GET …/{id}`: the fields, then `progress` once there is some, `result` once complete,
/// `error` once failed.
fn view_of(job: &Job, snapshot: &JobSnapshot) -> Value {
    let mut view = job_fields(job, snapshot);
    if let Some(progress) = &snapshot.progress {
        view.insert("progress".into(), json!(progress));
    }
    match &snapshot.outcome {
        Some(Ok(output)) => {
            view.insert("result".into(), job_result(output));
        }
        Some(Err(err)) if !err.cancelled => {
            let error = http::error_object(err.code(), &err.message, err.suggestion.as_deref());
            view.insert("error".into(), error);
        }
        _ => {}
    }
    Value::Object(view)
}

/// `status` first (the job as it is now), then `progress` events, then one final event named
/// after the final status (`complete`, `error`, `cancelled`) carrying the whole job.
fn events_of(job: Arc<Job>) -> Response<Body> {
    let updates = job.subscribe();
    // One snapshot for both: a job that finishes in between still gets its final event.
    let snapshot = job.snapshot();
    let done = snapshot.status.is_final();
    let opening = http::sse_event("status", &view_of(&job, &snapshot));
    let stream = futures_util::stream::unfold(
        (Some(opening), done, updates, job),
        |(opening, done, mut updates, job)| async move {
            if let Some(event) = opening {
                return Some((event, (None, done, updates, job)));
            }
            if done {
                return None;
            }
            loop {
                match updates.recv().await {
                    Ok(JobUpdate::Progress(p)) => {
                        let mut data = serde_json::to_value(&p).unwrap_or_default();
                        data["id"] = json!(job.id);
                        return Some((
                            http::sse_event("progress", &data),
                            (None, false, updates, job),
                        ));
                    }
                    Ok(JobUpdate::Finished(status)) => {
                        let event = http::sse_event(status.as_str(), &job_view(&job));
                        return Some((event, (None, true, updates, job)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    http::event_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A multipart body of `parts`: `(name, file name, bytes)`.
    fn form(parts: &[(&str, Option<&str>, &[u8])]) -> bytes::Bytes {
        let mut body = Vec::new();
        for (name, file, bytes) in parts {
            body.extend(b"--XyZ\r\nContent-Disposition: form-data; name=\"");
            body.extend(name.as_bytes());
            body.extend(b"\"");
            if let Some(file) = file {
                body.extend(format!("; filename=\"{file}\"\r\nContent-Type: image/png").as_bytes());
            }
            body.extend(b"\r\n\r\n");
            body.extend(*bytes);
            body.extend(b"\r\n");
        }
        body.extend(b"--XyZ--\r\n");
        body.into()
    }

    #[tokio::test]
    async fn an_edit_form_is_a_generation_with_its_image_as_the_init_image() {
        let edit = |parts: &[(&str, Option<&str>, &[u8])]| edit_request(form(parts), "XyZ".into());
        let read = edit(&[
            ("image", Some("a.png"), b"\x89PNG"),
            ("prompt", None, b"at night"),
            ("n", None, b"2"),
            ("strength", None, b"0.4"),
            ("size", None, b"64x64"),
        ])
        .await
        .unwrap();
        assert_eq!(
            read,
            json!({ "initImage": "iVBORw==", "prompt": "at night", "n": 2, "strength": 0.4, "size": "64x64" })
        );
        let refused = |parts: Vec<(&'static str, Option<&'static str>, &'static [u8])>| async move {
            edit(&parts).await.unwrap_err()
        };
        assert!(
            refused(vec![("prompt", None, b"x")])
                .await
                .contains("image is required")
        );
        let mask = vec![
            ("image", Some("a.png"), &b"x"[..]),
            ("mask", Some("m.png"), b"\x89PNG\r\n\x1a\n broken"),
        ];
        assert!(refused(mask).await.contains("mask is not a readable PNG"));
        let two = edit(&[
            ("image[]", Some("a.png"), b"a"),
            ("image[]", Some("b.png"), b"b"),
            ("prompt", None, b"both"),
        ])
        .await
        .unwrap();
        assert_eq!(
            two,
            json!({ "prompt": "both", "referenceImages": ["YQ==", "Yg=="] })
        );
        let n = vec![("image", Some("a.png"), &b"x"[..]), ("n", None, b"two")];
        assert!(refused(n).await.contains("n must be a number"));
        let broken = edit_request(
            bytes::Bytes::from_static(b"--XyZ\r\nnonsense"),
            "XyZ".into(),
        );
        assert!(broken.await.unwrap_err().contains("cannot be read"));
    }

    fn encode_png(width: u32, color: png::ColorType, pixels: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, 1);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(pixels).unwrap();
        writer.finish().unwrap();
        out
    }

    fn decode_png(bytes: &[u8]) -> (png::ColorType, Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut pixels).unwrap();
        pixels.truncate(frame.buffer_size());
        (frame.color_type, pixels)
    }

    #[tokio::test]
    async fn an_openai_mask_is_edited_where_transparent() {
        // Two pixels: transparent black (edit it) and opaque white (keep it).
        let rgba = encode_png(2, png::ColorType::Rgba, &[0, 0, 0, 0, 255, 255, 255, 255]);
        let grey = mask_of_alpha(&rgba).unwrap();
        assert_eq!(decode_png(&grey), (png::ColorType::Grayscale, vec![255, 0]));
        // Without transparency a mask is read as sd reads it: as it is.
        let plain = encode_png(2, png::ColorType::Grayscale, &[255, 0]);
        assert_eq!(mask_of_alpha(&plain).unwrap(), plain);
        assert_eq!(mask_of_alpha(b"RIFF....WEBP").unwrap(), b"RIFF....WEBP");
        let read = edit_request(
            form(&[
                ("image", Some("a.png"), b"x"),
                ("mask", Some("m.png"), &rgba),
            ]),
            "XyZ".into(),
        )
        .await
        .unwrap();
        let sent = base64::engine::general_purpose::STANDARD
            .decode(read["mask"].as_str().unwrap())
            .unwrap();
        assert_eq!(sent, grey);
    }
}
