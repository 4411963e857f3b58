"""Cutting a streamed reply into speakable pieces for TTS.

The first piece is cut as early as sensible (a clause boundary once it has a few words) so
speech can start while the model is still generating; later pieces are whole sentences.
A cut needs to see what follows the punctuation, so "3.14", "1,000", "example.com/a.b",
"Dr. Smith" and "e.g. this" are never split: a candidate end must be followed by
whitespace, and after a period the next word must not start in lower case nor the word
before it be a known abbreviation or initial. Markdown the model may emit is removed
before speaking.
"""

from __future__ import annotations

import re

#: Words that a period does not end (compared lower-case, without the final period).
ABBREVIATIONS = frozenset(
    """
    mr mrs ms mx dr prof sr jr st mt ft vs e.g i.e cf al approx appt apt dept est
    fig figs no nos vol vols p pp ca gen col lt sgt capt cmdr rev hon gov sen rep pres
    inc ltd co corp bros ave blvd rd jan feb mar apr jun jul aug sep sept oct nov dec
    mon tue tues wed thu thur thurs fri sat sun a.m p.m u.s u.k u.n e.u
    """.split()
)
#: Abbreviations that often end a sentence too: cut only before an upper-case word.
SENTENCE_FINAL_ABBREVIATIONS = frozenset({"etc"})

TERMINALS = ".!?…"
#: Characters that may follow the terminal punctuation and still belong to the sentence.
CLOSERS = "\"'”’)]}*_`"
CLAUSE_MARKS = ",;:"
DASHES = "-–—"
OPENERS = "\"'“‘([{*_`"

#: Words a first piece may end before (once it has `first_min_words`): a new clause starts
#: there, and the voice can pause as at a comma. Not "and"/"or" (they join nouns as often).
CONNECTIVES = frozenset(
    "because but so which who whose when where while if since although though unless until "
    "whereas".split()
)
#: Where a long first piece without punctuation may end (before one of these): at a phrase.
WEAK_BOUNDARIES = CONNECTIVES | frozenset(
    "and or to of in on at by for with from about into through over after before than as "
    "like is are was were".split()
)
_WORD = re.compile(r"\S+")

_LIST_MARKER = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+", re.MULTILINE)
_MD_LINK = re.compile(r"\[([^\]\n]*)\]\([^)\s]*\)")
_MD_SYMBOLS = re.compile(r"[*#`]+|~~|(?<!\w)__?|__?(?!\w)")
_SPACES = re.compile(r"\s+")
_DOTTED_ACRONYM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
_WORDY = re.compile(r"\w")


def speakable(text: str) -> str:
    """Markdown-free, single-spaced text (what TTS should read)."""
    text = _MD_LINK.sub(r"\1", text)
    text = _LIST_MARKER.sub("", text)
    text = _MD_SYMBOLS.sub("", text)
    return _SPACES.sub(" ", text).strip()


def _word_before(buf: str, end: int) -> str:
    """The whitespace-delimited word ending at `end` (exclusive), without opening symbols."""
    start = end
    while start > 0 and not buf[start - 1].isspace():
        start -= 1
    return buf[start:end].lstrip(OPENERS)


def _words(text: str) -> int:
    return sum(1 for w in text.split() if _WORDY.search(w))


