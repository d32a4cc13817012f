#!/usr/bin/env bash
# The demo: provisions the backends and models (npm run backends, cached), then runs
# examples/demo.js, which chats with a real model and makes an image through the library.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools
ensure_node_modules
step "backends and models (built once, then cached)"
GENAI_ELECTRON_DEMO_BACKENDS=$(provision_backends)
export GENAI_ELECTRON_DEMO_BACKENDS
export GENAI_ELECTRON_DATA_DIR="${GENAI_ELECTRON_DATA_DIR:-$GENAI_ELECTRON_DEV_CACHE/demo-data}"
step "demo"
node examples/demo.js
