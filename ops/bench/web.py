"""`just bench web`: what the web page's audio path adds to voice-to-voice.

The same spoken questions (synthesized with the bundled voice, one conversation per side),
in one run, the sides taking turns to go first each round:
- demo: `just demo q1.wav q2.wav ...` (mic worker reading the files in real time, the WAV
  sink's clock), its voice-to-voice from the event log;
- web: `just web`, and chromium (headless, Debian's) whose microphone is one WAV holding the
  same questions with silence between them, with no DevTools client attached while it
  listens and answers (see `Page`); voice-to-voice as the browser measures it, from
  the real end of speech (the capture clock: when the browser got the microphone's buffer,
  less the microphone's reported input latency) to the first reply sample heard (the output device's
  position clock, getOutputTimestamp, which includes the output latency), and the log's
  figure for the same turns;
- beside (with `--sides demo,beside,web`): the demo with a chromium tab beside it that
  captures its microphone (silence) through the page's own audio code (`audio.js`, echo
  cancellation and noise suppression on, frames read off the track) and does nothing else:
  no gateway, no WebSocket, no services, nothing drawn. A browser capturing a microphone
  takes its share of the CPU whatever page it runs, and on a small machine the models
  beside it go without.
Printed, over the same question in the same round: web - demo, what a user of the page
feels against the terminal here; each stage's difference, which says where a gap comes
from (the gateway's own stages against the same models); with beside, web - beside, what
the gateway, the WebSocket, the page and the browser's audio path add to a tab that only
captures (target <= 30 ms), and beside - demo, the capturing browser's share of the
machine. Every side starts its services afresh (the demo its own workers, the web side
`just web`), so that neither answers from a KV cache warmed by the rounds before; the
machine's other load makes single figures noisy, so read the medians.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ops.bench.stt import synth_piper
from workers.runtime.audio import resample_float, write_wav
from workers.runtime.natsd import free_port
from workers.runtime.procs import stop_process
from workers.web.gateway import STATIC

QUESTIONS = [
    "What is the capital of France?",
    "What is the capital of Italy?",
    "How far away is the moon?",
    "What is a good name for a cat?",
    "How many legs does a spider have?",
    "Who wrote Romeo and Juliet?",
    "What is the capital of Spain?",
    "Why is the sky blue?",
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
        # The demo's file mic listens on to silence until the demo stops it after the
        # reply, as the page's microphone and the gateway do; ending a second after the
        # speech, its process exited while the reply was being made.
        MIC_TAIL_SILENCE_MS="60000",
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


@contextlib.contextmanager
def running_web(env: dict[str, str], tmp: Path) -> Iterator[str]:
    """`just web` (NATS, the services, the gateway) for one side of one round: its URL."""
    progress("starting `just web` (NATS, services, gateway)")
    web, url = start_web(env, tmp)
    try:
        yield url
    finally:
        stop_process(web, 60)


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


def chromium_command(profile: str, wav: Path, url: str, *extra: str) -> list[str]:
    """Headless chromium on `url` with its own profile, its microphone reading `wav`."""
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # as Playwright launches it (the tests run as root)
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        f"--user-data-dir={profile}",
        *extra,
        *chromium_args(wav),
        url,
    ]


class Page:
    """Chromium (headless, Debian's) on the page, its microphone reading a WAV, with nothing
    attached while it listens and answers. Playwright drives it over the DevTools protocol
    only to press Talk and, at the end, to read what the page measured: attached, every
    WebSocket frame is reported to Playwright's driver, which cost the browser and the driver
    ~3.5% of a core here (frames going up live), CPU a user's tab does not spend and that the
    models beside it would miss."""

    def __init__(self, pw: Any, url: str, wav: Path, tmp: Path, on_open: Any) -> None:
        self.pw = pw
        self.port = free_port()
        profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
        self.proc = subprocess.Popen(
            chromium_command(profile, wav, url, f"--remote-debugging-port={self.port}"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self.opened: Any = self.attached(on_open)
        except BaseException:
            self.close()
            raise

    def attached(self, work: Any) -> Any:
        """Attach, run `work(page)`, detach (the browser and its page go on)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                browser = self.pw.chromium.connect_over_cdp(f"http://127.0.0.1:{self.port}")
                break
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("chromium did not open its DevTools port") from None
                time.sleep(0.3)
        try:
            pages = [p for c in browser.contexts for p in c.pages]
            return work(pages[0])
        finally:
            browser.close()  # a browser connected over CDP is only disconnected

    def close(self) -> None:
        stop_process(self.proc, 10)


def press_talk(page: Any) -> str:
    """Once the page is ready: its audio started, Talk pressed; its conversation id."""
    page.wait_for_function("window.voicebus && window.voicebus.ready === true")
    page.evaluate("voicebus.audio.start()")
    page.get_by_role("button", name="Talk").click()
    return page.evaluate("voicebus.state.conversationId")


def read_turns(page: Any, turns: int) -> list[dict]:
    """What the page measured, once its `turns` turns are shown with their waterfalls."""
    page.wait_for_function(
        "document.querySelectorAll('li.turn .waterfall .row').length"
        f" >= 5 * {turns} && voicebus.turns.length >= {turns}",
        timeout=30_000,
    )
    return page.evaluate("voicebus.turns")


CAPTURE_PAGE = b"""<!doctype html>
<meta charset="utf-8"><title>microphone only</title>
<script type="module">
import { Audio } from "/static/audio.js";
const audio = new Audio({ onFrame() {}, onPlayed() {}, onFirst() {} });
await audio.openMic();
window.capturing = true;
</script>
"""


@contextlib.contextmanager
def capture_page(pages: dict[str, bytes] | None = None) -> Iterator[str]:
    """A page that captures the microphone with the web page's own audio code and drops
    the frames (served from here: no gateway): its URL. `pages` adds others by path."""
    served = {"/": CAPTURE_PAGE, **(pages or {})}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(STATIC), **kwargs)

        def do_GET(self) -> None:
            if self.path in served:
                body = served[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path.startswith("/static/"):
                self.path = self.path.removeprefix("/static")
                super().do_GET()
            else:
                self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def capturing(page: Any) -> None:
    page.wait_for_function("window.capturing === true")


def demo_beside_page(env: dict[str, str], wavs: list[Path], silence: Path, tmp: Path) -> list[dict]:
    """The demo side while a chromium tab beside it captures its microphone (silence) and
    does nothing else: both sides then pay what a capturing browser costs the machine."""
    from playwright.sync_api import sync_playwright

    with capture_page() as url, sync_playwright() as pw:
        page = Page(pw, url, silence, tmp, capturing)
        try:
            time.sleep(2)  # past the page's start
            return demo_side(env, wavs)
        finally:
            page.close()


def web_side(url: str, wav: Path, turns: int, db: Path, tmp: Path) -> list[dict]:
    """The log's timings per turn, and browser_v2v_ms: voice-to-voice as the browser measured it."""
    from playwright.sync_api import sync_playwright

    from workers.runtime.eventlog import EventLog, timings

    log = EventLog(f"sqlite:///{db}", migrate=False)
    try:
        with sync_playwright() as pw:
            page = Page(pw, url, wav, tmp, press_talk)
            try:
                # Until the log has every turn played out (read twice a second, from here).
                deadline = time.monotonic() + turns * (GAP_S + 10) + 60
                while time.monotonic() < deadline:
                    done = [t for t in log.turns(page.opened) if t.playback_done_at is not None]
                    if len(done) >= turns:
                        break
                    time.sleep(0.5)
                measured = page.attached(lambda p: read_turns(p, turns))
            finally:
                page.close()
        out = []
        for m in measured:
            row = log.turn(m["utterance_id"])
            ms = timings(row).as_dict() if row else {}
            out.append({"browser_v2v_ms": float(m["browser_v2v_ms"]), **ms})
        return out
    finally:
        log.close()


def summary(xs: list[float]) -> str:
    if not xs:
        return "no turns"
    med = statistics.median(xs)
    return f"median {med:6.0f} ms  (min {min(xs):.0f}, max {max(xs):.0f}, n={len(xs)})"


def paired(base: list[list[dict]], other: list[list[dict]]) -> list[tuple[int, dict, dict]]:
    """The same question in the same round on two sides: (question, base turn, other turn)."""
    return [
        (q, b, o)
        for rb, ro in zip(base, other, strict=False)
        for q, (b, o) in enumerate(zip(rb, ro, strict=False))
    ]


def diffs(pairs: list[tuple[int, dict, dict]], key: str) -> list[float]:
    """Other minus base of one timing, over the pairs that have it on both sides."""
    return [
        o[key] - b[key] for _, b, o in pairs if b.get(key) is not None and o.get(key) is not None
    ]


def values(runs: list[list[dict]], key: str) -> list[float]:
    return [v for run in runs for t in run if (v := t.get(key)) is not None]


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):+.0f} ms" if xs else "n/a"


