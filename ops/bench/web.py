"""`just bench web`: what the web page's audio path adds to voice-to-voice.

The same spoken questions (synthesized with the bundled voice, one conversation per side),
in one run, alternating sides per round:
- demo: `just demo q1.wav q2.wav ...` (mic worker reading the files in real time, the WAV
  sink's clock), its voice-to-voice from the event log;
- web: `just web`, and chromium (headless, Debian's) whose microphone is one WAV holding the
  same questions with silence between them; voice-to-voice as the browser measures it, from
  the real end of speech (the capture clock: when the graph processed the sample, less the
  microphone's reported input latency) to the first reply sample heard (the output device's
  position clock, getOutputTimestamp, which includes the output latency), and the log's
  figure for the same turns.
Printed: median and spread per side, and the difference of medians (the gateway, the
WebSocket and the browser's audio path; target <= 30 ms). Both sides run on the same NATS
and models; the machine's other load makes single figures noisy, so read the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ops.bench.stt import synth_piper
from workers.runtime.audio import resample_float, write_wav
from workers.runtime.natsd import free_port

QUESTIONS = [
    "What is the capital of France?",
    "What is the capital of Italy?",
    "How far away is the moon?",
    "What is a good name for a cat?",
]
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
GAP_S = 15.0
"""Silence after each question in the browser's microphone: the reply plays in full first."""


STAGES = ("endpoint_wait", "stt_final", "llm_first_sentence", "tts_first_audio", "playback_start")


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def env_for(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        NATS_URL=f"nats://127.0.0.1:{free_port()}",
        DATA_DIR=str(tmp / "data"),
        DATABASE_URL=f"sqlite:///{tmp / 'voice.db'}",
        PYTHONPATH=str(ROOT),
        LLM_TEMPERATURE=os.environ.get("LLM_TEMPERATURE", "0"),
    )
    for key in ("ENDPOINT", "ENDPOINTS", "POOL", "WORKER_ID", "NATS_USER", "NATS_PASSWORD"):
        env.pop(key, None)
    return env


