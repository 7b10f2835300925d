"""Run a section's experiments at full scale and write its results file for the book.

python tools/reproduce.py sec41                 # CPU scale, all of section 4.1
python tools/reproduce.py sec41 --scale paper   # exactly Appendix B (a GPU: --device auto finds it)
python tools/reproduce.py sec41 --only cifar10-fixed
python tools/reproduce.py sec41 --retest mnist-fixed --seed 7 --size 30   # measure removals again
python tools/reproduce.py sec41 --damping      # the damping sweep of the stored MNIST removals
python tools/reproduce.py sec41 --ladder       # rungs 3 and 2 of the ladder of ground truths
python tools/reproduce.py sec41 --decay        # rung 3 against the weight decay (--decay 0.01: one)
python tools/reproduce.py sec41 --factors      # rung 3 with one difference from rung 1 changed
python tools/reproduce.py methods              # the methods chapter's comparison (about an hour)

The results go to ``book/results/<section>.json`` (``--results`` names another folder); trained
weights are cached under ``$INFLUENCE_CACHE``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments import configs, methods, sec41, sec42, sec43, sec44, sec45
from experiments.cache import WeightCache
from experiments.decay_sweep import DecayConfig
from experiments.pipeline import Lab
from experiments.store import ResultsStore

RESULTS = Path(__file__).resolve().parent.parent / "book" / "results"
SECTIONS = {
    "sec41": sec41.reproduce_section41,
    "sec42": sec42.reproduce_section42,
    "sec43": sec43.reproduce_section43,
    "sec44": sec44.reproduce_section44,
}
OTHERS = ("sec45", "methods")  # run apart from the transfer pipeline


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=sorted([*SECTIONS, *OTHERS]))
    parser.add_argument("--scale", default="cpu", choices=sorted(configs.SCALES))
    parser.add_argument(
        "--only",
        nargs="*",
        help="experiments to (re)run; the others stay as they are in the file",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="the folder of results files (default: book/results)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="where sections 4.1-4.4 run: auto (a GPU where there is one), cpu, cuda, cuda:N",
    )
    parser.add_argument(
        "--retest",
        metavar="EXPERIMENT",
        help="instead of running, retrain the stored removals of EXPERIMENT with another batch order",
    )
    parser.add_argument(
        "--damping",
        action="store_true",
        help="instead of running, sweep the damping over the stored MNIST removals "
        "(writes <section>_damping.json)",
    )
    parser.add_argument(
        "--ladder",
        nargs="*",
        metavar="RUNG",
        help="instead of running, measure rungs of the ladder of ground truths: converged, "
        "proximal, proximal-updated, proximal-cifar10 (default the first two; writes "
        "<section>_ladder.json)",
    )
    parser.add_argument(
        "--decay",
        nargs="*",
        type=float,
        metavar="L2",
        help="instead of running, rerun rung 3 of the ladder at these weight decays "
        "(default: experiments.decay_sweep.DECAYS; writes <section>_decay.json)",
    )
    parser.add_argument(
        "--factors",
        nargs="*",
        metavar="FACTOR",
        help="instead of running, change one of rung 3's differences from rung 1 at a time: "
        f"{', '.join(sec41.FACTORS)} (default all; writes <section>_factors.json)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=configs.RETEST_SEED,
        help="--retest: the continued training's seed",
    )
    parser.add_argument(
        "--size", type=int, help="--retest: how many of the removals (default: all)"
    )
    return parser


def main() -> None:
    parser = _arguments()
    args = parser.parse_args()
    store = ResultsStore(args.results)
    lab = Lab(store, WeightCache.from_env(), args.device)
    studies = (args.decay, args.ladder, args.factors)
    if (
        args.damping or any(s is not None for s in studies) or args.retest
    ) and args.section != "sec41":
        parser.error(
            "--damping, --decay, --factors, --ladder and --retest apply to sec41"
        )
    written = store.path(args.section)
    if args.damping:
        sec41.damping_study(lab)
        written = store.path("sec41_damping")
    elif args.decay is not None:
        config = DecayConfig(decays=tuple(args.decay)) if args.decay else DecayConfig()
        sec41.decay_study(lab, config)
        written = store.path("sec41_decay")
    elif args.factors is not None:
        sec41.factors_study(lab, args.factors or sec41.FACTORS)
        written = store.path("sec41_factors")
    elif args.ladder is not None:
        sec41.ladder_study(lab, args.ladder or ("converged", "proximal"))
        written = store.path("sec41_ladder")
    elif args.retest:
        retest = sec41.retest_section41(lab, args.retest, args.seed, args.size)
        print(f"retest of {args.retest}: {retest['agreement']}")
    elif (
        args.section == "sec45"
    ):  # its language model runs apart from the transfer pipeline
        sec45.reproduce_section45(written, scale=args.scale, only=args.only)
    elif args.section == "methods":  # the methods chapter: rung 3's network, on the CPU
        methods.methods_study(lab, only=args.only)
    else:
        SECTIONS[args.section](lab, scale=args.scale, only=args.only)
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
