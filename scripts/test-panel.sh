#!/usr/bin/env bash
# The control panel's tests (examples/electron-control-panel): its handlers under Node, and the
# panel itself in Debian's Chromium (web mode) against the real backends, saving a screenshot of
# each tab to examples/electron-control-panel/test-results/. `npm test` runs this too.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools
ensure_node_modules

if [ -z "${GENAI_ELECTRON_TEST_BACKENDS:-}" ]; then
  step "real backends and tiny models (npm run backends)"
  GENAI_ELECTRON_TEST_BACKENDS=$(provision_backends)
  export GENAI_ELECTRON_TEST_BACKENDS
  build_addon
fi

step "Chromium (Debian's package)"
if ! need_command chromium chromium; then
  if [ "${CI:-}" = true ]; then
    echo "FAILED: the panel cannot be tested in a browser: $why" >&2
    exit 1
  fi
  echo "SKIPPED later: the browser tests ($why)"
fi
# Under CI a missing browser fails the browser test instead of skipping it.
if [ "${CI:-}" = true ]; then export GENAI_ELECTRON_REQUIRE_CHROMIUM=1; fi

build_panel
cd examples/electron-control-panel
step "tsc --noEmit (main, preload, renderer)"
npm run --silent typecheck

step "node --test (control panel)"
tap="$GENAI_ELECTRON_DEV_CACHE/panel-test.tap"
node --test --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$tap" test/*.test.js
passed=$(awk '/^# pass/ {print $3}' "$tap")
[ "${passed:-0}" -gt 0 ] || { echo "the panel's tests ran nothing" >&2; exit 1; }
echo "panel tests passed ($passed); screenshots in examples/electron-control-panel/test-results/"
