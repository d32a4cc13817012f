//! The HTTP contract of the diffusion wrapper (DESIGN.md): health, synchronous and asynchronous
//! generation, job status, Server-Sent Events of progress, cancel. Every error is
//! `{"error", "code"}` with a 4xx/5xx status; a browser origin that was not allowed is refused.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::engine::{
    Engine, ImageOutput, Job, JobError, JobSnapshot, JobStatus, JobUpdate, unix_seconds,
};
use super::{DiffusionConfig, DiffusionError, request};
use crate::error::{Coded, ErrorCode};
use crate::http::access::{Access, HostCheck};
use crate::http::{self, Body, BodyError};

const GENERATIONS: &str = "/v1/images/generations";

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
                    (Method::DELETE, false) => self.cancel(&job),
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

    async fn generate(&self, req: Request<Incoming>) -> Response<Body> {
        let body = match http::read_body(req, self.max_body_bytes).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return http::error(
                    ErrorCode::BodyTooLarge,
                    &format!("the request body is over {} bytes", self.max_body_bytes),
                );
            }
            Err(BodyError::Unreadable) => {
                return http::error(
                    ErrorCode::InvalidArgument,
                    "the request body could not be read",
                );
            }
        };
        let parsed = serde_json::from_slice::<Value>(&body)
            .map_err(|e| format!("the request body is not JSON: {e}"))
            .and_then(|v| request::parse(&v, true).map_err(|e| e.0));
        let request = match parsed {
            Ok(r) => r,
            Err(message) => {
                return http::error(ErrorCode::InvalidArgument, &message);
            }
        };
        let asynchronous = request.asynchronous;
        let job = match self.engine.submit(request, None) {
            Ok(job) => job,
            Err(err) => return submit_error(&err),
        };
        if asynchronous {
            return http::json(
                StatusCode::ACCEPTED,
                &json!({ "id": job.id, "status": "queued", "url": format!("{GENERATIONS}/{}", job.id) }),
            );
        }
        // A client that hangs up cancels its job.
        let mut guard = CancelOnDrop(Some((self.engine.clone(), job.id.clone())));
        let outcome = job.wait().await;
        guard.0 = None;
        // The client has its images now; the job need not keep them.
        self.engine.forget(&job.id);
        match outcome {
            Ok(output) => http::json(StatusCode::OK, &result_json(&output)),
            Err(err) => error_response(&err),
        }
    }

    fn cancel(&self, job: &Arc<Job>) -> Response<Body> {
        let status = job.snapshot().status;
        if status.is_final() {
            return http::error(
                ErrorCode::JobFinished,
                &format!("job {} has already {}", job.id, finished_verb(status)),
            );
        }
        self.engine.cancel(Some(&job.id));
        http::json(
            StatusCode::OK,
            &json!({ "id": job.id, "status": "cancelling" }),
        )
    }
}

struct CancelOnDrop(Option<(Arc<Engine>, String)>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some((engine, id)) = self.0.take() {
            engine.cancel(Some(&id));
        }
    }
}

fn finished_verb(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Completed => "completed",
        JobStatus::Failed => "failed",
        _ => "been cancelled",
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
    http::error(err.code(), &err.message)
}

/// The seed's result (`image`, `format`, `timeTaken`, `seed`, `width`, `height`) plus the
/// OpenAI fields (`created`, `data[].b64_json`).
pub fn result_json(output: &ImageOutput) -> Value {
    let b64: Vec<String> = output
        .images
        .iter()
        .map(|png| base64::engine::general_purpose::STANDARD.encode(png))
        .collect();
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

fn job_view(job: &Job) -> Value {
    view_of(job, &job.snapshot())
}

fn view_of(job: &Job, snapshot: &JobSnapshot) -> Value {
    let (result, error) = match &snapshot.outcome {
        Some(Ok(output)) => (result_json(output), Value::Null),
        Some(Err(err)) => (
            Value::Null,
            json!({ "message": err.message, "code": err.code().as_str() }),
        ),
        None => (Value::Null, Value::Null),
    };
    json!({
        "id": job.id,
        "status": snapshot.status,
        "created": unix_seconds(job.created),
        "progress": snapshot.progress,
        "result": result,
        "error": error,
    })
}

/// `status` first (the job as it is now), then `progress` events, then one final event named
/// after the final status (`completed`, `failed`, `cancelled`) carrying the whole job.
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
