//! Building a backend from a pinned source archive with CMake: for platforms without a fitting
//! prebuilt release (CUDA on Linux, Linux arm64) and for machines that cannot reach GitHub.
//!
//! The archive (a local path or a URL) is checked against its sha256 before anything is
//! unpacked; the build reuses its folder, so a second build with the same options only checks.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::cross::CrossPlatform;
use super::extract::{self, ArchiveKind};
use super::manifest::{Accel, Backend, BinaryKind};
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
    /// What to build for (default `auto`).
    #[serde(default)]
    #[ts(as = "Option<SourceAccel>", optional)]
    pub accel: SourceAccel,
    /// Build for another platform than this one, with its cross compiler (default: this
    /// platform). `win32-x64` makes Windows executables on Linux with MinGW-w64, for the CPU. A
    /// cross build's executables cannot run here: they are not probed and not installed for this
    /// machine; the result's `path` is where they were built (under `workDir`).
    #[serde(default)]
    #[ts(optional)]
    pub platform: Option<CrossPlatform>,
}

/// What a source build is for. One Vulkan build serves the CPU too: with no usable Vulkan
/// device (or with `gpuLayers: 0`) it runs on the CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ts_rs::TS)]
#[serde(rename_all = "lowercase")]
pub enum SourceAccel {
    /// Vulkan when its toolchain is here (`glslc` and the Vulkan C++ headers), else the CPU; a
    /// Vulkan build that fails is built again for the CPU. The progress events say which, and
    /// why.
    #[default]
    Auto,
    /// The CPU only.
    Cpu,
    /// Vulkan (`GGML_VULKAN`, `SD_VULKAN`); an error when its toolchain is missing or it fails.
    Vulkan,
}

pub struct BuildPlan<'a> {
    pub kind: BinaryKind,
    pub spec: &'a SourceSpec,
    /// Holds `source/`, `build/` and the downloaded archive; kept between builds.
    pub work_dir: &'a Path,
}

/// The executables a build made, and what it was built for.
pub struct Built {
    pub executables: Vec<PathBuf>,
    /// `cpu`, `vulkan`, or the GPU backend the CMake options chose (`cuda`, `metal`, …).
    pub variant: String,
}

/// What a build is for: its variant's name and the CMake options that choose it.
struct Target {
    variant: String,
    cmake_args: &'static [&'static str],
}

impl Target {
    fn accel(backend: Backend, accel: Accel) -> Target {
        Target {
            variant: accel.as_str().into(),
            cmake_args: backend.accel_cmake_args(accel),
        }
    }
}

/// Builds and returns the path of every executable of the backend (llama-server, or sd-cli and
/// sd-server), found in the build tree.
/// `steps` hears the compile's progress, `(done, total)`, as the build tool prints it.
pub async fn build(
    plan: &BuildPlan<'_>,
    report: &(dyn Fn(Stage, &str) + Send + Sync),
    steps: EventSink<(u64, u64)>,
) -> Result<Built, BinaryError> {
    let cmake = which("cmake").ok_or(BinaryError::CmakeMissing)?;
    let backend = plan.kind.backend();
    let auto = plan.spec.accel == SourceAccel::Auto;
    let chosen = chosen_gpu(&plan.spec.cmake_args);
    if let Some(platform) = plan.spec.platform {
        return cross_build(plan, platform, &cmake, report, steps).await;
    }
    let target = match (plan.spec.accel, chosen) {
        (SourceAccel::Cpu, _) => Target::accel(backend, Accel::Cpu),
        (SourceAccel::Vulkan, _) => {
            vulkan_toolchain(&plan.spec.cmake_args)
                .map_err(|missing| BinaryError::VulkanToolchain { missing })?;
            Target::accel(backend, Accel::Vulkan)
        }
        // The options chose the GPU backend, or the platform's default is one (Metal on macOS).
        (SourceAccel::Auto, Some(variant)) => Target {
            variant,
            cmake_args: &[],
        },
        (SourceAccel::Auto, None) => match vulkan_toolchain(&plan.spec.cmake_args) {
            Ok(()) => Target::accel(backend, Accel::Vulkan),
            Err(missing) => {
                report(Stage::Build, &format!("for the CPU: {missing}"));
                Target::accel(backend, Accel::Cpu)
            }
        },
    };
    let archive = obtain_archive(plan, report).await?;
    let source_root = unpack(plan, &archive, report).await?;
    let vulkan = target.variant == Accel::Vulkan.as_str();
    match compile(
        plan,
        &cmake,
        &source_root,
        &target,
        None,
        report,
        steps.clone(),
    )
    .await
    {
        Err(BinaryError::BuildFailed { step, reason }) if auto && vulkan => {
            report(
                Stage::Build,
                &format!("for the CPU: the Vulkan build failed at {step}: {reason}"),
            );
            let cpu = Target::accel(backend, Accel::Cpu);
            compile(plan, &cmake, &source_root, &cpu, None, report, steps).await
        }
        result => result,
    }
}

