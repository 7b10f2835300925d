"""Section 4.5's two stages trained: the bidirectional LSTM language model (W, U) on the
pretraining sentences, the tweet classifier (Theta) on its frozen states (Case 1), and a
bag-of-words baseline that says what the classifier's accuracy is worth.

Two more baselines say where a gap to bag-of-words comes from: a linear probe (logistic
regression) on the same frozen features as the FFN, and bag-of-words over the language model's
own vocabulary (the tokens the encoder reads, ``<unk>`` included).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import lm, text
from .devices import resolve
from .nlp_task import Section45Config, TextData
from .objectives import StageObjective


@dataclass
class Trained:
    """The pretrained encoder (W) and softmax head (U), the finetuned classifier (Theta), and their reports."""

    encoder: lm.Encoder
    head: lm.LMHead
    classifier: lm.Classifier
    history: list[float]
    report: dict[str, Any]


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    l2: float,
) -> float:
    """Test accuracy of logistic regression on the frozen pooled features (the FFN's inputs)."""
    torch.manual_seed(0)
    probe = torch.nn.Linear(train_x.shape[1], 2).to(train_x.device)
    objective = StageObjective(list(probe.parameters()), probe, train_x, train_y, l2=l2)
    lm.fit_full_batch(objective, tol=1e-6)
    with torch.no_grad():
        return float((probe(test_x).argmax(-1) == test_y).float().mean())


def in_vocabulary(vocab: text.Vocabulary, texts: list[str]) -> list[list[str]]:
    """Each text's tokens as the encoder reads them: words outside ``vocab`` as ``<unk>``."""
    index = vocab.index
    return [[t if t in index else text.UNK for t in text.tokenize(s)] for s in texts]


def train_all(config: Section45Config, data: TextData) -> Trained:
    """Pretrain the language model, finetune the classifier on its frozen states, fit the baseline."""
    start = time.perf_counter()
    device = resolve(config.device)
    size = lm.LMSize(len(data.vocab), config.dim, config.hidden)
    encoder, head = (m.to(device) for m in lm.build_lm(size, config.seed))
    history = lm.train_lm(
        encoder,
        head,
        data.ids(data.sentences),
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=config.seed,
    )
    encoder.eval()
    head.eval()
    pretrain_minutes = (time.perf_counter() - start) / 60
    torch.manual_seed(config.seed)
    classifier = lm.Classifier(config.hidden, config.width).to(device)
    train_x, test_x = (
        lm.pooled_features(encoder, data.ids(t[0])) for t in (data.train, data.test)
    )
    train_y, test_y = (torch.tensor(t[1], device=device) for t in (data.train, data.test))
    finetune_gradient = lm.train_classifier(
        classifier, train_x, train_y, l2=config.finetune_l2
    )
    baseline = lm.BagOfWords(
        [text.tokenize(t) for t in data.train[0]], config.baseline_words
    )
    baseline.fit(  # a bag of words on the CPU: it is small
        [text.tokenize(t) for t in data.train[0]], train_y.cpu(), l2=config.finetune_l2
    )
    lm_words = lm.BagOfWords(in_vocabulary(data.vocab, data.train[0]), len(data.vocab))
    lm_words.fit(
        in_vocabulary(data.vocab, data.train[0]), train_y.cpu(), l2=config.finetune_l2
    )
    majority = max(float(test_y.float().mean()), 1 - float(test_y.float().mean()))
    report = {
        "parameters": {
            "W": lm.parameter_count(encoder),
            "U": lm.parameter_count(head),
            "Theta": lm.parameter_count(classifier),
        },
        "perplexity": {
            "held_out": lm.perplexity(encoder, head, data.ids(data.held_out)),
            "train": lm.perplexity(
                encoder, head, data.ids(data.sentences[: len(data.held_out)])
            ),
        },
        "accuracy": {
            "classifier": lm.classifier_accuracy(classifier, test_x, test_y),
            "classifier_train": lm.classifier_accuracy(classifier, train_x, train_y),
            "bag_of_words": baseline.accuracy(
                [text.tokenize(t) for t in data.test[0]], test_y.cpu()
            ),
            "majority": majority,
            "linear_probe": linear_probe(
                train_x, train_y, test_x, test_y, config.finetune_l2
            ),
            "bag_of_lm_words": lm_words.accuracy(
                in_vocabulary(data.vocab, data.test[0]), test_y.cpu()
            ),
        },
        "finetune_gradient_norm": finetune_gradient,
        "pretrain_minutes": pretrain_minutes,
        "loss_first_last": [history[0], float(np.mean(history[-20:]))],
    }
    return Trained(encoder, head, classifier, history, report)
