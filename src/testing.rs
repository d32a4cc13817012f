//! Test helpers: a local HTTP/1.1 file server on 127.0.0.1 that can honour or ignore `Range`,
//! drop the connection mid-body, and answer with a chosen status; and the real backends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The JSON of `npm run backends` (real executables and test models), when `npm test` provides
/// it through `GENAI_ELECTRON_TEST_BACKENDS`. Without it the caller skips, saying `what` is
/// missing; under `npm test` (which also sets `GENAI_ELECTRON_REQUIRE_CMAKE`) it cannot skip.
pub fn real_backends(what: &str) -> Option<serde_json::Value> {
    let Some(file) = std::env::var_os("GENAI_ELECTRON_TEST_BACKENDS") else {
        assert!(
            std::env::var_os("GENAI_ELECTRON_REQUIRE_CMAKE").is_none(),
            "GENAI_ELECTRON_TEST_BACKENDS is not set"
        );
        eprintln!("SKIPPED: real {what} not provided (run npm test)");
        return None;
    };
    Some(serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap())
}

#[derive(Debug, Default, Clone)]
pub struct Behaviour {
    /// Close the connection after this many body bytes, for the next `drops` requests.
    pub drop_after: Option<usize>,
    pub drops: u32,
    /// Answer 200 with the whole body even when a `Range` is asked for.
    pub ignore_range: bool,
    /// Answer every request with this status and an empty body.
    pub status: Option<u16>,
    /// Send bodies in 16 KiB pieces, 20 ms apart.
    pub slow: bool,
    /// Send this many body bytes, then keep the connection open without sending more.
    pub stall_after: Option<usize>,
    /// Leave out Content-Length: the body ends when the connection closes.
    pub no_length: bool,
    /// Answer every request with a redirect to itself.
    pub redirect_loop: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub path: String,
    pub range_start: Option<u64>,
}

#[derive(Clone)]
pub struct FileServer {
    pub addr: SocketAddr,
    files: Arc<Mutex<HashMap<String, Arc<Vec<u8>>>>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    log: Arc<Mutex<Vec<Logged>>>,
}

