"""``trrg phantom``: generate the synthetic chest X-ray phantom (``trrg.processing.phantom``).

    trrg phantom --out runs/phantom --seed 0 --num-train 3000 --num-test 1000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from trrg.processing.phantom import generate_phantom


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trrg phantom",
        description="Generate the synthetic chest X-ray phantom (R2Gen-format annotation.json + PNG images).",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder (created; must be empty or an earlier phantom)"
    )
    parser.add_argument("--seed", type=int, default=0, help="master seed; same seed and arguments give identical files")
    parser.add_argument("--num-train", type=int, default=3000, help="training studies")
    parser.add_argument("--num-val", type=int, default=300, help="validation studies")
    parser.add_argument(
        "--num-test", type=int, default=1000, help="test studies (large, so rare findings can be measured)"
    )
    parser.add_argument("--image-size", type=int, default=128, help="image side in pixels (>= 32)")
    parser.add_argument("--lateral-fraction", type=float, default=1.0, help="share of studies with a lateral view")
    parser.add_argument("--num-workers", type=int, default=1, help="processes drawing studies in parallel")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out that is not a phantom output "
        "(its images/ and json files are replaced, other files are kept)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        path = generate_phantom(
            args.out,
            num_train=args.num_train,
            num_val=args.num_val,
            num_test=args.num_test,
            image_size=args.image_size,
            seed=args.seed,
            lateral_fraction=args.lateral_fraction,
            num_workers=args.num_workers,
            overwrite=args.overwrite,
        )
    except (ValueError, FileExistsError) as error:
        print(f"trrg phantom: error: {error}", file=sys.stderr)
        return 2
    total = args.num_train + args.num_val + args.num_test
    print(f"wrote {total} studies to {path} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
