use super::*;
use crate::testing::{Behaviour, FileServer, bytes, sha256_hex};

fn no_progress() -> impl FnMut(Progress) + Send {
    |_| {}
}

#[tokio::test]
async fn downloads_and_verifies() {
    let server = FileServer::start().await;
    let data = bytes(300_000, 1);
    let url = server.add("/f.bin", data.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f.bin");
    let mut reports = Vec::new();
    let got = download(
        &url,
        &dest,
        Some(&sha256_hex(&data).to_uppercase()),
        &mut |p| reports.push(p),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!((got.bytes, got.resumed_from), (300_000, 0));
    assert_eq!(got.sha256, sha256_hex(&data));
    assert!(!part_path(&dest).exists());
    assert_eq!(
        reports.last(),
        Some(&Progress {
            downloaded: 300_000,
            total: Some(300_000)
        })
    );
}

#[tokio::test]
async fn a_broken_transfer_resumes_from_the_byte_where_it_stopped() {
    let server = FileServer::start().await;
    let data = bytes(500_000, 2);
    let url = server.add("/f.bin", data.clone());
    server.set(Behaviour {
        drop_after: Some(123_456),
        drops: 1,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f.bin");
    let got = download(&url, &dest, Some(&sha256_hex(&data)), &mut no_progress())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(got.resumed_from, 123_456);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].range_start, None);
    assert_eq!(requests[1].range_start, Some(123_456));
}

#[tokio::test]
async fn a_part_left_by_an_earlier_process_is_resumed() {
    let server = FileServer::start().await;
    let data = bytes(200_000, 3);
    let url = server.add("/f.bin", data.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f.bin");
    std::fs::write(part_path(&dest), &data[..50_000]).unwrap();
    let got = download(&url, &dest, Some(&sha256_hex(&data)), &mut no_progress())
        .await
        .unwrap();
    assert_eq!(got.resumed_from, 50_000);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
}

#[tokio::test]
async fn a_server_that_ignores_range_restarts_cleanly() {
    let server = FileServer::start().await;
    let data = bytes(100_000, 4);
    let url = server.add("/f.bin", data.clone());
    server.set(Behaviour {
        ignore_range: true,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f.bin");
    std::fs::write(part_path(&dest), b"garbage that is not the prefix").unwrap();
    let got = download(&url, &dest, Some(&sha256_hex(&data)), &mut no_progress())
        .await
        .unwrap();
    assert_eq!(got.resumed_from, 0);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
}

#[tokio::test]
async fn a_checksum_mismatch_removes_the_file() {
    let server = FileServer::start().await;
    let url = server.add("/f.bin", bytes(10_000, 5));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f.bin");
    let err = download(&url, &dest, Some(&"0".repeat(64)), &mut no_progress())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ChecksumError);
    assert_eq!(err.details()["expected"], "0".repeat(64));
    assert!(err.suggestion().unwrap().contains("removed"));
    assert!(!dest.exists() && !part_path(&dest).exists());
}

#[tokio::test]
async fn http_errors_and_bad_urls_are_typed() {
    let server = FileServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f.bin");
    let err = download(&server.url("/missing"), &dest, None, &mut no_progress())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DownloadHttpError);
    assert_eq!(err.details()["status"], 404);
    server.set(Behaviour {
        status: Some(500),
        ..Default::default()
    });
    let err = download(&server.url("/x"), &dest, None, &mut no_progress())
        .await
        .unwrap_err();
    assert_eq!(err.details()["status"], 500);
    for bad in ["not a url", "ftp://example.com/x", "file:///etc/passwd"] {
        let err = download(bad, &dest, None, &mut no_progress())
            .await
            .unwrap_err();
        assert!(matches!(err, DownloadError::BadUrl { .. }), "{bad}: {err}");
        assert_eq!(err.code(), ErrorCode::DownloadBadUrl);
    }
    assert!(!dest.exists());
}

#[tokio::test]
async fn a_connection_that_keeps_breaking_gives_up_with_the_part_kept() {
    let server = FileServer::start().await;
    let data = bytes(100_000, 6);
    let url = server.add("/f.bin", data.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f.bin");
    server.set(Behaviour {
        drop_after: Some(1000),
        drops: 1 + MAX_RESUMES,
        ..Default::default()
    });
    let err = download(&url, &dest, None, &mut no_progress())
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::Network { .. }), "{err}");
    assert!(
        part_path(&dest).exists(),
        "the part stays for a later resume"
    );
    // The next call finishes the job from where the part ends.
    let got = download(&url, &dest, Some(&sha256_hex(&data)), &mut no_progress())
        .await
        .unwrap();
    assert!(got.resumed_from > 0);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
}

#[tokio::test]
async fn sha256_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x");
    std::fs::write(&path, b"abc").unwrap();
    assert_eq!(
        sha256_file(&path).await.unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
