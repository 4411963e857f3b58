"""The sentence splitter: speakable pieces, early first piece, nothing cut in the wrong place."""

from __future__ import annotations

import random

import pytest

from workers.llm.sentences import SentenceSplitter, speakable, split_text


def stream(text: str, seed: int = 0, **options: int) -> list[str]:
    """Feed `text` in random token-sized slices, as a model would."""
    rng = random.Random(seed)
    splitter = SentenceSplitter(**options)
    out: list[str] = []
    i = 0
    while i < len(text):
        n = rng.randint(1, 6)
        out += splitter.push(text[i : i + n])
        i += n
    return out + splitter.flush()


def test_plain_sentences_are_cut_at_their_ends() -> None:
    assert split_text("Paris is the capital. It is big! Do you like it?") == [
        "Paris is the capital.",
        "It is big!",
        "Do you like it?",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Pi is about 3.14 and e is about 2.718 in value.",
        "It costs 1,000 dollars or 2,500.50 euros in total.",
        "Dr. Smith met Mr. Jones and Mrs. Brown at St. Paul's today.",
        "Some fruits, e.g. apples and pears, i.e. the common ones, grow here.",
        "The U.S. Army and the U.K. Navy met at 5 p.m. Tuesday near the coast.",
        "Visit https://example.com/docs/v1.2/index.html?x=1.5 for the details.",
        "See www.python.org or docs.python.org/3/library for the manual.",
        "J. R. R. Tolkien wrote it, and that is all I know about him today.",
        "Version 2.0.1 of the app fixed it for approx. five users.",
    ],
)
def test_numbers_abbreviations_and_urls_are_never_cut(text: str) -> None:
    # Clause cuts are disabled here: the only question is where a *sentence* may end.
    opts = {"first_min_words": 99, "later_clause_words": 99}
    assert split_text(text, **opts) == [text]
    for seed in range(5):
        assert stream(text, seed, **opts) == [text]


def test_abbreviation_that_can_end_a_sentence() -> None:
    assert split_text("Bring apples, pears, etc. Then we cook.", first_min_words=99) == [
        "Bring apples, pears, etc.",
        "Then we cook.",
    ]
    assert split_text("Bring apples etc. and pears.") == ["Bring apples etc. and pears."]


def test_url_at_the_end_of_a_sentence() -> None:
    assert split_text("Go to example.com. Then sign in.") == ["Go to example.com.", "Then sign in."]


def test_ellipsis_ends_a_sentence_only_before_a_new_one() -> None:
    assert split_text("Well... I think so. Hmm… maybe not.") == [
        "Well...",
        "I think so.",
        "Hmm… maybe not.",
    ]
    assert split_text("Wait... What happened?") == ["Wait...", "What happened?"]


def test_quotes_and_brackets_stay_with_their_sentence() -> None:
    assert split_text('He said "yes." Then he left (quickly.) The end.') == [
        'He said "yes."',
        "Then he left (quickly.)",
        "The end.",
    ]


def test_first_piece_is_cut_early_at_a_clause_boundary() -> None:
    text = (
        "The capital of France, which is Paris, is famous for art; "
        "it has many museums, parks, and cafes that people love to visit."
    )
    assert split_text(text) == [
        "The capital of France,",
        "which is Paris, is famous for art; it has many museums, parks, and cafes that people "
        "love to visit.",
    ]


def test_first_piece_needs_a_few_words_before_a_clause_cut() -> None:
    assert split_text("Sure, I can help with that today.") == ["Sure, I can help with that today."]
    assert split_text("Yes: the answer is four - or five - I think.")[0] == (
        "Yes: the answer is four -"
    )


def test_hyphens_and_negative_numbers_are_not_clause_dashes() -> None:
    text = "A state-of-the-art device works at -5 degrees and more today."
    assert split_text(text, first_max_words=99) == [text]


