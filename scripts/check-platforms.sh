#!/usr/bin/env bash
# Type-checks and lints the Windows and macOS code paths (job objects, console events, Metal and
# Apple memory) with `cargo clippy --target …`: nothing is linked or run, so this proves the
# code compiles there, not that it works. Each target is skipped, saying why, when its Rust
# standard library or C compiler is missing (ring builds C for the target even for a check).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

installed=$(rustup target list --installed 2>/dev/null || true)
stubs="$GENAI_ELECTRON_DEV_CACHE/platform-stubs"

check() {
  local target=$1; shift
  if ! grep -qx "$target" <<<"$installed"; then
    echo "SKIPPED: $target (its standard library is not installed: rustup target add $target)"
    return
  fi
  step "cargo clippy --target $target"
  env "$@" cargo clippy --lib --quiet --target "$target" \
    --target-dir "$GENAI_ELECTRON_DEV_CACHE/target-$target" -- -D warnings
}

if command -v x86_64-w64-mingw32-gcc >/dev/null; then
  # napi-build links Node's import library for GNU targets; a check links nothing, so any file
  # by that name lets it through.
  mkdir -p "$stubs/libnode" && touch "$stubs/libnode/libnode.dll"
  check x86_64-pc-windows-gnu LIBNODE_PATH="$stubs/libnode"
else
  echo "SKIPPED: x86_64-pc-windows-gnu (no MinGW C compiler: apt-get install gcc-mingw-w64-x86-64)"
fi

if command -v clang >/dev/null; then
  # Without Apple's SDK, ring's C needs these few declarations to compile for macOS.
  mkdir -p "$stubs/macos"
  printf '#define TARGET_OS_MAC 1\n#define TARGET_OS_OSX 1\n#define TARGET_OS_IPHONE 0\n' > "$stubs/macos/TargetConditionals.h"
  printf '#define assert(x) ((void)0)\n' > "$stubs/macos/assert.h"
  printf '#include <stddef.h>\nvoid *memcpy(void *, const void *, size_t);\nvoid *memset(void *, int, size_t);\nint memcmp(const void *, const void *, size_t);\nvoid *memmove(void *, const void *, size_t);\n' > "$stubs/macos/string.h"
  check x86_64-apple-darwin CC_x86_64_apple_darwin=clang CFLAGS_x86_64_apple_darwin="-ffreestanding -I$stubs/macos"
else
  echo "SKIPPED: x86_64-apple-darwin (no clang: apt-get install clang)"
fi
