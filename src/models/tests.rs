use super::*;
use crate::config::DataDirSource;
use crate::testing::{Behaviour, FileServer, bytes, sha256_hex, tiny_gguf};
use std::sync::Arc;

fn data(dir: &Path) -> DataPaths {
    DataPaths::new(dir.to_path_buf(), DataDirSource::Configured)
}

fn url_config(name: &str, url: &str, checksum: Option<String>) -> DownloadConfig {
    serde_json::from_value(
        json!({ "source": "url", "url": url, "name": name, "type": "llm", "checksum": checksum }),
    )
    .unwrap()
}

type Seen<T> = Arc<Mutex<Vec<T>>>;

/// A manager whose progress and damaged-folder events are recorded apart.
fn recorder_of_all() -> (ModelManager, Seen<ModelProgress>, Seen<Damaged>) {
    let (progress, damaged) = (Seen::default(), Seen::default());
    let (p, d) = (progress.clone(), damaged.clone());
    let manager = ModelManager::new(Some(EventSink::new(move |e| match e {
        ModelEvent::Progress(e) => p.lock().unwrap().push(e),
        ModelEvent::Damaged(e) => d.lock().unwrap().push(e),
        ModelEvent::FileStart(_) => {}
    })));
    (manager, progress, damaged)
}

fn recorder() -> (ModelManager, Seen<ModelProgress>) {
    let (manager, progress, _) = recorder_of_all();
    (manager, progress)
}

#[tokio::test]
async fn a_url_download_becomes_a_listed_model_with_gguf_metadata() {
    let server = FileServer::start().await;
    let file = tiny_gguf(7, 200_000);
    let url = server.add("/models/tiny.gguf", file.clone());
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let (manager, events) = recorder();
    let info = manager
        .download(
            &data,
            "d1",
            &url_config("Tiny Llama", &url, Some(sha256_hex(&file))),
        )
        .await
        .unwrap();
    assert_eq!(info.id, "tiny-llama");
    assert_eq!(info.size, file.len() as u64);
    assert_eq!(info.checksum, sha256_hex(&file));
    assert_eq!(
        info.path,
        tmp.path().join("models/llm/tiny-llama/tiny.gguf")
    );
    assert_eq!(info.gguf_metadata.as_ref().unwrap()["block_count"], 7);
    assert_eq!(info.source.url, url);
    assert!(info.downloaded_at.ends_with('Z'));
    assert_eq!(manager.list(&data, None).await.unwrap(), vec![info.clone()]);
    assert_eq!(
        manager
            .list(&data, Some(ModelType::Diffusion))
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(manager.get(&data, "tiny-llama").await.unwrap(), info);
    let last = events.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (last.downloaded, last.total, last.model_id.as_str()),
        (file.len() as u64, Some(file.len() as u64), "tiny-llama")
    );
    assert!(last.speed > 0.0);
    assert_eq!(
        manager.storage_usage(&data).await.unwrap(),
        StorageUsage {
            llm: file.len() as u64,
            diffusion: 0,
            lora: 0,
            upscaler: 0,
            total: file.len() as u64,
            models: 1
        }
    );

    let err = manager
        .download(&data, "d2", &url_config("tiny llama", &url, None))
        .await
        .unwrap_err();
    assert!(matches!(err, ModelError::Exists { .. }), "{err}");
}

