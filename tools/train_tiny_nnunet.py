"""Train a tiny real nnU-Net v2 vertebra model on synthetic spines (a few minutes on 2 CPU cores).

Usage: python tools/train_tiny_nnunet.py OUT_DIR [--work DIR] [--cases 6]

OUT_DIR is then a model folder for `volbmd segment SCAN --segmenter nnunet --model OUT_DIR`.
"""

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--work", default=None, help="nnU-Net raw/preprocessed/results folders (default: a temp dir)")
    parser.add_argument("--cases", type=int, default=6)
    args = parser.parse_args()
    from volbmd.segment.nnunet_train import train_tiny_model

    start = time.perf_counter()
    out = train_tiny_model(args.out_dir, work_dir=args.work, n_cases=args.cases)
    print(f"model folder: {out} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":  # nnU-Net starts worker processes
    main()
