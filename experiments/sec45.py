"""Section 4.5 end to end: a language model's pretraining sentences behind a tweet classifier (Table 1).

:func:`run_section45` pretrains the bidirectional LSTM language model of :mod:`experiments.lm`
on every sentence of the news and Wikipedia text (:mod:`experiments.text`), finetunes the
FFN on its frozen states (Case 1), scores *every* pretraining sentence for a few test tweets
with :meth:`influence.MultiStage.scores` (one forward-mode JVP a batch of sentences), builds
Table 1, looks at what the top sentences share with the tweet, and checks the scores against
the proximal response (:func:`proximal_response`). :func:`reproduce_section45` writes it all,
with provenance, to a results file.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from scipy import stats as scipy_stats
from torch import Tensor

from influence import CG, MultiStage
from influence.spectrum import lanczos

from . import lm, text
from .devices import resolve
from .fit import restore
from .objectives import Proximal
from .provenance import read_results, record_experiment
from .stats import agreement
from .warning_counts import counted_warnings

PAPER_SECONDS_PER_SENTENCE = (
    0.94  # section 4.5: "each pretraining data point takes average of 0.94 second"
)
PAPER_PARAMETERS = 93.6e6  # section 4.5: "The final pretrained ELMo model contains 93.6 million parameters"
PAPER_SAMPLE = 1000  # Table 1 scores 1,000 random pretraining sentences; Appendix B samples 1,000 for H_G


@dataclass(frozen=True)
class Section45Config:
    """One run of section 4.5. Every size is a count; the paper's values are in the comments."""

    sentences: int | None = None  # pretraining sentences; None = all (paper: 30M)
    held_out: int = 500  # sentences kept out of pretraining, for perplexity
    vocab: int = 2000  # words kept (paper: ELMo reads characters)
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


CPU = Section45Config()
QUICK = Section45Config(
    sentences=1500,
    held_out=100,
    vocab=400,
    dim=16,
    hidden=16,
    epochs=1,
    batch_size=32,
    train_tweets=600,
    test_tweets=300,
    hessian_sentences=32,
    lanczos_steps=6,
    cg_iters=10,
    loo_top=3,
    loo_random=3,
    loo_iters=15,
    figure_points=500,
)
SCALES = {"cpu": CPU, "quick": QUICK}


# ---- data ------------------------------------------------------------------------------------


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
    vocab = text.Vocabulary.build(pretrain, config.vocab)
    tweets, labels = text.load_tweets()
    order = list(range(len(tweets)))
    rng.shuffle(order)
    n, m = config.train_tweets, config.test_tweets
    train = ([tweets[i] for i in order[:n]], [labels[i] for i in order[:n]])
    test = ([tweets[i] for i in order[n : n + m]], [labels[i] for i in order[n : n + m]])
    table = [
        i
        for c in (0, 1)
        for i in [j for j, y in enumerate(test[1]) if y == c][: config.table_tweets]
    ]
    return TextData(vocab, pretrain, held_out, train, test, table)


# ---- training ----------------------------------------------------------------------------------


@dataclass
class Trained:
    """The pretrained encoder (W) and softmax head (U), the finetuned classifier (Theta), and their reports."""

    encoder: lm.Encoder
    head: lm.LMHead
    classifier: lm.Classifier
    history: list[float]
    report: dict[str, Any]


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
        },
        "finetune_gradient_norm": finetune_gradient,
        "pretrain_minutes": pretrain_minutes,
        "loss_first_last": [history[0], float(np.mean(history[-20:]))],
    }
    return Trained(encoder, head, classifier, history, report)


# ---- influence -------------------------------------------------------------------------------


def multistage(config: Section45Config, trained: Trained) -> MultiStage:
    """Case 1 of the paper: W frozen in finetuning; g = :func:`lm.lm_losses`, f = cross-entropy."""
    return MultiStage(
        trained.encoder,
        trained.head,
        trained.classifier,
        pretrain_loss=lm.lm_losses,
        finetune_l2=config.finetune_l2,
        case="fixed",
    )


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


def pretrain_damping(
    config: Section45Config, ms: MultiStage, pretrain: Any
) -> tuple[float, list[float]]:
    """lambda_1: the larger of the floor and twice |H_G's lowest Ritz value|, so H_G + lambda_1 I is positive definite.

    The floor, 0.1, is where eq. 16's damping of 1e-2 on H^2 puts its cut: eigenvalues below
    sqrt(1e-2) are filtered there too. Fixed before any score is seen.
    """
    ritz = lanczos(
        ms.pretrain_hessian(pretrain),
        config.lanczos_steps,
        seed=config.seed,
        dtype=ms.dtype,
    )
    lowest, highest = float(ritz[0]), float(ritz[-1])
    return max(config.pretrain_damping_floor, 2 * max(0.0, -lowest)), [lowest, highest]