def start_web(env: dict[str, str], tmp: Path) -> tuple[subprocess.Popen, str]:
    err = open(tmp / "web.stderr", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli.web", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=err,
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline().decode().strip()
        if line.startswith("http://"):
            return proc, line
    raise RuntimeError(f"`just web` printed no URL; see {tmp / 'web.stderr'}")


def demo_side(env: dict[str, str], wavs: list[Path]) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli.demo", *map(str, wavs), "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode != 0:
        raise RuntimeError(f"demo failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return [t["timings_ms"] for t in result["turns"]]


def chromium_args(wav: Path) -> list[str]:
    return [
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
    ]


def open_page(pw: Any, url: str, wav: Path) -> tuple[Any, Any]:
    """Chromium on the page with Talk pressed, its microphone reading `wav`."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args(wav))
    page = browser.new_page()
    page.goto(url)
    page.wait_for_function("window.voicebus && window.voicebus.ready === true")
    page.evaluate("voicebus.audio.start()")
    page.get_by_role("button", name="Talk").click()
    return browser, page


def demo_beside_page(env: dict[str, str], wavs: list[Path], url: str, silence: Path) -> list[dict]:
    """The demo side while the page is open and listening (to silence) in chromium: both
    sides then pay the browser's CPU, and the difference is the web path's own."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser, _ = open_page(pw, url, silence)
        try:
            time.sleep(2)  # past the page's start
            return demo_side(env, wavs)
        finally:
            browser.close()


def web_side(url: str, wav: Path, turns: int, db: Path) -> list[tuple[float, dict]]:
    """(browser voice-to-voice, the log's timings) per turn."""
    from playwright.sync_api import sync_playwright

    from workers.runtime.eventlog import EventLog, timings

    with sync_playwright() as pw:
        browser, page = open_page(pw, url, wav)
        page.wait_for_function(
            f"document.querySelectorAll('li.turn .waterfall .row').length >= 5 * {turns}"
            f" && voicebus.turns.length >= {turns}",
            timeout=int((turns * (GAP_S + 10) + 60) * 1000),
        )
        measured = page.evaluate("voicebus.turns")
        browser.close()
    log = EventLog(f"sqlite:///{db}", migrate=False)
    try:
        out = []
        for m in measured:
            row = log.turn(m["utterance_id"])
            out.append((float(m["browser_v2v_ms"]), timings(row).as_dict() if row else {}))
        return out
    finally:
        log.close()


def summary(xs: list[float]) -> str:
    if not xs:
        return "no turns"
    med = statistics.median(xs)
    return f"median {med:6.0f} ms  (min {min(xs):.0f}, max {max(xs):.0f}, n={len(xs)})"


def report(demo: list[list[dict]], web_runs: list[list[tuple[float, dict]]]) -> dict:
    """Print the figures of a run (the turns of each side, by round) and return them."""
    demo_ms = [v for run in demo for t in run if (v := t.get("voice_to_voice")) is not None]
    browser_ms = [b for run in web_runs for b, _ in run]
    web_log_ms = [v for run in web_runs for _, t in run if (v := t.get("voice_to_voice"))]
    # The same question in the same round, web and demo: the sides' turns paired.
    pairs = [
        (q, d, b, t)
        for dr, wr in zip(demo, web_runs, strict=False)
        for q, (d, (b, t)) in enumerate(zip(dr, wr, strict=False))
    ]

    def log_diffs(key: str) -> list[float]:
        """Web minus demo of one log timing, over the pairs that have it on both sides."""
        return [
            t[key] - d[key]
            for _, d, _, t in pairs
            if d.get(key) is not None and t.get(key) is not None
        ]

    paired = [
        b - d["voice_to_voice"] for _, d, b, _ in pairs if d.get("voice_to_voice") is not None
    ]
    # The same pairs on the log's clock (speech end to playback-started as the endpoints
    # recorded them): what the gateway and the shared pipeline add, without the browser.
    paired_log = log_diffs("voice_to_voice")
    by_question: dict[int, list[float]] = {}
    for q, d, b, _ in pairs:
        if d.get("voice_to_voice") is not None:
            by_question.setdefault(q, []).append(b - d["voice_to_voice"])
    output_path = [
        b - t["voice_to_voice"] for run in web_runs for b, t in run if t.get("voice_to_voice")
    ]
    waits = {
        "demo": [v for run in demo for t in run if (v := t.get("endpoint_wait")) is not None],
        "web": [v for run in web_runs for _, t in run if (v := t.get("endpoint_wait"))],
    }
    med = statistics.median
    added = med(browser_ms) - med(demo_ms) if browser_ms and demo_ms else float("nan")
    print("voice-to-voice, real end of speech to the first reply sample heard")
    print(f"  just demo (event log)      {summary(demo_ms)}")
    print(f"  web page (browser clock)   {summary(browser_ms)}")
    print(f"  web page (event log)       {summary(web_log_ms)}")
    print(
        f"  added by the web path: {added:+.0f} ms (median web browser - median demo; target <= 30)"
    )
    if paired:
        print(
            f"  same question, same round, web - demo: median {med(paired):+.0f} ms "
            f"{sorted(round(x) for x in paired)}"
        )
    if paired_log:
        print(f"  same pairs, log's clock (gateway + pipeline): median {med(paired_log):+.0f} ms")
    for q, xs in sorted(by_question.items()):
        spread = sorted(round(x) for x in xs)
        print(f"  question {q + 1}: web - demo median {med(xs):+.0f} ms {spread}")
    # Where the pairs differ, stage by stage: the gateway's own stages (end-pointer wait,
    # playback start) against the shared ones (stt, llm, tts), which run the same code on the
    # same models and differ by what was heard and by the CPU the browser takes from them.
    for stage in STAGES:
        if xs := log_diffs(stage):
            print(f"  {stage} (web - demo, same pairs): median {med(xs):+.0f} ms")
    if output_path:
        print(f"  browser output path (browser - log, web): median {med(output_path):+.0f} ms")
    for side, xs in waits.items():
        if xs:
            print(f"  end-pointer wait ({side}): median {med(xs):.0f} ms")
    return {
        "demo": demo,
        "web": [[{"browser_v2v_ms": b, **t} for b, t in run] for run in web_runs],
        "added_ms": round(added, 1),
        "paired_median_ms": round(med(paired), 1) if paired else None,
        "output_path_median_ms": round(med(output_path), 1) if output_path else None,
        "paired_log_median_ms": round(med(paired_log), 1) if paired_log else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="just bench web", description=__doc__)
    ap.add_argument("--questions", type=int, default=3, help="questions per round (max 4)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; sides alternate first")
    ap.add_argument(
        "--browser-beside-demo",
        action="store_true",
        help="run the demo side with the page open and listening to silence beside it (the "
        "browser's CPU on both sides: what the web path itself adds)",
    )
    ap.add_argument("--json", action="store_true", help="last stdout line: the figures as JSON")
    args = ap.parse_args(argv)
    questions = QUESTIONS[: max(1, min(len(QUESTIONS), args.questions))]
    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    env = env_for(tmp)
    progress(f"synthesizing {len(questions)} questions")
    speech = [synth_piper(q) for q in questions]
    lead = np.zeros(8_000, dtype=np.int16)  # 0.5 s at 16 kHz
    demo_wavs = [
        write_wav(tmp / f"q{i}.wav", np.concatenate([lead, x]).tobytes(), 16_000)
        for i, x in enumerate(speech)
    ]
    gap = np.zeros(int(GAP_S * 16_000), dtype=np.int16)
    mic16 = np.concatenate([lead] + [np.concatenate([x, gap]) for x in speech])
    mic48 = np.clip(resample_float(mic16.astype(np.float32), 16_000, 48_000), -32768, 32767)
    browser_wav = write_wav(tmp / "mic.wav", mic48.astype(np.int16).tobytes(), 48_000)
    silence_wav = (
        write_wav(tmp / "silence.wav", np.zeros(48_000 * 300, dtype=np.int16).tobytes(), 48_000)
        if args.browser_beside_demo
        else None
    )
    progress("starting `just web` (NATS, services, gateway)")
    web, url = start_web(env, tmp)
    demo: list[list[dict]] = []
    web_runs: list[list[tuple[float, dict]]] = []
    try:
        for r in range(args.rounds):
            sides = ["demo", "web"] if r % 2 == 0 else ["web", "demo"]
            for side in sides:
                progress(f"round {r + 1}/{args.rounds}: {side}")
                if side == "demo" and silence_wav is not None:
                    demo.append(demo_beside_page(env, demo_wavs, url, silence_wav))
                elif side == "demo":
                    demo.append(demo_side(env, demo_wavs))
                else:
                    web_runs.append(web_side(url, browser_wav, len(questions), tmp / "voice.db"))
    finally:
        web.send_signal(signal.SIGTERM)
        try:
            web.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)
    if args.browser_beside_demo:
        print("(the demo side ran with the page open and listening beside it)")
    figures = report(demo, web_runs)
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
