# voicebus: a local, event-sourced, streaming voice assistant. `just` lists the recipes.

set dotenv-load := true
set positional-arguments := true
set shell := ["bash", "-cu"]

python := if path_exists(".venv/bin/python") == "true" { ".venv/bin/python" } else { "python3" }

# List the recipes
default:
    @{{just_executable()}} --list --unsorted

# Install everything into .venv (llama-cpp-python compiles: ~3 minutes once) [--xtts]
install *ARGS:
    @sh ops/install.sh "$@"

# One spoken turn (or one per FILE.wav) through every worker on the embedded models [--json]
demo *ARGS:
    @{{python}} -m workers.cli.demo "$@"

# Run the test suite (ruff, then pytest; extra args go to pytest)
test *ARGS:
    @{{python}} -m ruff check .
    @{{python}} -m pytest "$@"

# The suite ROUNDS times (default 5) beside a CPU hog per core; pass/fail per round
stress ROUNDS="5" *ARGS:
    sh ops/stress.sh {{ROUNDS}} {{ARGS}}

# Start the embedded NATS server (JetStream) in the foreground, unless one listens at NATS_URL [--cluster 3]
nats *ARGS:
    @{{python}} -m workers.runtime.natsd "$@"

# Create or update the JetStream streams (their one owner; STREAM_REPLICAS copies); `up` and the tools run it too
nats-setup:
    @{{python}} -m workers.runtime.streams

# Create the NATS credentials file (DATA_DIR/nats/credentials.env, mode 0600) if missing
nats-credentials:
    @{{python}} -m workers.runtime.security

# Create or upgrade the event log's tables (Alembic) at DATABASE_URL
migrate *ARGS:
    @{{python}} -m workers.runtime.eventlog.migrate upgrade "$@"

# Run one worker: mic, stt, llm, tts, speaker or recorder (extra args go to it)
worker NAME *ARGS:
    @{{python}} -m workers.{{NAME}} "${@:2}"

# Run all workers as services on the live microphone and speakers (Ctrl-C stops them cleanly)
up *ARGS:
    @{{python}} -m workers.cli.up "$@"

# Serve the pipeline as Wyoming services (asr, tts, handle) for Home Assistant [--uri tcp://HOST:PORT]
wyoming *ARGS:
    @{{python}} -m workers.wyoming "$@"

# The web page at http://127.0.0.1:8765 (WEB_HOST, WEB_PORT), with the services it needs; prints its URL
web *ARGS:
    @{{python}} -m workers.cli.web "$@"

# Benchmarks: bus, stt, llm, tts, e2e, turn, load N, answers, peers, wyoming, web, aec, wake (side by side in one run)
bench NAME *ARGS:
    @{{python}} -m ops.bench "$@"

# Transcribe WAV files through the mic (file source) and stt workers [--json] [--fast]
transcribe +ARGS:
    @{{python}} -m workers.cli.transcribe "$@"

# Ask the llm worker a question over the bus [--conversation ID] [--json]
ask +ARGS:
    @{{python}} -m workers.cli.ask "$@"

# Speak TEXT through the tts worker into a WAV: just say "Hello." --out hello.wav [--json]
say +ARGS:
    @{{python}} -m workers.cli.say "$@"

# List recorded conversations (when, turns, first words, latency)
conversations *ARGS:
    @{{python}} -m workers.cli.conversations "$@"

# Replay conversation ID through the current pipeline and compare [--speed fast] [--listen]
replay +ARGS:
    @{{python}} -m workers.cli.replay "$@"

# Terminal waterfall of a conversation's turns [--export-jaeger FILE.json]
trace +ARGS:
    @{{python}} -m workers.cli.trace "$@"

# Check the event log's integrity (all conversations, or one ID)
verify *ARGS:
    @{{python}} -m workers.cli.verify "$@"

# Delete old conversations: just purge --older-than 30d [--dry-run]
purge +ARGS:
    @{{python}} -m workers.cli.purge "$@"

# ruff check and format check
lint:
    @{{python}} -m ruff check .
    @{{python}} -m ruff format --check .