class SentenceSplitter:
    """Feed it tokens with `push`; it returns the pieces that are complete. `flush` at the end.

    first_min_words: a clause boundary (, ; : dash) may end the first piece once it has this
        many words, and so may a connective ("because", "which", ...) that starts a clause.
    first_max_words: a first piece this long with no boundary yet ends before its last
        phrase word ("to", "of", "is", ...): the tts, which speaks whole pieces, starts on
        a phrase while the model writes the rest of the sentence.
    later_clause_words: later pieces are cut at a clause boundary only when this long.
    first_max_chars / max_chars: with no boundary in sight, cut at the last space before this.
    """

    def __init__(
        self,
        first_min_words: int = 4,
        first_max_words: int = 8,
        later_clause_words: int = 16,
        first_max_chars: int = 100,
        max_chars: int = 220,
    ) -> None:
        self.first_min_words = first_min_words
        self.first_max_words = first_max_words
        self.later_clause_words = later_clause_words
        self.first_max_chars = first_max_chars
        self.max_chars = max_chars
        self.buf = ""
        self.emitted = 0

    def push(self, text: str) -> list[str]:
        self.buf += text
        return self._drain(final=False)

    def flush(self) -> list[str]:
        return self._drain(final=True)

    def _drain(self, final: bool) -> list[str]:
        out: list[str] = []
        while True:
            self.buf = self.buf.lstrip()
            cut = self._find_cut(final)
            if cut is None:
                break
            piece = speakable(self.buf[:cut])
            self.buf = self.buf[cut:]
            if _WORDY.search(piece):
                out.append(piece)
                self.emitted += 1
        return out

    def _find_cut(self, final: bool) -> int | None:
        buf = self.buf
        n = len(buf)
        if not n:
            return None
        first = self.emitted == 0
        # Found up front so that the earliest cut wins whether the text came whole or token
        # by token (one-shot and streaming give the same pieces).
        phrase = self._phrase_cut(buf) if first else None
        i = 0
        while i < n:
            if phrase is not None and i >= phrase:
                return phrase
            c = buf[i]
            if c == "\n":
                # A line break ends a heading or list item; blank lines just get skipped.
                if _WORDY.search(buf[:i]):
                    return i
            elif c in TERMINALS:
                j = i
                while j < n and buf[j] in TERMINALS:
                    j += 1
                while j < n and buf[j] in CLOSERS:
                    j += 1
                if j >= n:
                    return n if final else None
                if not buf[j].isspace():
                    i = j  # inside a number, URL or name: 3.14, example.com, Yahoo!Inc
                    continue
                k = j
                while k < n and buf[k].isspace():
                    k += 1
                if k >= n:
                    if final:
                        return j
                    return None  # the next word decides, and it is not here yet
                if self._ends_sentence(buf, i, j, buf[k]):
                    return j
                i = k
                continue
            elif (c in CLAUSE_MARKS or c in DASHES) and self._clause_ok(buf, i, first):
                if i + 1 >= n:
                    return n if final else None
                if buf[i + 1].isspace() and (c not in DASHES or c == "—" or buf[i - 1].isspace()):
                    return i + 1
            i += 1
        if phrase is not None:
            return phrase
        limit = self.first_max_chars if first else self.max_chars
        if n > limit:
            space = buf.rfind(" ", 0, limit)
            if space > 0 and _WORDY.search(buf[:space]):
                return space
            space = buf.find(" ", limit)  # one very long word (a URL): never split it
            if space > 0:
                return space
        return n if final else None

    def _phrase_cut(self, buf: str) -> int | None:
        """Where the first piece may end with no punctuation in it: before a connective, or,
        once it is long, before its last phrase word. Only whole words count (a word is
        whole once something follows it)."""
        words = [m for m in _WORD.finditer(buf) if m.end() < len(buf)]
        bare = [m.group().lower().strip(OPENERS + CLOSERS) for m in words]
        for k in range(self.first_min_words, len(words)):
            if bare[k] in CONNECTIVES:
                return words[k].start()
        if len(words) >= self.first_max_words:
            for k in range(self.first_max_words - 1, self.first_min_words - 1, -1):
                if bare[k] in WEAK_BOUNDARIES:
                    return words[k].start()
        return None

    def _clause_ok(self, buf: str, i: int, first: bool) -> bool:
        need = self.first_min_words if first else self.later_clause_words
        return i > 0 and _words(buf[:i]) >= need

    @staticmethod
    def _ends_sentence(buf: str, start: int, end: int, next_char: str) -> bool:
        """Whether the terminal punctuation at buf[start:end] ends the sentence."""
        punct = buf[start:end].rstrip(CLOSERS)
        if punct != ".":
            # "?", "!", "?!" end a sentence; an ellipsis only before a new sentence.
            return ("." not in punct and "…" not in punct) or not next_char.islower()
        word = _word_before(buf, start)
        low = word.lower()
        if low in ABBREVIATIONS:
            return False
        if low in SENTENCE_FINAL_ABBREVIATIONS:
            return next_char.isupper()
        if len(word) == 1 and word.isupper():
            return False  # an initial: J. R. R. Tolkien
        if _DOTTED_ACRONYM.fullmatch(word):
            return False  # U.S.A., e.g. (spelled without the final period above)
        if word.isdigit() and not _WORDY.search(buf[: start - len(word)].rsplit("\n", 1)[-1]):
            return False  # a list marker "1." at the start of a line
        return not next_char.islower()


def split_text(text: str, **options: int) -> list[str]:
    """All speakable pieces of a complete text (for tests and one-shot use)."""
    splitter = SentenceSplitter(**options)
    return [*splitter.push(text), *splitter.flush()]
