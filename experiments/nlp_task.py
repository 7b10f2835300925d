"""Section 4.5's task: which sentences pretrain the language model, which tweets finetune and
test the classifier, and the batches :meth:`influence.MultiStage.scores` reads them in.

:class:`Section45Config` holds every size of a run; :func:`load_text` splits the corpus and the
tweets with its seed (:mod:`experiments.text` reads them), :func:`hessian_sample` fixes the
sentences behind H_G, and :func:`stage_data` pads them all into batches.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import text, tweets


@dataclass(frozen=True)
class Section45Config:
    """One run of section 4.5. Every size is a count; the paper's values are in the comments."""

    sentences: int | None = None  # pretraining sentences; None = all (paper: 30M)
    held_out: int = 500  # sentences kept out of pretraining, for perplexity
    vocab: int = 10000  # at most this many words kept (paper: ELMo reads characters)
    min_count: int = 5  # a word is kept if pretraining has it this many times
    dim: int = 64  # token-embedding width
    hidden: int = 64  # LSTM units per direction (paper: 4,096, projected to 512)
    epochs: int = 3  # passes of Adam over the pretraining sentences
    batch_size: int = 32  # Adam minibatch, sentences
    lr: float = 3e-3  # Adam learning rate
    train_tweets: int = 6000  # finetuning tweets (paper: GOP debate, 16,654 in all)
    test_tweets: int = 2000  # held-out tweets for accuracy
    table_tweets: int = 2  # Table 1 rows a class: its first test tweets after the shuffle
    width: int = 64  # FFN hidden size (paper: 64)
    finetune_l2: float = 1e-3  # l2 of F
    baseline_words: int = 5000  # bag-of-words baseline vocabulary
    hessian_sentences: int = 64  # sentences defining H_G and the check's G (paper: 1,000)
    pretrain_damping_floor: float = 0.1  # lambda_1 = max(this, 2 |lowest Ritz of H_G|)
    finetune_damping: float = 1e-3  # lambda_2 on F's Hessian
    lanczos_steps: int = 20  # products spent estimating H_G's extreme eigenvalues
    cg_iters: int = 30  # CG iterations of the H_G solve
    finetune_cg_iters: int = 300  # CG iterations of F's solve: Theta alone, cheap
    score_batch: int = 64  # sentences a JVP batch
    loo_top: int = 8  # check: sentences of largest |score| for the first table tweet
    loo_random: int = 8  # check: and sentences drawn at random from the rest
    loo_iters: int = 30  # check: L-BFGS iterations of each pretraining re-optimization
    figure_points: int = 3000  # sentences kept in the results file for the overlap figure
    seed: int = 0
    device: str = "auto"  # experiments.devices.resolve: "auto" is CUDA where there is one

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Section45Config:
        return dataclasses.replace(self, **changes)


@dataclass
class TextData:
    """Sentences and tweets, as text and as id lists over one vocabulary."""

    vocab: text.Vocabulary
    sentences: list[str]  # pretraining sentences, each scored
    held_out: list[str]  # for perplexity only
    train: tuple[list[str], list[int]]  # finetuning tweets and labels
    test: tuple[list[str], list[int]]
    table: list[int]  # positions in test of Table 1's tweets

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        return self.vocab.encode_all(texts)


def load_text(config: Section45Config) -> TextData:
    """The corpus shuffled with the seed, split into held-out and pretraining sentences; the tweets likewise.

    Table 1's tweets are fixed by a rule, before any score exists: the first
    ``table_tweets`` test tweets of each class, negative first, in the shuffled order.
    """
    rng = random.Random(config.seed)
    sentences = text.corpus_sentences()
    rng.shuffle(sentences)
    if config.sentences is not None:
        sentences = sentences[: config.sentences + config.held_out]
    held_out, pretrain = sentences[: config.held_out], sentences[config.held_out :]
    vocab = text.Vocabulary.build(
        pretrain, config.vocab, config.min_count, markers=tweets.MARKERS
    )
    texts, labels = text.load_tweets(known=set(vocab.words))
    order = list(range(len(texts)))
    rng.shuffle(order)
    n, m = config.train_tweets, config.test_tweets
    train = ([texts[i] for i in order[:n]], [labels[i] for i in order[:n]])
    test = ([texts[i] for i in order[n : n + m]], [labels[i] for i in order[n : n + m]])
    table = [
        i
        for c in (0, 1)
        for i in [j for j, y in enumerate(test[1]) if y == c][: config.table_tweets]
    ]
    return TextData(vocab, pretrain, held_out, train, test, table)


def hessian_sample(config: Section45Config, data: TextData) -> list[int]:
    """The pretraining sentences that define H_G (and G in the check): a seeded random sample."""
    n = min(config.hessian_sentences, len(data.sentences))
    return sorted(random.Random(config.seed + 1).sample(range(len(data.sentences)), n))


def stage_data(
    config: Section45Config, data: TextData, sample: list[int]
) -> dict[str, Any]:
    """What :meth:`MultiStage.scores` takes: DataLoaders padded per batch, and the candidates' order."""
    ids = data.ids(data.sentences)
    order = text.by_length(
        ids
    )  # candidates are scored in length order; ``order`` maps back
    sample_ids = [ids[i] for i in sample]
    train_ids = data.ids(data.train[0])
    train_order = text.by_length(train_ids)
    table_ids = data.ids([data.test[0][i] for i in data.table])
    return {
        "pretrain": text.padded_batches(
            [sample_ids[i] for i in text.by_length(sample_ids)], config.score_batch
        ),
        "candidates": text.padded_batches([ids[i] for i in order], config.score_batch),
        "order": order,
        "finetune": text.padded_batches(
            [train_ids[i] for i in train_order],
            256,
            labels=[data.train[1][i] for i in train_order],
        ),
        "test": (
            text.pad(table_ids),
            torch.tensor([data.test[1][i] for i in data.table]),
        ),
    }


def unk_rate(data: TextData, texts: Sequence[str]) -> float:
    """The share of ``texts``' words outside the vocabulary (sentence markers left out)."""
    ids = data.ids(texts)
    return sum(i == 1 for s in ids for i in s[1:-1]) / max(
        1, sum(len(s) - 2 for s in ids)
    )


def marker_rate(data: TextData, texts: Sequence[str]) -> float:
    """The share of ``texts``' tokens that are markers (``<user>``, ``<url>``, ``<symbol>``):
    in the vocabulary, but never met in pretraining."""
    tokens = [t for s in texts for t in text.tokenize(s)]
    return sum(t in tweets.MARKERS for t in tokens) / max(1, len(tokens))


def describe_data(data: TextData) -> dict[str, Any]:
    """What a results file records of the task: its sizes and how much falls outside the vocabulary."""
    return {
        "sentences": len(data.sentences),
        "held_out": len(data.held_out),
        "vocab": len(data.vocab),
        "tokens": int(sum(len(text.tokenize(s)) for s in data.sentences)),
        "train_tweets": len(data.train[1]),
        "test_tweets": len(data.test[1]),
        "sentence_unk_rate": unk_rate(data, data.sentences),
        "tweet_unk_rate": unk_rate(data, data.test[0]),
        "tweet_marker_rate": marker_rate(data, data.test[0]),
    }
