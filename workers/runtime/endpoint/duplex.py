"""What an endpoint's speaker is playing, learned from its events on the bus.

The mic side of an endpoint must not import the speaker; it watches the speaker's events of
its conversation instead: a reply is audible from `speaker.playback-started` (its first
sample left the DAC) until `speaker.playback-done` (its last one did, or it was stopped) or
the speaker's `control.error` for it, plus a tail for the room's echo to die away.

MIC_DUPLEX=half uses it to stop listening while a reply plays (hardware whose echo
cancellation is not good enough); an echo canceller can use it to know when the far end is
live.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from schemas import ControlError, Event, PlaybackDone, PlaybackStarted, decode, subject_filter
from workers.runtime.bus import Bus

log = logging.getLogger("voicebus.duplex")


class PlaybackWatch:
    """Replies audible at one endpoint's conversation, by wall-clock time."""

    def __init__(
        self,
        bus: Bus,
        endpoint: str,
        conversation_id: str,
        tail_s: float = 0.3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.endpoint = endpoint
        self.conversation_id = conversation_id
        self.tail_s = tail_s
        self.clock = clock
        self.playing: dict[str, float] = {}
        """Utterance id -> when its reply started to be heard (Unix seconds)."""
        self.quiet_at = 0.0
        """When the last reply to end stops being heard in the room (its end + the tail)."""
        self._subs: list[Any] = []

    async def start(self) -> PlaybackWatch:
        for event_type in (PlaybackStarted.type, PlaybackDone.type, ControlError.type):
            subject = subject_filter(self.endpoint, self.conversation_id, event_type)
            self._subs.append(await self.bus.nc.subscribe(subject, cb=self._on_msg))
        await self.bus.nc.flush()
        # A reply may already be playing (the mic restarted mid-reply): from the stream.
        started = await self.bus.last(self.endpoint, self.conversation_id, PlaybackStarted.type)
        if started is not None and started.utterance_id not in self.playing:
            ended = False
            for end_type in (PlaybackDone.type, ControlError.type):
                last = await self.bus.last(self.endpoint, self.conversation_id, end_type)
                ended = ended or (last is not None and last.utterance_id == started.utterance_id)
            if not ended:
                self.on_event(started)
        return self

    async def stop(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            try:
                await sub.unsubscribe()
            except Exception:  # a closed connection has no subscriptions left
                pass

    async def _on_msg(self, msg: Any) -> None:
        try:
            self.on_event(decode(msg.data))
        except Exception as exc:  # a bad event must not stop the mic
            log.info("playback event ignored", extra={"error": repr(exc)})

    def on_event(self, event: Event) -> None:
        if isinstance(event, PlaybackStarted):
            self.playing[event.utterance_id] = event.ts
        elif isinstance(event, PlaybackDone | ControlError):
            if isinstance(event, ControlError) and event.failed_stage != "speaker":
                return
            if self.playing.pop(event.utterance_id, None) is not None:
                self.quiet_at = max(self.quiet_at, event.ts + self.tail_s)

    def audible(self, at: float | None = None) -> bool:
        """Whether a reply may be heard in the room at `at` (default: now)."""
        return bool(self.playing) or (self.clock() if at is None else at) < self.quiet_at
