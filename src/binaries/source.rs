//! Building a backend from a pinned source archive with CMake: for platforms without a fitting
//! prebuilt release (CUDA on Linux, Linux arm64) and for machines that cannot reach GitHub.
//!
//! The archive (a local path or a URL) is checked against its sha256 before anything is
//! unpacked; the build reuses its folder, so a second build with the same options only checks.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::extract::{self, ArchiveKind};
use super::manifest::BinaryKind;
use super::probe::{run_captured, tail};
use super::{BinaryError, Stage};
use crate::download;
use crate::events::EventSink;

/// A pinned source archive and how to build it with CMake.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "SourceBuildSpec")]
pub struct SourceSpec {
    /// Path of a `.tar.gz`/`.zip` file, or an http(s) URL.
    pub archive: String,
    /// sha256 of the archive, hex; checked before anything is unpacked.
    pub sha256: String,
    /// Folder of the top CMakeLists.txt inside the archive's top folder, e.g. `vendor/llama.cpp`
    /// (llama-cpp-python's sdist).
    #[serde(default)]
    #[ts(optional)]
    pub subdir: Option<String>,
    /// Extra CMake options after the lean defaults, e.g. `['-DGGML_CUDA=ON']`.
    #[serde(default)]
    #[ts(as = "Option<Vec<String>>", optional)]
    pub cmake_args: Vec<String>,
    /// Parallel compile jobs (default: all CPUs).
    #[serde(default)]
    #[ts(optional)]
    pub jobs: Option<u32>,
}

pub struct BuildPlan<'a> {
    pub kind: BinaryKind,
    pub spec: &'a SourceSpec,
    /// Holds `source/`, `build/` and the downloaded archive; kept between builds.
    pub work_dir: &'a Path,
}

/// Builds and returns the path of every executable of the backend (llama-server, or sd-cli and
/// sd-server), found in the build tree.
/// `steps` hears the compile's progress, `(done, total)`, as the build tool prints it.
pub async fn build(
    plan: &BuildPlan<'_>,
    report: &(dyn Fn(Stage, &str) + Send + Sync),
    steps: EventSink<(u64, u64)>,
) -> Result<Vec<PathBuf>, BinaryError> {
    let cmake = which("cmake").ok_or(BinaryError::CmakeMissing)?;
    let archive = obtain_archive(plan, report).await?;
    let source_root = unpack(plan, &archive, report).await?;
    let build_dir = plan.work_dir.join("build");

    let mut configure = vec![
        "-S".to_string(),
        path_arg(&source_root),
        "-B".into(),
        path_arg(&build_dir),
    ];
    configure.push("-DCMAKE_BUILD_TYPE=Release".into());
    if which("ninja").is_some() {
        configure.extend(["-G".into(), "Ninja".into()]);
    }
    configure.extend(
        plan.kind
            .backend()
            .default_cmake_args()
            .iter()
            .map(|s| s.to_string()),
    );
    configure.extend(plan.spec.cmake_args.iter().cloned());
    // CMake refuses a build folder made by another generator or for other sources.
    if stale_build_dir(&build_dir, &source_root, which("ninja").is_some()).await {
        let _ = tokio::fs::remove_dir_all(&build_dir).await;
    }
    report(Stage::Build, "configure");
    run_step(&cmake, &configure, "configure", None).await?;

    let jobs = plan
        .spec
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u32));
    let build_target = vec![
        "--build".to_string(),
        path_arg(&build_dir),
        "--config".into(),
        "Release".into(),
        "-j".into(),
        jobs.to_string(),
        "--target".into(),
    ];
    let mut compile = build_target.clone();
    compile.extend(plan.kind.cmake_targets().iter().map(|t| t.to_string()));
    report(Stage::Build, "compile");
    let progress = EventSink::new(move |line: String| {
        if let Some(done_of) = compile_progress(&line) {
            steps.emit(done_of);
        }
    });
    run_step(&cmake, &compile, "build", Some(progress)).await?;
    let mut optional = Vec::new();
    for target in plan.kind.optional_cmake_targets() {
        let mut args = build_target.clone();
        args.push(target.to_string());
        // A target this source does not have fails at once ("unknown target"): it is skipped.
        if run_step(&cmake, &args, "build", None).await.is_ok() {
            optional.push(*target);
        }
    }

    let mut found = Vec::new();
    for target in plan.kind.cmake_targets().iter().chain(&optional) {
        let name = format!("{target}{}", std::env::consts::EXE_SUFFIX);
        let exe = super::find_file(&build_dir, std::slice::from_ref(&name))
            .await
            .ok_or_else(|| BinaryError::BuildFailed {
                step: "build".into(),
                reason: format!("{name} was not produced under {}", build_dir.display()),
            })?;
        found.push(exe);
    }
    Ok(found)
}

async fn obtain_archive(
    plan: &BuildPlan<'_>,
    report: &(dyn Fn(Stage, &str) + Send + Sync),
) -> Result<PathBuf, BinaryError> {
    let spec = plan.spec;
    let is_url = spec.archive.starts_with("http://") || spec.archive.starts_with("https://");
    if !is_url {
        let path = PathBuf::from(&spec.archive);
        report(Stage::Verify, &spec.archive);
        let actual = download::sha256_file(&path)
            .await
            .map_err(|source| BinaryError::Io {
                path: path.clone(),
                source,
            })?;
        if !actual.eq_ignore_ascii_case(&spec.sha256) {
            return Err(BinaryError::SourceChecksum {
                archive: spec.archive.clone(),
                expected: spec.sha256.to_ascii_lowercase(),
                actual,
            });
        }
        return Ok(path);
    }
    let name = spec
        .archive
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("source.tar.gz");
    let dest = plan.work_dir.join(name);
    if download::sha256_file(&dest)
        .await
        .is_ok_and(|sha| sha.eq_ignore_ascii_case(&spec.sha256))
    {
        return Ok(dest);
    }
    report(Stage::Download, &spec.archive);
    download::download(&spec.archive, &dest, Some(&spec.sha256), &mut |_| {})
        .await
        .map_err(BinaryError::Download)?;
    Ok(dest)
}

