//! Cross builds: a backend built here for another platform, with that platform's cross compiler.
//! One exists today: Windows x64 from Linux with MinGW-w64, which is how this project builds and
//! tests its Windows backends (under Wine) without a Windows machine.
//!
//! A cross build is for the CPU: a GPU backend for another platform needs that platform's SDK.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::BinaryError;
use super::source::which;

/// A platform a source build can target from this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ts_rs::TS)]
pub enum CrossPlatform {
    /// Windows x64 executables (`.exe`), built with MinGW-w64's POSIX-threads compilers
    /// (`x86_64-w64-mingw32-gcc-posix`, `-g++-posix`; Debian's `g++-mingw-w64-x86-64-posix`) and
    /// linked statically (and stripped), so that they need no MinGW DLL beside them.
    #[serde(rename = "win32-x64")]
    Win32X64,
}

/// Compilers of the MinGW-w64 target, POSIX threads flavour: ggml and the servers use C++
/// threads, which the Win32 flavour of GCC 12 lacks.
const MINGW_TRIPLE: &str = "x86_64-w64-mingw32";
const MINGW_CC: &str = "x86_64-w64-mingw32-gcc-posix";
const MINGW_CXX: &str = "x86_64-w64-mingw32-g++-posix";
const MINGW_RC: &str = "x86_64-w64-mingw32-windres";

/// What mingw-w64 headers before version 11 (Debian 12 has 10) lack for ggml-cpu.c, which sets
/// its threads' power throttling on Windows 10 targets; with newer headers this is a no-op.
/// `SetThreadInformation` is looked up at run time, as Windows before 8 lacks it.
const MINGW_COMPAT_H: &str = r#"/* Written by genai-electron's cross build: what mingw-w64 < 11 lacks. */
#ifndef GENAI_ELECTRON_MINGW_COMPAT_H
#define GENAI_ELECTRON_MINGW_COMPAT_H
#include <windows.h>
#ifndef THREAD_POWER_THROTTLING_CURRENT_VERSION
typedef struct { ULONG Version; ULONG ControlMask; ULONG StateMask; } THREAD_POWER_THROTTLING_STATE;
#define THREAD_POWER_THROTTLING_CURRENT_VERSION 1
#define THREAD_POWER_THROTTLING_EXECUTION_SPEED 0x1
#define ThreadPowerThrottling 4
static inline BOOL genai_electron_set_thread_information(HANDLE thread, int kind, LPVOID info, DWORD size) {
    typedef BOOL (WINAPI *Set)(HANDLE, int, LPVOID, DWORD);
    Set set = (Set)(void (*)(void))GetProcAddress(GetModuleHandleA("kernel32.dll"), "SetThreadInformation");
    return set ? set(thread, kind, info, size) : FALSE;
}
#define SetThreadInformation genai_electron_set_thread_information
#endif
#endif
"#;

impl CrossPlatform {
    pub fn as_str(self) -> &'static str {
        match self {
            CrossPlatform::Win32X64 => "win32-x64",
        }
    }

    pub fn exe_suffix(self) -> &'static str {
        match self {
            CrossPlatform::Win32X64 => ".exe",
        }
    }

    /// The compilers this platform needs, found on PATH; an error names the missing one and the
    /// package that has it.
    pub fn compilers(self) -> Result<[PathBuf; 3], BinaryError> {
        let find = |program: &str| {
            which(program).ok_or_else(|| BinaryError::CrossToolchain {
                platform: self.as_str(),
                missing: format!(
                    "{program} (Debian: g++-mingw-w64-x86-64-posix and binutils-mingw-w64-x86-64)"
                ),
            })
        };
        Ok([find(MINGW_CC)?, find(MINGW_CXX)?, find(MINGW_RC)?])
    }

    /// Writes the CMake toolchain file (and what it includes) into `dir` and returns the CMake
    /// options of the cross build: the toolchain, and no OpenMP (its runtime would be a DLL to
    /// ship; ggml's own threads serve).
    pub async fn prepare(self, dir: &Path) -> Result<Vec<String>, BinaryError> {
        let [cc, cxx, rc] = self.compilers()?;
        let compat = dir.join("mingw-compat.h");
        write_if_changed(&compat, MINGW_COMPAT_H).await?;
        let toolchain = dir.join("toolchain.cmake");
        write_if_changed(&toolchain, &toolchain_file(&cc, &cxx, &rc, &compat)).await?;
        Ok(vec![
            format!("-DCMAKE_TOOLCHAIN_FILE={}", toolchain.display()),
            "-DGGML_OPENMP=OFF".into(),
        ])
    }
}