impl FileServer {
    pub async fn start() -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = FileServer {
            addr: listener.local_addr().unwrap(),
            files: Default::default(),
            behaviour: Default::default(),
            log: Default::default(),
        };
        let handler = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                tokio::spawn(async move { handler.serve(stream).await });
            }
        });
        server
    }

    pub fn add(&self, path: &str, body: Vec<u8>) -> String {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_string(), Arc::new(body));
        self.url(path)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    async fn serve(&self, mut stream: TcpStream) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let range = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("range: bytes=")
                .map(str::to_string)
        });
        let range_start = range
            .as_deref()
            .and_then(|r| r.split('-').next()?.trim().parse::<u64>().ok());
        let range_end = range
            .as_deref()
            .and_then(|r| r.split('-').nth(1)?.trim().parse::<u64>().ok());
        self.log.lock().unwrap().push(Logged {
            path: path.clone(),
            range_start,
        });

        let behaviour = {
            let mut b = self.behaviour.lock().unwrap();
            let current = b.clone();
            b.drops = b.drops.saturating_sub(1);
            current
        };
        let body = self
            .files
            .lock()
            .unwrap()
            .get(path.split('?').next().unwrap_or_default())
            .cloned();
        if behaviour.redirect_loop {
            let _ = stream
                .write_all(format!("HTTP/1.1 302 Found\r\nlocation: {path}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
                .await;
            return;
        }
        let (status, body) = match (behaviour.status, body) {
            (Some(status), _) => (status, None),
            (None, None) => (404, None),
            (None, Some(body)) => (200, Some(body)),
        };
        let Some(body) = body else {
            let _ = stream
                .write_all(
                    format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await;
            return;
        };
        let len = body.len() as u64;
        let (status_line, start, extra) = match range_start {
            Some(start) if !behaviour.ignore_range && start >= len => {
                let _ = stream
                    .write_all(format!("HTTP/1.1 416 Range Not Satisfiable\r\ncontent-range: bytes */{len}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
                    .await;
                return;
            }
            Some(start) if !behaviour.ignore_range => {
                let end = range_end.map_or(len - 1, |e| e.min(len - 1));
                (
                    "206 Partial Content",
                    start,
                    format!("content-range: bytes {start}-{end}/{len}\r\n"),
                )
            }
            _ => ("200 OK", 0, String::new()),
        };
        let end = match (range_start, range_end) {
            (Some(_), Some(e)) if !behaviour.ignore_range => (e + 1).min(len),
            _ => len,
        };
        let slice = &body[start as usize..end as usize];
        let length = if behaviour.no_length {
            String::new()
        } else {
            format!("content-length: {}\r\n", slice.len())
        };
        let header = format!(
            "HTTP/1.1 {status_line}\r\n{length}accept-ranges: bytes\r\n{extra}connection: close\r\n\r\n"
        );
        if stream.write_all(header.as_bytes()).await.is_err() {
            return;
        }
        if let Some(n) = behaviour.stall_after {
            let _ = stream.write_all(&slice[..n.min(slice.len())]).await;
            // Hold the connection until the client gives up on it.
            let mut sink = [0u8; 64];
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(60), stream.read(&mut sink))
                    .await;
            return;
        }
        let send = match behaviour.drop_after {
            Some(n) if behaviour.drops > 0 => n.min(slice.len()),
            _ => slice.len(),
        };
        if behaviour.slow {
            for piece in slice[..send].chunks(16 * 1024) {
                if stream.write_all(piece).await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        } else {
            let _ = stream.write_all(&slice[..send]).await;
        }
        let _ = stream.shutdown().await;
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A minimal GGUF v3 file: a few llama keys, and one I8 tensor of `data` bytes.
pub fn tiny_gguf(block_count: u32, data: usize) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(1u64.to_le_bytes());
    out.extend(2u64.to_le_bytes());
    for (key, kind, value) in [
        ("general.architecture", 8u32, b"llama".to_vec()),
        (
            "llama.block_count",
            4u32,
            block_count.to_le_bytes().to_vec(),
        ),
    ] {
        out.extend((key.len() as u64).to_le_bytes());
        out.extend(key.as_bytes());
        out.extend(kind.to_le_bytes());
        if kind == 8 {
            out.extend((value.len() as u64).to_le_bytes());
        }
        out.extend(value);
    }
    out.extend(4u64.to_le_bytes());
    out.extend(b"data");
    out.extend(1u32.to_le_bytes());
    out.extend((data as u64).to_le_bytes());
    out.extend(24u32.to_le_bytes()); // I8: one byte per element
    out.extend(0u64.to_le_bytes());
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    out.extend(bytes(data, block_count as u64));
    out
}

/// The `(old, new)` pairs of the transitions among `events`; `pick` finds a transition in one.
pub fn transitions<E>(
    events: &std::sync::Mutex<Vec<E>>,
    pick: impl Fn(&E) -> Option<&crate::process::Transition>,
) -> Vec<(crate::process::ServerState, crate::process::ServerState)> {
    crate::sync::lock(events)
        .iter()
        .filter_map(|e| pick(e).map(|t| (t.old, t.new)))
        .collect()
}

/// Every transition of start → crash → automatic restart → stop, in order.
pub const CRASH_RESTART_STOP: [(crate::process::ServerState, crate::process::ServerState); 7] = {
    use crate::process::ServerState::*;
    [
        (Stopped, Starting),
        (Starting, Running),
        (Running, Crashed),
        (Crashed, Restarting),
        (Restarting, Running),
        (Running, Stopping),
        (Stopping, Stopped),
    ]
};

/// A worker that answers ggml's RPC protocol as rpc-server `version`.0.0 with `devices`
/// (free, total bytes), one client after another.
pub async fn fake_rpc_worker(version: u8, devices: Vec<(u64, u64)>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            loop {
                let mut head = [0u8; 9];
                if s.read_exact(&mut head).await.is_err() {
                    break;
                }
                let size = u64::from_le_bytes(head[1..].try_into().unwrap()) as usize;
                let mut data = vec![0u8; size];
                s.read_exact(&mut data).await.unwrap();
                let answer: Vec<u8> = match head[0] {
                    14 => [vec![version, 0, 0, 0], vec![0u8; 24]].concat(),
                    15 => (devices.len() as u32).to_le_bytes().to_vec(),
                    11 => {
                        let device = u32::from_le_bytes(data[..4].try_into().unwrap());
                        let (free, total) = devices[device as usize];
                        [free.to_le_bytes(), total.to_le_bytes()].concat()
                    }
                    _ => break,
                };
                s.write_all(&(answer.len() as u64).to_le_bytes())
                    .await
                    .unwrap();
                s.write_all(&answer).await.unwrap();
            }
        }
    });
    address
}

/// An in-process image request, checked as the binding checks one.
pub fn image(body: &serde_json::Value) -> crate::diffusion::request::ImageRequest {
    crate::diffusion::request::parse(body, false).expect("a valid image request")
}
