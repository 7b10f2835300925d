"""Section 4.5's tweets normalised: the file's broken encoding repaired, users, links and
hashtags made into words a language model of news and Wikipedia can read.

The tweet file (``text/tweets-sentiment.csv``) is not UTF-8: its text was once decoded with the
wrong code page and saved again, so a right quote ``’`` reads ``‰Ûª`` when the bytes are read as
Mac Roman, and emoji became runs such as ``_Ù÷â``. :func:`repair_mojibake` maps the sequences
that stand for punctuation back to it and replaces what cannot be recovered (mostly emoji) by
one ``<symbol>`` token. :func:`normalise_tweet` then unescapes HTML entities, maps user
mentions and links to ``<user>`` and ``<url>``, splits hashtags into words
(:func:`split_hashtag`) and lower-cases.
"""

from __future__ import annotations

import html
import re
from collections.abc import Container

USER, URL, SYMBOL = "<user>", "<url>", "<symbol>"
MARKERS = (USER, URL, SYMBOL)
ENCODING = "mac_roman"  # every byte decodes, and the mojibake reads as the table below

# Sequences of the file read as Mac Roman, and the punctuation they were: two code pages'
# worth (the "‰Û" and the "äó" families), longest first so a prefix never wins.
MOJIBAKE = {
    "’¢_äŒ_Ü¢": "'",
    "’¢_äŒ_—ù": " - ",
    "‰Ûª": "'",
    "äó»": "'",
    "‰ÛÏ": '"',
    "äóì": '"',
    "‰Ûù": '"',
    "äóù": '"',
    "‰Û_": "...",  # a tweet cut short
    "äó_": "...",
    "‰ÛÒ": " - ",
    "‰ÛÓ": " - ",
    "å£": "£",
    "åÊ": " ",  # a no-break space
}
_MOJIBAKE = re.compile("|".join(re.escape(k) for k in sorted(MOJIBAKE, key=len)[::-1]))
_LOST = re.compile(r"_*(?:[^\x00-\x7f£]+_*)+")  # runs of what could not be recovered
_URL = re.compile(r"https?://\S*|www\.\S+")
_USER = re.compile(r"@\w+")
_HASHTAG = re.compile(r"#(\w+)")
_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def repair_mojibake(text: str) -> str:
    """Mojibake of punctuation back to punctuation; other non-ASCII runs to ``<symbol>``."""
    text = _MOJIBAKE.sub(lambda m: MOJIBAKE[m.group()], text)
    return _LOST.sub(f" {SYMBOL} ", text)


def segment(word: str, known: Container[str]) -> list[str]:
    """``word`` cut into the fewest known words of three letters or more, or kept whole.

    Dynamic programming over the cut points. Short pieces are refused: with them an unknown
    name is cut into fragments (``coachella`` -> coach, el, la).
    """
    best: list[list[str] | None] = [[]] + [None] * len(word)
    for end in range(1, len(word) + 1):
        for start in range(end):
            piece, before = word[start:end], best[start]
            ok = piece in known and len(piece) >= 3
            if ok and before is not None:
                if best[end] is None or len(before) + 1 < len(best[end]):
                    best[end] = [*before, piece]
    return best[-1] if best[-1] is not None else [word]


def split_hashtag(tag: str, known: Container[str] = frozenset()) -> list[str]:
    """A hashtag's words: at case changes and digits first (``DeflateGate2015`` -> deflate, gate,
    2015), then each lower-case run cut into ``known`` words (``freeconcert`` -> free, concert)."""
    words = []
    for part in _PARTS.findall(tag) or [tag]:
        part = part.lower()
        words += [part] if part.isdigit() or part in known else segment(part, known)
    return words


def normalise_tweet(text: str, known: Container[str] = frozenset()) -> str:
    """One tweet as lower-case text: mojibake repaired, entities unescaped, ``<user>``, ``<url>``,
    hashtags split into words (``known`` words guide the split)."""
    text = html.unescape(repair_mojibake(text))
    text = _URL.sub(f" {URL} ", text)
    text = _USER.sub(f" {USER} ", text)
    text = _HASHTAG.sub(
        lambda m: " " + " ".join(split_hashtag(m.group(1), known)) + " ", text
    )
    return re.sub(r"\s+", " ", text).strip().lower()
