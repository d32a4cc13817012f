# Shared set-up of the project's scripts (sourced): cache locations, npm packages, the addon.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Everything slow to rebuild lives here, outside the clone, so a second run is fast.
export GENAI_ELECTRON_DEV_CACHE="${GENAI_ELECTRON_DEV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/genai-electron-dev}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$GENAI_ELECTRON_DEV_CACHE/target}"
# The addon's release build keeps incremental data there too: a fresh clone's new file times made
# it compile the crate again (63 s on 2 cores); with it, 6 s. Published builds are not these.
export CARGO_PROFILE_RELEASE_INCREMENTAL="${CARGO_PROFILE_RELEASE_INCREMENTAL:-true}"
mkdir -p "$GENAI_ELECTRON_DEV_CACHE"

# A step's heading, with the seconds the script has run so far.
step() { printf '\n== %s (at %d s)\n' "$*" "$SECONDS"; }

require_tools() {
  local missing=()
  for tool in node npm cargo; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing tools: ${missing[*]} (install Node.js >= 20.17 and Rust via rustup)" >&2
    exit 1
  fi
}

ensure_node_modules() {
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    step "npm ci"
    npm ci --no-audit --no-fund
  fi
}

# cargo is incremental: with nothing changed this takes a second or two.
build_addon() {
  step "build the addon (release)"
  npm run --silent build
}

# The control panel (examples/electron-control-panel): its npm packages, installed again only when
# its lock file changes, and its build (tsc for the main process, vite for preload and renderer).
build_panel() {
  (
    cd examples/electron-control-panel
    if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
      step "npm ci (control panel)"
      # The electron package is there for its types; its binary comes from GitHub and is not needed.
      ELECTRON_SKIP_BINARY_DOWNLOAD=1 npm ci --no-audit --no-fund
    fi
    step "build the control panel (tsc, vite)"
    npm run --silent build
  )
}

# Provides the real backends and models (npm run backends, cached) and writes the JSON line it
# prints to the cache folder; echoes that file's path.
provision_backends() {
  local json="$GENAI_ELECTRON_DEV_CACHE/backends.json"
  # Called as $(provision_backends), where bash clears `set -e`: fail explicitly.
  bash scripts/backends.sh | tail -n 1 > "$json" || return 1
  echo "$json"
}

# Fails unless the cargo test output in file $1 counts at least one passed test.
require_cargo_tests() {
  local passed
  passed=$(grep -o 'test result: ok\. [0-9]* passed' "$1" | awk '{s += $4} END {print s + 0}')
  [ "$passed" -gt 0 ] || { echo "cargo test ran no tests" >&2; exit 1; }
  echo "$passed"
}

# Installs the Debian packages named that are not installed yet (their .debs kept in the cache
# folder). Returns 1, with the reason in $why, where it cannot.
why=""
need_packages() {
  local missing=() debs="$GENAI_ELECTRON_DEV_CACHE/apt-archives" package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    why="install the Debian packages ${missing[*]}"
    return 1
  fi
  step "apt-get install ${missing[*]}"
  mkdir -p "$debs/partial"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o Dir::Cache::Archives="$debs" -o APT::Sandbox::User=root "${missing[@]}"; } || { why="cannot install ${missing[*]}"; return 1; }
}

# Installs a Debian package when `command` is missing (its .debs kept in the cache folder).
# Returns 1, with the reason in $why, where it cannot (no apt, not root, no network).
need_command() {
  local command=$1 package=$2
  command -v "$command" >/dev/null && return 0
  need_packages "$package" || { why="no $command: $why"; return 1; }
}
