use super::*;
use crate::config::DataDirSource;
use crate::testing::{sha256_hex, tiny_gguf};
use serde_json::json;

fn data(dir: &Path) -> DataPaths {
    DataPaths::new(dir.to_path_buf(), DataDirSource::Configured)
}

fn request(value: serde_json::Value) -> ImportRequest {
    serde_json::from_value(value).unwrap()
}

/// Nothing of a refused import is left in the models' folders.
fn nothing_left(root: &Path) {
    for kind in ["llm", "diffusion"] {
        let folder = root.join("models").join(kind);
        let left: Vec<_> = std::fs::read_dir(&folder)
            .map(|entries| entries.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{kind}: {left:?}");
    }
}

#[cfg(unix)]
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

#[tokio::test]
async fn a_gguf_on_the_same_disk_is_linked_recorded_and_outlives_its_source() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(&tmp.path().join("data"));
    let source = tmp.path().join("Downloads/tiny.gguf");
    std::fs::create_dir_all(source.parent().unwrap()).unwrap();
    let bytes = tiny_gguf(7, 50_000);
    std::fs::write(&source, &bytes).unwrap();

    let info = import(
        &data,
        &request(json!({ "path": source, "type": "llm", "name": "My Tiny" })),
    )
    .await
    .unwrap();
    assert_eq!(info.id, "my-tiny");
    assert_eq!(info.path, data.root.join("models/llm/my-tiny/tiny.gguf"));
    assert_eq!(
        (info.size, info.checksum.as_str()),
        (bytes.len() as u64, sha256_hex(&bytes).as_str())
    );
    assert_eq!(info.source.kind, "file");
    assert_eq!(info.source.url, format!("file://{}", source.display()));
    assert_eq!(info.gguf_metadata.as_ref().unwrap()["block_count"], 7);
    #[cfg(unix)]
    assert_eq!(inode(&info.path), inode(&source), "a hard link, no copy");
    assert_eq!(store::read(&data, "my-tiny").await.unwrap(), info);

    // The source moved away: the model is whole.
    std::fs::remove_file(&source).unwrap();
    assert_eq!(
        store::read(&data, "my-tiny").await.unwrap().size,
        bytes.len() as u64
    );
    let (listed, damaged) = store::list(&data, None).await.unwrap();
    assert_eq!(
        (listed.len(), damaged.len()),
        (1, 0),
        "no staging folder is listed"
    );

    // The same name again is refused, and changes nothing.
    std::fs::write(&source, &bytes).unwrap();
    let again = import(
        &data,
        &request(json!({ "path": source, "type": "llm", "name": "my tiny" })),
    )
    .await;
    assert!(matches!(again, Err(ModelError::Exists { ref id }) if id == "my-tiny"));
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_file_on_another_file_system_is_copied() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("skipped: no /dev/shm to hold a file on another file system");
        return;
    }
    let source_dir = tempfile::tempdir_in(shm).unwrap();
    let source = source_dir.path().join("model.gguf");
    std::fs::write(&source, tiny_gguf(3, 4096)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let info = import(
        &data,
        &request(json!({ "path": source, "type": "llm", "name": "copied" })),
    )
    .await
    .unwrap();
    assert_ne!(inode(&info.path), inode(&source));
    assert_eq!(
        std::fs::read(&info.path).unwrap(),
        std::fs::read(&source).unwrap()
    );
}

#[tokio::test]
async fn a_diffusion_set_brings_its_components_by_role() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(&tmp.path().join("data"));
    let dir = tmp.path().join("set");
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("model.gguf"), tiny_gguf(2, 1024)).unwrap();
    std::fs::write(dir.join("a/model.gguf"), tiny_gguf(1, 512)).unwrap();
    // A component need not be GGUF (sd-cli reads safetensors too).
    std::fs::write(dir.join("vae.safetensors"), b"not gguf, and that is fine").unwrap();
    let info = import(
        &data,
        &request(json!({
            "path": dir.join("model.gguf"), "type": "diffusion", "name": "Set",
            "components": { "llm": dir.join("a/model.gguf"), "vae": dir.join("vae.safetensors") },
        })),
    )
    .await
    .unwrap();
    let folder = data.root.join("models/diffusion/set");
    assert_eq!(info.path, folder.join("model.gguf"));
    assert_eq!(info.components["llm"].path, folder.join("llm-model.gguf"));
    assert_eq!(info.components["vae"].path, folder.join("vae.safetensors"));
    assert_eq!(
        info.size,
        std::fs::metadata(dir.join("model.gguf")).unwrap().len()
            + std::fs::metadata(dir.join("a/model.gguf")).unwrap().len()
            + 26
    );
    assert_eq!(store::read(&data, "set").await.unwrap(), info);
}

