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
use ts_rs::TS;

const MAGIC: &[u8; 4] = b"GGUF";
const MAX_STRING: u64 = 16 << 20;
const MAX_KEY: u64 = 1 << 16;
const MAX_ARRAY: u64 = 1 << 26;
/// Real models have a few dozen keys; a million tiny ones would cost far more memory than bytes.
const MAX_KV: u64 = 1 << 16;
const MAX_TENSORS: u64 = 1 << 20;
const MAX_DIMS: u32 = 8;
/// More repeating blocks than any model has; a larger number is not a block index.
const MAX_BLOCKS: usize = 1 << 16;
/// Arrays up to this length are kept as values (per-layer head counts); longer ones are summarised.
const KEEP_ARRAY: u64 = 1024;
const DEFAULT_ALIGNMENT: u64 = 32;

/// How much of a hostile header may be materialised: array items and string bytes in all.
/// Beyond the default budget, values are summarised by type and length; with `full_arrays`, a
/// header that needs more than the larger budget is an error.
const KEPT_ITEMS: u64 = 1 << 16;
const KEPT_STRING_BYTES: u64 = 4 << 20;
const FULL_KEPT_ITEMS: u64 = 1 << 21;
const FULL_KEPT_STRING_BYTES: u64 = 64 << 20;

/// What to materialise of a header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// Keep arrays of any length (a tokenizer's tokens) instead of summarising long ones.
    pub full_arrays: bool,
}

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
    #[error("the file is cut short: {size} bytes, but its tensors need {required}")]
    Short { size: u64, required: u64 },
    #[error("{0} is not a regular file")]
    NotAFile(String),
    #[error("cannot fetch the header: {0}")]
    Network(String),
    #[error("cannot read: {0}")]
    Io(#[from] io::Error),
}

impl crate::error::Coded for GgufError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            GgufError::Io(_) => ErrorCode::FileSystemError,
            GgufError::Network(_) => ErrorCode::DownloadFailed,
            _ => ErrorCode::InvalidArgument,
        }
    }

    fn suggestion(&self) -> Option<String> {
        Some(match self {
            GgufError::Io(e) => crate::error::io_suggestion(e).into(),
            GgufError::NotAFile(_) => "Give the path of a .gguf model file".into(),
            GgufError::Network(_) => {
                "Check the URL and the network connection, then try again".into()
            }
            GgufError::Short { .. } => "Download the file again: it is incomplete".into(),
            GgufError::Invalid(m) if m.contains("fullArrays") => {
                "Read the header without fullArrays: long arrays are then summarised".into()
            }
            _ => "Check that the file is a complete GGUF model (llama.cpp's format)".into(),
        })
    }
}

/// Options of {@link ModelManager.readGGUFMetadata}.
#[derive(Debug, Clone, Default, serde::Deserialize, TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[ts(rename = "ReadGGUFOptions")]
pub struct ReadOptions {
    /// Keep arrays of any length (a tokenizer's tokens) instead of summarising long ones; up to
    /// 2 Mi items and 64 MiB of strings.
    #[ts(optional)]
    pub full_arrays: Option<bool>,
    /// URL only: milliseconds any one network read may wait (default 30000); the whole read
    /// gets ten times that.
    #[ts(optional)]
    pub timeout: Option<f64>,
}

