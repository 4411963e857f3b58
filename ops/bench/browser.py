"""`just bench browser`: what a chromium tab listening to a silent microphone costs the CPU.

On a machine where the models run on the CPU, every share of a core the browser takes is
missing from them while they answer (`just bench web` shows it as beside - demo). This
splits that share by what the tab does, each in a fresh headless chromium (Debian's, its
microphone a silent WAV), measured as the CPU time of all its processes over a window:
- blank: a page without the microphone (the browser's own idle);
- mic-raw: the microphone opened (getUserMedia) with the browser's audio processing off,
  nothing read;
- mic: opened as the page opens it (echo cancellation, noise suppression and gain control
  on), nothing read;
- page: the page's own capture code (`audio.js`: the same microphone, its buffers read off
  the track, resampled to 16 kHz frames, the frames dropped), what `just bench web`'s
  `beside` side runs;
- page-graph: the same code reading the microphone through the audio graph instead (a
  capture worklet; what it does in browsers without MediaStreamTrackProcessor).
The tabs take turns to go first each round; medians and spread of the rounds are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ops.bench.load import cpu_s as process_cpu_s
from ops.bench.web import CAPTURE_PAGE, CHROMIUM, capture_page, chromium_command
from workers.runtime.audio import write_wav
from workers.runtime.procs import stop_process


def _page(script: str) -> bytes:
    return (
        '<!doctype html><meta charset="utf-8"><title>tab</title>'
        f'<script type="module">{script}\nwindow.capturing = true;</script>'
    ).encode()


def _open(constraints: str) -> str:
    return f"await navigator.mediaDevices.getUserMedia({{ audio: {constraints} }});"


def _constraints(processing: bool) -> str:
    on = "true" if processing else "false"
    return (
        f"{{ echoCancellation: {on}, noiseSuppression: {on}, autoGainControl: {on}, "
        "channelCount: 1 }"
    )


TABS = {
    "blank": _page(""),
    "mic-raw": _page(_open(_constraints(False))),
    "mic": _page(_open(_constraints(True))),
    "page": CAPTURE_PAGE,
    # The same code told to read the microphone through the audio graph (a capture
    # worklet), as it does where MediaStreamTrackProcessor is missing.
    "page-graph?capture=graph": CAPTURE_PAGE,
}


def label(name: str) -> str:
    return name.split("?")[0]


def tree(root: int) -> list[int]:
    """`root` and all its descendants (chromium's renderer, gpu, audio and other processes)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def cpu_s(pids: list[int]) -> float:
    # (a process that ended in the window takes its CPU with it: counted as 0)
    return sum(process_cpu_s(pid) for pid in pids)


def measure(url: str, wav: Path, tmp: Path, settle_s: float, window_s: float) -> float:
    """Percent of one core that chromium on `url` used over `window_s`, after `settle_s`."""
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
    proc = subprocess.Popen(
        chromium_command(profile, wav, url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(settle_s)
        pids = tree(proc.pid)
        a, t0 = cpu_s(pids), time.monotonic()
        time.sleep(window_s)
        b, t1 = cpu_s(pids), time.monotonic()
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited ({proc.returncode}) on {url}")
        return 100.0 * (b - a) / (t1 - t0)
    finally:
        stop_process(proc, 10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="just bench browser", description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=float, default=15.0, help="seconds measured per tab")
    ap.add_argument("--settle", type=float, default=6.0, help="seconds after the tab opens")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"error: {CHROMIUM} not found; apt-get install chromium", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    wav = write_wav(tmp / "silence.wav", np.zeros(48_000 * 600, np.int16).tobytes(), 48_000)
    names = list(TABS)
    got: dict[str, list[float]] = {n: [] for n in names}
    pages = {f"/{n}": body for n, body in TABS.items()}
    with capture_page(pages) as base:
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                pct = measure(base + name, wav, tmp, args.settle, args.window)
                got[name].append(pct)
                progress = f"round {r + 1}/{args.rounds}: {label(name):10s} {pct:5.1f}%"
                print(progress, file=sys.stderr)

    def med(n: str) -> float:
        return statistics.median(got[n])

    print("chromium listening to a silent microphone, % of one core (median, min..max):")
    for n in names:
        print(f"  {label(n):10s} {med(n):5.1f}%  ({min(got[n]):.1f}..{max(got[n]):.1f})")
    print(f"  opening the microphone, processing off:       +{med('mic-raw') - med('blank'):.1f}")
    print(f"  the browser's echo canceller, noise, gain:    +{med('mic') - med('mic-raw'):.1f}")
    print(f"  the page's capture (read, resample, frame):   +{med('page') - med('mic'):.1f}")
    graph = med("page-graph?capture=graph") - med("mic")
    print(f"  the same through the audio graph instead:     +{graph:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
