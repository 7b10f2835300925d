"""What the paper reports, typed once: each number, where it stands, and where ours is stored.

:data:`PAPER_NUMBERS` lists every number of the paper the book compares with, each as a
:class:`PaperNumber` that knows which results file under ``book/results/`` holds ours. Only
numbers measured the paper's way stand here: section 4.1's ladder of ground truths checks the
scores against other retrainings, and the reproduction page shows it in a table of its own;
:data:`FIGURE` and :data:`PAPER_R` are section 4.1's figures and correlations looked up from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .provenance import read_results


@dataclass(frozen=True)
class PaperNumber:
    """One number the paper reports, and where a results file holds ours.

    Results files keep ``results["experiments"][experiment]``, each with the ``scale`` it ran
    at; ``path`` leads from there to our value.
    """

    where: str  # the paper's figure, table or section
    what: str
    paper: float
    results: str  # the results file's stem under book/results/
    experiment: str
    path: tuple[str | int, ...]  # keys, or list positions
    fmt: str = ".2f"  # how the reproduction page formats ours

    def ours(self, results_dir: str | Path) -> tuple[float, str] | None:
        """Our value and the scale it ran at, or None where no results file holds it yet."""
        file = Path(results_dir) / f"{self.results}.json"
        if not file.exists():
            return None
        node: Any = (
            read_results(file)["results"].get("experiments", {}).get(self.experiment)
        )
        scale = node.get("scale", "?") if isinstance(node, dict) else None
        for key in self.path:
            if isinstance(node, list) and isinstance(key, int) and key < len(node):
                node = node[key]
            elif isinstance(node, dict) and key in node:
                node = node[key]
            else:
                return None
        return float(node), scale


R_CONTROLLED = ("agreement", "controlled", "pearson_r")
PAPER_NUMBERS: list[PaperNumber] = [
    PaperNumber(
        "Fig. 2a",
        "Pearson r, CIFAR-10, embedding fixed",
        0.62,
        "sec41",
        "cifar10-fixed",
        R_CONTROLLED,
    ),
    PaperNumber(
        "Fig. 2b",
        "Pearson r, MNIST, embedding fixed",
        0.47,
        "sec41",
        "mnist-fixed",
        R_CONTROLLED,
    ),
    PaperNumber(
        "Fig. 2c",
        "Pearson r, CIFAR-10, embedding updated",
        0.40,
        "sec41",
        "cifar10-updated",
        R_CONTROLLED,
    ),
    PaperNumber(
        "Fig. 3",
        "Pearson r, MNIST, every inverse Hessian replaced by I",
        0.17,
        "sec41",
        "mnist-fixed",
        ("identity", *R_CONTROLLED),
    ),
    *(
        PaperNumber(
            "Sec. 4.2",
            f"finetuning test accuracy, {what} (mean over seeds)",
            paper,
            "sec42",
            "cifar10-fixed",
            ("summary", kind, "mean"),
            ".2%",
        )
        for kind, what, paper in (
            ("none", "nothing removed", 0.5815),
            ("top", "the 10% of largest scores removed", 0.5836),
            ("random", "a random 10% removed", 0.5808),
        )
    ),
    *(
        PaperNumber(
            "Sec. 4.2",
            f"change in finetuning test accuracy from removing {what} (paired by seed)",
            paper,
            "sec42",
            "cifar10-fixed",
            ("summary", kind, "difference", "mean"),
            "+.2%",
        )
        for kind, what, paper in (
            ("top", "the 10% of largest scores", 0.5836 - 0.5815),
            ("random", "a random 10%", 0.5808 - 0.5815),
        )
    ),
    PaperNumber(
        "Sec. 4.2",
        "seconds to score every CIFAR-10 pretraining example in section 4.2's own run, "
        "200 CG iterations a solve (paper: a V100; ours: 2 CPU cores)",
        230.0,
        "sec42",
        "cifar10-fixed",
        ("seconds", "scores"),
        ".0f",
    ),
    PaperNumber(
        "Sec. 4.2",
        "seconds to score every CIFAR-10 pretraining example, 200 CG iterations a solve "
        "(paper: a V100; ours: 2 CPU cores)",
        230.0,
        "sec41",
        "cifar10-fixed",
        ("seconds", "scores"),
        ".0f",
    ),
    *(
        PaperNumber(where, what, paper, file, experiment, (*path, i), ".3g")
        for where, file, experiment, path, rows in (
            (
                "Fig. 5",
                "sec43",
                "cifar10-similarity",
                ("comparison", "mean_abs"),
                (
                    ("mean |score|, task A (bird vs frog, as pretrained)", 0.055),
                    ("mean |score|, task B (automobile vs deer)", 0.025),
                ),
            ),
            (
                "Fig. 6",
                "sec44",
                "cifar10-finetune-size",
                ("comparison", "mean_abs"),
                (
                    ("mean |score|, model C (5k finetuning examples)", 0.22),
                    ("mean |score|, model D (15k finetuning examples, 3x steps)", 0.15),
                ),
            ),
        )
        for i, (what, paper) in enumerate(rows)
    ),
    PaperNumber(
        "Fig. 5",
        "ratio of mean |score|, A / B (free of the scores' normalization)",
        0.055 / 0.025,
        "sec43",
        "cifar10-similarity",
        ("comparison", "ratio_of_means"),
    ),
    PaperNumber(
        "Fig. 6",
        "ratio of mean |score|, C / D (free of the scores' normalization)",
        0.22 / 0.15,
        "sec44",
        "cifar10-finetune-size",
        ("comparison", "ratio_of_means"),
    ),
    PaperNumber(
        "Sec. 4.5",
        "ms to score one pretraining sentence for one test sentence (ELMo, 93.6M parameters; "
        "ours is far smaller)",
        940.0,
        "sec45",
        "tweets",
        ("timing", "ms_per_sentence"),
    ),
    PaperNumber(
        "Sec. 4.5",
        "test accuracy of the tweet classifier on the frozen LM (the paper reports none)",
        float("nan"),
        "sec45",
        "tweets",
        ("accuracy", "classifier"),
    ),
    PaperNumber(
        "Sec. 4.5",
        "Pearson r of scores against the proximal re-optimization (a check the paper did not make)",
        float("nan"),
        "sec45",
        "tweets",
        ("check", "agreement", "pearson_r"),
    ),
]

# Looked up from PAPER_NUMBERS, the one place the paper's numbers are typed.
FIGURE = {n.experiment: n.where for n in PAPER_NUMBERS if n.path == R_CONTROLLED}
PAPER_R = {n.experiment: n.paper for n in PAPER_NUMBERS if n.path == R_CONTROLLED}
PAPER_R["mnist-identity"] = next(
    n.paper for n in PAPER_NUMBERS if n.path == ("identity", *R_CONTROLLED)
)