#[tokio::test]
async fn hugging_face_sources_are_pinned_to_a_commit() {
    let server = FileServer::start().await;
    let sha = "0123456789abcdef0123456789abcdef01234567";
    server.add(
        "/api/models/owner/repo/revision/main",
        format!("{{\"sha\":\"{sha}\"}}").into_bytes(),
    );
    let file = tiny_gguf(3, 1000);
    server.add(
        &format!("/owner/repo/resolve/{sha}/sub/m.gguf"),
        file.clone(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let manager = ModelManager::new(None).with_hub_endpoint(server.url(""));
    let config: DownloadConfig =
        serde_json::from_value(json!({ "source": "huggingface", "repo": "owner/repo", "file": "sub/m.gguf", "name": "hf", "type": "llm" })).unwrap();
    let info = manager
        .download(&data(tmp.path()), "d", &config)
        .await
        .unwrap();
    assert_eq!(info.source.revision.as_deref(), Some(sha));
    assert_eq!(info.source.file.as_deref(), Some("sub/m.gguf"));
    assert_eq!(
        info.source.url,
        server.url(&format!("/owner/repo/resolve/{sha}/sub/m.gguf"))
    );

    let missing: DownloadConfig =
        serde_json::from_value(json!({ "source": "huggingface", "repo": "owner/other", "file": "m.gguf", "name": "hf2", "type": "llm" })).unwrap();
    let err = manager
        .download(&data(tmp.path()), "d", &missing)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DownloadHttpError);
    assert_eq!(err.details()["status"], 404);
}

#[tokio::test]
async fn split_gguf_files_are_one_model() {
    let server = FileServer::start().await;
    for i in 1..=3 {
        server.add(
            &format!("/m-0000{i}-of-00003.gguf"),
            // Every shard of a split GGUF is a GGUF file of its own.
            tiny_gguf(if i == 1 { 5 } else { i as u32 }, 5000),
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let info = ModelManager::new(None)
        .download(
            &data(tmp.path()),
            "d",
            &url_config("split", &server.url("/m-00001-of-00003.gguf"), None),
        )
        .await
        .unwrap();
    assert_eq!(info.shards.len(), 3);
    assert_eq!(info.path, info.shards[0].path);
    assert_eq!(info.size, info.shards.iter().map(|s| s.size).sum::<u64>());
    assert_eq!(info.gguf_metadata.unwrap()["block_count"], 5);
}

fn diffusion_config(server: &FileServer, llm_path: &str) -> DownloadConfig {
    serde_json::from_value(json!({
        "source": "url", "url": server.url("/d/diffusion.gguf"), "name": "Tiny Diffusion", "type": "diffusion",
        "components": [
            { "role": "llm", "source": "url", "url": server.url(llm_path) },
            { "role": "taesd", "source": "url", "url": server.url("/d/taesd.gguf") },
        ]
    }))
    .unwrap()
}

#[tokio::test]
async fn components_are_stored_with_the_model_and_a_failed_one_removes_it() {
    let server = FileServer::start().await;
    server.add("/d/diffusion.gguf", tiny_gguf(1, 100));
    server.add("/d/llm.gguf", tiny_gguf(1, 200));
    server.add("/d/taesd.gguf", tiny_gguf(1, 300));
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let manager = ModelManager::new(None);

    let err = manager
        .download(&data, "d", &diffusion_config(&server, "/d/missing.gguf"))
        .await
        .unwrap_err();
    assert_eq!(err.details()["status"], 404);
    assert!(
        !tmp.path().join("models/diffusion/tiny-diffusion").exists(),
        "nothing of the failed model is left"
    );
    assert!(manager.list(&data, None).await.unwrap().is_empty());

    let info = manager
        .download(&data, "d", &diffusion_config(&server, "/d/llm.gguf"))
        .await
        .unwrap();
    assert_eq!(info.components.keys().collect::<Vec<_>>(), ["llm", "taesd"]);
    assert!(info.components["taesd"].path.is_file());
    assert_eq!(
        info.size,
        info.components.values().map(|c| c.size).sum::<u64>()
            + std::fs::metadata(&info.path).unwrap().len()
    );

    let bad_role = serde_json::from_value::<DownloadConfig>(json!({
        "source": "url", "url": server.url("/d/diffusion.gguf"), "name": "x", "type": "diffusion",
        "components": [{ "role": "unet", "source": "url", "url": server.url("/d/llm.gguf") }]
    }))
    .unwrap_err();
    assert!(
        bad_role.to_string().contains("unknown variant `unet`"),
        "{bad_role}"
    );
}

#[tokio::test]
async fn a_checksum_mismatch_leaves_nothing() {
    let server = FileServer::start().await;
    let url = server.add("/m.gguf", tiny_gguf(2, 1000));
    let tmp = tempfile::tempdir().unwrap();
    let err = ModelManager::new(None)
        .download(
            &data(tmp.path()),
            "d",
            &url_config("m", &url, Some("0".repeat(64))),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ChecksumError);
    assert!(!tmp.path().join("models/llm/m").exists());
}

#[tokio::test]
async fn checksums_take_the_sha256_prefix_and_either_case_and_a_malformed_one_fetches_nothing() {
    let server = FileServer::start().await;
    let file = tiny_gguf(2, 1000);
    let url = server.add("/m.gguf", file.clone());
    let tmp = tempfile::tempdir().unwrap();
    let manager = ModelManager::new(None);
    let prefixed = format!("sha256:{}", sha256_hex(&file).to_ascii_uppercase());
    let info = manager
        .download(
            &data(tmp.path()),
            "d1",
            &url_config("m", &url, Some(prefixed)),
        )
        .await
        .unwrap();
    assert_eq!(info.checksum, sha256_hex(&file));
    let fetched = server.requests().len();
    for bad in ["sha256:abc", "md5:0123", &"g".repeat(64)] {
        let err = manager
            .download(
                &data(tmp.path()),
                "d2",
                &url_config("n", &url, Some(bad.to_string())),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{bad}: {err}");
        assert!(err.to_string().contains("SHA-256"), "{err}");
    }
    assert_eq!(server.requests().len(), fetched, "not a byte was asked for");
    assert!(!tmp.path().join("models/llm/n").exists());
}

#[tokio::test]
async fn a_file_that_is_not_gguf_is_refused() {
    let server = FileServer::start().await;
    let url = server.add("/m.gguf", b"<html>login page</html>".to_vec());
    let tmp = tempfile::tempdir().unwrap();
    let err = ModelManager::new(None)
        .download(&data(tmp.path()), "d", &url_config("m", &url, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DownloadRejected);
    assert!(!tmp.path().join("models/llm/m").exists());
}

#[tokio::test]
async fn a_broken_connection_keeps_the_part_unlisted_and_the_next_download_resumes() {
    let server = FileServer::start().await;
    let file = tiny_gguf(4, 300_000);
    let url = server.add("/m.gguf", file.clone());
    server.set(Behaviour {
        drop_after: Some(50_000),
        drops: 10,
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let manager = ModelManager::new(None);
    let err = manager
        .download(&data, "d", &url_config("m", &url, Some(sha256_hex(&file))))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ModelError::Download(DownloadError::Network { .. })),
        "{err}"
    );
    assert!(manager.list(&data, None).await.unwrap().is_empty());
    assert!(tmp.path().join("models/llm/m/m.gguf.part").exists());
    server.set(Behaviour::default());
    let info = manager
        .download(&data, "d", &url_config("m", &url, Some(sha256_hex(&file))))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&info.path).unwrap(), file);
    assert!(server.requests().last().unwrap().range_start.unwrap() > 0);
}

#[tokio::test]
async fn cancel_stops_a_download_and_cleans_up() {
    let server = FileServer::start().await;
    let url = server.add("/big.gguf", tiny_gguf(1, 2_000_000));
    server.set(Behaviour {
        slow: true,
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let manager = Arc::new(ModelManager::new(None));
    let task = tokio::spawn({
        let (manager, data, url) = (manager.clone(), data.clone(), url.clone());
        async move {
            manager
                .download(&data, "dl-1", &url_config("big", &url, None))
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let busy = manager
        .download(&data, "dl-2", &url_config("big", &url, None))
        .await
        .unwrap_err();
    assert!(matches!(busy, ModelError::Busy { .. }), "{busy}");
    assert!(manager.cancel("dl-1"));
    let err = task.await.unwrap().unwrap_err();
    assert!(matches!(err, ModelError::Cancelled { .. }), "{err}");
    assert!(!tmp.path().join("models/llm/big").exists());
    assert!(!manager.cancel("dl-1"));
}

#[tokio::test]
async fn delete_and_verify() {
    let server = FileServer::start().await;
    let url = server.add("/m.gguf", tiny_gguf(2, 1000));
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let manager = ModelManager::new(None);
    let info = manager
        .download(&data, "d", &url_config("m", &url, None))
        .await
        .unwrap();
    assert!(manager.verify(&data, "m").await.unwrap().valid);
    let mut bytes = std::fs::read(&info.path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&info.path, bytes).unwrap();
    let verification = manager.verify(&data, "m").await.unwrap();
    assert!(!verification.valid);
    assert_eq!(verification.problems.len(), 1);
    assert_eq!(
        verification.problems[0].expected,
        Some(info.checksum.clone())
    );

    manager.acquire("m");
    let err = manager.delete(&data, "m").await.unwrap_err();
    assert!(matches!(err, ModelError::InUse { .. }), "{err}");
    manager.release("m");
    manager.delete(&data, "m").await.unwrap();
    assert!(!tmp.path().join("models/llm/m").exists());
    let err = manager.get(&data, "m").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ModelNotFound);
    assert!(matches!(
        manager.delete(&data, "m").await,
        Err(ModelError::NotFound { .. })
    ));
}

#[tokio::test]
async fn bad_configs_are_invalid_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    let manager = ModelManager::new(None);
    for config in [
        json!({ "source": "url", "url": "ftp://x/y.gguf", "name": "a", "type": "llm" }),
        json!({ "source": "url", "name": "a", "type": "llm" }),
        json!({ "source": "url", "url": "http://127.0.0.1:9/y.gguf", "name": " ", "type": "llm" }),
        json!({ "source": "hub", "url": "http://127.0.0.1:9/y.gguf", "name": "a", "type": "llm" }),
        json!({ "source": "huggingface", "repo": "../x", "file": "y.gguf", "name": "a", "type": "llm" }),
        json!({ "source": "huggingface", "repo": "a/b", "file": "../y.gguf", "name": "a", "type": "llm" }),
        json!({ "source": "url", "url": "http://127.0.0.1:9/y.gguf", "name": "a", "type": "llm",
                "components": [{ "role": "llm", "source": "url", "url": "http://127.0.0.1:9/z.gguf" }] }),
    ] {
        let config: DownloadConfig = serde_json::from_value(config.clone()).unwrap();
        let err = manager
            .download(&data(tmp.path()), "d", &config)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{config:?}: {err}");
        assert!(err.suggestion().is_some());
    }
    assert_eq!(
        std::fs::read_dir(tmp.path())
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "nothing was created"
    );
}

#[tokio::test]
async fn a_file_cut_short_after_download_is_not_taken_for_a_model() {
    let server = FileServer::start().await;
    let url = server.add("/m.gguf", tiny_gguf(2, 5000));
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let manager = ModelManager::new(None);
    let info = manager
        .download(&data, "d", &url_config("m", &url, None))
        .await
        .unwrap();
    // As a power loss could leave it: the data never reached the disk in full.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&info.path)
        .unwrap()
        .set_len(100)
        .unwrap();
    assert!(manager.list(&data, None).await.unwrap().is_empty());
    let err = manager.get(&data, "m").await.unwrap_err();
    assert!(matches!(err, ModelError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("100 bytes"), "{err}");
    assert_eq!(manager.verify(&data, "m").await.unwrap().problems.len(), 1);
    manager.delete(&data, "m").await.unwrap();
    assert!(!tmp.path().join("models/llm/m").exists());
}

/// Writes a model record by hand, as a hostile or damaged data folder could hold it.
fn plant(dir: &Path, record: Value) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(store::METADATA_FILE), record.to_string()).unwrap();
}

fn record(id: &str, path: &Path) -> Value {
    json!({
        "id": id, "name": id, "type": "llm", "size": 4, "path": path,
        "downloadedAt": "2026-01-01T00:00:00.000Z", "checksum": "00",
        "source": { "type": "url", "url": "http://127.0.0.1:9/m.gguf" },
    })
}

#[tokio::test]
async fn ids_that_leave_the_models_folder_name_no_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let (manager, _, damaged) = recorder_of_all();
    // `<data>/planted`, reachable from `models/llm/` as `../../planted`.
    let planted = tmp.path().join("planted");
    plant(&planted, record("../../planted", &planted.join("m.gguf")));
    std::fs::write(planted.join("keep.txt"), "unrelated").unwrap();
    // A record whose id is a traversal, inside the models folder.
    plant(
        &tmp.path().join("models/llm/evil"),
        record("../../planted", &planted.join("m.gguf")),
    );
    for id in ["../../planted", "../llm/evil", "/etc", "", "EVIL", "evil/."] {
        let err = manager.get(&data, id).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::ModelNotFound, "{id:?}: {err}");
        let err = manager.delete(&data, id).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::ModelNotFound, "{id:?}: {err}");
        assert!(manager.verify(&data, id).await.is_err());
    }
    assert!(
        planted.join("keep.txt").exists(),
        "nothing outside was touched"
    );
    // The folder `evil` holds a record of another id: damaged, never trusted.
    let err = manager.get(&data, "evil").await.unwrap_err();
    assert!(matches!(err, ModelError::Corrupt { .. }), "{err}");
    assert!(manager.list(&data, None).await.unwrap().is_empty());
    let seen = damaged.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].reason.contains("another id"), "{seen:?}");
    // Deleting it by its folder's name removes that folder, and only it.
    manager.delete(&data, "evil").await.unwrap();
    assert!(!tmp.path().join("models/llm/evil").exists());
    assert!(planted.join("keep.txt").exists());
}

