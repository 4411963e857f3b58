"""Mic settings (env prefix MIC_); `python -m workers.mic --help` overrides the common ones."""

from __future__ import annotations

from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.runtime.endpoint.endpointer import (
    RESUME_MS,
    SMART_SCORE_AHEAD_MS,
    SMART_TRANSCRIPT_WAIT_MS,
)


class MicSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MIC_", env_file=".env", extra="ignore")

    file: str = ""
    """MIC_FILE: stream this WAV instead of the microphone."""
    device: str = ""
    """MIC_DEVICE: PortAudio input device name or index; empty = the default input."""
    realtime: bool = True
    """MIC_REALTIME: pace a file at real time (false = as fast as possible)."""
    start_at: float = 0.0
    """MIC_START_AT: a file starts streaming at this wall-clock time (Unix seconds; 0: once
    the mic is ready). Several mics loaded beforehand then speak in step (`just bench load`),
    instead of each one's start-up landing on the others' turns."""
    conversation: str = ""
    """MIC_CONVERSATION: conversation id; empty = a new one per run."""
    last_stage: Literal["stt", "llm", "speaker"] = "speaker"
    """MIC_LAST_STAGE: how far this endpoint's turns go: "stt" transcribes only (`just
    transcribe`), "speaker" answers out loud."""
    replay_of: str = ""
    """MIC_REPLAY_OF: the conversation this run replays (recorded in its binding)."""
    vad: str = "silero"
    """MIC_VAD: silero (ONNX model of the silero-vad package) or webrtc (webrtcvad)."""
    threshold: float = 0.5
    """MIC_THRESHOLD: speech probability above which a frame is speech (silero)."""
    webrtc_mode: int = 3
    """MIC_WEBRTC_MODE: webrtcvad aggressiveness 0-3."""
    chunk_ms: int = 20
    """MIC_CHUNK_MS: duration of one mic.audio-chunk (10, 20 or 30 ms)."""
    preroll_ms: int = 300
    """MIC_PREROLL_MS: audio before the detected onset that starts the utterance."""
    min_speech_ms: int = 64
    """MIC_MIN_SPEECH_MS: speech needed to start an utterance (rejects clicks)."""
    turn: Literal["smart", "vad"] = "smart"
    """MIC_TURN: when a turn ends. "smart": after MIC_TURN_MIN_SILENCE_MS of silence if the
    Smart Turn v3.2 model (shipped in the `pipecat-ai` wheel) says the turn is complete,
    else after up to MIC_TURN_MAX_SILENCE_MS; "vad": after MIC_HANGOVER_MS of silence."""
    turn_min_silence_ms: int = 200
    """MIC_TURN_MIN_SILENCE_MS (smart): silence from which a turn may end."""
    turn_score_ahead_ms: int = SMART_SCORE_AHEAD_MS
    """MIC_TURN_SCORE_AHEAD_MS (smart): the model is asked this much silence before
    MIC_TURN_MIN_SILENCE_MS (on a thread, the rest of that silence made up from the quiet
    heard so far), so that its answer is ready when the silence is; 128 is about one run of
    the model. 0 (the default) = ask at MIC_TURN_MIN_SILENCE_MS: on a small CPU the run
    ahead competes with the stt's decode the reply waits for."""
    turn_max_silence_ms: int = 1200
    """MIC_TURN_MAX_SILENCE_MS (smart): silence that ends a turn whatever the model says."""
    turn_threshold: float = 0.5
    """MIC_TURN_THRESHOLD (smart): model score from which a turn is complete."""
    turn_transcript_wait_ms: int = SMART_TRANSCRIPT_WAIT_MS
    """MIC_TURN_TRANSCRIPT_WAIT_MS (smart): after a "complete", wait up to this much more
    silence for the stt's speculative transcript; a last word such as "for" or "the" then
    keeps the turn open. 0 = judge on the audio alone. The default reaches the max silence:
    the answer cannot start before that transcript anyway, so waiting for it costs nothing
    when the stt is quick and keeps a slow (loaded) stt from letting a pause end the turn."""
    turn_resume_ms: int = RESUME_MS
    """MIC_TURN_RESUME_MS: speech that starts again within this much of a turn's end of
    speech resumes that turn (it was a pause): the new utterance holds the whole sentence,
    the cut turn's reply is stopped and dropped, and the sentence is answered once. 0 = off."""
    hangover_ms: int = 400
    """MIC_HANGOVER_MS (vad): silence that ends an utterance."""
    max_utterance_ms: int = 20_000
    """MIC_MAX_UTTERANCE_MS: an utterance is cut (reason max-length) after this long."""
    duplex: Literal["full", "half"] = "full"
    """MIC_DUPLEX: "full" listens while a reply plays (barge-in works; needs echo
    cancellation on loudspeakers); "half" hears nothing from a reply's first sample until
    MIC_DUPLEX_TAIL_MS after its end (no barge-in), learned from the speaker's events."""
    duplex_tail_ms: int = 300
    """MIC_DUPLEX_TAIL_MS: with MIC_DUPLEX=half, how long after a reply's last sample the mic
    stays deaf (the room's echo dying away)."""
    aec: Literal["speex", "webrtc", "off"] = "speex"
    """MIC_AEC: echo canceller on the mic path, fed with what the endpoint's speaker plays:
    speex (default: the user's voice survives double talk), webrtc (livekit wheel) or off."""
    aec_tail_ms: int = 200
    """MIC_AEC_TAIL_MS: longest echo the canceller models (acoustic delay + reverberation)."""
    aec_delay_ms: float = 0.0
    """MIC_AEC_DELAY_MS: read the reference this much earlier than the block's capture time
    (input latency a device's block times do not show)."""
    aec_gate: bool = True
    """MIC_AEC_GATE: while a reply plays, silence blocks that hold only residual echo."""
    room: str = ""
    """MIC_ROOM: simulate a room ("loudspeaker"): replies come back into the mic as echo."""
    script: list[str] = []
    """MIC_SCRIPT: with MIC_ROOM, files spoken after MIC_FILE, each once the reply ended
    (FILE) or over it, S seconds after it started (FILE@S); JSON list."""
    wake_word: str = ""
    """MIC_WAKE_WORD: answer only speech after this phrase: okay_nabu, hey_jarvis,
    hey_mycroft or alexa (pymicro-wakeword); empty = every utterance is a turn."""
    follow_up_s: float = 5.0
    """MIC_FOLLOW_UP_S: after a reply, this long to speak again without the wake word."""
    tail_silence_ms: int = 1000
    """MIC_TAIL_SILENCE_MS: silence appended after a file so its last utterance ends by
    hangover, as it would live."""
