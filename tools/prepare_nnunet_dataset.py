"""Turn (scan, vertebra labels) pairs into an nnU-Net v2 raw dataset (imagesTr, labelsTr, dataset.json).

Usage:
  python tools/prepare_nnunet_dataset.py --pairs pairs.csv --out RAW_DIR --id 501 [--name Vertebrae]
      [--label-scheme verse|totalseg] [--levels T12,L1,L2,L3,L4,L5]

pairs.csv has two columns per line, scan and labels (any format volbmd reads; a header line
"scan,labels" is allowed). Images and labels are written in volbmd's canonical LPS frame, the frame
its nnU-Net backend predicts in; label names are vertebrae_<level>.
"""

import argparse
import csv
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--name", default="Vertebrae")
    parser.add_argument("--label-scheme", default="verse", choices=["verse", "totalseg"])
    parser.add_argument("--levels", default=None)
    args = parser.parse_args()

    from volbmd.errors import VolbmdError
    from volbmd.io import load_volume
    from volbmd.segment.masks import load_masks
    from volbmd.segment.nnunet_dataset import write_nnunet_dataset

    try:
        cases = []
        with open(args.pairs, newline="") as fh:
            for i, row in enumerate(csv.reader(fh)):
                if not row or row[0].strip().lower() == "scan":
                    continue
                scan = load_volume(row[0].strip())
                labels = load_masks(row[1].strip(), scan, label_scheme=args.label_scheme)
                cases.append((f"case{i:04d}", scan, labels))
        levels = [s.strip() for s in args.levels.split(",")] if args.levels else None
        folder = write_nnunet_dataset(cases, args.out, args.id, args.name, levels)
    except VolbmdError as exc:
        print(f"prepare_nnunet_dataset: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {folder} ({len(cases)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