#[tokio::test]
async fn a_damaged_record_never_hides_the_other_models() {
    let server = FileServer::start().await;
    let url = server.add("/m.gguf", tiny_gguf(2, 1000));
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let (manager, _, damaged) = recorder_of_all();
    let good = manager
        .download(&data, "d", &url_config("good", &url, None))
        .await
        .unwrap();
    let llm = tmp.path().join("models/llm");
    std::fs::create_dir_all(llm.join("garbage")).unwrap();
    std::fs::write(llm.join("garbage").join(store::METADATA_FILE), "{ not json").unwrap();
    plant(
        &llm.join("outside"),
        record("outside", Path::new("/etc/hostname")),
    );
    plant(
        &llm.join("Not An Id"),
        record("Not An Id", &llm.join("Not An Id/m")),
    );
    let mut wrong_type = record("typed", &tmp.path().join("models/diffusion/typed/m"));
    wrong_type["type"] = json!("llm");
    plant(&tmp.path().join("models/diffusion/typed"), wrong_type);

    assert_eq!(manager.list(&data, None).await.unwrap(), vec![good.clone()]);
    let mut reasons: Vec<String> = damaged
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.reason.clone())
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("outside the model's folder"))
    );
    assert!(reasons.iter().any(|r| r.contains("not a model id")));
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("lies in the diffusion folder"))
    );
    assert_eq!(manager.get(&data, "good").await.unwrap(), good);
    assert_eq!(manager.storage_usage(&data).await.unwrap().models, 1);
    for id in ["garbage", "outside", "typed"] {
        let err = manager.get(&data, id).await.unwrap_err();
        assert!(matches!(err, ModelError::Corrupt { .. }), "{id}: {err}");
        manager.delete(&data, id).await.unwrap();
    }
    assert!(Path::new("/etc/hostname").exists() || !cfg!(target_os = "linux"));
}