/// A build for another platform: for the CPU, in a build folder of its own beside this
/// platform's (the unpacked sources are shared).
async fn cross_build(
    plan: &BuildPlan<'_>,
    platform: CrossPlatform,
    cmake: &Path,
    report: &(dyn Fn(Stage, &str) + Send + Sync),
    steps: EventSink<(u64, u64)>,
) -> Result<Built, BinaryError> {
    if plan.spec.accel == SourceAccel::Vulkan {
        return Err(BinaryError::CrossToolchain {
            platform: platform.as_str(),
            missing:
                "a GPU SDK for that platform (cross builds are for the CPU: accel 'cpu' or 'auto')"
                    .into(),
        });
    }
    platform.compilers()?;
    let archive = obtain_archive(plan, report).await?;
    let source_root = unpack(plan, &archive, report).await?;
    let target = Target::accel(plan.kind.backend(), Accel::Cpu);
    compile(
        plan,
        cmake,
        &source_root,
        &target,
        Some(platform),
        report,
        steps,
    )
    .await
}

/// The GPU backend that CMake options or the platform choose without us: `-DGGML_CUDA=ON`
/// gives `cuda`; ggml builds for Metal on macOS unless told not to.
fn chosen_gpu(cmake_args: &[String]) -> Option<String> {
    const GPUS: [&str; 7] = ["CUDA", "HIP", "METAL", "MUSA", "SYCL", "OPENCL", "VULKAN"];
    let chosen = cmake_args.iter().find_map(|arg| {
        let (name, value) = arg.strip_prefix("-D")?.split_once('=')?;
        let name = name.split(':').next()?;
        let gpu = name
            .strip_prefix("GGML_")
            .or_else(|| name.strip_prefix("SD_"))?;
        (GPUS.contains(&gpu) && ["ON", "1", "TRUE"].contains(&value.to_ascii_uppercase().as_str()))
            .then(|| gpu.to_ascii_lowercase())
    });
    chosen.or_else(|| cfg!(target_os = "macos").then(|| Accel::Metal.as_str().into()))
}

/// Configures and compiles for `target` (on `platform`, or this one) in the build folder
/// (reused: a second build with the same options only checks).
async fn compile(
    plan: &BuildPlan<'_>,
    cmake: &Path,
    source_root: &Path,
    target: &Target,
    platform: Option<CrossPlatform>,
    report: &(dyn Fn(Stage, &str) + Send + Sync),
    steps: EventSink<(u64, u64)>,
) -> Result<Built, BinaryError> {
    let build_dir = match platform {
        Some(platform) => plan.work_dir.join(format!("build-{}", platform.as_str())),
        None => plan.work_dir.join("build"),
    };

    let mut configure = vec![
        "-S".to_string(),
        path_arg(source_root),
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
            .chain(target.cmake_args)
            .map(|s| s.to_string()),
    );
    // CMake refuses a build folder made by another generator or for other sources.
    if stale_build_dir(&build_dir, source_root, which("ninja").is_some()).await {
        let _ = tokio::fs::remove_dir_all(&build_dir).await;
    }
    if let Some(platform) = platform {
        tokio::fs::create_dir_all(&build_dir)
            .await
            .map_err(|source| BinaryError::Io {
                path: build_dir.clone(),
                source,
            })?;
        configure.extend(platform.prepare(&build_dir).await?);
    }
    configure.extend(plan.spec.cmake_args.iter().cloned());
    let built_for = match platform {
        Some(platform) => format!("{}, {}", target.variant, platform.as_str()),
        None => target.variant.clone(),
    };
    report(Stage::Build, &format!("configure ({built_for})"));
    run_step(cmake, &configure, "configure", None).await?;

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
    run_step(cmake, &compile, "build", Some(progress)).await?;
    let mut optional = Vec::new();
    for target in plan.kind.optional_cmake_targets() {
        let mut args = build_target.clone();
        args.push(target.to_string());
        // A target this source does not have fails at once ("unknown target"): it is skipped.
        if run_step(cmake, &args, "build", None).await.is_ok() {
            optional.push(*target);
        }
    }

    let mut found = Vec::new();
    for target in plan.kind.cmake_targets().iter().chain(&optional) {
        let suffix = platform.map_or(std::env::consts::EXE_SUFFIX, CrossPlatform::exe_suffix);
        let name = format!("{target}{suffix}");
        let exe = super::find_file(&build_dir, std::slice::from_ref(&name))
            .await
            .ok_or_else(|| BinaryError::BuildFailed {
                step: "build".into(),
                reason: format!("{name} was not produced under {}", build_dir.display()),
            })?;
        found.push(exe);
    }
    Ok(Built {
        executables: found,
        variant: target.variant.clone(),
    })
}

/// What a Vulkan build needs that is missing here, if anything: the GLSL compiler (`glslc`) and
/// the Vulkan C++ headers, found where CMake's FindVulkan looks (the options given, the Vulkan
/// SDK, the system's include folders). The loader library is left to CMake.
pub(super) fn vulkan_toolchain(cmake_args: &[String]) -> Result<(), String> {
    let system_includes: &[&str] = if cfg!(unix) {
        &["/usr/include", "/usr/local/include"]
    } else {
        &[]
    };
    missing_vulkan_toolchain(
        cmake_args,
        which("glslc"),
        std::env::var_os("VULKAN_SDK").map(PathBuf::from),
        system_includes,
    )
    .map_or(Ok(()), Err)
}

