"""Section 4.5's text: pretraining sentences, a word vocabulary, and labelled tweets.

The paper pretrains ELMo on the One Billion Word benchmark (30 million sentences) and
finetunes on 16,654 GOP-debate tweets. Neither is on this machine; the stand-ins are:

- pretraining text: ``text/lee_background.cor`` (300 ABC news articles, one a line) and
  ``text/enwiki-shard.xml.bz2`` (206 Wikipedia articles as MediaWiki XML, cleaned of markup
  by :func:`strip_wiki_markup`), split into sentences by a simple regular expression
  (:func:`split_sentences`: a sentence ends at ``.``, ``!`` or ``?`` followed by space and a
  capital letter, so "Mr. Smith" is split wrongly, and we accept that);
- tweets: ``text/tweets-sentiment.csv`` (columns sentiment, confidence, text: a CrowdFlower
  mix of airline, self-driving-car and other tweets, not the GOP debate), negative (0) vs
  positive (1), neutral dropped, each normalised by :func:`experiments.tweets.normalise_tweet`
  (its encoding repaired, ``<user>``, ``<url>``, hashtags split into words).

Everything is read from :func:`experiments.data.data_root` (``$INFLUENCE_DATA``), never downloaded.
Tokens are lower-cased words, single punctuation marks and the tweets' markers such as
``<user>`` (:func:`tokenize`); the vocabulary keeps the pretraining words seen at least a few
times, and maps the rest to ``<unk>``.
"""

from __future__ import annotations

import bz2
import csv
import html
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .data import DatasetNotFoundError, data_root
from .tweets import ENCODING, normalise_tweet

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)  # PAD is id 0: the models find padding as x == 0
LEE = Path("text") / "lee_background.cor"
WIKI = Path("text") / "enwiki-shard.xml.bz2"
TWEETS = Path("text") / "tweets-sentiment.csv"
LABELS = {"negative": 0, "positive": 1}

_TOKEN = re.compile(r"<[a-z]+>|[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


def text_file(relative: Path) -> Path:
    """A file under the data root, or a clear error saying where it was looked for."""
    path = data_root() / relative
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{relative} not found under {data_root()}: set INFLUENCE_DATA to the folder that holds "
            f"text/ (e.g. ../shared/data); section 4.5 never downloads"
        )
    return path