/// The facts of a GGUF header that sizing and display need, keys as in GGUF
/// (`llama.block_count` → `block_count`), plus every key in `raw`. A fact the header lacks is
/// left out, not `null`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, TS)]
#[ts(rename = "GGUFMetadata")]
pub struct GgufMetadata {
    pub version: u32,
    pub tensor_count: u64,
    pub kv_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub architecture: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub general_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub file_type: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub block_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub context_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub embedding_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub feed_forward_length: Option<u64>,
    /// One count, or one a layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(type = "number | number[]", optional)]
    pub attention_head_count: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(type = "number | number[]", optional)]
    pub attention_head_count_kv: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub attention_key_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub attention_value_length: Option<u64>,
    /// Tokens a sliding-window attention layer attends to.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub attention_sliding_window: Option<u64>,
    /// Which layers attend to a sliding window: a period (every n-th layer attends to all), or
    /// one flag a layer (true: sliding). Without it, the architecture's own period.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(type = "number | boolean[]", optional)]
    pub attention_sliding_window_pattern: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub expert_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub expert_used_count: Option<u64>,
    /// Each expert's feed-forward width, where it differs from `feed_forward_length`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub expert_feed_forward_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub rope_dimension_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub vocab_size: Option<u64>,
    /// Bytes from the start of tensor data to the end of the file (when the file size is known).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub tensor_data_size: Option<u64>,
    /// Offset of the tensor data from the start of the file.
    pub tensor_data_offset: u64,
    /// The smallest file that holds every tensor the header lists: data offset plus the end of
    /// the last tensor (a lower bound when a tensor has a type this reader does not know).
    pub required_file_size: u64,
    /// Every key of the header. Arrays of up to 1,024 items are kept while 65,536 items in all
    /// last, strings while 4 MiB in all last; beyond that a value is summarised as
    /// `{ type: 'array', itemType, length }` or `{ type: 'string', length }`. Keys are plain own
    /// properties (a key named `__proto__` cannot change the object).
    #[ts(type = "Record<string, unknown>")]
    pub raw: BTreeMap<String, Value>,
    /// Tensor bytes by the layer llama.cpp places them with (sizing a split model needs it).
    #[serde(skip)]
    #[ts(skip)]
    pub layers: LayerBytes,
}

/// Tensor bytes grouped as llama.cpp places them on devices: the input layer (token
/// embeddings, always kept on the CPU), each repeating block `blk.N`, and the output layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerBytes {
    pub input: u64,
    /// Indexed by block number.
    pub blocks: Vec<u64>,
    /// `output.*` and `output_norm.*`. A model without `output.weight` ties it to the token
    /// embeddings, which llama.cpp then loads a second time with the output layer.
    pub output: u64,
    /// Tensors of none of these groups (a vision tower, say); llama.cpp keeps them on the CPU.
    pub other: u64,
}

impl LayerBytes {
    /// Every tensor's bytes, the tied output counted once.
    pub fn total(&self) -> u64 {
        self.input + self.blocks.iter().sum::<u64>() + self.output + self.other
    }

    fn add(&mut self, name: &str, bytes: u64) {
        if let Some(rest) = name.strip_prefix("blk.") {
            let block = rest.split('.').next().and_then(|n| n.parse::<usize>().ok());
            if let Some(block) = block.filter(|&b| b < MAX_BLOCKS) {
                if self.blocks.len() <= block {
                    self.blocks.resize(block + 1, 0);
                }
                self.blocks[block] += bytes;
                return;
            }
        }
        if name.starts_with("token_embd") {
            self.input += bytes;
        } else if name.starts_with("output.") || name.starts_with("output_norm.") {
            self.output += bytes;
        } else {
            self.other += bytes;
        }
    }
}

struct Reader<R> {
    inner: R,
    pos: u64,
    /// Bytes known to exist after the current position (file size minus position), if known.
    limit: Option<u64>,
    full_arrays: bool,
    /// What may still be materialised.
    items_left: u64,
    string_bytes_left: u64,
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