def report_against(label: str, base: list[list[dict]], web: list[list[dict]]) -> dict:
    """Web (browser clock) against one demo side, same question and round, stage by stage."""
    pairs = paired(base, web)
    v2v = [
        o["browser_v2v_ms"] - b["voice_to_voice"]
        for _, b, o in pairs
        if b.get("voice_to_voice") is not None
    ]
    by_question: dict[int, list[float]] = {}
    for q, b, o in pairs:
        if b.get("voice_to_voice") is not None:
            by_question.setdefault(q, []).append(o["browser_v2v_ms"] - b["voice_to_voice"])
    print(f"web - {label}, same question and round:")
    print(f"  voice-to-voice: median {med(v2v)} {sorted(round(x) for x in v2v)}")
    print(f"  the same pairs on the log's clock: median {med(diffs(pairs, 'voice_to_voice'))}")
    for q, xs in sorted(by_question.items()):
        print(f"  question {q + 1}: median {med(xs)} {sorted(round(x) for x in xs)}")
    # Where the pairs differ: the gateway's own stages (end-pointer wait, playback start)
    # against the shared ones (stt, llm, tts), which run the same code on the same models
    # and differ by what was heard and by the CPU the browser takes from them.
    print("  stage by stage: " + ", ".join(f"{k} {med(diffs(pairs, k))}" for k in STAGES))
    return {
        "paired_median_ms": round(statistics.median(v2v), 1) if v2v else None,
        "stages_ms": {
            k: (round(statistics.median(xs), 1) if (xs := diffs(pairs, k)) else None)
            for k in STAGES
        },
    }