def tokenize(text: str) -> list[str]:
    """Lower-cased words (with an apostrophe suffix such as ``don't``), markers such as
    ``<user>``, and single punctuation marks."""
    return _TOKEN.findall(text.lower())


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph by a regular expression: end mark, space, capital (or digit)."""
    return [s.strip() for s in _SENTENCE_END.split(paragraph.strip()) if s.strip()]


def _remove_nested(text: str, open_: str, close: str) -> str:
    """Remove ``open_ ... close`` spans, innermost first, so nested spans go too."""
    pattern = re.compile(
        re.escape(open_) + r"(?:(?!" + re.escape(open_) + r").)*?" + re.escape(close),
        re.DOTALL,
    )
    while True:
        text, n = pattern.subn(" ", text)
        if n == 0:
            return text


def strip_wiki_markup(wikitext: str) -> str:
    """Plain paragraphs from MediaWiki markup: templates, tables, refs, tags, files and headings removed.

    Links keep their text (``[[target|text]]`` -> ``text``, ``[[target]]`` -> ``target``),
    external links keep their label, bold/italic quotes go, and list, table and heading lines
    are dropped (they are rarely sentences). Paragraphs come back separated by newlines.
    """
    text = re.sub(r"<!--.*?-->", " ", wikitext, flags=re.DOTALL)
    text = re.sub(r"<ref[^>]*/>", " ", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", " ", text, flags=re.DOTALL)
    text = _remove_nested(text, "{{", "}}")
    text = _remove_nested(text, "{|", "|}")
    text = re.sub(
        r"\[\[(?:File|Image|Category|[a-z]{2,3}(?:-[a-z]+)?):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]",
        " ",
        text,
    )
    text = re.sub(r"\[\[[^\]|]*\|([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[\[([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", text)
    text = re.sub(r"\[https?://\S+\]", " ", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"<[^>]+>", " ", text)
    text = html.unescape(text)
    keep = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "=*#;:|!{}" or line.startswith("__"):
            continue
        keep.append(re.sub(r"\s+", " ", line))
    return "\n".join(keep)


def wiki_articles(path: Path) -> list[str]:
    """The cleaned text of every main-namespace, non-redirect page of a MediaWiki XML dump."""
    articles = []
    with bz2.open(path, "rb") as stream:
        for _, element in ET.iterparse(stream):
            if element.tag.rsplit("}", 1)[-1] != "page":
                continue
            ns = element.find("{*}ns")
            text = element.find("{*}revision/{*}text")
            redirect = element.find("{*}redirect") is not None
            if (
                ns is not None
                and ns.text == "0"
                and not redirect
                and text is not None
                and text.text
            ):
                articles.append(strip_wiki_markup(text.text))
            element.clear()
    return articles


def corpus_sentences(min_tokens: int = 4, max_tokens: int = 40) -> list[str]:
    """Every pretraining sentence of the news and Wikipedia files with ``min_tokens``..``max_tokens`` tokens.

    Longer sentences are dropped rather than cut, so each kept sentence is a whole one.
    """
    paragraphs = text_file(LEE).read_text(encoding="utf-8", errors="replace").splitlines()
    for article in wiki_articles(text_file(WIKI)):
        paragraphs.extend(article.splitlines())
    sentences = [s for p in paragraphs for s in split_sentences(p)]
    return [s for s in sentences if min_tokens <= len(tokenize(s)) <= max_tokens]


def load_tweets(
    max_tokens: int = 40, known: Container[str] = frozenset()
) -> tuple[list[str], list[int]]:
    """Negative (0) and positive (1) tweets in file order, normalised; neutral dropped.

    The file is read as Mac Roman, the code page its mojibake was made with
    (:mod:`experiments.tweets`); ``known`` words guide the hashtag split. Tweets of more than
    ``max_tokens`` tokens (a few, mostly runs of odd characters) are dropped.
    """
    texts, labels = [], []
    with text_file(TWEETS).open(encoding=ENCODING, newline="") as stream:
        for row in csv.DictReader(stream):
            label = LABELS.get(row["sentiment"])
            if label is None:
                continue
            text = normalise_tweet(row["text"], known)
            if not 0 < len(tokenize(text)) <= max_tokens:
                continue
            texts.append(text)
            labels.append(label)
    return texts, labels


@dataclass(frozen=True)
class Vocabulary:
    """Words to ids: the specials first (``<pad>`` is 0), then markers, then words by falling frequency."""

    words: tuple[str, ...]

    @classmethod
    def build(
        cls,
        sentences: Iterable[str],
        size: int | None = None,
        min_count: int = 1,
        markers: Sequence[str] = (),
    ) -> Vocabulary:
        """The tokens seen at least ``min_count`` times, at most ``size`` of them, most frequent
        first (ties by first appearance), after the four specials and the ``markers``."""
        counts = Counter(t for s in sentences for t in tokenize(s))
        kept = [w for w, c in counts.most_common(size) if c >= min_count]
        head = SPECIALS + tuple(markers)
        return cls(head + tuple(w for w in kept if w not in head))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def encode(self, text: str, index: dict[str, int] | None = None) -> list[int]:
        """``<s>`` token ids ``</s>``, unknown words as ``<unk>``."""
        index = self.index if index is None else index
        unk = index[UNK]
        return [index[BOS], *(index.get(t, unk) for t in tokenize(text)), index[EOS]]

    def encode_all(self, texts: Sequence[str]) -> list[list[int]]:
        index = self.index
        return [self.encode(t, index) for t in texts]


def pad(sequences: Sequence[Sequence[int]], length: int | None = None) -> Tensor:
    """Id lists as one LongTensor ``[n, length]``, padded with ``<pad>`` = 0 at the end."""
    length = max(len(s) for s in sequences) if length is None else length
    out = torch.zeros(len(sequences), length, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = torch.tensor(s[:length], dtype=torch.long)
    return out


def by_length(sequences: Sequence[Sequence[int]]) -> list[int]:
    """Indices that sort ``sequences`` by length (stable): batches of similar length pad little."""
    return sorted(range(len(sequences)), key=lambda i: len(sequences[i]))


def padded_batches(
    sequences: Sequence[Sequence[int]],
    batch_size: int,
    labels: Sequence[int] | None = None,
):
    """A DataLoader of ``(x, y)``, in the given order, each batch padded to its own longest sequence.

    ``y`` is ``x`` itself for the language model (the loss reads its targets and mask off the
    ids) or the class labels. Pass sequences sorted by length (:func:`by_length`) to pad little.
    """
    from torch.utils.data import DataLoader

    items = list(range(len(sequences)))

    def collate(batch: list[int]) -> tuple[Tensor, Tensor]:
        x = pad([sequences[i] for i in batch])
        y = (
            x
            if labels is None
            else torch.tensor([labels[i] for i in batch], dtype=torch.long)
        )
        return x, y

    return DataLoader(items, batch_size=batch_size, shuffle=False, collate_fn=collate)
