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

    fn tensor(self, name: &str, dims: &[u64]) -> Self {
        self.typed_tensor(name, dims, 0, 0) // F32 at the start of the data
    }

    fn typed_tensor(mut self, name: &str, dims: &[u64], kind: u32, offset: u64) -> Self {
        self.tensor_count += 1;
        Self::string(&mut self.tensors, name);
        self.tensors.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.tensors.extend(d.to_le_bytes());
        }
        self.tensors.extend(kind.to_le_bytes());
        self.tensors.extend(offset.to_le_bytes());
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
    big_key.extend((MAX_KEY - 1).to_le_bytes());
    assert!(matches!(
        parse(&big_key[..], Some(100)),
        Err(GgufError::Truncated)
    ));
    // Unknown size: the claimed 64 KiB key is not allocated up front; the stream just ends.
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
    let meta = read_file(&path, ParseOptions::default()).await.unwrap();
    assert_eq!(meta.block_count, Some(30));
    assert_eq!(meta.tensor_data_size, Some(4096));
    assert!(matches!(
        read_file(&dir.path().join("none.gguf"), ParseOptions::default()).await,
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
    let meta = read_url(&url, ParseOptions::default(), SECOND)
        .await
        .unwrap();
    assert_eq!(meta.vocab_size, Some(150_000));
    assert_eq!(meta.tensor_data_size, Some(3 << 20));
    let requests = server.requests();
    assert!(
        requests.len() >= 2,
        "the first 1 MiB was not enough: {requests:?}"
    );
    // Each request asks for the bytes after those already read.
    assert_eq!(requests[0].range_start, Some(0));
    assert_eq!(requests[1].range_start, Some(1 << 20));
    assert!(
        read_url(
            &server.url("/missing.gguf"),
            ParseOptions::default(),
            SECOND
        )
        .await
        .is_err()
    );
}

const SECOND: std::time::Duration = std::time::Duration::from_secs(1);

#[test]
fn the_header_says_how_long_the_file_must_be() {
    let data = 512 + 576;
    let bytes = Builder::new()
        .str("general.architecture", "llama")
        .typed_tensor("a", &[64, 2], 0, 0) // F32: 512 bytes
        .typed_tensor("b", &[256, 4], 12, 512) // Q4_K: 4 blocks of 144 bytes
        .build(data);
    let meta = parse(&bytes[..], Some(bytes.len() as u64)).unwrap();
    assert_eq!(
        meta.required_file_size,
        meta.tensor_data_offset + data as u64
    );
    check_complete(&meta, bytes.len() as u64).unwrap();
    assert!(matches!(
        check_complete(&meta, bytes.len() as u64 - 1),
        Err(GgufError::Short { .. })
    ));
    // A type this reader does not know counts with its offset only.
    let unknown = Builder::new().typed_tensor("u", &[10], 99, 64).build(0);
    let meta = parse(&unknown[..], None).unwrap();
    assert_eq!(meta.required_file_size, meta.tensor_data_offset + 64);
    let overflow = Builder::new()
        .typed_tensor("o", &[u64::MAX, 2], 0, 0)
        .build(0);
    assert!(matches!(
        parse(&overflow[..], None),
        Err(GgufError::Invalid(_))
    ));
}

#[test]
fn the_first_bytes_tell_a_gguf_file() {
    assert!(check_start(b"GGU").is_ok(), "too few bytes to judge");
    assert!(check_start(b"GGUF\x03\0\0\0rest").is_ok());
    assert!(matches!(
        check_start(b"<html>\n<body>"),
        Err(GgufError::BadMagic(_))
    ));
    assert!(matches!(
        check_start(b"GGUF\x07\0\0\0"),
        Err(GgufError::Version(7))
    ));
}

#[test]
fn kept_values_are_bounded_in_all() {
    // 200 arrays of 1,024 items: each short enough to keep, together over the budget.
    let mut builder = Builder::new();
    for i in 0..200 {
        builder = builder.u32_array(&format!("k{i:03}"), &[7; 1024]);
    }
    let bytes = builder.build(0);
    let meta = parse(&bytes[..], Some(bytes.len() as u64)).unwrap();
    let kept = meta.raw.values().filter(|v| v.is_array()).count();
    assert_eq!(kept as u64, KEPT_ITEMS / 1024);
    assert_eq!(
        meta.raw["k199"],
        serde_json::json!({ "type": "array", "itemType": "uint32", "length": 1024 })
    );
    let full = parse_with(
        &bytes[..],
        Some(bytes.len() as u64),
        ParseOptions { full_arrays: true },
    )
    .unwrap();
    assert_eq!(full.raw.values().filter(|v| v.is_array()).count(), 200);

    // Strings: 4 MiB in all, then summarised.
    let big = "x".repeat(1 << 20);
    let mut builder = Builder::new();
    for i in 0..6 {
        builder = builder.str(&format!("s{i}"), &big);
    }
    let bytes = builder.build(0);
    let meta = parse(&bytes[..], Some(bytes.len() as u64)).unwrap();
    assert_eq!(meta.raw["s3"].as_str().map(str::len), Some(1 << 20));
    assert_eq!(
        meta.raw["s4"],
        serde_json::json!({ "type": "string", "length": 1 << 20 })
    );
    // Long arrays are kept only when asked for.
    let tokens = Builder::new()
        .tokens("tokenizer.ggml.tokens", 5000)
        .build(0);
    let meta = parse(&tokens[..], None).unwrap();
    assert_eq!(meta.raw["tokenizer.ggml.tokens"]["itemType"], "string");
    let full = parse_with(&tokens[..], None, ParseOptions { full_arrays: true }).unwrap();
    assert_eq!(full.raw["tokenizer.ggml.tokens"][4999], "tok4999");
    assert_eq!(full.vocab_size, Some(5000));
}

#[cfg(unix)]
#[tokio::test]
async fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("m.gguf");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        read_file(&fifo, ParseOptions::default()),
    )
    .await
    .expect("the reader does not block on a FIFO");
    assert!(matches!(result, Err(GgufError::NotAFile(_))), "{result:?}");
    assert!(matches!(
        read_file(dir.path(), ParseOptions::default()).await,
        Err(GgufError::NotAFile(_))
    ));
}

