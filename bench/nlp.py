"""Benchmark of section 4.5: the time to score one pretraining sentence, beside the paper's 0.94 s.

The language model has the size of section 4.5's ``cpu`` scale (``experiments.sec45.CPU``),
with random weights and random sentences of the corpus's typical length: scoring time does
not depend on which words a sentence holds, so the benchmark runs offline. Printed: the
time a sentence of the candidate pass (one forward-mode JVP a batch), of the same scores
from per-sentence gradients (for comparison), and of the whole ``ms.scores`` call with one
test tweet; and the ratios to the paper's time and to ELMo's size. Written, with the
hardware and the date, to ``bench/nlp.json``. Times on a shared machine vary; nothing here
asserts on them.

    python bench/nlp.py
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch
from timing import best_of  # bench/timing.py: scripts run from bench/

from experiments import lm, sec45, text
from experiments.provenance import provenance
from influence import CG, MultiStage
from influence.autodiff import per_example_grads


def sentences(n: int, vocab: int, mean_tokens: int, seed: int) -> list[list[int]]:
    """Random id lists of 4 to 2 * mean_tokens tokens, wrapped in <s> ... </s>, sorted by length."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 2 * mean_tokens - 3, (n,), generator=gen)
    out = [
        [2, *torch.randint(4, vocab, (int(k),), generator=gen).tolist(), 3]
        for k in lengths
    ]
    return sorted(out, key=len)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=1024)
    parser.add_argument(
        "--gradient-candidates",
        type=int,
        default=128,
        help="sentences timed by per-sentence gradients",
    )
    parser.add_argument("--finetune", type=int, default=2000)
    parser.add_argument(
        "--iters",
        type=int,
        default=20,
        help="CG iterations of each solve in the whole call",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("nlp.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # random weights are not stationary and CG stops short: expected when timing, and only those
    for expected in ("stopped after", "has gradient norm"):
        warnings.filterwarnings("ignore", f".*{expected}", RuntimeWarning)

    config = sec45.CPU
    size = lm.LMSize(config.vocab + len(text.SPECIALS), config.dim, config.hidden)
    encoder, head = lm.build_lm(size, seed=0)
    classifier = lm.Classifier(config.hidden, config.width)
    ms = MultiStage(
        encoder,
        head,
        classifier,
        pretrain_loss=lm.lm_losses,
        finetune_l2=config.finetune_l2,
    )
    batch = config.score_batch
    candidates = text.padded_batches(sentences(args.candidates, size.vocab, 24, 0), batch)
    sample = text.padded_batches(
        sentences(config.hessian_sentences, size.vocab, 24, 1), batch
    )
    tweets = sentences(args.finetune, size.vocab, 20, 2)
    labels = [i % 2 for i in range(len(tweets))]
    finetune = text.padded_batches(tweets, 256, labels=labels)
    test = (text.pad(tweets[:1]), torch.tensor(labels[:1]))
    v2 = torch.randn(ms.pretrain_point.numel())

    jvp = (
        best_of(
            lambda: ms.score_candidates(candidates, v2, batch_size=batch), args.repeats
        )
        / args.candidates
    )
    few = text.pad(sentences(args.gradient_candidates, size.vocab, 24, 3))

    def by_gradients() -> torch.Tensor:
        return (
            per_example_grads(ms.pretrain_losses, ms.pretrain_point, few, few, chunk=16)
            @ v2
        )

    gradients = best_of(by_gradients, 1) / args.gradient_candidates
    solvers = dict(
        pretrain_solver=CG(config.pretrain_damping_floor, args.iters, squared=False),
        finetune_solver=CG(config.finetune_damping, args.iters, squared=False),
    )
    whole = best_of(
        lambda: ms.scores(
            sample, finetune, test, candidates, batch_size=batch, **solvers
        ),
        1,
    )
    whole /= args.candidates
    parameters = ms.W.numel + ms.U.numel
    paper = sec45.PAPER_SECONDS_PER_SENTENCE
    result = {
        "parameters": parameters,
        "paper_parameters": sec45.PAPER_PARAMETERS,
        "size_ratio": sec45.PAPER_PARAMETERS / parameters,
        "paper_seconds_per_sentence": paper,
        "ms_per_sentence": {
            "jvp candidate pass": 1e3 * jvp,
            "per-sentence gradients": 1e3 * gradients,
            f"whole ms.scores ({args.candidates} sentences, {args.iters} CG iterations)": 1e3
            * whole,
        },
        "speedup_vs_paper": {
            "jvp candidate pass": paper / jvp,
            "whole ms.scores": paper / whole,
        },
        "jvp_vs_gradients": gradients / jvp,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    print(
        f"parameters (W + U): {parameters:,}, ELMo 93.6M: {result['size_ratio']:.0f}x smaller"
    )
    for name, ms_ in result["ms_per_sentence"].items():
        print(
            f"{name:>60}: {ms_:8.2f} ms a sentence, {paper / (ms_ / 1e3):7.0f}x less than the paper's 0.94 s"
        )
    print(f"JVP pass vs per-sentence gradients: {result['jvp_vs_gradients']:.1f}x faster")
    args.out.write_text(
        json.dumps({"provenance": provenance(), "results": result}, indent=1) + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
