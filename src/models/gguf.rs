//! A GGUF header reader: the key/value metadata and tensor index at the start of a model file.
//!
//! Headers come from untrusted files and servers, so every length is checked against the bytes
//! that remain before anything is allocated, and against fixed caps: a truncated or hostile
//! header gives an error, never a panic or a huge allocation. Big arrays (the tokenizer's 150k
//! tokens) are skipped and only counted.

use std::collections::BTreeMap;
use std::io::{self, Read};

use serde::Serialize;
use serde_json::{Number, Value};

const MAGIC: &[u8; 4] = b"GGUF";
const MAX_STRING: u64 = 16 << 20;
const MAX_ARRAY: u64 = 1 << 26;
const MAX_KV: u64 = 1 << 20;
const MAX_TENSORS: u64 = 1 << 20;
const MAX_DIMS: u32 = 8;
/// Arrays up to this length are kept as values (per-layer head counts); longer ones are counted.
const KEEP_ARRAY: u64 = 1024;
const DEFAULT_ALIGNMENT: u64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file (magic {0:02x?})")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0}")]
    Version(u32),
    #[error("the header ends early (truncated file?)")]
    Truncated,
    #[error("invalid header: {0}")]
    Invalid(String),
    #[error("cannot read: {0}")]
    Io(#[from] io::Error),
}

impl crate::error::Coded for GgufError {
    fn code(&self) -> crate::error::ErrorCode {
        match self {
            GgufError::Io(_) => crate::error::ErrorCode::FileSystemError,
            _ => crate::error::ErrorCode::InvalidArgument,
        }
    }

    fn suggestion(&self) -> Option<String> {
        Some(match self {
            GgufError::Io(e) => crate::error::io_suggestion(e).into(),
            _ => "Check that the file is a complete GGUF model (llama.cpp's format)".into(),
        })
    }
}

/// The facts sizing and display need, plus every scalar key.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GgufMetadata {
    pub version: u32,
    pub tensor_count: u64,
    pub kv_count: u64,
    pub architecture: Option<String>,
    pub general_name: Option<String>,
    pub file_type: Option<u64>,
    pub block_count: Option<u64>,
    pub context_length: Option<u64>,
    pub embedding_length: Option<u64>,
    pub feed_forward_length: Option<u64>,
    pub attention_head_count: Option<Value>,
    pub attention_head_count_kv: Option<Value>,
    pub attention_key_length: Option<u64>,
    pub attention_value_length: Option<u64>,
    pub expert_count: Option<u64>,
    pub expert_used_count: Option<u64>,
    pub rope_dimension_count: Option<u64>,
    pub vocab_size: Option<u64>,
    /// Bytes from the start of tensor data to the end of the file (when the file size is known).
    pub tensor_data_size: Option<u64>,
    /// Offset of the tensor data from the start of the file.
    pub tensor_data_offset: u64,
    /// Every key with a scalar or short-array value; long arrays appear as their length.
    pub raw: BTreeMap<String, Value>,
}

struct Reader<R> {
    inner: R,
    pos: u64,
    /// Bytes known to exist after the current position (file size minus position), if known.
    limit: Option<u64>,
}

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), GgufError> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => GgufError::Truncated,
            _ => GgufError::Io(e),
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// Refuses a length that cannot fit in what remains of the input, or exceeds `cap`.
    fn check_len(&self, len: u64, unit: u64, cap: u64, what: &str) -> Result<(), GgufError> {
        if len > cap {
            return Err(GgufError::Invalid(format!(
                "{what} of {len} exceeds the limit of {cap}"
            )));
        }
        if let Some(limit) = self.limit
            && len.saturating_mul(unit) > limit.saturating_sub(self.pos)
        {
            return Err(GgufError::Truncated);
        }
        Ok(())
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        self.check_len(len, 1, MAX_STRING, "string length")?;
        let mut buf = vec![0u8; 0];
        // Grow as bytes really arrive, so a lying length on a stream of unknown size costs nothing.
        (&mut self.inner).take(len).read_to_end(&mut buf)?;
        if buf.len() as u64 != len {
            return Err(GgufError::Truncated);
        }
        self.pos += len;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        self.pos += copied;
        if copied != n {
            return Err(GgufError::Truncated);
        }
        Ok(())
    }

    fn value(&mut self, kind: u32) -> Result<Value, GgufError> {
        Ok(match kind {
            0 => Value::from(self.bytes::<1>()?[0]),
            1 => Value::from(self.bytes::<1>()?[0] as i8),
            2 => Value::from(u16::from_le_bytes(self.bytes()?)),
            3 => Value::from(i16::from_le_bytes(self.bytes()?)),
            4 => Value::from(self.u32()?),
            5 => Value::from(i32::from_le_bytes(self.bytes()?)),
            6 => float(f32::from_le_bytes(self.bytes()?) as f64),
            7 => Value::Bool(self.bytes::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            9 => self.array()?,
            10 => Value::from(self.u64()?),
            11 => Value::from(i64::from_le_bytes(self.bytes()?)),
            12 => float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(GgufError::Invalid(format!("unknown value type {other}"))),
        })
    }

    fn array(&mut self) -> Result<Value, GgufError> {
        let kind = self.u32()?;
        let len = self.u64()?;
        let item_size = fixed_size(kind);
        self.check_len(len, item_size.unwrap_or(8), MAX_ARRAY, "array length")?;
        if kind == 9 {
            return Err(GgufError::Invalid("nested arrays are not supported".into()));
        }
        if len <= KEEP_ARRAY {
            let items = (0..len)
                .map(|_| self.value(kind))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Value::Array(items));
        }
        match item_size {
            Some(size) => self.skip(len * size)?,
            None => {
                for _ in 0..len {
                    let n = self.u64()?;
                    self.check_len(n, 1, MAX_STRING, "string length")?;
                    self.skip(n)?;
                }
            }
        }
        Ok(serde_json::json!({ "type": "array", "length": len }))
    }
}

