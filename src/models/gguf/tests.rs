use super::*;

/// Writes a GGUF v3 header: key/values, then tensors (name, dims), then aligned zero data.
struct Builder {
    kvs: Vec<u8>,
    kv_count: u64,
    tensors: Vec<u8>,
    tensor_count: u64,
}

impl Builder {
    fn new() -> Self {
        Builder {
            kvs: Vec::new(),
            kv_count: 0,
            tensors: Vec::new(),
            tensor_count: 0,
        }
    }

    fn string(buf: &mut Vec<u8>, s: &str) {
        buf.extend((s.len() as u64).to_le_bytes());
        buf.extend(s.as_bytes());
    }

    fn key(&mut self, key: &str, kind: u32) -> &mut Vec<u8> {
        self.kv_count += 1;
        Self::string(&mut self.kvs, key);
        self.kvs.extend(kind.to_le_bytes());
        &mut self.kvs
    }

    fn str(mut self, key: &str, value: &str) -> Self {
        let buf = self.key(key, 8);
        Self::string(buf, value);
        self
    }

    fn u32(mut self, key: &str, value: u32) -> Self {
        self.key(key, 4).extend(value.to_le_bytes());
        self
    }

    fn f32(mut self, key: &str, value: f32) -> Self {
        self.key(key, 6).extend(value.to_le_bytes());
        self
    }

    fn u32_array(mut self, key: &str, values: &[u32]) -> Self {
        let buf = self.key(key, 9);
        buf.extend(4u32.to_le_bytes());
        buf.extend((values.len() as u64).to_le_bytes());
        for v in values {
            buf.extend(v.to_le_bytes());
        }
        self
    }

    fn tokens(mut self, key: &str, count: usize) -> Self {
        let buf = self.key(key, 9);
        buf.extend(8u32.to_le_bytes());
        buf.extend((count as u64).to_le_bytes());
        for i in 0..count {
            Self::string(buf, &format!("tok{i}"));
        }
        self
    }

    fn tensor(mut self, name: &str, dims: &[u64]) -> Self {
        self.tensor_count += 1;
        Self::string(&mut self.tensors, name);
        self.tensors.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.tensors.extend(d.to_le_bytes());
        }
        self.tensors.extend(0u32.to_le_bytes()); // F32
        self.tensors.extend(0u64.to_le_bytes()); // offset
        self
    }

    fn build(self, data: usize) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(self.tensor_count.to_le_bytes());
        out.extend(self.kv_count.to_le_bytes());
        out.extend(self.kvs);
        out.extend(self.tensors);
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        out.extend(std::iter::repeat_n(0u8, data));
        out
    }
}

fn llama_like() -> Vec<u8> {
    Builder::new()
        .str("general.architecture", "llama")
        .str("general.name", "Tiny")
        .u32("general.file_type", 3)
        .u32("llama.block_count", 30)
        .u32("llama.context_length", 8192)
        .u32("llama.embedding_length", 576)
        .u32("llama.feed_forward_length", 1536)
        .u32("llama.attention.head_count", 9)
        .u32_array("llama.attention.head_count_kv", &[3, 3])
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .tokens("tokenizer.ggml.tokens", 2000)
        .tensor("token_embd.weight", &[576, 2000])
        .tensor("output_norm.weight", &[576])
        .build(4096)
}

#[test]
fn reads_the_facts_sizing_needs() {
    let bytes = llama_like();
    let meta = parse(&bytes[..], Some(bytes.len() as u64)).unwrap();
    assert_eq!(meta.version, 3);
    assert_eq!((meta.tensor_count, meta.kv_count), (2, 11));
    assert_eq!(meta.architecture.as_deref(), Some("llama"));
    assert_eq!(meta.general_name.as_deref(), Some("Tiny"));
    assert_eq!(meta.file_type, Some(3));
    assert_eq!(meta.block_count, Some(30));
    assert_eq!(meta.context_length, Some(8192));
    assert_eq!(meta.embedding_length, Some(576));
    assert_eq!(meta.attention_head_count, Some(Value::from(9)));
    assert_eq!(
        meta.attention_head_count_kv,
        Some(serde_json::json!([3, 3]))
    );
    assert_eq!(meta.vocab_size, Some(2000));
    assert_eq!(meta.tensor_data_offset % 32, 0);
    assert_eq!(meta.tensor_data_size, Some(4096));
    assert_eq!(meta.raw["tokenizer.ggml.tokens"]["length"], 2000);
    assert!(
        (meta.raw["llama.attention.layer_norm_rms_epsilon"]
            .as_f64()
            .unwrap()
            - 1e-5)
            .abs()
            < 1e-9
    );
}