@pytest.mark.parametrize(
    ("text", "first"),
    [
        # A connective starts a clause: the voice may pause there as at a comma.
        (
            "The sky is blue because of a process called Rayleigh scattering.",
            "The sky is blue",
        ),
        ("You can boil it when the water is hot.", "You can boil it"),
        # A long first sentence with no punctuation ends at a phrase within 8 words.
        (
            "One of the most effective ways to improve your sleep is to keep a schedule.",
            "One of the most effective ways",
        ),
        ("I do not have access to real-time weather data for your city.", "I do not have access"),
        # Short sentences, and "and"/"or" joining nouns, are left whole.
        ("The capital of France is Paris.", "The capital of France is Paris."),
        ("Would you like tea or coffee?", "Would you like tea or coffee?"),
        ("Sure, I can help with that today.", "Sure, I can help with that today."),
    ],
)
def test_a_long_first_sentence_is_cut_at_a_phrase(text: str, first: str) -> None:
    """The tts speaks whole pieces: the sooner the first one ends, the sooner it is heard."""
    pieces = split_text(text)
    assert pieces[0] == first
    assert " ".join(pieces) == text
    for seed in range(10):
        assert stream(text, seed) == pieces
    # Only the first piece: later sentences stay whole.
    assert split_text("Hello! " + text) == ["Hello!", text]


def test_clause_cut_on_an_em_dash() -> None:
    assert split_text("The answer is simple and short— it is four.") == [
        "The answer is simple and short—",
        "it is four.",
    ]


def test_long_run_without_punctuation_is_cut_at_a_space() -> None:
    words = " ".join(f"word{i}" for i in range(80))
    pieces = split_text(words)
    assert len(pieces) > 1
    assert " ".join(pieces) == words
    assert all(len(p) <= 220 for p in pieces)
    assert len(pieces[0]) <= 100


def test_long_url_is_never_split_by_the_length_limit() -> None:
    url = "https://example.com/" + "a" * 300
    assert split_text(f"See {url} now") == ["See", url, "now"]


def test_markdown_is_removed_before_speaking() -> None:
    text = (
        "## Answer\n**Paris** is the *capital*. Use `pip install x` to get it.\n"
        "- First item here\n2. Second item\n[The docs](https://x.org/a) say so."
    )
    assert split_text(text) == [
        "Answer",
        "Paris is the capital.",
        "Use pip install x to get it.",
        "First item here",
        "Second item",
        "The docs say so.",
    ]


def test_list_numbers_at_line_start_are_not_sentences() -> None:
    assert split_text("1. Paris is nice.\n2. Rome is old.") == ["Paris is nice.", "Rome is old."]


def test_bold_sentence_end_is_cut_after_the_markup() -> None:
    assert split_text("It is **Paris.** Then more.") == ["It is Paris.", "Then more."]


def test_pieces_without_words_are_dropped() -> None:
    assert split_text("**  ** ... \n\n Hello there.") == ["Hello there."]


def test_streaming_gives_the_same_pieces_as_one_shot() -> None:
    text = (
        "Hello! The capital of France, as you may know, is Paris. It has 2.1 million people, "
        "e.g. in the city proper. Dr. Who lives there... Or not? See https://fr.wikipedia.org."
    )
    expected = split_text(text)
    for seed in range(20):
        assert stream(text, seed) == expected


def test_sentence_is_held_until_the_next_word_shows_it_ended() -> None:
    s = SentenceSplitter()
    assert s.push("It is 3.") == []
    assert s.push(" ") == []
    assert s.push("Then") == ["It is 3."]
    s2 = SentenceSplitter()
    assert s2.push("It is 3.") == []
    assert s2.push("14 exactly.") == []
    assert s2.flush() == ["It is 3.14 exactly."]


def test_speakable_collapses_whitespace_and_symbols() -> None:
    assert speakable("  **Hi**\n\n  there  `x` ") == "Hi there x"
    assert speakable("snake_case stays, __bold__ goes") == "snake_case stays, bold goes"
