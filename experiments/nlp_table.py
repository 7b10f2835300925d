"""Table 1 read from section 4.5's scores: each table tweet's most and least influential
pretraining sentences, and how |score| goes with what a sentence shares with the tweet (word
overlap), with its own language-model loss and with its length.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from . import text
from .nlp_task import Section45Config, TextData


def overlap(a: Sequence[str], b: Sequence[str]) -> float:
    """Jaccard overlap of two texts' word sets (punctuation left out)."""
    words = [{t for t in text.tokenize(s) if t[0].isalnum()} for s in (a, b)]
    union = words[0] | words[1]
    return len(words[0] & words[1]) / len(union) if union else 0.0


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