/// A server on 127.0.0.1 that answers every connection with `respond`.
async fn raw_server<F, Fut>(respond: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/m.gguf", listener.local_addr().unwrap());
    let respond = std::sync::Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(respond(stream));
        }
    });
    url
}

async fn read_request(stream: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn hostile_servers_cost_bounded_bytes_and_time() {
    use tokio::io::AsyncWriteExt;
    let header = llama_like();
    let header_len = header.len();
    // Ignores Range and sends a 1.5 GB body: only what the header needs is read.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let url = raw_server(move |mut stream| {
        let (header, counter) = (header.clone(), counter.clone());
        async move {
            read_request(&mut stream).await;
            let total = 1_500_000_000u64;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&header).await;
            let zeros = vec![0u8; 1 << 16];
            let mut left = total - header.len() as u64;
            while left > 0 {
                if stream.write_all(&zeros).await.is_err() {
                    return;
                }
                counter.fetch_add(zeros.len() as u64, std::sync::atomic::Ordering::Relaxed);
                left = left.saturating_sub(zeros.len() as u64);
            }
        }
    })
    .await;
    let meta = read_url(&url, ParseOptions::default(), SECOND)
        .await
        .unwrap();
    assert_eq!(meta.block_count, Some(30));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent < 64 << 20, "the server got to send {sent} bytes");

    // An endless chunked body that is not GGUF: refused after its first bytes.
    let url = raw_server(|mut stream| async move {
        read_request(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        let chunk = format!("{:x}\r\n{}\r\n", 4096, "z".repeat(4096));
        while stream.write_all(chunk.as_bytes()).await.is_ok() {}
    })
    .await;
    let err = read_url(&url, ParseOptions::default(), SECOND)
        .await
        .unwrap_err();
    assert!(matches!(err, GgufError::BadMagic(_)), "{err}");

    // An endless chunked body that starts like a header whose strings never end.
    let url = raw_server(move |mut stream| async move {
        read_request(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        let mut start = b"GGUF".to_vec();
        start.extend(3u32.to_le_bytes());
        start.extend(0u64.to_le_bytes());
        start.extend(60_000u64.to_le_bytes());
        let value = vec![b'a'; (1 << 20) - 1];
        let chunk = |piece: &[u8]| {
            let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
            framed.extend_from_slice(piece);
            framed.extend_from_slice(b"\r\n");
            framed
        };
        if stream.write_all(&chunk(&start)).await.is_err() {
            return;
        }
        for i in 0..200u32 {
            let key = format!("k{i}");
            let mut kv = (key.len() as u64).to_le_bytes().to_vec();
            kv.extend(key.as_bytes());
            kv.extend(8u32.to_le_bytes());
            kv.extend((value.len() as u64).to_le_bytes());
            if stream.write_all(&chunk(&kv)).await.is_err()
                || stream.write_all(&chunk(&value)).await.is_err()
            {
                return;
            }
        }
    })
    .await;
    let err = read_url(&url, ParseOptions::default(), SECOND)
        .await
        .unwrap_err();
    assert!(matches!(err, GgufError::Truncated), "{err}");

    // Never answers; answers its headers and then stalls.
    let silent = raw_server(|mut stream| async move {
        read_request(&mut stream).await;
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    })
    .await;
    let stalls = raw_server(move |mut stream| async move {
        read_request(&mut stream).await;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\nGGUF",
            header_len
        );
        let _ = stream.write_all(head.as_bytes()).await;
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    })
    .await;
    for url in [silent, stalls] {
        let started = std::time::Instant::now();
        let short = std::time::Duration::from_millis(300);
        let err = read_url(&url, ParseOptions::default(), short)
            .await
            .unwrap_err();
        assert!(matches!(err, GgufError::Network(_)), "{err}");
        assert!(err.to_string().contains("no answer within"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}

#[test]
fn tensor_sizes_match_the_pinned_ggml() {
    // `sizeof(block_*)` and `QK*` printed by a program built against the pinned llama.cpp's
    // ggml-common.h (0.3.36 sdist); plain types from ggml.h.
    let measured: [(u32, u64, u64); 32] = [
        (0, 1, 4),
        (1, 1, 2),
        (2, 32, 18),
        (3, 32, 20),
        (6, 32, 22),
        (7, 32, 24),
        (8, 32, 34),
        (9, 32, 36),
        (10, 256, 84),
        (11, 256, 110),
        (12, 256, 144),
        (13, 256, 176),
        (14, 256, 210),
        (15, 256, 292),
        (16, 256, 66),
        (17, 256, 74),
        (18, 256, 98),
        (19, 256, 50),
        (20, 32, 18),
        (21, 256, 110),
        (22, 256, 82),
        (23, 256, 136),
        (24, 1, 1),
        (25, 1, 2),
        (26, 1, 4),
        (27, 1, 8),
        (28, 1, 8),
        (29, 256, 56),
        (30, 1, 2),
        (34, 256, 54),
        (35, 256, 66),
        (39, 32, 17),
    ];
    for (kind, block, size) in measured {
        assert_eq!(tensor_type_size(kind), Some((block, size)), "type {kind}");
    }
    for (kind, block, size) in [(40, 64, 36), (41, 128, 18), (42, 64, 18)] {
        assert_eq!(tensor_type_size(kind), Some((block, size)), "type {kind}");
    }
    // Removed ids and ids past the last one are unknown.
    for kind in [4, 5, 31, 32, 33, 36, 37, 38, 43, 1000] {
        assert_eq!(tensor_type_size(kind), None, "type {kind}");
    }
}

#[test]
fn every_value_type_reads() {
    let mut b = Builder::new();
    let scalars: [(u32, &[u8]); 11] = [
        (0, &[200]),
        (1, &[0xff]),
        (2, &500u16.to_le_bytes()),
        (3, &(-5i16).to_le_bytes()),
        (5, &(-7i32).to_le_bytes()),
        (6, &1.5f32.to_le_bytes()),
        (7, &[1]),
        (10, &(1u64 << 40).to_le_bytes()),
        (11, &(-9i64).to_le_bytes()),
        (12, &0.25f64.to_le_bytes()),
        (12, &f64::NAN.to_le_bytes()),
    ];
    for (i, (kind, bytes)) in scalars.iter().enumerate() {
        b.key(&format!("v{i}"), *kind).extend_from_slice(bytes);
    }
    let bytes = b.build(0);
    let meta = parse(&bytes[..], None).unwrap();
    let got: Vec<Value> = (0..11)
        .map(|i| meta.raw[&format!("v{i}")].clone())
        .collect();
    assert_eq!(
        got,
        serde_json::json!([200, -1, 500, -5, -7, 1.5, true, 1u64 << 40, -9, 0.25, null])
            .as_array()
            .unwrap()
            .clone()
    );
}

#[test]
fn errors_carry_codes_and_suggestions() {
    use crate::error::{Coded, ErrorCode};
    let cases = [
        (
            GgufError::BadMagic(*b"<htm"),
            ErrorCode::InvalidArgument,
            "GGUF model",
        ),
        (
            GgufError::Short {
                size: 1,
                required: 2,
            },
            ErrorCode::InvalidArgument,
            "again",
        ),
        (
            GgufError::NotAFile("/x".into()),
            ErrorCode::InvalidArgument,
            ".gguf",
        ),
        (
            GgufError::Network("x".into()),
            ErrorCode::DownloadFailed,
            "network",
        ),
        (
            over_budget(),
            ErrorCode::InvalidArgument,
            "without fullArrays",
        ),
        (
            GgufError::Io(io::ErrorKind::NotFound.into()),
            ErrorCode::FileSystemError,
            "",
        ),
    ];
    for (err, code, hint) in cases {
        assert_eq!(err.code(), code, "{err}");
        assert!(err.suggestion().unwrap().contains(hint), "{err}");
    }
}

#[test]
fn groups_tensor_bytes_by_the_layer_llama_cpp_places_them_with() {
    // F32: 4 bytes an element. No output.weight: the output reuses the token embeddings.
    let tied = Builder::new()
        .str("general.architecture", "llama")
        .typed_tensor("token_embd.weight", &[8, 100], 0, 0)
        .typed_tensor("blk.0.attn_q.weight", &[8, 8], 0, 3200)
        .typed_tensor("blk.0.ffn_up.weight", &[8, 16], 0, 3456)
        .typed_tensor("blk.1.attn_q.weight", &[8, 8], 0, 3968)
        .typed_tensor("output_norm.weight", &[8], 0, 4224)
        .typed_tensor("v.patch_embd.weight", &[4], 0, 4256)
        .build(4272);
    let meta = parse(&tied[..], Some(tied.len() as u64)).unwrap();
    let layers = &meta.layers;
    assert_eq!(layers.input, 3200);
    assert_eq!(layers.blocks, vec![256 + 512, 256]);
    assert_eq!(
        layers.output,
        32 + 3200,
        "output_norm plus the tied embeddings"
    );
    assert_eq!(layers.other, 16);

    let untied = Builder::new()
        .typed_tensor("token_embd.weight", &[8, 100], 0, 0)
        .typed_tensor("output.weight", &[8, 100], 0, 3200)
        .typed_tensor("blk.x.odd", &[2], 0, 6400)
        .build(6408);
    let meta = parse(&untied[..], Some(untied.len() as u64)).unwrap();
    assert_eq!(meta.layers.output, 3200);
    assert!(meta.layers.blocks.is_empty());
    assert_eq!(
        meta.layers.other, 8,
        "a block name without a number is not a block"
    );
}
