"""Training and generation throughput of the tiny preset on this machine.

    python benchmarks/throughput.py [--threads 2] [--steps 20]

Prints pretrain-stage (stage 1) and finetune-stage (stage 2) training samples/s (forward + backward
+ AdamW step, batch 64, studies of 2 views at 128 px, images already decoded) and generation
reports/s at batch 1 and 16 (greedy, 64 new tokens, KV cache): ``generate_reports`` as users call it,
the report pipeline (decoded images in, a ``TRRGReport`` per study out: preprocessing, the perception
once, generation, decoding, sentence labels), and ``generate_only``, ``model.generate`` on inputs
already preprocessed; --out also writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch


def _studies(count: int, views: int = 2) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return [[(rng.random((128, 128)) * 255).astype(np.uint8) for _ in range(views)] for _ in range(count)]


def _train_rate(model, batch: dict, steps: int, batch_size: int) -> float:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    for step in range(steps + 3):
        if step == 3:  # after warm-up
            start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return steps * batch_size / (time.perf_counter() - start)


def _call_rate(call, studies_per_call: int) -> float:
    """Studies/s of ``call()``, after one warm-up call, timed over at least 5 s and 2 calls."""
    call()
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < 5 or count < 2:
        call()
        count += 1
    return count * studies_per_call / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from trrg.assembly.bridge import bridge
    from trrg.trainers.collators import sentence_group_id
    from trrg.assembly.build import build_pretrain_model
    from trrg.assembly.report_tokenizer import phantom_report_corpus

    results = {}
    pretrain_model, pretrain_processor = build_pretrain_model("tiny", corpus_size=500)
    studies = _studies(args.batch)
    reports = phantom_report_corpus(args.batch, seed=1)
    sentences = [r.split(" . ")[0] + " ." for r in reports]
    batch1 = {**pretrain_processor.image_processor(studies, return_tensors="pt"),
              **pretrain_processor.encode_sentences(sentences),
              **pretrain_processor.encode_disease_prompts(pretrain_model.config.disease_prompts,
                                                          pretrain_model.config.disease_names),
              "sentence_group_ids": torch.tensor([sentence_group_id(s) for s in sentences]),
              "disease_labels": torch.zeros(args.batch, 14)}
    results["pretrain_train_samples_per_s"] = _train_rate(pretrain_model, batch1, args.steps, args.batch)

    model, processor = bridge(None, pretrained=(pretrain_model, pretrain_processor))
    model.freeze_perception()  # the default policy: the pretrained perception frozen
    batch2 = dict(processor(images=studies, reports=reports, return_tensors="pt"))
    batch2["disease_labels"] = torch.zeros(args.batch, 14)
    results["finetune_train_samples_per_s"] = _train_rate(model, batch2, args.steps, args.batch)
    results["finetune_sequence_tokens"] = int(batch2["input_ids"].shape[1])

    reporter = model.eval().report_pipeline(processor)
    tokens = {"max_new_tokens": 64, "min_new_tokens": 64}
    for size in (1, 16):
        batch = studies[:size]
        results[f"generate_reports_per_s_batch{size}"] = _call_rate(lambda: reporter(batch, batch_size=size, **tokens), size)
        inputs = processor(images=batch, return_tensors="pt")
        results[f"generate_only_per_s_batch{size}"] = _call_rate(lambda: model.generate(**inputs, **tokens), size)
    results["setup"] = {"threads": args.threads, "batch": args.batch, "views": 2, "image_size": 128,
                        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
                        "generation": "greedy, 64 new tokens, KV cache; generate_reports: the report pipeline, "
                                      "decoded images in; generate_only: model.generate on preprocessed inputs"}
    for key, value in results.items():
        print(f"{key}: {value:.1f}" if isinstance(value, float) else f"{key}: {value}")
    print(json.dumps(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
