"""The speaker worker: plays the replies of its endpoint (ENDPOINT) and records exactly how
much the listener heard.

The work is the endpoint runtime's `Player` (workers/runtime/endpoint/playback.py), shared
with the web and Wyoming endpoints: replies are claimed on `tts.started` through the
endpoint's durable (`schemas.routing.SPEAKER`), so several speaker instances of an endpoint
share its replies, each reply played by one of them and never two of a conversation at once.
"""

from __future__ import annotations

from schemas.routing import SPEAKER
from workers.runtime.bus import Bus, Consumer
from workers.runtime.config import Settings
from workers.runtime.endpoint.playback import PlaybackConfig, Player
from workers.runtime.endpoint.sinks import DeviceSink, Sink, WavSink
from workers.runtime.service import Worker
from workers.speaker.config import SpeakerSettings, get_speaker_settings


def make_sink(speaker: SpeakerSettings, settings: Settings) -> Sink:
    if speaker.sink == "device":
        return DeviceSink(speaker.device)
    return WavSink(settings.data_dir / "replies", realtime=speaker.realtime)


class SpeakerWorker(Worker):
    name = "speaker"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        speaker: SpeakerSettings | None = None,
        sink: Sink | None = None,
    ) -> None:
        super().__init__(bus, settings)
        self.speaker = speaker or get_speaker_settings()
        self.sink = sink or make_sink(self.speaker, settings)
        self.player = Player(
            bus,
            self.sink,
            self.worker_id,
            PlaybackConfig(
                barge_in=self.speaker.barge_in,
                ack_wait_s=self.speaker.ack_wait_s,
                reply_timeout_s=self.speaker.reply_timeout_s,
                echo_reference=self.speaker.echo_reference,
            ),
        )
        self.player.stopping = self.stopping

    def consumers(self) -> list[Consumer]:
        return [
            self.route_consumer(
                SPEAKER,
                self.player.on_tts_started,
                batch=1,  # one reply per pull loop: the others stay for other instances
                ack_wait=self.speaker.ack_wait_s,
                max_ack_pending=10_000,
            )
            for _ in range(max(1, self.speaker.max_concurrent))
        ]
