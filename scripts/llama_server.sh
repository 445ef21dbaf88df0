#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (the embedded model's server) once per machine and link it into
# .venv/bin. The source is the llama.cpp that llama-cpp-python's sdist vendors, at the version pinned
# in constraints.txt (PyPI is the one source this needs; llama.cpp is MIT). Only the server target is
# built, statically: about 7 minutes on 2 cores, then cached in ~/.cache/selfinstruct-service.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^llama_cpp_python==//p' constraints.txt)
[ -n "$version" ] || { echo "error: constraints.txt pins no llama_cpp_python" >&2; exit 1; }
# built for this CPU (llama.cpp's default, several times faster than a generic build): the key holds
# the CPU's flags, so a cache shared with another kind of machine is not used there
cpu=$(grep -m1 '^flags' /proc/cpuinfo | md5sum | cut -c1-8)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/selfinstruct-service/llama-server-$version-$(uname -m)-$cpu-noamx"
# No AMX, even where the CPU reports it: on VMs that report it without letting a process use the tile
# registers, ggml's AMX matrix multiply dies of SIGSEGV at its first `ldtilecfg` (when the model is
# loaded). The AVX-512 path it falls back to is plenty for a 270M model.
flags=()
if [ "$(uname -m)" = x86_64 ]; then
    noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    flags=("-DCMAKE_C_FLAGS=$noamx" "-DCMAKE_CXX_FLAGS=$noamx")
fi
# LLAMA_SERVER_PORTABLE=1: llama.cpp's generic build instead (GGML_NATIVE=OFF; on x86-64 that is AVX2
# and FMA, no AVX-512), whose floating point differs from the native one's, to check that the model
# tests hold on another build. It has a cache of its own, leaves .venv/bin alone and prints its path
# (the one line on stdout).
portable=()
out=1
log=$PWD/.run/llama-server-build.log
if [ "${LLAMA_SERVER_PORTABLE:-}" = 1 ]; then
    portable=(-DGGML_NATIVE=OFF)
    out=2
    log=$PWD/.run/llama-server-build-portable.log
    cache="${cache%-"$cpu"-noamx}-portable"
fi
mkdir -p "$cache" .run
exec 9> "$cache/.lock"
flock 9  # a second set-up waits for the first one's build instead of building alongside it
if [ ! -x "$cache/llama-server" ]; then
    echo "==> building llama-server from llama.cpp (vendored by llama-cpp-python $version;" \
        "~7 minutes, once)" >&"$out"
    for tool in cmake g++; do
        command -v "$tool" >/dev/null || { echo "error: building llama-server needs $tool" >&2; exit 1; }
    done
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT INT TERM
    src="$work/llama_cpp_python-$version/vendor/llama.cpp"
    # no web UI (nothing to download), no TLS or curl: the server only listens on loopback
    if ! {
        .venv/bin/pip download --no-deps --no-binary llama_cpp_python -d "$work" "llama_cpp_python==$version" &&
            tar xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work" &&
            cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
                -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
                -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
                "${flags[@]}" "${portable[@]}" &&
            cmake --build "$work/build" --target llama-server -j "$(nproc)"
    } > "$log" 2>&1; then
        tail -30 "$log" >&"$out"
        echo "error: the llama-server build failed; the log is $log" >&2
        exit 1
    fi
    install -m 755 "$work/build/bin/llama-server" "$cache/llama-server.part"
    mv "$cache/llama-server.part" "$cache/llama-server"
fi
if [ ${#portable[@]} -gt 0 ]; then
    echo "$cache/llama-server"  # for LOCAL_MODEL_SERVER
    exit 0
fi
ln -sf "$cache/llama-server" .venv/bin/llama-server
