//! The safetensors format, as far as a download must trust it: 8 bytes of little-endian header
//! length, a JSON header naming each tensor's `dtype`, `shape` and `data_offsets` into the data
//! that follows. Only the header is read (a LoRA may be hundreds of MB): enough to tell a
//! safetensors file from anything else and a complete one from a cut one.

use std::path::Path;

use serde_json::Value;
use tokio::io::AsyncReadExt;

/// The largest header taken: the format's own reference reader refuses more than 100 MB.
const MAX_HEADER: u64 = 100_000_000;

const NOT_SAFETENSORS: &str = "it does not start with a safetensors header";

/// Checks the first bytes of a file that must be safetensors, as soon as they arrive: the
/// header's length (8 bytes; fewer pass, there is nothing to judge yet), and its `{` if there.
pub fn check_start(head: &[u8]) -> Result<(), String> {
    let Some(length) = head.get(..8) else {
        return Ok(());
    };
    let length = u64::from_le_bytes(length.try_into().expect("8 bytes"));
    if !(2..=MAX_HEADER).contains(&length) || head.get(8).is_some_and(|&b| b != b'{') {
        return Err(NOT_SAFETENSORS.into());
    }
    Ok(())
}

/// [`check_file`], its refusal naming the file as `shown`.
pub async fn check(path: &Path, size: u64, shown: &Path) -> Result<usize, String> {
    check_file(path, size).await.map_err(|reason| {
        format!(
            "{} is not a valid safetensors file: {reason}",
            shown.display()
        )
    })
}

/// Reads the header of the `size`-byte file at `path`: the number of tensors it holds, or why it
/// is not a whole safetensors file.
pub async fn check_file(path: &Path, size: u64) -> Result<usize, String> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| e.to_string())?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .await
        .map_err(|_| "it is shorter than a safetensors header".to_string())?;
    let length = u64::from_le_bytes(length);
    if !(2..=MAX_HEADER).contains(&length) {
        return Err(NOT_SAFETENSORS.into());
    }
    if 8 + length > size {
        return Err(format!(
            "its header says {length} bytes, more than the file holds: it is cut short"
        ));
    }
    let mut header = vec![0u8; length as usize];
    file.read_exact(&mut header)
        .await
        .map_err(|e| e.to_string())?;
    if header[0] != b'{' {
        return Err(NOT_SAFETENSORS.into());
    }
    check_header(&header, size - 8 - length)
}

/// The tensors of a header whose data is `data_bytes` long, each checked to lie inside it.
fn check_header(header: &[u8], data_bytes: u64) -> Result<usize, String> {
    let header: serde_json::Map<String, Value> = serde_json::from_slice(header)
        .map_err(|e| format!("its header is not a JSON object ({e})"))?;
    let mut tensors = 0;
    for (name, tensor) in &header {
        if name == "__metadata__" {
            continue;
        }
        let offsets = tensor
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|o| Some((o.first()?.as_u64()?, o.get(1)?.as_u64()?)));
        match offsets {
            Some((begin, end)) if begin <= end && end <= data_bytes => tensors += 1,
            Some((_, end)) => {
                return Err(format!(
                    "tensor {name:?} ends at byte {end} of its data, but the file holds {data_bytes}: it is cut short"
                ));
            }
            None => return Err(format!("tensor {name:?} has no data_offsets")),
        }
    }
    if tensors == 0 {
        return Err("it holds no tensors".into());
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file of `header` (JSON) and `data` bytes.
    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(vec![0u8; data]);
        bytes
    }

    #[tokio::test]
    async fn a_whole_file_is_read_and_a_cut_or_foreign_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let check = |bytes: Vec<u8>| {
            let path = dir.path().join("lora.safetensors");
            async move {
                std::fs::write(&path, &bytes).unwrap();
                check_file(&path, bytes.len() as u64).await
            }
        };
        let header = r#"{"__metadata__":{"ss_network_dim":"4"},"a.lora_down.weight":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},"a.lora_up.weight":{"dtype":"F32","shape":[2,1],"data_offsets":[8,16]}}"#;
        assert_eq!(check(file(header, 16)).await, Ok(2));
        assert!(
            check(file(header, 12))
                .await
                .unwrap_err()
                .contains("cut short")
        );
        assert!(
            check(file("{}", 0))
                .await
                .unwrap_err()
                .contains("no tensors")
        );
        assert!(
            check(file("{1}", 0))
                .await
                .unwrap_err()
                .contains("not a JSON object")
        );
        let untold = r#"{"a":{"dtype":"F32","shape":[1]}}"#;
        assert!(
            check(file(untold, 4))
                .await
                .unwrap_err()
                .contains("no data_offsets")
        );
        let mut long = file(header, 16);
        long[..8].copy_from_slice(&1_000u64.to_le_bytes());
        assert!(
            check(long)
                .await
                .unwrap_err()
                .contains("more than the file holds")
        );
        let gguf = b"GGUF\x03\0\0\0 and more than a header".to_vec();
        assert!(
            check(gguf)
                .await
                .unwrap_err()
                .contains("does not start with a safetensors header")
        );
        let mut list = file("[1]", 0);
        list[8] = b'[';
        assert!(
            check(list)
                .await
                .unwrap_err()
                .contains("does not start with")
        );
        assert!(
            check(b"GGUF".to_vec())
                .await
                .unwrap_err()
                .contains("shorter")
        );
    }

    #[test]
    fn the_first_bytes_tell_a_safetensors_file() {
        assert!(check_start(b"GGUF").is_ok(), "too few bytes to judge");
        assert!(check_start(&file("{}", 0)[..8]).is_ok());
        assert!(check_start(&file("{}", 0)).is_ok());
        assert!(check_start(b"GGUF\x03\0\0\0\0\0\0\0").is_err());
        assert!(check_start(b"PK\x03\x04 a zip, a .pt").is_err());
    }
}
