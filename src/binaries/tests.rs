use super::*;
use crate::config::DataDirSource;
use crate::testing::{FileServer, sha256_hex};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// A release-shaped tar.gz whose `llama-server` is a shell script printing a version.
#[cfg(unix)]
fn fake_release(exe_body: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, body, mode) in [
        (
            "build/bin/llama-server",
            format!("#!/bin/sh\n{exe_body}\n"),
            0o755,
        ),
        ("build/bin/LICENSE", "MIT".to_string(), 0o644),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_path(name).unwrap();
        header.set_mode(mode);
        header.set_size(body.len() as u64);
        header.set_cksum();
        builder.append(&header, body.as_bytes()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn variant(accel: Accel, url: String, sha256: String) -> Variant {
    Variant {
        accel,
        url,
        sha256,
        dependencies: vec![],
    }
}

fn data_paths(dir: &Path) -> DataPaths {
    DataPaths::new(dir.to_path_buf(), DataDirSource::Configured)
}

fn recorder() -> (BinaryManager, Arc<Mutex<Vec<BinaryProgress>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (
        BinaryManager::new(Some(EventSink::new(move |e| sink.lock().unwrap().push(e)))),
        seen,
    )
}

fn no_gpu() -> GpuInfo {
    GpuInfo::default()
}

#[cfg(unix)]
#[tokio::test]
async fn installs_the_first_working_variant_then_answers_from_the_install() {
    let server = FileServer::start().await;
    let good = fake_release("echo 'version: 42 (test)'");
    let broken = fake_release("echo 'error while loading shared libraries' >&2; exit 127");
    let good_url = server.add("/rel/good.tar.gz", good.clone());
    let broken_url = server.add("/rel/broken.tar.gz", broken.clone());
    let tampered_url = server.add("/rel/tampered.tar.gz", good.clone());
    let opts = EnsureOptions {
        variants: Some(vec![
            variant(Accel::Cuda, good_url.clone(), sha256_hex(&good)),
            variant(Accel::Cpu, tampered_url, "0".repeat(64)),
            variant(Accel::Cpu, broken_url, sha256_hex(&broken)),
            variant(Accel::Cpu, good_url, sha256_hex(&good)),
        ]),
        version: Some("test-1".into()),
        ..Default::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = data_paths(tmp.path());
    let (manager, events) = recorder();
    let resolved = manager
        .ensure(BinaryKind::LlamaServer, &opts, &data, &no_gpu())
        .await
        .unwrap();
    assert_eq!(resolved.origin, Origin::Download);
    assert_eq!(resolved.variant, "cpu");
    assert_eq!(resolved.version.as_deref(), Some("version: 42 (test)"));
    assert!(resolved.path.ends_with("build/bin/llama-server"));
    // The CUDA variant was skipped without downloading: no NVIDIA GPU here.
    let fetched: Vec<_> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        fetched,
        [
            "/rel/tampered.tar.gz",
            "/rel/broken.tar.gz",
            "/rel/good.tar.gz"
        ]
    );
    let stages: Vec<_> = events.lock().unwrap().iter().map(|e| e.stage).collect();
    assert!(
        stages.contains(&Stage::Download)
            && stages.contains(&Stage::Extract)
            && stages.contains(&Stage::Probe)
    );
    // Downloads are removed after the install; the tampered file never got its name.
    let downloads = data.binaries.join("llama/test-1/downloads");
    assert_eq!(std::fs::read_dir(downloads).unwrap().count(), 0);

    // Second call: no network, no probe.
    events.lock().unwrap().clear();
    let again = manager
        .ensure(BinaryKind::LlamaServer, &opts, &data, &no_gpu())
        .await
        .unwrap();
    assert_eq!(again.origin, Origin::Installed);
    assert_eq!(again.path, resolved.path);
    assert_eq!(server.requests().len(), 3);
    assert!(events.lock().unwrap().is_empty());
}

#[cfg(unix)]
#[tokio::test]
async fn every_failure_is_listed_when_nothing_works() {
    let server = FileServer::start().await;
    let broken = fake_release("exit 3");
    let url = server.add("/broken.tar.gz", broken.clone());
    let opts = EnsureOptions {
        variants: Some(vec![
            variant(Accel::Vulkan, url.clone(), sha256_hex(&broken)),
            variant(Accel::Cpu, url.clone(), "f".repeat(64)),
            variant(Accel::Cpu, url, sha256_hex(&broken)),
            variant(Accel::Cpu, server.url("/missing.tar.gz"), "0".repeat(64)),
        ]),
        version: Some("test-2".into()),
        ..Default::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let err = BinaryManager::new(None)
        .ensure(
            BinaryKind::LlamaServer,
            &opts,
            &data_paths(tmp.path()),
            &no_gpu(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::BinaryNoWorkingVariant);
    let tried = err.details()["tried"].as_array().unwrap().clone();
    assert_eq!(tried.len(), 4);
    let reasons: Vec<&str> = tried
        .iter()
        .map(|t| t["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("Vulkan"), "{reasons:?}");
    assert!(reasons[1].contains("checksum"), "{reasons:?}");
    assert!(reasons[2].contains("does not run"), "{reasons:?}");
    assert!(reasons[3].contains("404"), "{reasons:?}");
    assert!(err.suggestion().is_some());
    // Nothing half-installed is left to be mistaken for an install.
    assert!(
        installed(
            &tmp.path().join("binaries/llama/test-2"),
            BinaryKind::LlamaServer
        )
        .await
        .is_none()
    );
}

#[tokio::test]
async fn a_platform_without_releases_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = EnsureOptions {
        variants: Some(vec![]),
        ..Default::default()
    };
    let err = BinaryManager::new(None)
        .ensure(BinaryKind::SdCli, &opts, &data_paths(tmp.path()), &no_gpu())
        .await
        .unwrap_err();
    assert!(matches!(err, BinaryError::NoRelease { .. }), "{err}");
    assert!(err.suggestion().unwrap().contains("source"));
}

#[cfg(unix)]
#[tokio::test]
async fn explicit_paths_are_probed_and_never_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("my-sd-server");
    std::fs::write(&exe, "#!/bin/sh\necho 'version unknown'\n").unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let manager = BinaryManager::new(None);
    let data = data_paths(tmp.path());
    let opts = EnsureOptions {
        path: Some(exe.clone()),
        ..Default::default()
    };
    let ok = manager
        .ensure(BinaryKind::SdServer, &opts, &data, &no_gpu())
        .await
        .unwrap();
    assert_eq!(
        (ok.origin, ok.path.clone(), ok.version.as_deref()),
        (Origin::Path, exe.clone(), Some("version unknown"))
    );

    let missing = EnsureOptions {
        path: Some(tmp.path().join("nope")),
        ..Default::default()
    };
    let err = manager
        .ensure(BinaryKind::SdServer, &missing, &data, &no_gpu())
        .await
        .unwrap_err();
    assert!(matches!(err, BinaryError::NotFound { .. }), "{err}");
    assert_eq!(err.details()["origin"], "the path option");

    let mut file = std::fs::File::create(&exe).unwrap();
    writeln!(file, "#!/bin/sh\nexit 1").unwrap();
    drop(file);
    let err = manager
        .ensure(BinaryKind::SdServer, &opts, &data, &no_gpu())
        .await
        .unwrap_err();
    assert!(matches!(err, BinaryError::ProbeFailed { .. }), "{err}");
}

#[tokio::test]
async fn source_checksum_mismatch_is_caught_before_building() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("src.tar.gz");
    std::fs::write(&archive, b"not the pinned archive").unwrap();
    let spec = SourceSpec {
        archive: archive.to_string_lossy().into_owned(),
        sha256: "0".repeat(64),
        subdir: None,
        cmake_args: vec![],
        jobs: None,
        accel: SourceAccel::Auto,
        platform: None,
    };
    let err = BinaryManager::new(None)
        .build_from_source(
            BinaryKind::LlamaServer,
            &spec,
            &data_paths(tmp.path()),
            None,
        )
        .await
        .unwrap_err();
    // Without cmake the build stops even earlier, with its own clear error.
    match err {
        BinaryError::SourceChecksum { ref actual, .. } => {
            assert_eq!(actual, &sha256_hex(b"not the pinned archive"))
        }
        BinaryError::CmakeMissing => assert!(err.suggestion().unwrap().contains("CMake")),
        other => panic!("{other}"),
    }
}

/// Whether cmake is on PATH; says SKIPPED for `test` when it is not. `npm test` puts the
/// project's cmake on PATH and sets GENAI_ELECTRON_REQUIRE_CMAKE, so there it cannot skip.
fn cmake_or_skip(test: &str) -> bool {
    if source::which("cmake").is_some() {
        return true;
    }
    assert!(
        std::env::var_os("GENAI_ELECTRON_REQUIRE_CMAKE").is_none(),
        "cmake is not on PATH"
    );
    eprintln!("SKIPPED {test}: cmake is not on PATH (npm test provides it)");
    false
}

/// A pinned source archive shaped like llama-cpp-python's sdist (`vendor/tool`), whose
/// `llama-server` prints what it was built for and whose `rpc-server` answers `--help` as
/// llama.cpp's does. Returns the archive's path and bytes.
fn fake_project(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let files = [
        (
            "proj-1.0/vendor/tool/CMakeLists.txt",
            // Says what it was built for; with FAIL_VULKAN its Vulkan build fails, as one with
            // headers too old for the sources does.
            "cmake_minimum_required(VERSION 3.14)\nproject(tool CXX)\n\
             if(GGML_VULKAN AND FAIL_VULKAN)\n  message(FATAL_ERROR \"Vulkan headers too old\")\nendif()\n\
             add_executable(llama-server main.cpp)\nadd_executable(rpc-server rpc.cpp)\n\
             if(GGML_VULKAN)\n  target_compile_definitions(llama-server PRIVATE BUILT_FOR=\"vulkan\")\n\
             else()\n  target_compile_definitions(llama-server PRIVATE BUILT_FOR=\"cpu\")\nendif()\n",
        ),
        (
            "proj-1.0/vendor/tool/rpc.cpp",
            "#include <cstdio>\nint main(){ std::puts(\"  -p, --port PORT\"); return 0; }\n",
        ),
        (
            "proj-1.0/vendor/tool/main.cpp",
            "#include <cstdio>\nint main(){ std::puts(\"version: source-build \" BUILT_FOR); return 0; }\n",
        ),
    ];
    for (name, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_path(name).unwrap();
        header.set_mode(0o644);
        header.set_size(body.len() as u64);
        header.set_cksum();
        builder.append(&header, body.as_bytes()).unwrap();
    }
    let bytes = builder.into_inner().unwrap().finish().unwrap();
    let archive = dir.join("proj-1.0.tar.gz");
    std::fs::write(&archive, &bytes).unwrap();
    (archive, bytes)
}

/// A real CMake build through the library's source path: a tiny C++ project named like the
/// backend. Needs cmake and a C++ compiler; `npm test` puts the project's cmake on PATH.
#[cfg(unix)]
#[tokio::test]
async fn builds_a_cmake_project_from_a_pinned_archive() {
    if !cmake_or_skip("builds_a_cmake_project_from_a_pinned_archive") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (archive, bytes) = fake_project(tmp.path());
    let spec = SourceSpec {
        archive: archive.to_string_lossy().into_owned(),
        sha256: sha256_hex(&bytes),
        subdir: Some("vendor/tool".into()),
        // Our lean defaults name llama.cpp options; CMake only warns about unused ones.
        cmake_args: vec![],
        jobs: Some(1),
        accel: SourceAccel::Cpu,
        platform: None,
    };
    let (manager, events) = recorder();
    let data = data_paths(tmp.path());
    let built = manager
        .build_from_source(BinaryKind::LlamaServer, &spec, &data, None)
        .await
        .unwrap();
    assert_eq!(built.origin, Origin::Source);
    assert_eq!(built.variant, "cpu");
    let output = std::process::Command::new(&built.path).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "version: source-build cpu"
    );
    let stages: Vec<_> = events.lock().unwrap().iter().map(|e| e.stage).collect();
    assert!(stages.contains(&Stage::Build) && stages.contains(&Stage::Extract));
    // The compile reports its steps as the build tool counts them, up to the last one.
    let steps: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| e.steps)
        .collect();
    let &BuildSteps { done, total } = steps.last().expect("compile steps were reported");
    assert!(done == total && total > 0, "{steps:?}");
    // The install is remembered like a downloaded one.
    let again = installed(&data.binaries.join("llama/source"), BinaryKind::LlamaServer)
        .await
        .unwrap();
    assert_eq!(again.path, built.path);
    // The RPC worker, where the source has it under one of its names, is built and probed too
    // (this one has `rpc-server`, not `ggml-rpc-server`).
    let rpc = installed(&data.binaries.join("llama/source"), BinaryKind::RpcServer)
        .await
        .unwrap();
    assert!(rpc.path.ends_with("rpc-server"), "{}", rpc.path.display());

    // A toolchain for Vulkan (glslc and the C++ headers, named as CMake takes them): the same
    // build folder is configured again and built for Vulkan.
    let include = tmp.path().join("vk-include");
    std::fs::create_dir_all(include.join("vulkan")).unwrap();
    std::fs::write(include.join("vulkan/vulkan.hpp"), "").unwrap();
    let toolchain = vec![
        format!("-DVulkan_INCLUDE_DIR={}", include.display()),
        format!("-DVulkan_GLSLC_EXECUTABLE={}", archive.display()),
    ];
    let built_for = |spec: SourceSpec| {
        let (manager, data) = (&manager, &data);
        async move {
            let built = manager
                .build_from_source(BinaryKind::LlamaServer, &spec, data, None)
                .await?;
            let output = std::process::Command::new(&built.path).output().unwrap();
            let said = String::from_utf8_lossy(&output.stdout).trim().to_string();
            Ok::<_, BinaryError>((built.variant, said))
        }
    };
    let vulkan = SourceSpec {
        cmake_args: toolchain.clone(),
        accel: SourceAccel::Vulkan,
        platform: None,
        ..spec.clone()
    };
    let (variant, said) = built_for(vulkan).await.unwrap();
    assert_eq!(
        (variant.as_str(), said.as_str()),
        ("vulkan", "version: source-build vulkan")
    );

    // Where the Vulkan build fails, `auto` builds for the CPU and says why; `vulkan` is an error.
    let failing = [toolchain, vec!["-DFAIL_VULKAN=ON".into()]].concat();
    events.lock().unwrap().clear();
    let auto = SourceSpec {
        cmake_args: failing.clone(),
        accel: SourceAccel::Auto,
        platform: None,
        ..spec.clone()
    };
    let (variant, said) = built_for(auto).await.unwrap();
    assert_eq!(
        (variant.as_str(), said.as_str()),
        ("cpu", "version: source-build cpu")
    );
    let why = events
        .lock()
        .unwrap()
        .iter()
        .find(|e| e.detail.starts_with("for the CPU"))
        .map(|e| e.detail.clone())
        .expect("the fallback is reported");
    assert!(
        why.contains("Vulkan build failed at configure") && why.contains("too old"),
        "{why}"
    );
    let vulkan = SourceSpec {
        cmake_args: failing,
        accel: SourceAccel::Vulkan,
        platform: None,
        ..spec
    };
    let err = built_for(vulkan).await.unwrap_err();
    assert!(
        matches!(err, BinaryError::BuildFailed { ref step, .. } if step == "configure"),
        "{err}"
    );
}

/// An explicit Vulkan build without its toolchain stops before anything is unpacked, with what
/// is missing (here: the C++ headers, named in an empty folder, unless the system has them).
#[tokio::test]
async fn a_vulkan_build_without_its_toolchain_is_a_typed_error() {
    if !cmake_or_skip("a_vulkan_build_without_its_toolchain_is_a_typed_error") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let spec = SourceSpec {
        archive: tmp
            .path()
            .join("absent.tar.gz")
            .to_string_lossy()
            .into_owned(),
        sha256: "0".repeat(64),
        subdir: None,
        cmake_args: vec![format!("-DVulkan_INCLUDE_DIR={}", tmp.path().display())],
        jobs: None,
        accel: SourceAccel::Vulkan,
        platform: None,
    };
    let err = BinaryManager::new(None)
        .build_from_source(BinaryKind::SdServer, &spec, &data_paths(tmp.path()), None)
        .await
        .unwrap_err();
    match source::vulkan_toolchain(&spec.cmake_args) {
        Err(missing) => {
            assert_eq!(err.code(), ErrorCode::VulkanToolchainMissing, "{err}");
            assert_eq!(err.details()["missing"], serde_json::json!(missing));
            assert!(err.to_string().contains(&missing), "{err}");
            assert!(err.suggestion().unwrap().contains("accel: 'cpu'"));
        }
        // A machine with the whole toolchain installed goes on to the archive, which is absent.
        Ok(()) => assert!(matches!(err, BinaryError::Io { .. }), "{err}"),
    }
}

/// A cross build is for the CPU: asking it for Vulkan stops before anything is read, with what
/// it would need.
#[tokio::test]
async fn a_cross_build_for_a_gpu_is_a_typed_error() {
    if !cmake_or_skip("a_cross_build_for_a_gpu_is_a_typed_error") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let spec = SourceSpec {
        archive: tmp.path().join("absent.tar.gz").display().to_string(),
        sha256: "0".repeat(64),
        subdir: None,
        cmake_args: vec![],
        jobs: None,
        accel: SourceAccel::Vulkan,
        platform: Some(CrossPlatform::Win32X64),
    };
    let err = BinaryManager::new(None)
        .build_from_source(
            BinaryKind::LlamaServer,
            &spec,
            &data_paths(tmp.path()),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::CrossToolchainMissing, "{err}");
    assert_eq!(err.details()["platform"], "win32-x64");
    assert!(
        err.to_string().contains("cross builds are for the CPU"),
        "{err}"
    );
}

/// A cross build for Windows of the fake project with MinGW: `.exe` files (PE images) in a build
/// folder of their own, found for both kinds, neither probed nor recorded as this machine's
/// install; a second build leaves the toolchain file alone (CMake would configure again).
/// `npm test` installs MinGW's POSIX-threads compilers and sets GENAI_ELECTRON_REQUIRE_MINGW.
#[tokio::test]
async fn a_cross_build_makes_windows_executables_and_installs_nothing() {
    if !cmake_or_skip("a_cross_build_makes_windows_executables_and_installs_nothing") {
        return;
    }
    if let Err(missing) = CrossPlatform::Win32X64.compilers() {
        assert!(
            std::env::var_os("GENAI_ELECTRON_REQUIRE_MINGW").is_none(),
            "{missing}"
        );
        eprintln!(
            "SKIPPED a_cross_build_makes_windows_executables_and_installs_nothing: {missing}"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (archive, bytes) = fake_project(tmp.path());
    let spec = SourceSpec {
        archive: archive.display().to_string(),
        sha256: sha256_hex(&bytes),
        subdir: Some("vendor/tool".into()),
        cmake_args: vec![],
        jobs: Some(1),
        accel: SourceAccel::Auto,
        platform: Some(CrossPlatform::Win32X64),
    };
    let (manager, events) = recorder();
    let data = data_paths(tmp.path());
    let work = tmp.path().join("work");
    let build = |kind| manager.build_from_source(kind, &spec, &data, Some(&work));
    let built = build(BinaryKind::LlamaServer).await.unwrap();
    assert_eq!(
        (built.variant.as_str(), built.origin),
        ("cpu", Origin::Source)
    );
    let folder = work.join("build-win32-x64");
    assert!(built.path.starts_with(&folder), "{}", built.path.display());
    assert!(built.path.ends_with("llama-server.exe"));
    assert_eq!(
        &std::fs::read(&built.path).unwrap()[..2],
        b"MZ",
        "a Windows executable"
    );
    let stages: Vec<_> = events.lock().unwrap().iter().map(|e| e.stage).collect();
    assert!(!stages.contains(&Stage::Probe), "{stages:?}");
    assert!(
        installed(&data.binaries.join("llama/source"), BinaryKind::LlamaServer)
            .await
            .is_none(),
        "not recorded as this machine's install"
    );

    let toolchain = folder.join("toolchain.cmake");
    let written = std::fs::metadata(&toolchain).unwrap().modified().unwrap();
    let rpc = build(BinaryKind::RpcServer).await.unwrap();
    assert!(
        rpc.path.ends_with("rpc-server.exe"),
        "{}",
        rpc.path.display()
    );
    assert_eq!(
        std::fs::metadata(&toolchain).unwrap().modified().unwrap(),
        written
    );
}
