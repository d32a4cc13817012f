//! Who may call a port we serve: the names it is called by (`Host`: a page that rebinds its own
//! domain to 127.0.0.1 must not reach a loopback server), browser origins (CORS answers the
//! configured ones and those of this machine, as llama-server's `--cors-origins localhost` does,
//! never `*`; any other origin is refused) and the API key (`Authorization: Bearer <key>`, or
//! `X-Api-Key: <key>` as Anthropic's clients send it and llama-server accepts; compared in
//! constant time).

use std::future::Future;
use std::net::IpAddr;

use hyper::body::Incoming;
use hyper::header::{HOST, HeaderValue, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};

use super::Body;
use crate::error::ErrorCode;

pub struct Access {
    pub hosts: HostCheck,
    pub api_key: Option<String>,
    pub allowed_origins: Vec<String>,
    /// What a preflight allows (`Access-Control-Allow-Methods`).
    pub methods: &'static str,
}

/// The `Host` values a port answers. DNS rebinding points a name the attacker owns at 127.0.0.1,
/// so the page's requests are same-origin and carry no `Origin`; only the name in `Host` gives
/// them away. A server bound to loopback answers the names of loopback (`localhost`,
/// `*.localhost`, `127.0.0.0/8`, `[::1]`, any port); one bound elsewhere also answers IP
/// literals, which no DNS answer can rebind. Other names must be in `allowedHosts`. A request
/// without `Host` (HTTP/1.0; no browser sends one) passes.
#[derive(Debug, Clone, Default)]
pub struct HostCheck {
    loopback_bind: bool,
    /// Lower case, without a port.
    allowed: Vec<String>,
}

impl HostCheck {
    /// The check for a server bound to `bind` (one address or several, comma-separated),
    /// answering `allowed_hosts` besides.
    pub fn new(bind: &str, allowed_hosts: &[String]) -> Self {
        HostCheck {
            loopback_bind: super::addresses(bind).all(|a| is_loopback(&host_name(a))),
            allowed: allowed_hosts.iter().map(|h| host_name(h)).collect(),
        }
    }

