#!/usr/bin/env bash
# Type-checks and lints the Windows and macOS code paths (job objects, console events, Metal and
# Apple memory) with `cargo clippy --target …`: nothing is linked or run, so this proves the
# code compiles there, not that it works. What it needs is installed here on first use: the
# targets' standard libraries (rustup, kept in rustup's home) and their C compilers (MinGW and
# clang from Debian's packages, their .debs kept in the cache folder), since ring builds C for the
# target even for a check. Where that cannot be done (no rustup, no apt, not root), each target is
# skipped saying why; under CI a missing piece is an error, so every CI run lints both.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stubs="$GENAI_ELECTRON_DEV_CACHE/platform-stubs"

# Returns 1, with the reason in $why, when the target cannot be installed (need_command: lib.sh).
need_target() {
  local target=$1
  rustup target list --installed 2>/dev/null | grep -qx "$target" && return 0
  step "rustup target add $target"
  rustup target add "$target" || { why="cannot install the $target standard library (rustup target add $target)"; return 1; }
}

skip_or_fail() {
  if [ "${CI:-}" = true ]; then
    echo "FAILED: $1 cannot be checked: $2" >&2
    exit 1
  fi
  echo "SKIPPED: $1 ($2)"
}

# check TARGET [VAR=value…] [-- CARGO_ARG…]
check() {
  local target=$1 vars=() args=(); shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do vars+=("$1"); shift; done
  [ $# -eq 0 ] || { shift; args=("$@"); }
  step "cargo clippy --target $target"
  env "${vars[@]}" cargo clippy --lib --quiet --target "$target" "${args[@]}" \
    --target-dir "$GENAI_ELECTRON_DEV_CACHE/target-$target" -- -D warnings
}

if need_target x86_64-pc-windows-gnu && need_command x86_64-w64-mingw32-gcc gcc-mingw-w64-x86-64; then
  # napi-build links Node's import library for GNU targets; a check links nothing, so any file
  # by that name lets it through. The features are those the Windows addon is built with
  # (scripts/windows.sh), which shares this target folder.
  mkdir -p "$stubs/libnode" && touch "$stubs/libnode/libnode.dll"
  check x86_64-pc-windows-gnu LIBNODE_PATH="$stubs/libnode" -- --features napi/dyn-symbols
else
  skip_or_fail x86_64-pc-windows-gnu "$why"
fi

if need_target x86_64-apple-darwin && need_command clang clang; then
  # Without Apple's SDK, ring's C needs these few declarations to compile for macOS.
  mkdir -p "$stubs/macos"
  printf '#define TARGET_OS_MAC 1\n#define TARGET_OS_OSX 1\n#define TARGET_OS_IPHONE 0\n' > "$stubs/macos/TargetConditionals.h"
  printf '#define assert(x) ((void)0)\n' > "$stubs/macos/assert.h"
  printf '#include <stddef.h>\nvoid *memcpy(void *, const void *, size_t);\nvoid *memset(void *, int, size_t);\nint memcmp(const void *, const void *, size_t);\nvoid *memmove(void *, const void *, size_t);\n' > "$stubs/macos/string.h"
  check x86_64-apple-darwin CC_x86_64_apple_darwin=clang CFLAGS_x86_64_apple_darwin="-ffreestanding -I$stubs/macos"
else
  skip_or_fail x86_64-apple-darwin "$why"
fi