fn float(v: f64) -> Value {
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

fn fixed_size(kind: u32) -> Option<u64> {
    match kind {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// Parses the header from `input`. `file_size`, when known, bounds every length check and gives
/// the tensor data size.
pub fn parse(input: impl Read, file_size: Option<u64>) -> Result<GgufMetadata, GgufError> {
    let mut r = Reader {
        inner: input,
        pos: 0,
        limit: file_size,
    };
    let magic = r.bytes::<4>()?;
    if &magic != MAGIC {
        return Err(GgufError::BadMagic(magic));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version(version));
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    r.check_len(tensor_count, 8 + 4 + 8 + 4 + 8, MAX_TENSORS, "tensor count")?;
    r.check_len(kv_count, 8 + 4, MAX_KV, "key/value count")?;

    let mut raw = BTreeMap::new();
    for _ in 0..kv_count {
        let key = r.string()?;
        let kind = r.u32()?;
        let value = r.value(kind)?;
        raw.insert(key, value);
    }
    for _ in 0..tensor_count {
        let name_len = r.u64()?;
        r.check_len(name_len, 1, 1 << 16, "tensor name length")?;
        r.skip(name_len)?;
        let dims = r.u32()?;
        if dims > MAX_DIMS {
            return Err(GgufError::Invalid(format!("tensor with {dims} dimensions")));
        }
        r.skip(dims as u64 * 8 + 4 + 8)?;
    }
    let alignment = raw
        .get("general.alignment")
        .and_then(Value::as_u64)
        .filter(|a| a.is_power_of_two())
        .unwrap_or(DEFAULT_ALIGNMENT);
    let tensor_data_offset = r.pos.div_ceil(alignment) * alignment;
    Ok(facts(
        version,
        tensor_count,
        kv_count,
        raw,
        tensor_data_offset,
        file_size,
    ))
}

fn facts(
    version: u32,
    tensor_count: u64,
    kv_count: u64,
    raw: BTreeMap<String, Value>,
    tensor_data_offset: u64,
    file_size: Option<u64>,
) -> GgufMetadata {
    let architecture = raw
        .get("general.architecture")
        .and_then(Value::as_str)
        .map(str::to_string);
    let arch = architecture.clone().unwrap_or_default();
    let get = |key: &str| raw.get(&format!("{arch}.{key}")).cloned();
    let num = |key: &str| get(key).and_then(|v| v.as_u64());
    let vocab_size = num("vocab_size").or_else(|| {
        raw.get("tokenizer.ggml.tokens").and_then(|v| match v {
            Value::Array(items) => Some(items.len() as u64),
            other => other.get("length").and_then(Value::as_u64),
        })
    });
    GgufMetadata {
        version,
        tensor_count,
        kv_count,
        general_name: raw
            .get("general.name")
            .and_then(Value::as_str)
            .map(str::to_string),
        file_type: raw.get("general.file_type").and_then(Value::as_u64),
        block_count: num("block_count"),
        context_length: num("context_length"),
        embedding_length: num("embedding_length"),
        feed_forward_length: num("feed_forward_length"),
        attention_head_count: get("attention.head_count"),
        attention_head_count_kv: get("attention.head_count_kv"),
        attention_key_length: num("attention.key_length"),
        attention_value_length: num("attention.value_length"),
        expert_count: num("expert_count"),
        expert_used_count: num("expert_used_count"),
        rope_dimension_count: num("rope.dimension_count"),
        vocab_size,
        tensor_data_size: file_size.map(|s| s.saturating_sub(tensor_data_offset)),
        tensor_data_offset,
        architecture,
        raw,
    }
}

/// Reads the header of a local file (on the blocking pool).
pub async fn read_file(path: &std::path::Path) -> Result<GgufMetadata, GgufError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let size = file.metadata()?.len();
        parse(io::BufReader::with_capacity(1 << 16, file), Some(size))
    })
    .await
    .map_err(|e| GgufError::Io(io::Error::other(e)))?
}

/// Reads the header of a remote file with `Range` requests: first 1 MiB, growing ×4 until the
/// header fits (64 MiB at most), so a multi-gigabyte model costs a few requests of its start.
pub async fn read_url(url: &str) -> Result<GgufMetadata, GgufError> {
    const FIRST: u64 = 1 << 20;
    const MAX: u64 = 64 << 20;
    let client = crate::download::http_client();
    let mut want = FIRST;
    loop {
        let response = client
            .get(url)
            .header(reqwest::header::RANGE, format!("bytes=0-{}", want - 1))
            .send()
            .await
            .map_err(|e| GgufError::Io(io::Error::other(e)))?;
        let status = response.status().as_u16();
        if status != 200 && status != 206 {
            return Err(GgufError::Io(io::Error::other(format!(
                "{url} answered HTTP {status}"
            ))));
        }
        // 206 says the whole size after the slash; 200 sends the whole file.
        let total = response
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('/').next())
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| (status == 200).then(|| response.content_length()).flatten());
        let body = response
            .bytes()
            .await
            .map_err(|e| GgufError::Io(io::Error::other(e)))?;
        let complete = total.is_some_and(|t| body.len() as u64 >= t);
        match parse(&body[..], total) {
            Err(GgufError::Truncated) if !complete && want < MAX => want *= 4,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests;