#[tokio::test]
async fn bad_imports_are_refused_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(&tmp.path().join("data"));
    let good = tmp.path().join("good.gguf");
    std::fs::write(&good, tiny_gguf(2, 1024)).unwrap();
    let not_gguf = tmp.path().join("notes.txt");
    std::fs::write(&not_gguf, b"hello").unwrap();
    let mut short = tiny_gguf(2, 4096);
    short.truncate(short.len() - 100);
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, short).unwrap();
    let missing = tmp.path().join("missing.gguf");

    for (body, needle) in [
        (json!({ "path": good, "type": "llm", "name": "  " }), "name"),
        (
            json!({ "path": missing, "type": "llm", "name": "m" }),
            "does not exist",
        ),
        (
            json!({ "path": tmp.path(), "type": "llm", "name": "m" }),
            "not a file",
        ),
        (
            json!({ "path": not_gguf, "type": "llm", "name": "m" }),
            "not a valid GGUF",
        ),
        (
            json!({ "path": cut, "type": "llm", "name": "m" }),
            "not a valid GGUF",
        ),
        (
            json!({ "path": good, "type": "llm", "name": "m", "components": { "vae": good } }),
            "\"vae\" is not for models of type 'llm' (theirs: mmproj, draft)",
        ),
        (
            json!({ "path": good, "type": "diffusion", "name": "m", "components": { "mmproj": good } }),
            "\"mmproj\" is not for models of type 'diffusion'",
        ),
        (
            json!({ "path": good, "type": "diffusion", "name": "m", "components": { "vae": missing } }),
            "the vae component",
        ),
    ] {
        let err = import(&data, &request(body.clone())).await.unwrap_err();
        assert!(
            matches!(err, ModelError::InvalidImport(_)),
            "{body}: {err:?}"
        );
        assert!(err.to_string().contains(needle), "{body}: {err}");
        nothing_left(&data.root);
    }
    // Unknown keys and wrong types are refused when the request is read.
    for body in [
        json!({ "path": good, "type": "llm", "name": "m", "mode": "link" }),
        json!({ "path": good, "type": "vision", "name": "m" }),
        json!({ "path": good, "type": "diffusion", "name": "m", "components": { "unet": good } }),
    ] {
        assert!(
            serde_json::from_value::<ImportRequest>(body.clone()).is_err(),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_genai_electron_0_26_data_folder_is_adopted_without_a_download() {
    let tmp = tempfile::tempdir().unwrap();
    // Our data folder is 0.26's (the same Electron userData): its records lie beside our models.
    let data = data(tmp.path());
    let llm = tmp.path().join("models/llm");
    let diffusion = tmp.path().join("models/diffusion");
    std::fs::create_dir_all(&llm).unwrap();
    std::fs::create_dir_all(&diffusion).unwrap();
    let chat = tiny_gguf(4, 2048);
    std::fs::write(llm.join("chat.gguf"), &chat).unwrap();
    let source = json!({ "type": "huggingface", "url": "https://huggingface.co/o/r/resolve/abc/chat.gguf", "repo": "o/r", "file": "chat.gguf", "revision": "abc" });
    let write = |path: PathBuf, record: serde_json::Value| {
        std::fs::write(path, serde_json::to_vec(&record).unwrap()).unwrap()
    };
    write(
        llm.join("chat.json"),
        json!({ "id": "chat", "name": "Chat", "type": "llm", "size": chat.len(), "path": llm.join("chat.gguf"),
                "downloadedAt": "2026-01-01T00:00:00Z", "source": source,
                "checksum": format!("sha256:{}", sha256_hex(&chat)) }),
    );
    write(
        llm.join("damaged.json"),
        json!({ "id": "damaged", "name": "Damaged", "type": "llm", "size": 1, "path": llm.join("chat.gguf"),
                "downloadedAt": "2026-01-01T00:00:00Z", "source": source, "checksum": "0".repeat(64) }),
    );
    write(
        llm.join("split.json"),
        json!({ "id": "split", "name": "Split", "type": "llm", "size": 1, "path": llm.join("s-00001-of-00002.gguf"),
                "downloadedAt": "2026-01-01T00:00:00Z", "source": source,
                "shards": [{ "path": llm.join("s-00001-of-00002.gguf"), "size": 1 }, { "path": llm.join("s-00002-of-00002.gguf"), "size": 1 }] }),
    );
    std::fs::write(llm.join("notes.json"), b"[1, 2]").unwrap();
    std::fs::write(diffusion.join("d.gguf"), tiny_gguf(2, 512)).unwrap();
    std::fs::write(diffusion.join("vae.safetensors"), b"vae").unwrap();
    write(
        diffusion.join("pic.json"),
        json!({ "id": "pic", "name": "Pic", "type": "diffusion", "size": 1, "path": diffusion.join("d.gguf"),
                "downloadedAt": "2026-01-01T00:00:00Z", "source": source,
                "components": { "diffusion_model": { "path": diffusion.join("d.gguf"), "size": 1 },
                                "vae": { "path": diffusion.join("vae.safetensors"), "size": 3 } } }),
    );

    let adoption = adopt(&data, tmp.path()).await.unwrap();
    let adopted: Vec<_> = adoption.adopted.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(adopted, ["chat", "pic"]);
    let chat_model = &adoption.adopted[0];
    assert_eq!(chat_model.source.kind, "huggingface", "its source is kept");
    assert_eq!(chat_model.source.revision.as_deref(), Some("abc"));
    assert_eq!(chat_model.path, llm.join("chat/chat.gguf"));
    assert_eq!(
        adoption.adopted[1].components.keys().collect::<Vec<_>>(),
        ["vae"]
    );
    let skipped: Vec<_> = adoption
        .skipped
        .iter()
        .map(|s| {
            (
                s.path.file_name().unwrap().to_str().unwrap(),
                s.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(
        skipped[0].0 == "damaged.json" && skipped[0].1.contains("damaged"),
        "{skipped:?}"
    );
    assert!(
        skipped[1].0 == "notes.json" && skipped[1].1.contains("not a genai-electron 0.26"),
        "{skipped:?}"
    );
    assert!(
        skipped[2].0 == "split.json" && skipped[2].1.contains("split"),
        "{skipped:?}"
    );
    let (listed, damaged) = store::list(&data, None).await.unwrap();
    assert_eq!((listed.len(), damaged.len()), (2, 0));

    // Again: what is here already is skipped, nothing changes.
    let again = adopt(&data, tmp.path()).await.unwrap();
    assert!(again.adopted.is_empty());
    assert!(
        again
            .skipped
            .iter()
            .any(|s| s.reason.contains("already exists"))
    );
    assert_eq!(store::list(&data, None).await.unwrap().0, listed);
}