def report(sides: dict[str, list[list[dict]]]) -> dict:
    """Print the figures of a run (each side's turns, by round) and return them."""
    demo, beside, web = sides.get("demo", []), sides.get("beside", []), sides.get("web", [])
    print("voice-to-voice, real end of speech to the first reply sample heard")
    labels = {
        "demo": "just demo (event log)",
        "beside": "just demo, a tab capturing beside (event log)",
        "web": "web page (browser clock)",
    }
    for side, runs in sides.items():
        key = "browser_v2v_ms" if side == "web" else "voice_to_voice"
        print(f"  {labels[side]:46} {summary(values(runs, key))}")
    if web:
        print(f"  {'web page (event log)':46} {summary(values(web, 'voice_to_voice'))}")
        path = [
            t["browser_v2v_ms"] - t["voice_to_voice"]
            for run in web
            for t in run
            if t.get("voice_to_voice")
        ]
        print(f"  browser output path (browser clock - log, web): median {med(path)}")
    figures: dict[str, Any] = {"sides": sides}
    if web and demo:
        # The gateway, the WebSocket and the browser's audio path, plus what the browser's
        # CPU takes from the models on a small machine.
        figures["web_vs_demo"] = report_against("demo (what a user feels here)", demo, web)
    if web and beside:
        # Both sides pay for a browser capturing the microphone: what is left is the
        # gateway's, the WebSocket's, the page's and the audio path's own.
        figures["web_vs_beside"] = report_against(
            "beside (the gateway and the audio path: target <= 30 ms)", beside, web
        )
    if demo and beside:
        pairs = paired(demo, beside)
        print("demo with a tab capturing beside - demo alone (a capturing browser's share):")
        print("  " + ", ".join(f"{k} {med(diffs(pairs, k))}" for k in ("voice_to_voice", *STAGES)))
        figures["beside_vs_demo_ms"] = (
            round(statistics.median(d), 1) if (d := diffs(pairs, "voice_to_voice")) else None
        )
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="just bench web", description=__doc__)
    ap.add_argument(
        "--questions", type=int, default=3, help=f"questions per round (max {len(QUESTIONS)})"
    )
    ap.add_argument("--rounds", type=int, default=2, help="rounds; sides alternate first")
    ap.add_argument(
        "--sides",
        default="demo,beside,web",
        help="comma-separated, run in turn each round: demo (`just demo` alone), web (the "
        "page), beside (the demo with a chromium tab beside it capturing its microphone, "
        "silence, through the page's audio code and nothing else: the browser's share of "
        "the machine, which web - beside leaves out)",
    )
    ap.add_argument("--json", action="store_true", help="last stdout line: the figures as JSON")
    args = ap.parse_args(argv)
    order = [x.strip() for x in args.sides.split(",") if x.strip()]
    if not order or set(order) - {"demo", "beside", "web"}:
        ap.error(f"--sides {args.sides!r}: want some of demo, beside, web")
    questions = QUESTIONS[: max(1, min(len(QUESTIONS), args.questions))]
    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    env = env_for(tmp)
    progress(f"synthesizing {len(questions)} questions")
    speech = [synth_piper(q) for q in questions]
    lead = np.zeros(8_000, dtype=np.int16)  # 0.5 s at 16 kHz
    # The first question 3 s in, on both sides: a page just opened (and services just
    # started) are still busy for a moment, which is not what a turn costs.
    settle = np.zeros(48_000, dtype=np.int16)
    demo_wavs = [
        write_wav(
            tmp / f"q{i}.wav", np.concatenate([settle if i == 0 else lead, x]).tobytes(), 16_000
        )
        for i, x in enumerate(speech)
    ]
    gap = np.zeros(int(GAP_S * 16_000), dtype=np.int16)
    mic16 = np.concatenate([settle] + [np.concatenate([x, gap]) for x in speech])
    mic48 = np.clip(resample_float(mic16.astype(np.float32), 16_000, 48_000), -32768, 32767)
    browser_wav = write_wav(tmp / "mic.wav", mic48.astype(np.int16).tobytes(), 48_000)
    silence_wav = (
        write_wav(tmp / "silence.wav", np.zeros(48_000 * 300, dtype=np.int16).tobytes(), 48_000)
        if "beside" in order
        else None
    )
    sides: dict[str, list[list[dict]]] = {side: [] for side in order}
    for r in range(args.rounds):
        # Each side goes first in turn: the machine's drift favours none of them.
        for side in order[r % len(order) :] + order[: r % len(order)]:
            progress(f"round {r + 1}/{args.rounds}: {side}")
            if side == "demo":
                sides[side].append(demo_side(env, demo_wavs))
                continue
            if side == "beside":
                assert silence_wav is not None
                sides[side].append(demo_beside_page(env, demo_wavs, silence_wav, tmp))
                continue
            # `just web` afresh, as `just demo` starts its workers afresh: a long-running
            # llm keeps earlier conversations in its KV cache, and the same first question
            # asked again in the next round was answered from it (first token ~35 ms
            # against ~130 ms), which made the page look 100 ms quicker on that question.
            with running_web(env, tmp) as url:
                sides[side].append(
                    web_side(url, browser_wav, len(questions), tmp / "voice.db", tmp)
                )
    figures = report(sides)
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
