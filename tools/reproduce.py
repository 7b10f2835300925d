"""Run a section's experiments at full scale and write its results file for the book.

    python tools/reproduce.py sec41                 # CPU scale, all of section 4.1
    python tools/reproduce.py sec41 --scale paper   # exactly Appendix B (a GPU)
    python tools/reproduce.py sec41 --only cifar10-fixed
"""
from __future__ import annotations

import argparse
from pathlib import Path

from influence import appendix_b

RESULTS = Path(__file__).resolve().parent.parent / "book" / "results"
SECTIONS = {"sec41": appendix_b.reproduce_section41}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=sorted(SECTIONS))
    parser.add_argument("--scale", default="cpu", choices=sorted(appendix_b.SCALES))
    parser.add_argument("--only", nargs="*", help="experiments to (re)run; the others stay as they are in the file")
    parser.add_argument("--out", type=Path, help="results file (default: book/results/<section>.json)")
    args = parser.parse_args()
    out = args.out or RESULTS / f"{args.section}.json"
    SECTIONS[args.section](out, scale=args.scale, only=args.only)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
