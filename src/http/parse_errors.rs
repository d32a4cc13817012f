//! Requests that hyper cannot parse (a malformed request line, a bad `Content-Length`, an
//! unsupported version, a path or headers too long) are answered by hyper itself, before any
//! handler runs, with an empty body. hyper offers no hook for that response, so the connection's
//! writes pass through [`JsonParseErrors`], which swaps exactly those responses for the shape
//! every other error of ours has (`super::error_with`).
//!
//! They are recognised by what only hyper writes: a 400, 414 or 431 head with
//! `content-length: 0` and no `content-type` (every error of our handlers is JSON). Writes are
//! kept unvectored, so hyper hands each response over as one buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::ErrorCode;

pub struct JsonParseErrors<T> {
    inner: T,
    /// A replacement being written: its bytes, how many went out, and the length of the
    /// buffer it stands for (reported to hyper as written once all of it is out).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<T> JsonParseErrors<T> {
    pub fn new(inner: T) -> Self {
        JsonParseErrors {
            inner,
            replacing: None,
        }
    }
}

/// Our response for one of hyper's automatic ones, or `None` for any other bytes.
fn replacement(buf: &[u8]) -> Option<Vec<u8>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != buf.len() {
        return None; // a body follows: not hyper's automatic response
    }
    let head = std::str::from_utf8(&buf[..end]).ok()?.to_ascii_lowercase();
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let (code, message) = match status_line.strip_prefix("http/1.1 ")?.get(..3)? {
        "400" => (
            ErrorCode::InvalidArgument,
            "malformed HTTP request (request line, header or Content-Length)",
        ),
        "414" => (ErrorCode::UriTooLong, "the request path is too long"),
        "431" => (
            ErrorCode::HeadersTooLarge,
            "the request headers are too large",
        ),
        _ => return None,
    };
    // The same status as hyper's, as the shared table gives it for the code.
    let status = hyper::StatusCode::from_u16(code.http_status()).ok()?;
    let headers: Vec<&str> = lines.collect();
    if !headers.contains(&"content-length: 0")
        || headers.iter().any(|h| h.starts_with("content-type:"))
    {
        return None;
    }
    let body = serde_json::json!({ "error": super::error_object(code, message, None) }).to_string();
    Some(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            status.as_str(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes(),
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonParseErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            match replacement(buf) {
                Some(ours) => this.replacing = Some((ours, 0, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        let (ours, sent, stands_for) = this.replacing.as_mut().expect("set above");
        while *sent < ours.len() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &ours[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        let stands_for = *stands_for;
        this.replacing = None;
        Poll::Ready(Ok(stands_for))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_error_heads_are_replaced() {
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 08:00:00 GMT\r\n\r\n";
        let ours = String::from_utf8(replacement(hyper_400).unwrap()).unwrap();
        assert!(ours.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{ours}");
        assert!(ours.contains(r#""code":"INVALID_REQUEST""#), "{ours}");
        assert!(
            ours.contains("content-type: application/json\r\n"),
            "{ours}"
        );
        let with_type = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(with_type).is_none());
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert!(replacement(with_body).is_none());
        let not_an_error = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(not_an_error).is_none());
        assert!(
            replacement(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n"
            )
            .is_some()
        );
        assert!(replacement(b"partial").is_none());
    }
}
