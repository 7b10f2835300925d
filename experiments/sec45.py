"""Section 4.5 end to end: a language model's pretraining sentences behind a tweet classifier (Table 1).

:func:`run_section45` reads the task (:mod:`experiments.nlp_task`: the news and Wikipedia
sentences, the tweets), pretrains the bidirectional LSTM language model and finetunes the FFN
on its frozen states, Case 1 (:mod:`experiments.nlp_training`), scores *every* pretraining
sentence for a few test tweets (:mod:`experiments.nlp_scoring`), builds Table 1 and looks at
what the top sentences share with the tweet (:mod:`experiments.nlp_table`), and checks the
scores against the proximal response (:mod:`experiments.nlp_check`).
:func:`reproduce_section45` writes it all, with provenance, to a results file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .nlp_check import proximal_check
from .nlp_scoring import score_sentences
from .nlp_table import table_and_overlap
from .nlp_task import Section45Config, describe_data, hessian_sample, load_text
from .nlp_training import Trained, train_all
from .provenance import read_results, record_experiment

PAPER_SECONDS_PER_SENTENCE = (
    0.94  # section 4.5: "each pretraining data point takes average of 0.94 second"
)
PAPER_PARAMETERS = 93.6e6  # section 4.5: "The final pretrained ELMo model contains 93.6 million parameters"
PAPER_SAMPLE = 1000  # Table 1 scores 1,000 random pretraining sentences; Appendix B samples 1,000 for H_G

CPU = Section45Config()
QUICK = Section45Config(
    sentences=1500,
    held_out=100,
    vocab=400,
    min_count=2,
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


def timing(scored: dict[str, Any], trained: Trained) -> dict[str, Any]:
    """The scoring's seconds a sentence and test tweet, beside the paper's 0.94 s and model size.

    The size ratio sets ELMo's 93.6M against our W + U (the paper's count is ELMo's alone);
    ``parameters_with_classifier`` adds Theta.
    """
    n, k = scored["scores"].shape
    ours = sum(trained.report["parameters"][b] for b in ("W", "U"))
    per_sentence = scored["seconds"] / (n * k)
    return {
        "seconds": scored["seconds"],
        "sentences": n,
        "test_tweets": k,
        "seconds_per_sentence": per_sentence,
        "ms_per_sentence": 1e3 * per_sentence,
        "paper_seconds_per_sentence": PAPER_SECONDS_PER_SENTENCE,
        "speedup": PAPER_SECONDS_PER_SENTENCE / per_sentence,
        "parameters": ours,
        "parameters_with_classifier": ours + trained.report["parameters"]["Theta"],
        "paper_parameters": PAPER_PARAMETERS,
        "size_ratio": PAPER_PARAMETERS / ours,
    }


def run_section45(config: Section45Config) -> dict[str, Any]:
    """Train, score every pretraining sentence, build Table 1, check against the proximal response, time it.

    ``"solvers"`` states each stage's solver, damping and operator; results files written
    before it was recorded lack it.
    """
    torch.manual_seed(config.seed)
    data = load_text(config)
    trained = train_all(config, data)
    sample = hessian_sample(config, data)
    scored = score_sentences(config, data, trained, sample)
    check = proximal_check(
        config, data, trained, scored["scores"], sample, scored["damping"]
    )
    return {
        "config": config.as_dict(),
        "data": describe_data(data),
        **trained.report,
        "solvers": scored["solvers"],
        "influence": {
            k: v for k, v in scored.items() if k not in ("scores", "losses", "solvers")
        },
        "timing": timing(scored, trained),
        "table": table_and_overlap(config, data, scored),
        "check": check,
    }


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