/// Leaves a file that already says `text` untouched: CMake configures again (checking the
/// compilers, seconds) whenever its toolchain file is newer than its cache.
async fn write_if_changed(path: &Path, text: &str) -> Result<(), BinaryError> {
    if tokio::fs::read_to_string(path).await.ok().as_deref() == Some(text) {
        return Ok(());
    }
    super::source::write_atomic(path, text.as_bytes()).await
}

/// A CMake toolchain file for Windows x64 with these MinGW-w64 tools. Windows 10 is the target
/// (cpp-httplib refuses older ones); the C files force-include the compat header.
fn toolchain_file(cc: &Path, cxx: &Path, rc: &Path, compat: &Path) -> String {
    let cmake_path = |p: &Path| p.display().to_string().replace('\\', "/");
    format!(
        "set(CMAKE_SYSTEM_NAME Windows)\n\
         set(CMAKE_SYSTEM_PROCESSOR x86_64)\n\
         set(CMAKE_C_COMPILER \"{cc}\")\n\
         set(CMAKE_CXX_COMPILER \"{cxx}\")\n\
         set(CMAKE_RC_COMPILER \"{rc}\")\n\
         set(CMAKE_FIND_ROOT_PATH /usr/{MINGW_TRIPLE})\n\
         set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)\n\
         set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)\n\
         set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)\n\
         set(CMAKE_C_FLAGS_INIT \"-D_WIN32_WINNT=0x0A00 -include {compat}\")\n\
         set(CMAKE_CXX_FLAGS_INIT \"-D_WIN32_WINNT=0x0A00\")\n\
         set(CMAKE_EXE_LINKER_FLAGS_INIT \"-static -s\")\n",
        cc = cmake_path(cc),
        cxx = cmake_path(cxx),
        rc = cmake_path(rc),
        compat = cmake_path(compat),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toolchain_targets_windows_10_with_static_links() {
        let text = toolchain_file(
            Path::new("/usr/bin/x86_64-w64-mingw32-gcc-posix"),
            Path::new("/usr/bin/x86_64-w64-mingw32-g++-posix"),
            Path::new("/usr/bin/x86_64-w64-mingw32-windres"),
            Path::new("/w/build-win32-x64/mingw-compat.h"),
        );
        assert!(text.contains("set(CMAKE_SYSTEM_NAME Windows)"));
        assert!(text.contains("set(CMAKE_CXX_COMPILER \"/usr/bin/x86_64-w64-mingw32-g++-posix\")"));
        assert!(text.contains("-include /w/build-win32-x64/mingw-compat.h"));
        assert!(text.contains("set(CMAKE_EXE_LINKER_FLAGS_INIT \"-static -s\")"));
    }

    #[test]
    fn platforms_are_named_as_node_names_them() {
        let parsed: CrossPlatform = serde_json::from_str("\"win32-x64\"").unwrap();
        assert_eq!(parsed, CrossPlatform::Win32X64);
        assert_eq!(parsed.as_str(), "win32-x64");
        assert_eq!(parsed.exe_suffix(), ".exe");
        assert!(serde_json::from_str::<CrossPlatform>("\"win32-arm64\"").is_err());
    }
}