/// Why a Vulkan build cannot be made with these options, this `glslc` on PATH, this Vulkan SDK
/// and these system include folders; `None` when it can.
fn missing_vulkan_toolchain(
    cmake_args: &[String],
    glslc_on_path: Option<PathBuf>,
    sdk: Option<PathBuf>,
    system_includes: &[&str],
) -> Option<String> {
    let given = |name: &str| {
        cmake_args.iter().find_map(|arg| {
            let (key, value) = arg.strip_prefix("-D")?.split_once('=')?;
            // `-DName=value` or `-DName:TYPE=value`.
            (key.split(':').next() == Some(name)).then(|| PathBuf::from(value))
        })
    };
    let sdk_glslc = sdk.as_ref().map(|sdk| {
        sdk.join("bin")
            .join(format!("glslc{}", std::env::consts::EXE_SUFFIX))
    });
    let glslc = given("Vulkan_GLSLC_EXECUTABLE")
        .into_iter()
        .chain(glslc_on_path)
        .chain(sdk_glslc)
        .any(|exe| exe.is_file());
    if !glslc {
        return Some("no GLSL compiler (glslc: Debian's glslc package, or the Vulkan SDK)".into());
    }
    let headers = given("Vulkan_INCLUDE_DIR")
        .into_iter()
        .chain(sdk.map(|sdk| sdk.join("include")))
        .chain(system_includes.iter().map(PathBuf::from))
        .any(|dir| dir.join("vulkan").join("vulkan.hpp").is_file());
    if !headers {
        return Some(
            "no Vulkan C++ headers (vulkan/vulkan.hpp: Debian's libvulkan-dev, or the Vulkan SDK; or pass -DVulkan_INCLUDE_DIR=…)"
                .into(),
        );
    }
    None
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

    #[test]
    fn a_vulkan_build_needs_glslc_and_the_cpp_headers() {
        use super::missing_vulkan_toolchain as missing;
        let tmp = tempfile::tempdir().unwrap();
        let glslc = tmp.path().join("glslc");
        std::fs::write(&glslc, "").unwrap();
        let include = tmp.path().join("include");
        std::fs::create_dir_all(include.join("vulkan")).unwrap();
        let given_include = format!("-DVulkan_INCLUDE_DIR:PATH={}", include.display());

        let why = missing(&[], None, None, &[]).unwrap();
        assert!(why.contains("glslc"), "{why}");
        // glslc alone is not enough; nor are C headers without the C++ ones.
        std::fs::write(include.join("vulkan/vulkan.h"), "").unwrap();
        let why = missing(
            std::slice::from_ref(&given_include),
            Some(glslc.clone()),
            None,
            &[],
        )
        .unwrap();
        assert!(why.contains("vulkan.hpp"), "{why}");

        std::fs::write(include.join("vulkan/vulkan.hpp"), "").unwrap();
        assert_eq!(
            missing(&[given_include], Some(glslc.clone()), None, &[]),
            None
        );
        let system = include.to_str().unwrap();
        assert_eq!(missing(&[], Some(glslc.clone()), None, &[system]), None);
        let given_glslc = format!("-DVulkan_GLSLC_EXECUTABLE={}", glslc.display());
        assert_eq!(missing(&[given_glslc], None, None, &[system]), None);
        // The Vulkan SDK's layout: bin/glslc, include/vulkan.
        std::fs::create_dir_all(tmp.path().join("bin")).unwrap();
        let sdk_glslc = format!("glslc{}", std::env::consts::EXE_SUFFIX);
        std::fs::write(tmp.path().join("bin").join(sdk_glslc), "").unwrap();
        assert_eq!(missing(&[], None, Some(tmp.path().into()), &[]), None);
        // A glslc named but absent does not count.
        let absent = format!(
            "-DVulkan_GLSLC_EXECUTABLE={}",
            tmp.path().join("none").display()
        );
        assert!(missing(&[absent], None, None, &[system]).is_some());
    }

    #[test]
    fn options_that_choose_a_gpu_backend_are_kept() {
        use super::chosen_gpu;
        let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(
            chosen_gpu(&args(&["-DGGML_CUDA=ON"])).as_deref(),
            Some("cuda")
        );
        assert_eq!(
            chosen_gpu(&args(&["-DSD_HIP:BOOL=1"])).as_deref(),
            Some("hip")
        );
        assert_eq!(
            chosen_gpu(&args(&["-DGGML_VULKAN=on"])).as_deref(),
            Some("vulkan")
        );
        let platform_default = cfg!(target_os = "macos").then_some("metal");
        assert_eq!(
            chosen_gpu(&args(&["-DGGML_CUDA=OFF"])).as_deref(),
            platform_default
        );
        assert_eq!(
            chosen_gpu(&args(&["-DGGML_NATIVE=ON"])).as_deref(),
            platform_default
        );
    }
}
