#!/usr/bin/env bash
# The fast tier (npm run check): the lints, then the tests that need no backend: Rust unit tests
# and the orchestrator's worker against fake effects (the real-backend tests skip, saying so),
# and the JS tests of the project's own scripts. `npm test` runs the lints (--lint) and then the
# whole suite. Warm, this takes a minute or two.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools
ensure_node_modules

step "only src/js may use napi"
if grep -rlE '(^|[^a-z_])napi(_derive)?::|#\[napi|use napi' src | grep -v '^src/js/'; then
  echo "the files above import napi outside src/js" >&2
  exit 1
fi

step "imports go down the layers of src/lib.rs"
node scripts/check-layers.js

step "cargo fmt --check"
cargo fmt --check

step "biome: format and lint of the JS/TS (npm run format:js fixes the format)"
npx --no-install biome check .

step "cargo clippy (lints: Cargo.toml [lints], clippy.toml)"
cargo clippy --all-targets --quiet -- -D warnings

[ "${1:-}" = "--lint" ] && exit 0

step "cargo test --lib, without the real backends"
log="$GENAI_ELECTRON_DEV_CACHE/cargo-check.log"
env -u GENAI_ELECTRON_TEST_BACKENDS -u GENAI_ELECTRON_REQUIRE_CMAKE cargo test --lib 2>&1 | tee "$log"
passed=$(require_cargo_tests "$log")

step "node --test of the scripts"
node --test __test__/layers.test.js
echo "the fast tier passed ($passed Rust tests)"