    /// A string of `len` bytes (already checked).
    fn read_string(&mut self, len: u64) -> Result<String, GgufError> {
        let mut buf = vec![0u8; 0];
        // Grow as bytes really arrive, so a lying length on a stream of unknown size costs nothing.
        (&mut self.inner).take(len).read_to_end(&mut buf)?;
        if buf.len() as u64 != len {
            return Err(GgufError::Truncated);
        }
        self.pos += len;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    fn key(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        self.check_len(len, 1, MAX_KEY, "key length")?;
        self.read_string(len)
    }

    /// A string value: kept while the budget lasts, otherwise summarised.
    fn string(&mut self) -> Result<Value, GgufError> {
        let len = self.u64()?;
        self.check_len(len, 1, MAX_STRING, "string length")?;
        if len > self.string_bytes_left {
            if self.full_arrays {
                return Err(over_budget());
            }
            self.skip(len)?;
            return Ok(serde_json::json!({ "type": "string", "length": len }));
        }
        self.string_bytes_left -= len;
        Ok(Value::String(self.read_string(len)?))
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
            8 => self.string()?,
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
        let Some(item_type) = value_type_name(kind) else {
            return Err(GgufError::Invalid(format!("unknown value type {kind}")));
        };
        let wanted = self.full_arrays || len <= KEEP_ARRAY;
        if wanted && len <= self.items_left {
            self.items_left -= len;
            let items = (0..len)
                .map(|_| self.value(kind))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Value::Array(items));
        }
        if self.full_arrays {
            return Err(over_budget());
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
        Ok(serde_json::json!({ "type": "array", "itemType": item_type, "length": len }))
    }

    /// One entry of the tensor index: its name, where its data ends relative to the data start
    /// and its bytes (0, so the end is its offset, when its type is unknown here).
    fn tensor(&mut self) -> Result<(String, u64, u64), GgufError> {
        let name_len = self.u64()?;
        self.check_len(name_len, 1, 1 << 16, "tensor name length")?;
        let name = self.read_string(name_len)?;
        let dims = self.u32()?;
        if dims > MAX_DIMS {
            return Err(GgufError::Invalid(format!("tensor with {dims} dimensions")));
        }
        let mut elements = 1u64;
        for _ in 0..dims {
            elements = elements
                .checked_mul(self.u64()?)
                .ok_or_else(|| GgufError::Invalid("tensor size overflows".into()))?;
        }
        let kind = self.u32()?;
        let offset = self.u64()?;
        let bytes = match tensor_type_size(kind) {
            Some((block, size)) => (elements / block)
                .checked_mul(size)
                .ok_or_else(|| GgufError::Invalid("tensor size overflows".into()))?,
            None => 0,
        };
        let end = offset
            .checked_add(bytes)
            .ok_or_else(|| GgufError::Invalid("tensor offset overflows".into()))?;
        Ok((name, end, bytes))
    }
}

fn over_budget() -> GgufError {
    GgufError::Invalid(format!(
        "the metadata needs more than {FULL_KEPT_ITEMS} array items or {} MiB of strings with fullArrays",
        FULL_KEPT_STRING_BYTES >> 20
    ))
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

fn value_type_name(kind: u32) -> Option<&'static str> {
    const NAMES: [&str; 13] = [
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string",
        "array", "uint64", "int64", "float64",
    ];
    NAMES.get(kind as usize).copied()
}

/// (elements per block, bytes per block) of each ggml tensor type, as `ggml.c`'s type traits
/// have them in the pinned llama.cpp (checked against its `ggml-common.h` with `sizeof`); ids of
/// removed types are absent.
fn tensor_type_size(kind: u32) -> Option<(u64, u64)> {
    Some(match kind {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        40 => (64, 36),   // NVFP4
        41 => (128, 18),  // Q1_0
        42 => (64, 18),   // Q2_0
        _ => return None,
    })
}

/// Parses the header from `input`. `file_size`, when known, bounds every length check and gives
/// the tensor data size.
pub fn parse(input: impl Read, file_size: Option<u64>) -> Result<GgufMetadata, GgufError> {
    parse_with(input, file_size, ParseOptions::default())
}

pub fn parse_with(
    input: impl Read,
    file_size: Option<u64>,
    options: ParseOptions,
) -> Result<GgufMetadata, GgufError> {
    let (items_left, string_bytes_left) = if options.full_arrays {
        (FULL_KEPT_ITEMS, FULL_KEPT_STRING_BYTES)
    } else {
        (KEPT_ITEMS, KEPT_STRING_BYTES)
    };
    let mut r = Reader {
        inner: input,
        pos: 0,
        limit: file_size,
        full_arrays: options.full_arrays,
        items_left,
        string_bytes_left,
    };
    let magic = r.bytes::<4>()?;
    if &magic != MAGIC {
        return Err(GgufError::BadMagic(magic));
    }
    let version = r.u32()?;
    check_version(version)?;
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    r.check_len(tensor_count, 8 + 4 + 8 + 4 + 8, MAX_TENSORS, "tensor count")?;
    r.check_len(kv_count, 8 + 4, MAX_KV, "key/value count")?;

    let mut raw = BTreeMap::new();
    for _ in 0..kv_count {
        let key = r.key()?;
        let kind = r.u32()?;
        let value = r.value(kind)?;
        raw.insert(key, value);
    }
    let mut data_end = 0u64;
    let mut layers = LayerBytes::default();
    let mut output_weight = false;
    for _ in 0..tensor_count {
        let (name, end, bytes) = r.tensor()?;
        data_end = data_end.max(end);
        output_weight |= name == "output.weight";
        layers.add(&name, bytes);
    }
    if !output_weight {
        layers.output += layers.input;
    }
    let alignment = raw
        .get("general.alignment")
        .and_then(Value::as_u64)
        .filter(|a| a.is_power_of_two())
        .unwrap_or(DEFAULT_ALIGNMENT);
    let tensor_data_offset = r.pos.div_ceil(alignment) * alignment;
    let required_file_size = tensor_data_offset
        .checked_add(data_end)
        .ok_or_else(|| GgufError::Invalid("tensor offset overflows".into()))?;
    Ok(facts(
        Header {
            version,
            tensor_count,
            kv_count,
            tensor_data_offset,
            required_file_size,
        },
        raw,
        layers,
        file_size,
    ))
}

fn check_version(version: u32) -> Result<(), GgufError> {
    if (2..=3).contains(&version) {
        Ok(())
    } else {
        Err(GgufError::Version(version))
    }
}

/// Checks the first bytes of a file that must be GGUF (magic and version), as soon as they
/// arrive; fewer than 8 bytes pass (there is nothing to judge yet).
pub fn check_start(head: &[u8]) -> Result<(), GgufError> {
    if head.len() < 8 {
        return Ok(());
    }
    let magic: [u8; 4] = head[..4].try_into().expect("4 bytes");
    if &magic != MAGIC {
        return Err(GgufError::BadMagic(magic));
    }
    check_version(u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")))
}

/// Refuses a file shorter than its header says it must be.
pub fn check_complete(meta: &GgufMetadata, file_size: u64) -> Result<(), GgufError> {
    if file_size < meta.required_file_size {
        return Err(GgufError::Short {
            size: file_size,
            required: meta.required_file_size,
        });
    }
    Ok(())
}

struct Header {
    version: u32,
    tensor_count: u64,
    kv_count: u64,
    tensor_data_offset: u64,
    required_file_size: u64,
}

fn facts(
    header: Header,
    raw: BTreeMap<String, Value>,
    layers: LayerBytes,
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
        version: header.version,
        tensor_count: header.tensor_count,
        kv_count: header.kv_count,
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
        attention_sliding_window: num("attention.sliding_window"),
        attention_sliding_window_pattern: get("attention.sliding_window_pattern"),
        expert_count: num("expert_count"),
        expert_used_count: num("expert_used_count"),
        expert_feed_forward_length: num("expert_feed_forward_length"),
        rope_dimension_count: num("rope.dimension_count"),
        vocab_size,
        tensor_data_size: file_size.map(|s| s.saturating_sub(header.tensor_data_offset)),
        tensor_data_offset: header.tensor_data_offset,
        required_file_size: header.required_file_size,
        architecture,
        raw,
        layers,
    }
}

/// Opens a model file for reading, refusing anything but a regular file: a FIFO or a device
/// would block the reader or never end.
pub fn open_regular(path: &std::path::Path) -> Result<(std::fs::File, u64), GgufError> {
    let not_a_file = || GgufError::NotAFile(path.display().to_string());
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_a_file());
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // Non-blocking, so that a file swapped for a FIFO after the check cannot hang the open.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_a_file());
    }
    Ok((file, meta.len()))
}

