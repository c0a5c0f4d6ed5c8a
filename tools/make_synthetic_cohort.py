"""Write a synthetic cohort with known BMD (scans, labels, manifest.csv) for `volbmd train bmd`.

Usage: python tools/make_synthetic_cohort.py OUT_DIR [--scans 90] [--seed 0]
"""

from __future__ import annotations

import argparse


def main() -> None:
    from volbmd.models.synthetic import SyntheticCohortOptions, make_synthetic_cohort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--scans", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    manifest = make_synthetic_cohort(args.out, SyntheticCohortOptions(n_scans=args.scans, seed=args.seed))
    print(f"wrote {manifest}")


if __name__ == "__main__":
    main()
