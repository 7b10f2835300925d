"""Section 4.5's tweet normalisation: mojibake repaired, entities unescaped, users, links and
hashtags made into words, and a vocabulary that covers what the normaliser leaves."""

from __future__ import annotations

import pytest

from experiments import text, tweets
from experiments.data import DatasetNotFoundError

# the bytes of the file, as the file holds them; read as Mac Roman they are mojibake
RIGHT_QUOTE = b"\xe4\xf3\xbb".decode(tweets.ENCODING)  # "‰Ûª"
OPEN_QUOTE = b"\xe4\xf3\xec".decode(tweets.ENCODING)  # "‰ÛÏ"
CUT_SHORT = b"\xe4\xf3_".decode(tweets.ENCODING)  # "‰Û_"
EMOJI = b"_\xf4\xd6\x89".decode(tweets.ENCODING)  # "_Ù÷â", an emoji the file lost


def test_mojibake_repaired_to_punctuation_and_the_lost_to_one_symbol():
    assert tweets.repair_mojibake(f"It{RIGHT_QUOTE}s fine") == "It's fine"
    assert tweets.repair_mojibake(f"{OPEN_QUOTE}@united: late") == '"@united: late'
    assert tweets.repair_mojibake(f"waiting room fo{CUT_SHORT}") == "waiting room fo..."
    lost = tweets.repair_mojibake(f"Weekend 1 {EMOJI}{EMOJI}_ ok")
    assert lost.split() == ["Weekend", "1", tweets.SYMBOL, "ok"]
    assert tweets.repair_mojibake("plain ascii, untouched") == "plain ascii, untouched"


def test_html_entities_unescaped():
    assert (
        tweets.normalise_tweet("salt &amp; pepper &gt; sugar") == "salt & pepper > sugar"
    )


def test_users_and_links_become_markers():
    out = tweets.normalise_tweet("@JetBlue thanks! http://t.co/abc www.x.com")
    assert out == "<user> thanks! <url> <url>"
    assert text.tokenize(out) == ["<user>", "thanks", "!", "<url>", "<url>"]


def test_hashtags_split_at_case_digits_and_into_known_words():
    known = {"free", "concert", "deflate", "gate", "coach"}
    assert tweets.split_hashtag("DeflateGate") == ["deflate", "gate"]
    assert tweets.split_hashtag("Coachella2015") == ["coachella", "2015"]
    assert tweets.split_hashtag("freeconcert", known) == ["free", "concert"]
    # no cut into pieces shorter than three letters, so an unknown name stays whole
    assert tweets.split_hashtag("coachella", known | {"el", "la"}) == ["coachella"]
    assert tweets.segment("xyzfree", known) == ["xyzfree"]
    out = tweets.normalise_tweet("Weekend 1 #Coachella2015 #freeconcert", known)
    assert out == "weekend 1 coachella 2015 free concert"


def test_vocabulary_min_count_and_markers():
    sentences = ["the cat sat", "the dog sat", "the cat ran"]
    vocab = text.Vocabulary.build(sentences, min_count=2, markers=tweets.MARKERS)
    assert vocab.words == (*text.SPECIALS, *tweets.MARKERS, "the", "cat", "sat")
    assert text.Vocabulary.build(sentences, size=1).words == (*text.SPECIALS, "the")
    ids = vocab.encode("<user> the dog")
    assert ids[1] == vocab.index["<user>"] and ids[3] == vocab.index[text.UNK]


def test_the_real_tweets_are_covered():
    try:
        sentences = text.corpus_sentences()
    except DatasetNotFoundError as error:
        pytest.skip(f"needs the text data: {error}")
    vocab = text.Vocabulary.build(sentences, 10_000, 5, markers=tweets.MARKERS)
    known = set(vocab.words)
    normalised, labels = text.load_tweets(known=known)
    assert set(labels) == {0, 1} and len(normalised) == len(labels)
    assert all(c.isascii() or c == "£" for t in normalised for c in t)  # no mojibake left
    tokens = [t for s in normalised for t in text.tokenize(s)]
    unknown = sum(t not in known for t in tokens) / len(tokens)
    # 44% of the tweets' tokens fell outside the old 2,004-word vocabulary
    assert unknown < 0.25
