#!/usr/bin/env bash
# The demo: builds what it needs, then runs examples/demo.js.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools
ensure_node_modules
build_addon >&2
node examples/demo.js