#[cfg(unix)]
#[tokio::test]
async fn a_link_in_place_of_a_model_folder_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let (manager, _, damaged) = recorder_of_all();
    let elsewhere = tmp.path().join("elsewhere");
    plant(&elsewhere, record("linked", &elsewhere.join("m.gguf")));
    std::fs::create_dir_all(tmp.path().join("models/llm")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, tmp.path().join("models/llm/linked")).unwrap();
    assert!(manager.list(&data, None).await.unwrap().is_empty());
    assert!(damaged.lock().unwrap()[0].reason.contains("is a link"));
    let err = manager.delete(&data, "linked").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ModelNotFound, "{err}");
    assert!(
        elsewhere.join(store::METADATA_FILE).exists(),
        "nothing was followed"
    );
}

#[tokio::test]
async fn a_download_that_is_not_gguf_stops_at_its_first_bytes() {
    let server = FileServer::start().await;
    let len = 8 << 20;
    let url = server.add("/big.gguf", bytes(len, 9));
    let tmp = tempfile::tempdir().unwrap();
    let (manager, progress) = recorder();
    let err = manager
        .download(&data(tmp.path()), "d", &url_config("big", &url, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DownloadRejected, "{err}");
    assert!(err.to_string().contains("magic"), "{err}");
    let most = progress.lock().unwrap().iter().map(|p| p.downloaded).max();
    assert!(most.unwrap_or(0) < 1 << 20, "read {most:?} of {len} bytes");
    assert!(!tmp.path().join("models/llm/big").exists());
}

#[tokio::test]
async fn a_gguf_cut_short_without_a_length_is_refused_and_then_resumed() {
    let server = FileServer::start().await;
    let file = tiny_gguf(3, 100_000);
    let url = server.add("/m.gguf", file.clone());
    server.set(Behaviour {
        no_length: true,
        drop_after: Some(file.len() * 6 / 10),
        drops: 1,
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let manager = ModelManager::new(None);
    let err = manager
        .download(&data, "d", &url_config("m", &url, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DownloadFailed, "{err}");
    assert!(err.to_string().contains("cut short"), "{err}");
    assert!(manager.list(&data, None).await.unwrap().is_empty());
    let dir = tmp.path().join("models/llm/m");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["m.gguf.part"], "only the resumable part is left");
    server.set(Behaviour::default());
    let info = manager
        .download(&data, "d", &url_config("m", &url, None))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&info.path).unwrap(), file);
    assert_eq!(
        server.requests().last().unwrap().range_start,
        Some((file.len() * 6 / 10) as u64)
    );
}

#[tokio::test]
async fn a_stalled_download_gives_up_and_keeps_its_part() {
    let server = FileServer::start().await;
    let file = tiny_gguf(3, 100_000);
    let url = server.add("/m.gguf", file.clone());
    server.set(Behaviour {
        stall_after: Some(10_000),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let manager = ModelManager::new(None);
    let mut config = url_config("m", &url, Some(sha256_hex(&file)));
    config.stall_timeout = Some(200);
    let started = std::time::Instant::now();
    let err = manager.download(&data, "d", &config).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::DownloadFailed, "{err}");
    assert!(err.to_string().contains("no data for 0.2 s"), "{err}");
    // Four attempts of 0.2 s and the backoff between them (0.25 + 0.5 + 1 s), never a hang.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(
        server.requests().len(),
        4,
        "the first try and three resumptions"
    );
    assert!(tmp.path().join("models/llm/m/m.gguf.part").exists());
    server.set(Behaviour::default());
    let info = manager.download(&data, "d", &config).await.unwrap();
    assert_eq!(info.checksum, sha256_hex(&file));
}

#[tokio::test]
async fn a_redirect_loop_leaves_nothing_behind() {
    let server = FileServer::start().await;
    let url = server.add("/m.gguf", tiny_gguf(1, 100));
    server.set(Behaviour {
        redirect_loop: true,
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let err = ModelManager::new(None)
        .download(&data(tmp.path()), "d", &url_config("m", &url, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DownloadFailed, "{err}");
    assert!(!tmp.path().join("models/llm/m").exists(), "no empty folder");
}

#[tokio::test]
async fn genai_electron_0_26_download_options_are_taken_and_unknown_ones_refused() {
    let server = FileServer::start().await;
    server.add("/d/diffusion.gguf", tiny_gguf(1, 100));
    server.add("/d/llm.gguf", tiny_gguf(1, 200));
    server.add("/d/taesd.gguf", tiny_gguf(1, 300));
    server.add("/d/other.gguf", tiny_gguf(1, 150));
    for i in 1..=2 {
        server.add(&format!("/s/part{i}.gguf"), tiny_gguf(3, 1000 * i));
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let starts: Arc<Mutex<Vec<FileStart>>> = Arc::default();
    let seen = starts.clone();
    let manager = ModelManager::new(Some(EventSink::new(move |e| {
        if let ModelEvent::FileStart(s) = e {
            seen.lock().unwrap().push(s);
        }
    })));
    let license =
        json!({ "license": "apache-2.0", "licenseUrl": "https://x/LICENSE", "note": "n" });
    let first = json!({
        "source": "url", "url": server.url("/d/diffusion.gguf"), "name": "Tiny Diffusion", "type": "diffusion",
        "components": [
            { "role": "llm", "source": "url", "url": server.url("/d/llm.gguf"), "provenance": license },
            { "role": "taesd", "source": "url", "url": server.url("/d/taesd.gguf") },
        ],
        "provenance": license, "modelDirectory": "shared-flux",
    });
    assert_eq!(DownloadConfig::unknown_key(&first), None);
    let info = manager
        .download(&data, "d1", &serde_json::from_value(first).unwrap())
        .await
        .unwrap();
    assert_eq!(info.provenance.as_ref().unwrap().license, "apache-2.0");
    assert_eq!(
        info.components["llm"]
            .provenance
            .as_ref()
            .unwrap()
            .license_url
            .as_deref(),
        Some("https://x/LICENSE")
    );
    assert!(info.components["taesd"].provenance.is_none());
    let starts_of = |id: &str| -> Vec<(Option<String>, usize, usize)> {
        let starts = starts.lock().unwrap();
        let of = starts.iter().filter(|s| s.download_id == id);
        of.map(|s| (s.role.clone(), s.index, s.total)).collect()
    };
    assert_eq!(
        starts_of("d1"),
        [
            (None, 1, 3),
            (Some("llm".into()), 2, 3),
            (Some("taesd".into()), 3, 3)
        ]
    );

    // A second model made of one new file and two files the first holds: those are linked, not
    // fetched again (0.26 kept such files once in a shared modelDirectory).
    let fetched = |path: &str| server.requests().iter().filter(|r| r.path == path).count();
    let before = (fetched("/d/llm.gguf"), fetched("/d/taesd.gguf"));
    let second = json!({
        "source": "url", "url": server.url("/d/other.gguf"), "name": "Other", "type": "diffusion",
        "components": [
            { "role": "llm", "source": "url", "url": server.url("/d/llm.gguf") },
            { "role": "taesd", "source": "url", "url": server.url("/d/taesd.gguf"), "checksum": sha256_hex(&tiny_gguf(1, 300)) },
        ],
        "modelDirectory": "shared-flux",
    });
    let other = manager
        .download(&data, "d2", &serde_json::from_value(second).unwrap())
        .await
        .unwrap();
    assert_eq!((fetched("/d/llm.gguf"), fetched("/d/taesd.gguf")), before);
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(&other.components["llm"].path),
            ino(&info.components["llm"].path)
        );
    }
    assert_eq!(
        other.components["taesd"].checksum,
        info.components["taesd"].checksum
    );
    // Deleting the first leaves the second whole.
    manager.delete(&data, &info.id).await.unwrap();
    assert!(manager.verify(&data, &other.id).await.unwrap().valid);

    // shardFiles: shards whose names say nothing of them.
    let split = json!({
        "source": "url", "url": server.url("/s/part1.gguf"), "name": "Parts", "type": "llm",
        "shardFiles": ["part1.gguf", "part2.gguf"],
    });
    let parts = manager
        .download(&data, "d3", &serde_json::from_value(split).unwrap())
        .await
        .unwrap();
    assert_eq!(parts.shards.len(), 2);
    assert_eq!(parts.shards[1].source.url, server.url("/s/part2.gguf"));
    for (shards, needle) in [
        (
            json!(["part2.gguf", "part1.gguf"]),
            "begin with the model file",
        ),
        (json!(["part1.gguf", "../x.gguf"]), "must be a file name"),
    ] {
        let bad = json!({ "source": "url", "url": server.url("/s/part1.gguf"), "name": "Bad", "type": "llm", "shardFiles": shards });
        let err = manager
            .download(&data, "d4", &serde_json::from_value(bad).unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }

    // Keys no field takes are named, at the top and in components.
    for (config, key) in [
        (
            json!({ "source": "url", "url": "u", "name": "n", "type": "llm", "sha": "x" }),
            "sha",
        ),
        (
            json!({ "source": "url", "url": "u", "name": "n", "type": "llm",
                    "components": [{ "role": "vae", "source": "url", "url": "u", "mirror": 1 }] }),
            "components[0].mirror",
        ),
    ] {
        assert_eq!(DownloadConfig::unknown_key(&config).as_deref(), Some(key));
    }
}

#[tokio::test]
async fn metadata_is_read_again_from_the_file_or_the_source() {
    let server = FileServer::start().await;
    let url = server.add("/m.gguf", tiny_gguf(4, 1000));
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let manager = ModelManager::new(None);
    let mut info = manager
        .download(&data, "d", &url_config("m", &url, None))
        .await
        .unwrap();
    // A record written by an older version, without the header's facts.
    info.gguf_metadata = None;
    store::write(&data, &info).await.unwrap();
    for from in [
        MetadataSource::LocalOnly,
        MetadataSource::RemoteOnly,
        MetadataSource::LocalRemote,
        MetadataSource::RemoteLocal,
    ] {
        let updated = manager.update_metadata(&data, "m", from).await.unwrap();
        assert_eq!(updated.gguf_metadata.unwrap()["block_count"], 4, "{from:?}");
    }
    assert_eq!(
        store::read(&data, "m")
            .await
            .unwrap()
            .gguf_metadata
            .unwrap()["block_count"],
        4
    );
    // The source gone, the file still answers; both gone, the model is damaged.
    server.set(Behaviour {
        status: Some(404),
        ..Default::default()
    });
    assert!(
        manager
            .update_metadata(&data, "m", MetadataSource::RemoteLocal)
            .await
            .is_ok()
    );
    assert!(
        manager
            .update_metadata(&data, "m", MetadataSource::RemoteOnly)
            .await
            .is_err()
    );
    std::fs::write(&info.path, b"garbage").unwrap();
    let err = manager
        .update_metadata(&data, "m", MetadataSource::LocalOnly)
        .await
        .unwrap_err();
    assert!(matches!(err, ModelError::Corrupt { .. }), "{err:?}");
}

#[tokio::test]
async fn an_llm_component_in_the_wrong_place_registers_nothing_and_old_records_get_capabilities() {
    let server = FileServer::start().await;
    let url = server.add("/m.gguf", tiny_gguf(2, 1000));
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let manager = ModelManager::new(None);
    // A language model given as the projector.
    let config: DownloadConfig = serde_json::from_value(json!({
        "source": "url", "url": url, "name": "vlm", "type": "llm",
        "components": [{ "role": "mmproj", "source": "url", "url": server.url("/m.gguf") }],
    }))
    .unwrap();
    let err = manager.download(&data, "d", &config).await.unwrap_err();
    assert!(matches!(err, ModelError::Invalid(_)), "{err:?}");
    assert!(
        err.to_string().contains("not a multimodal projector"),
        "{err}"
    );
    assert!(!tmp.path().join("models/llm/vlm").exists());
    assert!(manager.list(&data, None).await.unwrap().is_empty());

    let plain = manager
        .download(&data, "d", &url_config("plain", &url, None))
        .await
        .unwrap();
    assert_eq!(plain.capabilities, [Capability::Chat]);
    // A record written before capabilities were: read from its header, a projector taken for vision.
    let dir = tmp.path().join("models/llm/old");
    let mut old = record("old", &dir.join("m.gguf"));
    old["size"] = json!(2);
    old["ggufMetadata"] = json!({ "raw": { "general.architecture": "llama" } });
    old["components"] = json!({ "mmproj": {
        "path": dir.join("p.gguf"), "size": 1, "checksum": "00",
        "source": { "type": "url", "url": "http://127.0.0.1:9/p.gguf" },
    } });
    plant(&dir, old);
    std::fs::write(dir.join("m.gguf"), "m").unwrap();
    std::fs::write(dir.join("p.gguf"), "p").unwrap();
    let info = manager.get(&data, "old").await.unwrap();
    assert_eq!(info.capabilities, [Capability::Chat, Capability::Vision]);
}