#[test]
fn every_truncation_is_an_error_never_a_panic() {
    let bytes = llama_like();
    let header_end = parse(&bytes[..], None).unwrap().tensor_data_offset as usize;
    for cut in 0..header_end - 31 {
        let prefix = &bytes[..cut];
        assert!(parse(prefix, Some(cut as u64)).is_err(), "cut at {cut}");
        assert!(parse(prefix, None).is_err(), "cut at {cut}, unknown size");
    }
}

#[test]
fn hostile_lengths_fail_fast_without_allocating() {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    let mut huge_key = b.clone();
    huge_key.extend(u64::MAX.to_le_bytes());
    assert!(matches!(
        parse(&huge_key[..], None),
        Err(GgufError::Invalid(_))
    ));
    let mut big_key = b.clone();
    big_key.extend((MAX_STRING - 1).to_le_bytes());
    assert!(matches!(
        parse(&big_key[..], Some(100)),
        Err(GgufError::Truncated)
    ));
    // Unknown size: the claimed 16 MB string is not allocated up front; the stream just ends.
    assert!(matches!(
        parse(&big_key[..], None),
        Err(GgufError::Truncated)
    ));

    let mut counts = b"GGUF".to_vec();
    counts.extend(3u32.to_le_bytes());
    counts.extend(u64::MAX.to_le_bytes());
    counts.extend(u64::MAX.to_le_bytes());
    assert!(matches!(
        parse(&counts[..], None),
        Err(GgufError::Invalid(_))
    ));

    let mut array = b.clone();
    Builder::string(&mut array, "k");
    array.extend(9u32.to_le_bytes());
    array.extend(8u32.to_le_bytes());
    array.extend((MAX_ARRAY + 1).to_le_bytes());
    assert!(matches!(
        parse(&array[..], None),
        Err(GgufError::Invalid(_))
    ));
}

#[test]
fn wrong_magic_version_and_types_are_errors() {
    assert!(matches!(
        parse(&b"GGML\x03\0\0\0"[..], None),
        Err(GgufError::BadMagic(_))
    ));
    assert!(matches!(
        parse(&b"GGUF\x09\0\0\0"[..], None),
        Err(GgufError::Version(9))
    ));
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    Builder::string(&mut b, "k");
    b.extend(77u32.to_le_bytes());
    assert!(matches!(parse(&b[..], None), Err(GgufError::Invalid(_))));
}

#[test]
fn random_mutations_never_panic() {
    let original = llama_like();
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..5000 {
        let mut bytes = original.clone();
        for _ in 0..(1 + next() % 8) {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        let cut = (next() % bytes.len() as u64) as usize;
        let size = (next() % 2 == 0).then_some(cut as u64);
        let _ = parse(&bytes[..cut], size);
    }
}

#[tokio::test]
async fn reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, llama_like()).unwrap();
    let meta = read_file(&path).await.unwrap();
    assert_eq!(meta.block_count, Some(30));
    assert_eq!(meta.tensor_data_size, Some(4096));
    assert!(matches!(
        read_file(&dir.path().join("none.gguf")).await,
        Err(GgufError::Io(_))
    ));
}

#[tokio::test]
async fn reads_a_remote_header_with_range_requests_only() {
    let server = crate::testing::FileServer::start().await;
    // A header bigger than the first request: 150k tokens of ~9 bytes.
    let big = Builder::new()
        .str("general.architecture", "llama")
        .tokens("tokenizer.ggml.tokens", 150_000)
        .build(3 << 20);
    let url = server.add("/big.gguf", big.clone());
    let meta = read_url(&url).await.unwrap();
    assert_eq!(meta.vocab_size, Some(150_000));
    assert_eq!(meta.tensor_data_size, Some(3 << 20));
    let requests = server.requests();
    assert!(
        requests.len() >= 2,
        "the first 1 MiB was not enough: {requests:?}"
    );
    assert!(requests.iter().all(|r| r.range_start == Some(0)));
    assert!(read_url(&server.url("/missing.gguf")).await.is_err());
}