    pub fn allows(&self, host: &str) -> bool {
        let name = host_name(host);
        is_loopback(&name)
            || self.allowed.contains(&name)
            || (!self.loopback_bind && name.parse::<IpAddr>().is_ok())
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` → the name or address alone, lower case, without a
/// trailing dot.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        // A bare IPv6 address has colons but no port.
        None if host.matches(':').count() > 1 => host,
        None => host.split(':').next().unwrap_or(host),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A name of loopback as `Host` carries it: a loopback address, or `localhost` and its
/// subdomains (which browsers resolve to loopback themselves, so no DNS answer can rebind them).
fn is_loopback(name: &str) -> bool {
    is_loopback_address(name) || name.ends_with(".localhost")
}

/// `localhost` or a loopback IP address (an IPv4-mapped one included): an address to bind that
/// only this machine can reach.
pub fn is_loopback_address(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

impl Access {
    /// Answers a request that may not pass (a refused origin 403, a preflight 200, a request
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
        if let Some(host) = self.refused_host(&req) {
            let shown: String = host.chars().take(100).collect();
            return super::error(
                ErrorCode::InvalidHost,
                &format!(
                    "Host {shown:?} is not a name of this server: call it by localhost or its \
                     address, or add the name to allowedHosts in the server config"
                ),
            );
        }
        let origin = req.headers().get(ORIGIN).cloned();
        if let Some(origin) = &origin
            && !self.origin_allowed(origin)
        {
            if req.method() == Method::OPTIONS {
                // As llama-server answers it: no CORS headers, so the browser sends nothing.
                return super::empty(StatusCode::OK);
            }
            return super::error(
                ErrorCode::OriginNotAllowed,
                "this origin is not allowed: add it to allowedOrigins in the server config",
            );
        }
        let mut response = if req.method() == Method::OPTIONS {
            self.preflight(&req)
        } else if !open(req.uri().path()) && !self.authorized(&req) {
            let mut r = super::error(
                ErrorCode::Unauthorized,
                "missing or wrong API key: send Authorization: Bearer <apiKey> (or X-Api-Key: <apiKey>)",
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
            headers.insert(
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            );
            headers.insert("vary", HeaderValue::from_static("Origin"));
        }
        response
    }

    /// The `Host` (or the authority of an absolute-form target) that this port does not answer.
    fn refused_host(&self, req: &Request<Incoming>) -> Option<String> {
        let header = req.headers().get(HOST).map(|h| {
            h.to_str().map_or_else(
                |_| String::from_utf8_lossy(h.as_bytes()).into_owned(),
                str::to_string,
            )
        });
        let authority = req.uri().authority().map(|a| a.to_string());
        [header, authority]
            .into_iter()
            .flatten()
            .find(|host| !self.hosts.allows(host))
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        origin
            .to_str()
            .is_ok_and(|o| self.allowed_origins.iter().any(|a| a == o) || is_loopback_origin(o))
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(key) = &self.api_key else {
            return true;
        };
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let given = match header("authorization") {
            Some(value) => value.strip_prefix("Bearer ").unwrap_or(value),
            None => header("x-api-key").unwrap_or_default(),
        };
        constant_time_eq(given.as_bytes(), key.as_bytes())
    }

    /// A preflight of an allowed origin: the methods of this port, the headers it asked for
    /// (llama-server allows any), and credentials.
    fn preflight(&self, req: &Request<Incoming>) -> Response<Body> {
        // 200, as llama-server answers (clients of it check for that).
        let mut r = super::empty(StatusCode::OK);
        let asked = req
            .headers()
            .get("access-control-request-headers")
            .cloned()
            .unwrap_or(HeaderValue::from_static(
                "Content-Type, Authorization, X-Api-Key",
            ));
        let headers = r.headers_mut();
        headers.insert(
            "access-control-allow-methods",
            HeaderValue::from_static(self.methods),
        );
        headers.insert("access-control-allow-headers", asked);
        headers.insert("access-control-max-age", HeaderValue::from_static("600"));
        r
    }
}

/// `http(s)://` and a name of loopback, with any port: a page served by this machine (a dev
/// server on `localhost:5173`, an app's own page), which a DNS answer cannot forge.
fn is_loopback_origin(origin: &str) -> bool {
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|authority| !authority.contains('/') && is_loopback(&host_name(authority)))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(bind: &str, extra: &[&str], host: &str) -> bool {
        let extra: Vec<String> = extra.iter().map(|h| h.to_string()).collect();
        HostCheck::new(bind, &extra).allows(host)
    }

    #[test]
    fn a_loopback_server_answers_only_the_names_of_loopback() {
        for host in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.:8080",
            "app.localhost:3000",
            "127.0.0.1",
            "127.0.0.1:8081",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:8080",
        ] {
            assert!(allowed("127.0.0.1", &[], host), "{host}");
            assert!(allowed("::1", &[], host), "{host}");
            assert!(allowed("127.0.0.1, ::1", &[], host), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:8080",
            "localhost.attacker.example",
            "127.0.0.1.nip.io:8080",
            "192.168.1.20:8080",
            "[fe80::1]:8080",
            "0.0.0.0:8080",
            "",
        ] {
            assert!(!allowed("127.0.0.1", &[], host), "{host}");
            assert!(!allowed("127.0.0.1,::1", &[], host), "{host}");
        }
        // One address that is not loopback makes a server reachable from elsewhere.
        assert!(allowed("127.0.0.1,0.0.0.0", &[], "192.168.1.20:8080"));
    }

    #[test]
    fn allowed_hosts_add_names_and_a_server_bound_elsewhere_answers_addresses() {
        assert!(allowed("127.0.0.1", &["my-app.test"], "My-App.test:8080"));
        assert!(!allowed("127.0.0.1", &["my-app.test"], "other.test"));
        assert!(allowed("0.0.0.0", &[], "192.168.1.20:8080"));
        assert!(allowed("0.0.0.0", &[], "[fe80::1]:8080"));
        assert!(allowed("0.0.0.0", &[], "localhost:8080"));
        assert!(!allowed("0.0.0.0", &[], "attacker.example:8080"));
        assert!(allowed("0.0.0.0", &["box.lan"], "box.lan:8080"));
    }

    #[test]
    fn origins_of_this_machine_are_loopback_others_are_not() {
        for origin in [
            "http://localhost:5173",
            "http://localhost",
            "https://127.0.0.1:8443",
            "http://[::1]:3000",
            "http://app.localhost:3000",
        ] {
            assert!(is_loopback_origin(origin), "{origin}");
        }
        for origin in [
            "null",
            "file://",
            "http://attacker.example",
            "http://localhost.attacker.example",
            "http://127.0.0.1.nip.io",
            "http://192.168.1.2:8080",
            "ws://localhost:1",
            "http://localhost:1/path",
        ] {
            assert!(!is_loopback_origin(origin), "{origin}");
        }
    }

    #[test]
    fn host_names_lose_their_port_brackets_and_case() {
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("::1"), "::1");
        assert_eq!(host_name("Example.COM.:80"), "example.com");
    }
}
