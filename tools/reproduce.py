"""Run a section's experiments at full scale and write its results file for the book.

python tools/reproduce.py sec41                 # CPU scale, all of section 4.1
python tools/reproduce.py sec41 --scale paper   # exactly Appendix B (a GPU)
python tools/reproduce.py sec41 --only cifar10-fixed
python tools/reproduce.py sec41 --retest mnist-fixed --seed 7 --size 30   # measure removals again
python tools/reproduce.py sec41 --rescore      # score again with the current library, measurements kept
python tools/reproduce.py sec41 --damping      # the damping sweep of the stored MNIST removals
python tools/reproduce.py sec41 --ladder       # rungs 3 and 2 of the ladder of ground truths
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments import configs, sec41, sec42, sec43, sec44, sec45

RESULTS = Path(__file__).resolve().parent.parent / "book" / "results"
SECTIONS = {
    "sec41": sec41.reproduce_section41,
    "sec42": sec42.reproduce_section42,
    "sec43": sec43.reproduce_section43,
    "sec44": sec44.reproduce_section44,
    "sec45": sec45.reproduce_section45,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=sorted(SECTIONS))
    parser.add_argument("--scale", default="cpu", choices=sorted(configs.SCALES))
    parser.add_argument(
        "--only",
        nargs="*",
        help="experiments to (re)run; the others stay as they are in the file",
    )
    parser.add_argument(
        "--out", type=Path, help="results file (default: book/results/<section>.json)"
    )
    parser.add_argument(
        "--retest",
        metavar="EXPERIMENT",
        help="instead of running, retrain the stored removals of EXPERIMENT with another batch order",
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="instead of running, score the stored experiments again (their measurements are kept)",
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
        "--seed",
        type=int,
        default=configs.RETEST_SEED,
        help="--retest: the continued training's seed",
    )
    parser.add_argument(
        "--size", type=int, help="--retest: how many of the removals (default: all)"
    )
    args = parser.parse_args()
    out = args.out or RESULTS / f"{args.section}.json"
    if (args.damping or args.ladder is not None) and args.section != "sec41":
        parser.error("--damping and --ladder apply to sec41")
    written = out
    if args.damping:
        written = RESULTS / "sec41_damping.json"
        sec41.damping_study(out, written)
    elif args.ladder is not None:
        written = RESULTS / "sec41_ladder.json"
        sec41.ladder_study(out, written, args.ladder or ("converged", "proximal"))
    elif args.rescore:
        if args.section != "sec41":
            parser.error("--rescore applies to sec41")
        sec41.rescore_section41(out, only=args.only)
    elif args.retest:
        if args.section != "sec41":
            parser.error("--retest applies to sec41")
        retest = sec41.retest_section41(out, args.retest, args.seed, args.size)
        print(f"retest of {args.retest}: {retest['agreement']}")
    else:
        SECTIONS[args.section](out, scale=args.scale, only=args.only)
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
