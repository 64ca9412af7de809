"""Time the phantom: 1,000 studies (frontal + lateral) at 128 px written to disk, then prevalence.

    python benchmarks/phantom_speed.py [--num-studies 1000] [--image-size 128] [--num-workers 1]

Prints seconds, studies/s and ms per image, then for every CheXpert observation the share of
studies labelled positive (1), uncertain (-1), negative (0) and not mentioned (None). Other
processes on the machine slow it down: run it when the CPUs are quiet.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter

from trrg.modeling.configuration_trrg import CHEXPERT_OBSERVATIONS
from trrg.processing.phantom import generate_phantom


def _prevalence_table(entries: list[dict]) -> str:
    rows = [f"{'observation':28s} {'pos':>6s} {'unc':>6s} {'neg':>6s} {'none':>6s}"]
    for name in CHEXPERT_OBSERVATIONS:
        counts = Counter(entry["labels"][name] for entry in entries)
        shares = [counts[value] / len(entries) for value in (1, -1, 0, None)]
        rows.append(f"{name:28s} " + " ".join(f"{share:6.1%}" for share in shares))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-studies", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        path = generate_phantom(
            folder,
            num_train=args.num_studies,
            num_val=0,
            num_test=0,
            image_size=args.image_size,
            seed=args.seed,
            num_workers=args.num_workers,
        )
        seconds = time.perf_counter() - start
        entries = json.loads(path.read_text())["train"]
    images = sum(len(entry["image_path"]) for entry in entries)
    print(
        f"{args.num_studies} studies ({images} images, {args.image_size} px, {args.num_workers} worker(s)): "
        f"{seconds:.1f} s, {args.num_studies / seconds:.0f} studies/s, {1000 * seconds / images:.1f} ms per image"
    )
    sentences = [entry["report"].count(".") for entry in entries]
    print(
        f"sentences per report: mean {sum(sentences) / len(sentences):.1f}, min {min(sentences)}, max {max(sentences)}"
    )
    print(_prevalence_table(entries))


if __name__ == "__main__":
    main()
