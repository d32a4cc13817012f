#!/usr/bin/env bash
# The control panel in web mode on this machine (npm run panel): provisions the backends and
# models (cached), builds the addon and the panel, then runs scripts/panel.js.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tools
ensure_node_modules
step "backends and models (built once, then cached)"
GENAI_ELECTRON_PANEL_BACKENDS=$(provision_backends)
export GENAI_ELECTRON_PANEL_BACKENDS
build_addon
build_panel
export GENAI_ELECTRON_DATA_DIR="${GENAI_ELECTRON_DATA_DIR:-$GENAI_ELECTRON_DEV_CACHE/panel-data}"
step "control panel (Ctrl-C stops it and its servers)"
exec node scripts/panel.js
