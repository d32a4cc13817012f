#!/usr/bin/env bash
# Runs every test: Rust unit tests, lints, and the JS suite against the built addon.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools
ensure_node_modules

# Every test's temporary files (data folders, servers' logs) go in one folder, removed at the end.
TMPDIR=$(mktemp -d -t genai-electron-tests-XXXXXX)
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

step "real backends and tiny models (npm run backends)"
# Assigned apart from `export`, which would hide a failure from `set -e`.
GENAI_ELECTRON_TEST_BACKENDS=$(provision_backends)
export GENAI_ELECTRON_TEST_BACKENDS
cat "$GENAI_ELECTRON_TEST_BACKENDS"
# The source-build tests use the project's cmake; with it on PATH they cannot skip.
export PATH="$GENAI_ELECTRON_DEV_CACHE/backends/venv/bin:$PATH"
export GENAI_ELECTRON_REQUIRE_CMAKE=1
# Where the Windows backends were cross-built, MinGW is here: the cross-build test cannot skip.
if [ "$(node -p 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).windows !== null' "$GENAI_ELECTRON_TEST_BACKENDS")" = true ]; then
  export GENAI_ELECTRON_REQUIRE_MINGW=1
fi

# Mesa's lavapipe, a Vulkan driver that runs on the CPU: the Vulkan tests run on it.
if need_packages libvulkan1 mesa-vulkan-drivers; then
  export GENAI_ELECTRON_REQUIRE_VULKAN=1
else
  echo "the Vulkan tests will skip: $why"
fi

# The fast tier's lints (npm run check); its tests run below with the real backends.
bash scripts/check.sh --lint

bash scripts/check-platforms.sh

step "cargo test"
cargo test 2>&1 | tee "$GENAI_ELECTRON_DEV_CACHE/cargo-test.log"
require_cargo_tests "$GENAI_ELECTRON_DEV_CACHE/cargo-test.log" >/dev/null

# The addon was built by `npm run backends` above. Not again: in a new clone napi's first build
# forces itself with an environment variable (NAPI_FORCE_BUILD_…) that a second build then lacks,
# which cargo takes for a change and compiles the crate again (52 s).

step "node --test __test__"
tap="$GENAI_ELECTRON_DEV_CACHE/node-test.tap"
node --test --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$tap" __test__/
passed=$(awk '/^# pass/ {print $3}' "$tap")
[ "${passed:-0}" -gt 0 ] || { echo "node --test ran no tests" >&2; exit 1; }

bash scripts/test-windows.sh
bash scripts/test-panel.sh
echo "all tests passed (cargo: see above; node: $passed; Windows and the panel: see above)"