/// Unpacks into `source/` once per archive checksum, and returns the folder to configure.
async fn unpack(
    plan: &BuildPlan<'_>,
    archive: &Path,
    report: &(dyn Fn(Stage, &str) + Send + Sync),
) -> Result<PathBuf, BinaryError> {
    let source_dir = plan.work_dir.join("source");
    let stamp = plan.work_dir.join("source.sha256");
    let unpacked = tokio::fs::read_to_string(&stamp)
        .await
        .is_ok_and(|s| s.trim().eq_ignore_ascii_case(&plan.spec.sha256));
    if !unpacked {
        report(Stage::Extract, &plan.spec.archive);
        let kind =
            ArchiveKind::from_name(&plan.spec.archive).ok_or_else(|| BinaryError::BuildFailed {
                step: "extract".into(),
                reason: format!("{} is neither .tar.gz nor .zip", plan.spec.archive),
            })?;
        let _ = tokio::fs::remove_dir_all(&source_dir).await;
        let (archive, dest) = (archive.to_path_buf(), source_dir.clone());
        tokio::task::spawn_blocking(move || extract::extract(&archive, kind, &dest))
            .await
            .map_err(|e| BinaryError::BuildFailed {
                step: "extract".into(),
                reason: e.to_string(),
            })?
            .map_err(BinaryError::Extract)?;
        write_atomic(&stamp, plan.spec.sha256.as_bytes()).await?;
    }
    // An sdist has one top folder (`llama_cpp_python-0.3.36/`); descend into it.
    let mut root = source_dir.clone();
    let mut entries = tokio::fs::read_dir(&source_dir)
        .await
        .map_err(|source| BinaryError::Io {
            path: source_dir.clone(),
            source,
        })?;
    let mut dirs = Vec::new();
    let mut others = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
            dirs.push(entry.path())
        } else {
            others += 1
        }
    }
    if dirs.len() == 1 && others == 0 {
        root = dirs.remove(0);
    }
    if let Some(subdir) = &plan.spec.subdir {
        let rel = extract::safe_relative(subdir)
            .map_err(BinaryError::Extract)?
            .unwrap_or_default();
        root = root.join(rel);
    }
    if !root.join("CMakeLists.txt").is_file() {
        return Err(BinaryError::BuildFailed {
            step: "configure".into(),
            reason: format!("no CMakeLists.txt in {} (check `subdir`)", root.display()),
        });
    }
    Ok(root)
}

async fn stale_build_dir(build_dir: &Path, source_root: &Path, ninja: bool) -> bool {
    let Ok(cache) = tokio::fs::read_to_string(build_dir.join("CMakeCache.txt")).await else {
        return false;
    };
    let home = format!("CMAKE_HOME_DIRECTORY:INTERNAL={}", source_root.display());
    cache.contains("CMAKE_GENERATOR:INTERNAL=Ninja") != ninja || !cache.lines().any(|l| l == home)
}

/// A build tool's progress line as `(done, total)`: Ninja's `[12/345] Building …`, or Make's
/// `[ 45%] Building …` as `(45, 100)`.
fn compile_progress(line: &str) -> Option<(u64, u64)> {
    let inside = line.trim_start().strip_prefix('[')?;
    let (count, _) = inside.split_once(']')?;
    let count = count.trim();
    if let Some(percent) = count.strip_suffix('%') {
        return Some((percent.trim().parse().ok()?, 100));
    }
    let (done, total) = count.split_once('/')?;
    Some((done.parse().ok()?, total.parse().ok()?))
}

async fn run_step(
    cmake: &Path,
    args: &[String],
    step: &str,
    on_line: Option<EventSink<String>>,
) -> Result<(), BinaryError> {
    let (exit, text) = run_captured(cmake, args, true, on_line)
        .await
        .map_err(|e| BinaryError::BuildFailed {
            step: step.into(),
            reason: format!("cannot run cmake: {e}"),
        })?;
    if exit.code == Some(0) {
        return Ok(());
    }
    Err(BinaryError::BuildFailed {
        step: step.into(),
        reason: format!("cmake exited with {exit}: {}", tail(&text)),
    })
}

pub(super) async fn write_atomic(path: &Path, content: &[u8]) -> Result<(), BinaryError> {
    crate::files::write_atomic(path, content)
        .await
        .map_err(|source| BinaryError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Finds a program on PATH, as a shell would (without running one).
pub fn which(program: &str) -> Option<PathBuf> {
    let name = format!("{program}{}", std::env::consts::EXE_SUFFIX);
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(&name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    #[test]
    fn compile_progress_is_read_from_ninja_and_make_lines() {
        use super::compile_progress;
        assert_eq!(
            compile_progress("[12/345] Building CXX object src/llama.cpp.o"),
            Some((12, 345))
        );
        assert_eq!(
            compile_progress("[ 45%] Building C object ggml.c.o"),
            Some((45, 100))
        );
        assert_eq!(compile_progress("-- Configuring done"), None);
        assert_eq!(compile_progress("[abc] nope"), None);
    }
}