/// Reads the header of a local file (on the blocking pool).
pub async fn read_file(
    path: &std::path::Path,
    options: ParseOptions,
) -> Result<GgufMetadata, GgufError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let (file, size) = open_regular(&path)?;
        parse_with(
            io::BufReader::with_capacity(1 << 16, file),
            Some(size),
            options,
        )
    })
    .await
    .map_err(|e| GgufError::Io(io::Error::other(e)))?
}

/// Reads the header of a remote file with `Range` requests: first 1 MiB, growing ×4 until the
/// header fits (64 MiB at most), so a multi-gigabyte model costs a few requests of its start.
/// A server that ignores `Range` is read only as far as the header needs; every wait for bytes
/// is bounded by `timeout`, and the whole read by ten times that.
pub async fn read_url(
    url: &str,
    options: ParseOptions,
    timeout: std::time::Duration,
) -> Result<GgufMetadata, GgufError> {
    let deadline = tokio::time::Instant::now() + timeout * 10;
    tokio::time::timeout_at(deadline, read_url_inner(url, options, timeout))
        .await
        .map_err(|_| GgufError::Network(format!("{url} took longer than {:?}", timeout * 10)))?
}

async fn read_url_inner(
    url: &str,
    options: ParseOptions,
    timeout: std::time::Duration,
) -> Result<GgufMetadata, GgufError> {
    const FIRST: u64 = 1 << 20;
    const MAX: u64 = 64 << 20;
    let net = |e: String| GgufError::Network(format!("{url}: {e}"));
    let stalled = || net(format!("no answer within {timeout:?}"));
    use crate::download::{content_range_start, content_range_total, http_client};
    let client = http_client();
    let mut want = FIRST;
    let mut body: Vec<u8> = Vec::new();
    let mut total: Option<u64> = None;
    // A whole-file response (the server ignored Range) whose body has more bytes for us.
    let mut open: Option<reqwest::Response> = None;
    loop {
        let (mut response, whole_file) = match open.take() {
            Some(response) => (response, true),
            None => {
                let request = client.get(url).header(
                    reqwest::header::RANGE,
                    format!("bytes={}-{}", body.len(), want - 1),
                );
                let response = tokio::time::timeout(timeout, request.send())
                    .await
                    .map_err(|_| stalled())?
                    .map_err(|e| net(e.to_string()))?;
                let status = response.status().as_u16();
                match status {
                    206 if content_range_start(&response) == Some(body.len() as u64) => {}
                    // The file from its start again: the server ignored Range, or answered
                    // another range than the one asked for.
                    200 => body.clear(),
                    206 if content_range_start(&response) == Some(0) => body.clear(),
                    _ => return Err(net(format!("HTTP {status}"))),
                }
                // 206 says the whole size after the slash; 200 sends the whole file.
                total = content_range_total(&response)
                    .or_else(|| (status == 200).then(|| response.content_length()).flatten())
                    .or(total);
                (response, status == 200)
            }
        };
        let mut ended = false;
        while (body.len() as u64) < want {
            match tokio::time::timeout(timeout, response.chunk()).await {
                Err(_) => return Err(stalled()),
                Ok(Err(e)) => return Err(net(e.to_string())),
                Ok(Ok(None)) => {
                    ended = true;
                    break;
                }
                // Kept whole: the rest of a whole-file body is read on from here, if needed.
                Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            }
        }
        let complete = total.is_some_and(|t| body.len() as u64 >= t) || (ended && total.is_none());
        match parse_with(&body[..], total, options) {
            Err(GgufError::Truncated) if !complete && want < MAX => {
                want *= 4;
                if whole_file && !ended {
                    open = Some(response);
                }
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests;
