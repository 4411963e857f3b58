"""The browser as a speaker: a sink whose outputs stream a reply's PCM to its tab, and whose
"played" is what the tab reports its AudioWorklet has played (never what was merely sent)."""

from __future__ import annotations

import struct
from typing import Protocol


class TabLink(Protocol):
    """What an output needs of its tab: send a control message, send audio."""

    def send_json(self, message: dict) -> None: ...

    def send_audio(self, reply: int, pcm: bytes) -> None: ...


def audio_frame(reply: int, pcm: bytes) -> bytes:
    """Downstream binary frame: the reply's number (uint32 LE), then its int16 PCM."""
    return struct.pack("<I", reply) + pcm


class BrowserOutput:
    """One reply playing in one tab."""

    def __init__(self, tab: TabLink, reply: int, rate: int, utterance_id: str) -> None:
        self.tab = tab
        self.reply = reply
        self.rate = rate
        self.utterance_id = utterance_id
        self._queued = 0
        self._played = 0
        self._halted: int | None = None
        self._gone = False
        tab.send_json(
            {"type": "reply-open", "reply": reply, "rate": rate, "utterance_id": utterance_id}
        )

    def write(self, pcm: bytes) -> None:
        if self._halted is not None or self._gone:
            return
        self._queued += len(pcm) // 2
        self.tab.send_audio(self.reply, pcm)

    def queued(self) -> int:
        # A closed tab plays nothing more: what it had played is all there is.
        return self.played() if self._gone else self._queued

    def played(self) -> int:
        if self._halted is not None:
            return self._halted
        return min(self._played, self._queued)

    def report(self, samples: int) -> None:
        """The tab says it has played `samples` of this reply."""
        self._played = max(self._played, int(samples))

    def gone(self) -> None:
        """The tab closed: its output stops where the tab last said it was."""
        self._gone = True

    def halt(self) -> int:
        if self._halted is None:
            self._halted = self.played()
            if not self._gone:
                self.tab.send_json({"type": "reply-halt", "reply": self.reply})
        return self._halted

    def close(self) -> str:
        if self._halted is None and not self._gone and self.played() >= self._queued:
            self.tab.send_json({"type": "reply-end", "reply": self.reply})
            self._halted = self._queued
        self.halt()
        return ""


class BrowserSink:
    """Opens a reply's output in the tab of its conversation."""

    kind = "web"

    def __init__(self) -> None:
        self.tabs: dict[str, object] = {}
        """conversation id -> its tab (workers.web.tab.Tab)."""

    def open(self, rate: int, conversation_id: str, utterance_id: str) -> BrowserOutput:
        tab = self.tabs.get(conversation_id)
        if tab is None:
            return _nowhere(rate, utterance_id)
        return tab.open_output(rate, utterance_id)  # type: ignore[attr-defined]


class _Nobody:
    def send_json(self, message: dict) -> None:
        pass

    def send_audio(self, reply: int, pcm: bytes) -> None:
        pass


def _nowhere(rate: int, utterance_id: str) -> BrowserOutput:
    """The tab is gone (closed before its reply came): nothing is heard."""
    out = BrowserOutput(_Nobody(), 0, rate, utterance_id)
    out.gone()
    return out
