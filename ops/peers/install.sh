#!/bin/sh
# The peers `just bench peers` runs beside voicebus, in their own venv (.venv-peers) so their
# pins never touch .venv: Pipecat 1.14 with its local Whisper, Piper and Silero pieces, and
# llama.cpp's OpenAI-compatible server for the same SmolLM2 file (compiles once, ~3 min, with
# the same build flags as voicebus's: ops/llama_build.sh).
set -eu
cd "$(dirname "$0")/../.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv-peers/bin/python ] || "$PY" -m venv .venv-peers
.venv-peers/bin/python -m pip install -q --upgrade pip
. ops/llama_build.sh
.venv-peers/bin/python -c 'import llama_cpp' 2>/dev/null ||
    llama_install .venv-peers/bin/python 'llama-cpp-python[server]==0.3.36'
.venv-peers/bin/python -m pip install -q 'pipecat-ai[silero,whisper,piper]==1.14.0' \
    'llama-cpp-python[server]==0.3.36'
echo "installed: .venv-peers (Pipecat 1.14, llama_cpp.server)" >&2
