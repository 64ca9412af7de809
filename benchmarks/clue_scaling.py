"""Forward time of the tiny finetune-stage (stage 2) model against the number of clues per example.

Every example carries the 14 disease clues; extra clues (embeddings in the pretrained model's space,
e.g. of indication sentences) are added on top and take part in the clue interaction. The cost should grow
no faster than linearly in the number of clues.

    python benchmarks/clue_scaling.py [--batch 16] [--repeats 20] [--out figures.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from trrg.assembly.build import build_finetune_model


def _time_forward(model, batch, repeats: int) -> float:
    with torch.no_grad():
        for _ in range(3):  # warm-up
            model(**batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(**batch)
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, processor = build_finetune_model("tiny", corpus_size=500)
    model.eval()
    images = [[(np.random.default_rng(i).random((128, 128)) * 255).astype("uint8")] * 2 for i in range(args.batch)]
    reports = ["the heart is normal in size . no pleural effusion or pneumothorax . lungs are clear ."] * args.batch
    batch = dict(processor(images=images, reports=reports))
    rows = []
    for extra in (0, 1, 14, 64, 256):
        inputs = dict(batch)
        if extra:
            inputs["clue_embeds"] = torch.randn(args.batch, extra, model.config.projection_dim)
        seconds = _time_forward(model, inputs, args.repeats)
        rows.append({"disease_clues": 14, "extra_clues": extra, "total_clues": 14 + extra, "forward_ms": 1000 * seconds})
    base = rows[0]["forward_ms"]
    print(f"tiny finetune-stage forward, batch {args.batch}, 2 views, sequence {batch['input_ids'].shape[1]} tokens, "
          f"{args.threads} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print("| clues per example (14 disease + extra) | forward ms (median) | x vs 14 clues |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['total_clues']} (14 + {row['extra_clues']}) | {row['forward_ms']:.1f} | {row['forward_ms'] / base:.2f} |")
    print(json.dumps(rows))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