def sentence_losses(trained: Trained, loader: Any, order: list[int]) -> np.ndarray:
    """g(z) of every pretraining sentence, back in corpus order."""
    out = []
    with torch.no_grad():
        for x, y in loader:
            x, y = (t.to(lm.device_of(trained.encoder)) for t in (x, y))
            out.append(lm.lm_losses(trained.head(trained.encoder(x)).double(), y))
    losses = torch.cat(out).cpu().numpy()
    back = np.empty_like(losses)
    back[order] = losses
    return back


def overlap(a: Sequence[str], b: Sequence[str]) -> float:
    """Jaccard overlap of two texts' word sets (punctuation left out)."""
    words = [{t for t in text.tokenize(s) if t[0].isalnum()} for s in (a, b)]
    union = words[0] | words[1]
    return len(words[0] & words[1]) / len(union) if union else 0.0


# ---- the check: the proximal response ------------------------------------------------------------


def _flat(modules: Sequence[torch.nn.Module]) -> list[torch.nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


def proximal_pretrain(
    encoder: lm.Encoder,
    head: lm.LMHead,
    sample: Tensor,
    z: Tensor,
    eps: float,
    damping: float,
    iters: int,
    start: Sequence[Tensor] | None = None,
) -> tuple[lm.Encoder, lm.LMHead, float]:
    """argmin over phi = (W, U) of ``G_S(phi) + eps g(z; phi) + lambda_1/2 ||phi - phi_s||^2 - dG_S(phi_s) . phi``.

    G_S is the mean of g over the Hessian's sample S. The linear term makes phi_s exactly
    stationary at eps = 0, so the response to eps is what the damped influence function
    linearizes (eq. 4 with ``H_G + lambda_1 I``), whether or not Adam reached a minimum.
    ``start`` (flat parameter tensors) warm-starts L-BFGS. Returns the moved encoder and head,
    and the final gradient norm.
    """
    enc, hd = copy.deepcopy(encoder), copy.deepcopy(head)
    params = _flat([enc, hd])
    stage = Proximal.at(
        params, lambda: lm.lm_losses(hd(enc(sample)), sample).mean(), damping, dtype=None
    )
    if start is not None:
        restore(params, start)
    moved = dataclasses.replace(
        stage, extra=lambda: lm.lm_losses(hd(enc(z)), z).sum(), eps=eps
    )
    norm = lm.fit_full_batch(moved, tol=1e-9, max_iter=iters)
    return enc, hd, norm


def proximal_finetune(
    classifier: lm.Classifier,
    pooled_s: Tensor,
    pooled: Tensor,
    labels: Tensor,
    l2: float,
    damping: float,
) -> lm.Classifier:
    """argmin over Theta of ``F(Theta; W') + lambda_2/2 ||Theta - Theta_s||^2 - dF(Theta_s; W_s) . Theta``.

    In float64, on the mean-pooled states of the moved encoder."""
    head = copy.deepcopy(classifier).double()
    params = list(head.parameters())

    def f(features: Tensor) -> Tensor:
        return nnf.cross_entropy(head.ffn(features), labels) + l2 / 2 * sum(
            (p**2).sum() for p in params
        )

    # anchored where the encoder was, with the slope there; then F on the moved states
    stage = Proximal.at(params, lambda: f(pooled_s), damping)
    lm.fit_full_batch(
        dataclasses.replace(stage, base=lambda: f(pooled)), tol=1e-12, max_iter=500
    )
    return head


def proximal_check(
    config: Section45Config,
    data: TextData,
    trained: Trained,
    scores: Tensor,
    sample: list[int],
    damping: float,
) -> dict[str, Any]:
    """Predicted against re-optimized ``d f(x_t)/d eps`` for the first table tweet, by central differences.

    Sentences: the ``loo_top`` of largest |score| and ``loo_random`` drawn at random from the
    rest. eps = 1/|S|, one more copy of the sentence beside S. Each response re-optimizes the
    pretraining objective (:func:`proximal_pretrain`), then finetuning on the moved embedding
    (:func:`proximal_finetune`), at +eps and -eps.
    """
    start = time.perf_counter()
    column = scores[:, 0]
    top = torch.argsort(column.abs(), descending=True)[: config.loo_top].tolist()
    rest = sorted(set(range(len(column))) - set(top))
    chosen = top + random.Random(config.seed + 2).sample(
        rest, min(config.loo_random, len(rest))
    )
    ids = data.ids(data.sentences)
    device = lm.device_of(trained.encoder)
    sample_x = text.pad([ids[i] for i in sample]).to(device)
    train_ids = data.ids(data.train[0])
    test_ids = data.ids([data.test[0][data.table[0]]])
    train_y = torch.tensor(data.train[1], device=device)
    test_y = torch.tensor([data.test[1][data.table[0]]], device=device)
    pooled_s = lm.pooled_features(trained.encoder, train_ids).double()
    eps = 1 / len(sample)
    measured, gradient_norms = [], []
    for i in chosen:
        z = text.pad([ids[i]]).to(device)
        losses = {}
        moved_plus = None
        for sign in (1, -1):
            start_point = None
            # -eps starts from the mirrored +eps response: its negative to first order
            if moved_plus is not None:
                start_point = [
                    2 * a.detach() - b.detach()
                    for a, b in zip(_flat([trained.encoder, trained.head]), moved_plus)
                ]
            enc, hd, norm = proximal_pretrain(
                trained.encoder,
                trained.head,
                sample_x,
                z,
                sign * eps,
                damping,
                config.loo_iters,
                start_point,
            )
            gradient_norms.append(norm)
            if sign == 1:
                moved_plus = [p.detach().clone() for p in _flat([enc, hd])]
            head = proximal_finetune(
                trained.classifier,
                pooled_s,
                lm.pooled_features(enc, train_ids).double(),
                train_y,
                config.finetune_l2,
                config.finetune_damping,
            )
            with torch.no_grad():
                test_logits = head.ffn(lm.pooled_features(enc, test_ids).double())
            losses[sign] = float(nnf.cross_entropy(test_logits, test_y, reduction="sum"))
        measured.append((losses[1] - losses[-1]) / (2 * eps))
    predicted = [float(column[i]) for i in chosen]
    fit = agreement(predicted, measured)
    return {
        "indices": chosen,
        "top": len(top),
        "eps": eps,
        "predicted": predicted,
        "measured": measured,
        "agreement": dataclasses.asdict(fit),
        "interval": list(fit.interval()),
        "max_gradient_norm": max(gradient_norms),
        "minutes": (time.perf_counter() - start) / 60,
    }


# ---- the whole section -------------------------------------------------------------------------


def score_sentences(
    config: Section45Config, data: TextData, trained: Trained, sample: list[int]
) -> dict[str, Any]:
    """Every pretraining sentence's score for each Table 1 tweet, by ``ms.scores(..., per_test=True)``, timed."""
    ms = multistage(config, trained)
    staged = stage_data(config, data, sample)
    with counted_warnings() as warned:
        damping, ritz = pretrain_damping(config, ms, staged["pretrain"])
        start = time.perf_counter()
        raw = ms.scores(
            staged["pretrain"],
            staged["finetune"],
            staged["test"],
            staged["candidates"],
            pretrain_solver=CG(damping, config.cg_iters, squared=False),
            finetune_solver=CG(
                config.finetune_damping, config.finetune_cg_iters, squared=False
            ),
            per_test=True,
            batch_size=config.score_batch,
        ).cpu()
        seconds = time.perf_counter() - start
    scores = torch.empty_like(raw)
    scores[torch.tensor(staged["order"])] = raw
    report = ms.report
    return {
        "scores": scores,
        "damping": damping,
        "ritz": ritz,
        "seconds": seconds,
        "losses": sentence_losses(trained, staged["candidates"], staged["order"]),
        "solves": {
            "pretrain": [dataclasses.asdict(s) for s in report.pretrain_solves],
            "finetune": [dataclasses.asdict(s) for s in report.finetune_solves],
        },
        "gradient_norms": {
            "pretrain": report.pretrain_gradient_norm,
            "finetune": report.finetune_gradient_norm,
        },
        "warnings": warned,
    }


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return (
        float(scipy_stats.spearmanr(a, b)[0])
        if np.ptp(a) > 0 and np.ptp(b) > 0
        else math.nan
    )


def table_and_overlap(
    config: Section45Config, data: TextData, scored: dict[str, Any]
) -> dict[str, Any]:
    """Table 1's rows, and how |score| goes with lexical overlap, the sentence's own loss and its length."""
    scores = scored["scores"].numpy()
    losses = scored["losses"]
    length = np.array([len(text.tokenize(s)) for s in data.sentences], dtype=float)
    rows, correlations, overlaps = [], [], []
    for k, t in enumerate(data.table):
        tweet = data.test[0][t]
        magnitude = np.abs(scores[:, k])
        big, small = int(magnitude.argmax()), int(magnitude.argmin())
        lap = np.array([overlap(tweet, s) for s in data.sentences])
        overlaps.append(lap)
        top = np.argsort(-magnitude)[:20]
        rows.append(
            {
                "tweet": tweet,
                "label": data.test[1][t],
                "max_sentence": data.sentences[big],
                "max_score": float(scores[big, k]),
                "min_sentence": data.sentences[small],
                "min_score": float(scores[small, k]),
                "max_index": big,
                "min_index": small,
                "top20_overlap": float(lap[top].mean()),
                "all_overlap": float(lap.mean()),
                "top20_length": float(length[top].mean()),
                "top20_loss": float(losses[top].mean()),
            }
        )
        correlations.append(
            {
                "overlap": _spearman(magnitude, lap),
                "loss": _spearman(magnitude, losses),
                "length": _spearman(magnitude, length),
            }
        )
    keep = sorted(
        random.Random(config.seed + 3).sample(
            range(len(data.sentences)), min(config.figure_points, len(data.sentences))
        )
    )
    figure = {
        "indices": keep,
        "length": length[keep].tolist(),
        "loss": np.round(losses[keep], 5).tolist(),
        "overlap": [np.round(lap[keep], 4).tolist() for lap in overlaps],
        "scores": [
            [float(f"{v:.4g}") for v in scores[keep, k]] for k in range(len(data.table))
        ],
    }
    return {
        "rows": rows,
        "spearman_abs_score": correlations,
        "figure": figure,
        "mean_abs_score": [
            float(np.abs(scores[:, k]).mean()) for k in range(len(data.table))
        ],
    }


def run_section45(config: Section45Config) -> dict[str, Any]:
    """Train, score every pretraining sentence, build Table 1, check against the proximal response, time it."""
    torch.manual_seed(config.seed)
    data = load_text(config)
    trained = train_all(config, data)
    sample = hessian_sample(config, data)
    scored = score_sentences(config, data, trained, sample)
    n, k = scored["scores"].shape
    ours = sum(trained.report["parameters"][b] for b in ("W", "U"))
    per_sentence = scored["seconds"] / (n * k)
    timing = {
        "seconds": scored["seconds"],
        "sentences": n,
        "test_tweets": k,
        "seconds_per_sentence": per_sentence,
        "ms_per_sentence": 1e3 * per_sentence,
        "paper_seconds_per_sentence": PAPER_SECONDS_PER_SENTENCE,
        "speedup": PAPER_SECONDS_PER_SENTENCE / per_sentence,
        "parameters": ours,
        "paper_parameters": PAPER_PARAMETERS,
        "size_ratio": PAPER_PARAMETERS / ours,
    }
    check = proximal_check(
        config, data, trained, scored["scores"], sample, scored["damping"]
    )
    return {
        "config": config.as_dict(),
        "data": {
            "sentences": n,
            "held_out": len(data.held_out),
            "vocab": len(data.vocab),
            "tokens": int(sum(len(text.tokenize(s)) for s in data.sentences)),
            "train_tweets": len(data.train[1]),
            "test_tweets": len(data.test[1]),
            "sentence_unk_rate": _unk_rate(data, data.sentences),
            "tweet_unk_rate": _unk_rate(data, data.test[0]),
        },
        **trained.report,
        "influence": {
            k2: v for k2, v in scored.items() if k2 not in ("scores", "losses")
        },
        "timing": timing,
        "table": table_and_overlap(config, data, scored),
        "check": check,
    }


def _unk_rate(data: TextData, texts: Sequence[str]) -> float:
    ids = data.ids(texts)
    return sum(i == 1 for s in ids for i in s[1:-1]) / max(
        1, sum(len(s) - 2 for s in ids)
    )


EXPERIMENTS = ("tweets",)


def reproduce_section45(
    path: str | Path, scale: str = "cpu", only: Sequence[str] | None = None
) -> dict[str, Any]:
    """Run section 4.5 at ``scale`` ("cpu" or "quick") and write its results, with provenance, to ``path``.

    The paper's own scale (ELMo on One Billion Word) is not runnable here; ``scale="paper"`` says so.
    """
    if scale not in SCALES:
        raise ValueError(
            f"scale: section 4.5 runs at {sorted(SCALES)}; the paper's ELMo on One Billion Word "
            f"is not reproduced here, got {scale!r}"
        )
    names = list(EXPERIMENTS) if only is None else list(only)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(
            f"only: unknown experiments {unknown}; expected some of {list(EXPERIMENTS)}"
        )
    path = Path(path)
    done = read_results(path)["results"] if path.exists() else {"experiments": {}}
    for name in names:
        record_experiment(path, done, name, scale, lambda: run_section45(SCALES[scale]))
    return done
