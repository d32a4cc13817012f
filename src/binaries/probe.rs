//! Does an executable run here? `--version` must exit 0 (a missing shared library or driver fails
//! already at load), and for a GPU build of llama-server, `--list-devices` must list a device of
//! that backend: a Vulkan build on a machine without a Vulkan driver starts, but on the CPU.
//! rpc-server has no `--version`: its `--help` must run and name its `--port` option.

use std::path::Path;
use std::time::Duration;

use super::manifest::{Accel, BinaryKind};
use crate::process::{ExitInfo, ProcessSpec, inherit_all};

const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Returns the first line the executable printed for `--version`, or why it failed.
pub async fn probe(exe: &Path, kind: BinaryKind, accel: Accel) -> Result<String, String> {
    if kind == BinaryKind::RpcServer {
        let help = run(exe, &["--help"]).await?;
        return if help.contains("--port") {
            Ok("rpc-server (llama.cpp)".into())
        } else {
            Err(format!(
                "`--help` does not describe an RPC server: {}",
                tail(&help)
            ))
        };
    }
    let version = run(exe, &["--version"]).await?;
    if kind == BinaryKind::LlamaServer
        && let Some(marker) = accel.device_marker()
    {
        let devices = run(exe, &["--list-devices"]).await?;
        if !devices.contains(marker) {
            return Err(format!(
                "no {marker} device found (--list-devices: {})",
                tail(&devices)
            ));
        }
    }
    Ok(version
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string())
}

async fn run(exe: &Path, args: &[&str]) -> Result<String, String> {
    let command = || format!("`{} {}`", exe.display(), args.join(" "));
    let (exit, text) = tokio::time::timeout(PROBE_TIMEOUT, run_captured(exe, args, false, None))
        .await
        .map_err(|_| {
            format!(
                "{} did not finish within {} s",
                command(),
                PROBE_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    if exit.code == Some(0) {
        Ok(text)
    } else {
        Err(format!("{} failed ({exit}): {}", command(), tail(&text)))
    }
}

/// Runs a program under the supervisor (argument vector, own process group, ends with us) and
/// returns how it exited with its output lines (stdout and stderr, the last 2000), each also
/// handed to `on_line` as it comes. Dropping the future ends it; `guarded` ends its whole tree
/// too (a build's ninja and compilers).
pub async fn run_captured<S: AsRef<std::ffi::OsStr>>(
    program: &Path,
    args: &[S],
    guarded: bool,
    on_line: Option<crate::events::EventSink<String>>,
) -> std::io::Result<(ExitInfo, String)> {
    let spec = ProcessSpec {
        program: program.to_path_buf(),
        args: args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect(),
        guarded,
        env: vec![],
        unset: inherit_all,
    };
    let child = crate::process::spawn(spec, on_line)?;
    let exit = child.wait().await;
    Ok((exit, child.logs.last(usize::MAX).join("\n")))
}

/// The last few hundred characters: where loaders and ggml put the reason.
pub fn tail(text: &str) -> String {
    let trimmed = text.trim();
    let start = trimmed.char_indices().rev().nth(400).map_or(0, |(i, _)| i);
    trimmed[start..].to_string()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn version_line_or_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let ok = script(tmp.path(), "ok", "echo; echo 'version: 1 (abc)'");
        assert_eq!(
            probe(&ok, BinaryKind::SdCli, Accel::Cpu).await.unwrap(),
            "version: 1 (abc)"
        );
        let broken = script(
            tmp.path(),
            "broken",
            "echo 'error while loading shared libraries: libcuda.so.1' >&2; exit 127",
        );
        let err = probe(&broken, BinaryKind::SdCli, Accel::Cpu)
            .await
            .unwrap_err();
        assert!(err.contains("libcuda.so.1") && err.contains("127"), "{err}");
        let err = probe(&tmp.path().join("missing"), BinaryKind::SdCli, Accel::Cpu)
            .await
            .unwrap_err();
        assert!(err.contains("cannot start"), "{err}");
    }

    #[tokio::test]
    async fn gpu_builds_of_llama_server_need_their_device() {
        let tmp = tempfile::tempdir().unwrap();
        let cpu_only = script(
            tmp.path(),
            "cpu",
            "case \"$1\" in --list-devices) echo 'Available devices:';; *) echo v1;; esac",
        );
        let err = probe(&cpu_only, BinaryKind::LlamaServer, Accel::Vulkan)
            .await
            .unwrap_err();
        assert!(err.contains("no Vulkan device"), "{err}");
        let vulkan = script(
            tmp.path(),
            "vk",
            "case \"$1\" in --list-devices) echo '  Vulkan0: Radeon (16384 MiB)';; *) echo v1;; esac",
        );
        assert_eq!(
            probe(&vulkan, BinaryKind::LlamaServer, Accel::Vulkan)
                .await
                .unwrap(),
            "v1"
        );
        assert!(
            probe(&cpu_only, BinaryKind::LlamaServer, Accel::Cpu)
                .await
                .is_ok()
        );
    }

    #[test]
    fn tail_keeps_the_end() {
        let long = "x".repeat(1000) + "END";
        assert!(tail(&long).ends_with("END"));
        assert!(tail(&long).len() <= 401);
    }
}
