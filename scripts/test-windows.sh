#!/usr/bin/env bash
# The Windows tier: __test__/windows/ run by Windows Node under Wine, loading the addon built for
# Windows and running the backends cross-built for Windows (scripts/windows.sh, scripts/backends.sh).
# Expects GENAI_ELECTRON_TEST_BACKENDS (npm test sets it). Where Wine cannot be had the tier is
# skipped saying why; under CI that is an error.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

step "the Windows tier: Wine, Windows Node, the addon for Windows (scripts/windows.sh)"
runtime=$(bash scripts/windows.sh | tail -n 1)
backends=$(cat "${GENAI_ELECTRON_TEST_BACKENDS:?run through npm test}")
if [ "$runtime" = null ] || [ "$(node -p 'JSON.parse(process.argv[1]).windows' "$backends")" = null ]; then
  echo "SKIPPED: the Windows tier (see the reasons above)"
  exit 0
fi
field() { node -p 'JSON.parse(process.argv[1])[process.argv[2]]' "$runtime" "$1"; }
wine=$(field wine) node_exe=$(field node)
export WINEPREFIX WINEDEBUG=-all
WINEPREFIX=$(field prefix)

# Windows programs see this machine's files on drive Z:.
winpath() { printf 'Z:%s' "${1//\//\\}"; }
# Each run starts from an empty %APPDATA%\genai-electron and %TEMP% (a failed run leaves files).
rm -rf "$WINEPREFIX"/drive_c/users/*/AppData/Roaming/genai-electron "$WINEPREFIX"/drive_c/users/*/Temp/*
out="$GENAI_ELECTRON_DEV_CACHE/windows/run"
rm -rf "$out" && mkdir -p "$out"
# The backends' JSON as a Windows program reads it: every path on Z:, the Windows executables in
# place of the Linux ones.
node -e '
  const real = JSON.parse(process.argv[1])
  const win = (p) => "Z:" + p.replaceAll("/", "\\")
  const paths = (v) => typeof v === "string" && v.startsWith("/") ? win(v)
    : v && typeof v === "object" ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, paths(x)])) : v
  const { windows, ...rest } = real
  process.stdout.write(JSON.stringify({ ...paths(rest), ...paths(windows) }))
' "$backends" > "$out/backends.json"

# The package as a Windows user installs it: the main package and the win32-x64-msvc platform
# package (with the addon in it, as `napi prepublish` lays it out), packed and installed into an
# empty project (--force: npm here is on Linux, and the platform package is for Windows only).
app="$out/app"
mkdir -p "$app/tarballs" "$out/platform"
cp npm/win32-x64-msvc/package.json "$(field addon)" "$out/platform/"
main=$(npm pack --silent --pack-destination "$app/tarballs" "$ROOT" | tail -n 1)
platform=$(cd "$out/platform" && npm pack --silent --pack-destination "$app/tarballs" | tail -n 1)
(
  cd "$app"
  echo '{ "name": "app", "version": "1.0.0", "private": true }' > package.json
  npm install --silent --no-audit --no-fund --force "./tarballs/$main" "./tarballs/$platform"
)
export GENAI_ELECTRON_TEST_WINDOWS_APP
GENAI_ELECTRON_TEST_WINDOWS_APP=$(winpath "$app")

step "node --test __test__/windows (Windows Node under Wine)"
# Windows Node's stdout must be a file under Wine (a pipe gives EBADF). Each test file runs in
# its own node.exe; temporary files go to the prefix's %TEMP%.
export GENAI_ELECTRON_TEST_BACKENDS
GENAI_ELECTRON_TEST_BACKENDS=$(winpath "$out/backends.json")
tests=()
for file in __test__/windows/*.win.js; do tests+=("$(winpath "$ROOT/$file")"); done
status=0
# A hang under Wine ends at the limit, failing the tier, instead of holding CI.
timeout 600 "$wine" "$node_exe" --test --test-concurrency=1 \
  --test-reporter=spec --test-reporter-destination="$(winpath "$out/spec.txt")" \
  --test-reporter=tap --test-reporter-destination="$(winpath "$out/tap.txt")" \
  "${tests[@]}" > "$out/stdout.txt" 2>&1 || status=$?
cat "$out/spec.txt" "$out/stdout.txt"
# No Windows program outlives the tier (a test that failed half-way may have left one).
/usr/lib/wine/wineserver -k 2>/dev/null || true
passed=$(awk '/^# pass/ {print $3}' "$out/tap.txt")
failed=$(awk '/^# fail/ {print $3}' "$out/tap.txt")
[ "${passed:-0}" -gt 0 ] || { echo "the Windows tier ran no tests" >&2; exit 1; }
[ "$status" -eq 0 ] && [ "${failed:-1}" -eq 0 ] || { echo "the Windows tier failed (exit $status, $failed failed)" >&2; exit 1; }
echo "the Windows tier: $passed passed"
