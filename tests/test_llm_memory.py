"""Conversation memory from the event log: what the user heard, within a token budget."""

from __future__ import annotations

from pathlib import Path

from schemas import (
    Event,
    PlaybackDone,
    ReplyDone,
    ReplySentence,
    SentenceDone,
    Transcript,
    derive_id,
)
from workers.llm.memory import CUT_MARK, EventLogMemory, Turn, build_messages
from workers.runtime.eventlog import EventLog, Record

CONV = "c1"


def turn_events(
    utt: str, question: str, sentences: list[str], **playback: float | int | bool
) -> list[Event]:
    b = {"endpoint": "device", "conversation_id": CONV, "utterance_id": utt}
    t = Transcript(**b, event_id=f"{utt}-t", text=question)
    out: list[Event] = [t]
    for i, text in enumerate(sentences):
        out.append(
            ReplySentence(**b, event_id=derive_id(t.event_id, "sentence", i), text=text, index=i)
        )
        out.append(
            SentenceDone(
                **b,
                event_id=f"{utt}-tts-{i}",
                sentence_index=i,
                text=text,
                audio_ms=1000.0 * len(text.split()),  # one second per word
            )
        )
    out.append(
        ReplyDone(
            **b,
            event_id=derive_id(t.event_id, "done"),
            text="**" + " ".join(sentences) + "**",
            sentences=len(sentences),
            tokens=10,
        )
    )
    if playback:
        out.append(PlaybackDone(**b, event_id=f"{utt}-pb", **playback))  # type: ignore[arg-type]
    return out


def log_with(tmp_path: Path, events: list[Event]) -> str:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = EventLog(url)
    log.append([Record.of(e) for e in events])
    log.close()
    return url


async def test_barge_in_keeps_only_the_words_the_user_heard(tmp_path: Path) -> None:
    url = log_with(
        tmp_path,
        [
            *turn_events(
                "u1",
                "Tell me about Paris.",
                ["Paris is in France.", "It has one two three four five six.", "Never heard."],
                played_ms=6000.0,
                interrupted=True,
                sentences_heard=1,
                last_sentence_index=1,
                last_sentence_played_ms=3500.0,  # 44% of an 8 s sentence: 3 of its 8 words
            ),
            *turn_events("u2", "Thanks.", ["You are welcome."]),
        ],
    )
    memory = EventLogMemory(url)
    turns = await memory.previous_turns(CONV, "u3")
    memory.close()
    assert turns == [
        Turn("u1", "Tell me about Paris.", "Paris is in France. It has one", interrupted=True),
        Turn("u2", "Thanks.", "You are welcome.", interrupted=False),  # text only: reply-done
    ]


async def test_fully_played_reply_is_remembered_as_spoken(tmp_path: Path) -> None:
    url = log_with(
        tmp_path,
        turn_events(
            "u1",
            "Hi.",
            ["Hello there.", "How are you?"],
            played_ms=5000.0,
            sentences_heard=2,
            last_sentence_index=1,
            last_sentence_played_ms=3000.0,
        ),
    )
    memory = EventLogMemory(url)
    assert await memory.previous_turns(CONV, "u2") == [
        Turn("u1", "Hi.", "Hello there. How are you?", interrupted=False)
    ]
    memory.close()


async def test_barge_in_before_any_audio_leaves_an_empty_reply(tmp_path: Path) -> None:
    url = log_with(
        tmp_path,
        turn_events("u1", "Hi.", ["Hello there."], played_ms=0.0, interrupted=True),
    )
    memory = EventLogMemory(url)
    (turn,) = await memory.previous_turns(CONV, "u2")
    memory.close()
    assert turn.assistant_text == "" and turn.interrupted
    messages, _ = build_messages("sys", [turn], "Again?", 1000, len)
    assert messages[2] == {"role": "assistant", "content": CUT_MARK}


async def test_redelivered_transcript_sees_only_the_turns_before_it(tmp_path: Path) -> None:
    url = log_with(
        tmp_path,
        [
            *turn_events("u1", "One.", ["First."]),
            *turn_events("u2", "Two.", ["Second."]),
            *turn_events("u3", "Three.", ["Third."]),
        ],
    )
    memory = EventLogMemory(url)
    # u2 replayed after a crash gets the same history as the first time: only u1.
    assert [t.utterance_id for t in await memory.previous_turns(CONV, "u2")] == ["u1"]
    assert [t.utterance_id for t in await memory.previous_turns(CONV, "u4")] == ["u1", "u2", "u3"]
    assert await memory.previous_turns("other", "u9") == []
    memory.close()


async def test_missing_event_log_means_no_memory_not_a_crash(tmp_path: Path) -> None:
    memory = EventLogMemory(f"sqlite:///{tmp_path / 'none.db'}")
    assert await memory.previous_turns(CONV, "u1") == []
    assert await memory.wait_recorded(["x"], timeout=0.05) is False
    memory.close()


async def test_wait_recorded_returns_once_the_events_are_in_the_log(tmp_path: Path) -> None:
    events = turn_events("u1", "One.", ["First."])
    url = log_with(tmp_path, events)
    memory = EventLogMemory(url)
    assert await memory.wait_recorded([events[0].event_id, events[-1].event_id], timeout=1)
    assert not await memory.wait_recorded(["not-there"], timeout=0.05)
    memory.close()


def words(text: str) -> int:
    return len(text.split())


def test_budget_drops_the_oldest_turns_first() -> None:
    turns = [Turn(f"u{i}", f"question {i} " * 5, f"answer {i} " * 5) for i in range(10)]
    # Each turn costs 2 * (10 words + 4 overhead) = 28; fixed = 2 + 8, question = 2.
    messages, kept = build_messages("be brief", turns, "last one", 12 + 3 * 28 + 5, words)
    assert kept == 3
    assert messages[0] == {"role": "system", "content": "be brief"}
    assert messages[-1] == {"role": "user", "content": "last one"}
    assert [m["content"] for m in messages[1::2][:-1]] == [t.user_text for t in turns[-3:]]


def test_system_prompt_and_question_are_kept_even_over_budget() -> None:
    turns = [Turn("u1", "old question", "old answer")]
    question = " ".join(f"w{i}" for i in range(500))
    messages, kept = build_messages("system prompt", turns, question, 100, words)
    assert kept == 0
    assert messages[0]["content"] == "system prompt"
    # The question keeps its end (the most recent words) and fits the budget.
    assert messages[-1]["role"] == "user" and messages[-1]["content"].endswith("w499")
    assert words(messages[-1]["content"]) <= 100


async def test_memory_reads_the_log_at_database_url_sqlite_or_postgres(db_url: str) -> None:
    """On PostgreSQL the llm needs no file of the recorder's machine: DATABASE_URL is all."""
    log = EventLog(db_url)  # the recorder's side: migrates and writes
    log.append(
        [
            Record.of(e)
            for e in turn_events(
                "u1",
                "Hi.",
                ["Hello there."],
                played_ms=2000.0,
                sentences_heard=1,
                last_sentence_index=0,
                last_sentence_played_ms=2000.0,
            )
        ]
    )
    log.close()
    memory = EventLogMemory(db_url)
    try:
        assert await memory.previous_turns(CONV, "u2") == [
            Turn("u1", "Hi.", "Hello there.", interrupted=False)
        ]
        assert await memory.wait_recorded(["u1-pb"], 1.0)
    finally:
        memory.close()
