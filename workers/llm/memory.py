"""Conversation memory, rebuilt from the event log for every turn.

A previous turn is what the user said (stt.transcript) and what they actually heard of the
reply: the reply sentences up to the one playing when a barge-in cut playback, that one cut
in proportion to how much of its audio was played (speaker.playback-done +
tts.sentence-done). A turn that was never played (text only, `just ask`) counts with the
text of its llm.reply-done. Nothing is kept in the worker, so a restarted worker, or another
instance, continues the conversation exactly; a redelivered transcript sees the same history
because only turns logged before its own transcript count. A turn that a later utterance
resumed (`mic.voice-started.resumes`: the user only paused) is not a turn of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from schemas import (
    PlaybackDone,
    ReplyDiscarded,
    ReplyDone,
    ReplySentence,
    ReplyStarted,
    SentenceDone,
    Transcript,
)
from workers.llm.sentences import speakable
from workers.runtime.eventlog import EventLog, row_event
from workers.runtime.eventlog.store import EVENTS

log = logging.getLogger("voicebus.llm")

Message = dict[str, str]

#: Tokens a chat template adds around each message (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 4
#: Appended to a reply the user cut off, so the model knows they did not hear the rest.
CUT_MARK = "..."

_REPLY_TYPES = (
    ReplyStarted.type,
    ReplyDiscarded.type,
    ReplySentence.type,
    ReplyDone.type,
    PlaybackDone.type,
    SentenceDone.type,
)


@dataclass(frozen=True)
class Turn:
    """One previous exchange as the user experienced it."""

    utterance_id: str
    user_text: str
    assistant_text: str
    """What the user heard (or read) of the reply."""
    interrupted: bool = False


def heard_text(
    sentences: dict[int, str],
    done: ReplyDone | None,
    playback: PlaybackDone | None,
    sentence_ms: dict[int, float],
) -> tuple[str, bool]:
    """The part of a reply the user heard, and whether it was cut short."""
    if playback is not None and playback.interrupted:
        last = playback.last_sentence_index
        if last < 0:
            whole = range(playback.sentences_heard)
        else:
            whole = range(last)
        parts = [sentences[i] for i in whole if i in sentences]
        partial, audio_ms = sentences.get(last, ""), sentence_ms.get(last, 0.0)
        if partial and audio_ms > 0:
            words = partial.split()
            fraction = min(1.0, playback.last_sentence_played_ms / audio_ms)
            heard_words = int(len(words) * fraction)
            if heard_words:
                parts.append(" ".join(words[:heard_words]))
        return " ".join(parts), True
    if playback is not None and sentences:
        return " ".join(sentences[i] for i in sorted(sentences)), False
    if done is not None:
        return speakable(done.text), done.interrupted
    if sentences:  # the reply never finished (worker lost mid-generation)
        return " ".join(sentences[i] for i in sorted(sentences)), True
    return "", False


def build_messages(
    system_prompt: str,
    turns: Sequence[Turn],
    question: str,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
) -> tuple[list[Message], int]:
    """System prompt + as many recent turns as fit + the question; returns the messages and
    how many turns were kept. The system prompt and the question are always kept (the
    question loses its beginning if it alone is over budget)."""
    fixed = count_tokens(system_prompt) + 2 * MESSAGE_OVERHEAD_TOKENS
    room = budget_tokens - fixed
    q_tokens = count_tokens(question)
    if q_tokens > room:
        keep_chars = max(1, len(question) * max(room, 1) // max(q_tokens, 1))
        question = question[-keep_chars:]
        q_tokens = count_tokens(question)
    used = fixed + q_tokens
    kept: list[list[Message]] = []
    for turn in reversed(turns):
        reply = assistant_content(turn)
        pair = [{"role": "user", "content": turn.user_text}]
        if reply:
            pair.append({"role": "assistant", "content": reply})
        cost = sum(count_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in pair)
        if used + cost > budget_tokens:
            break  # older turns go first; never skip one to keep an older one
        kept.append(pair)
        used += cost
    messages: list[Message] = [{"role": "system", "content": system_prompt}]
    for pair in reversed(kept):
        messages.extend(pair)
    messages.append({"role": "user", "content": question})
    return messages, len(kept)


def assistant_content(turn: Turn) -> str:
    if not turn.interrupted:
        return turn.assistant_text
    return f"{turn.assistant_text}{CUT_MARK}" if turn.assistant_text else CUT_MARK


class EventLogMemory:
    """Reads previous turns from the event log's `events` table (SQLAlchemy Core)."""

    def __init__(self, db_url: str, max_turns: int = 50) -> None:
        self.db_url = db_url
        self.max_turns = max_turns
        self._log: EventLog | None = None
        self._warned = False

    @property
    def eventlog(self) -> EventLog:
        if self._log is None:
            # The recorder owns the schema (migrations); this side only reads.
            self._log = EventLog(self.db_url, migrate=False)
        return self._log

    async def previous_turns(self, conversation_id: str, before_utterance_id: str) -> list[Turn]:
        try:
            return await asyncio.to_thread(
                self._previous_turns, conversation_id, before_utterance_id
            )
        except SQLAlchemyError as exc:
            name = exc.__class__.__name__
            self._warn(f"event log not readable ({name}): answering without memory")
            return []

    async def wait_recorded(self, event_ids: Sequence[str], timeout: float) -> bool:
        """Wait until all `event_ids` are in the log (the recorder lags the bus a little)."""
        try:
            return await self.eventlog.wait_recorded(event_ids, timeout)
        except SQLAlchemyError:
            return False

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _warn(self, message: str) -> None:
        if not self._warned:
            log.warning(message)
            self._warned = True

    def _previous_turns(self, conversation_id: str, before_utterance_id: str) -> list[Turn]:
        cols = [EVENTS.c.id, EVENTS.c.type, EVENTS.c.utterance_id, EVENTS.c.envelope]
        with self.eventlog.engine.connect() as conn:
            transcripts = list(
                conn.execute(
                    select(*cols)
                    .where(EVENTS.c.conversation_id == conversation_id)
                    .where(EVENTS.c.type == Transcript.type)
                    .order_by(EVENTS.c.id)
                )
            )
            cutoff = next(
                (r.id for r in transcripts if r.utterance_id == before_utterance_id), None
            )
            # A turn the user went on speaking after (a pause, not its end) is part of the
            # utterance that resumed it: that one holds the whole sentence and its answer.
            resumed = self.eventlog.resumed(conversation_id)
            finals: dict[str, Any] = {}
            for r in transcripts:
                if (cutoff is not None and r.id >= cutoff) or r.utterance_id == before_utterance_id:
                    continue
                if r.utterance_id in resumed:
                    continue
                if '"speculative":true' in r.envelope:
                    continue  # what the user had said so far, not what they asked
                finals.setdefault(r.utterance_id, r)
            firsts = finals
            chosen = list(firsts.values())[-self.max_turns :] if self.max_turns else []
            if not chosen:
                return []
            rows = list(
                conn.execute(
                    select(*cols)
                    .where(EVENTS.c.conversation_id == conversation_id)
                    .where(EVENTS.c.utterance_id.in_([r.utterance_id for r in chosen]))
                    .where(EVENTS.c.type.in_(_REPLY_TYPES))
                    .order_by(EVENTS.c.id)
                )
            )
        replies: dict[str, list[Any]] = {}
        for r in rows:
            replies.setdefault(r.utterance_id, []).append(row_event(r))
        turns = []
        for r in chosen:
            transcript = row_event(r)
            assert isinstance(transcript, Transcript)
            text, interrupted = _reply_of(replies.get(r.utterance_id, []))
            turns.append(Turn(r.utterance_id, transcript.text.strip(), text, interrupted))
        return turns


def _answer(events: list[Any]) -> list[Any]:
    """The events of the generation that answered the turn: the last one started and not
    discarded (a speculation the user did not end up asking is never remembered)."""
    discarded = {e.generation for e in events if isinstance(e, ReplyDiscarded)}
    started = [e.generation for e in events if isinstance(e, ReplyStarted)]
    kept = [g for g in started if g not in discarded]
    if not started:
        return events  # recorded before generations existed
    if not kept:
        return []
    return [e for e in events if getattr(e, "generation", None) == kept[-1]]


def _reply_of(events: list[Any]) -> tuple[str, bool]:
    sentences: dict[int, str] = {}
    sentence_ms: dict[int, float] = {}
    done: ReplyDone | None = None
    playback: PlaybackDone | None = None
    for e in _answer(events):
        if isinstance(e, ReplySentence):
            sentences.setdefault(e.index, e.text)
        elif isinstance(e, SentenceDone):
            sentence_ms[e.sentence_index] = e.audio_ms
        elif isinstance(e, ReplyDone):
            done = done or e
        elif isinstance(e, PlaybackDone):
            playback = e  # the last word on what was heard
    return heard_text(sentences, done, playback, sentence_ms)
