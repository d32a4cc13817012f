//! Who may call a port we serve: browser origins (CORS answers only configured ones; any other
//! origin is refused) and the API key (`Authorization: Bearer <key>`, compared in constant time).

use std::future::Future;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};

use super::Body;
use crate::error::ErrorCode;

pub struct Access {
    pub api_key: Option<String>,
    pub allowed_origins: Vec<String>,
    /// What a preflight allows (`Access-Control-Allow-Methods`).
    pub methods: &'static str,
}

impl Access {
    /// Answers a request that may not pass (a refused origin 403, a preflight 204, a request
    /// without the key 401 unless `open(path)`), or runs `route` for it; an allowed origin is
    /// named in the answer, and nothing else is.
    pub async fn serve<F, R>(
        &self,
        req: Request<Incoming>,
        open: impl Fn(&str) -> bool,
        route: R,
    ) -> Response<Body>
    where
        R: FnOnce(Request<Incoming>) -> F,
        F: Future<Output = Response<Body>>,
    {
        let origin = req.headers().get(ORIGIN).cloned();
        if let Some(origin) = &origin
            && !self.origin_allowed(origin)
        {
            return super::error(
                ErrorCode::OriginNotAllowed,
                "this origin is not allowed: add it to allowedOrigins in the server config",
            );
        }
        let mut response = if req.method() == Method::OPTIONS {
            self.preflight()
        } else if !open(req.uri().path()) && !self.authorized(&req) {
            let mut r = super::error(
                ErrorCode::Unauthorized,
                "missing or wrong API key: send Authorization: Bearer <apiKey>",
            );
            r.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            r
        } else {
            let mut routed = route(req).await;
            // Whatever a backend said about CORS (llama-server allows every origin) is not ours.
            let headers = routed.headers_mut();
            let theirs: Vec<_> = headers
                .keys()
                .filter(|k| k.as_str().starts_with("access-control-"))
                .cloned()
                .collect();
            for name in theirs {
                headers.remove(name);
            }
            routed
        };
        if let Some(origin) = origin {
            let headers = response.headers_mut();
            headers.insert("access-control-allow-origin", origin);
            headers.insert("vary", HeaderValue::from_static("Origin"));
        }
        response
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        origin
            .to_str()
            .is_ok_and(|o| self.allowed_origins.iter().any(|a| a == o))
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(key) = &self.api_key else {
            return true;
        };
        req.headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes()))
    }

    fn preflight(&self) -> Response<Body> {
        let mut r = super::empty(StatusCode::NO_CONTENT);
        let headers = r.headers_mut();
        headers.insert(
            "access-control-allow-methods",
            HeaderValue::from_static(self.methods),
        );
        headers.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("Content-Type, Authorization"),
        );
        headers.insert("access-control-max-age", HeaderValue::from_static("600"));
        r
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
