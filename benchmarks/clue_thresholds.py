"""Where should the clue thresholds be tuned? The test split's clue F1 of a stage-1 model's zero-shot
probabilities, with each disease's threshold tuned (``trainers.clue_calibration.fit_clue_thresholds``)
on the training split (what stage 2 has done), on the validation split, or on the test split itself
(the upper bound), or fixed at 0.5.

    python benchmarks/clue_thresholds.py --model runs/ablation-demo/pretrain_seed0/final \
        --data runs/ablation-demo/phantom --out docs/clue_thresholds/runs/demo_seed0.json
    python benchmarks/clue_thresholds.py --summary-only --out docs/clue_thresholds   # tables from OUT/runs

Stage 1 trains on the training split for many epochs and fits it (prompt loss ~0.05 after 30 epochs
on 1,000 phantom studies), so its probabilities there are more confident than on studies it never
saw; thresholds tuned there can sit where no test study reaches them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SOURCES = ("train", "val", "test (upper bound)", "fixed 0.5")


def zero_shot_probs(model, processor, rows) -> tuple[np.ndarray, np.ndarray]:
    """(studies, 14) probabilities and binary targets (uncertain positive) of ``rows``."""
    import torch

    from trrg.assembly.bridge import encode_prompt_bank
    from trrg.processing.studies.schema import CachedStudyReader
    from trrg.trainers.collators import disease_targets

    bank, reader, probs, targets = encode_prompt_bank(model, processor), CachedStudyReader(max_cached_studies=0), [], []
    for start in range(0, len(rows), 64):
        kept, views = reader.read_batch(rows[start : start + 64])
        pixels = processor.image_processor(views, return_tensors="pt")
        with torch.no_grad():
            probs.append(model.predict_diseases(pixels["pixel_values"], pixels["view_mask"], bank).numpy())
        targets.append(disease_targets(kept).numpy())
    return np.concatenate(probs), np.concatenate(targets)


def f1(decisions: np.ndarray, targets: np.ndarray) -> float | None:
    positives, called = targets.sum(), decisions.sum()
    if positives == 0:
        return None
    return float(2 * (decisions & (targets > 0.5)).sum() / (positives + called))


def measure(model_dir: Path, data_dir: Path) -> dict:
    from trrg.assembly.hub_folders import load_model_folder
    from trrg.processing.studies import load_studies
    from trrg.trainers.clue_calibration import fit_clue_thresholds

    model, processor = load_model_folder(model_dir, expected="trrg_contrastive")
    model.eval()
    studies = load_studies(data_dir)
    split = {name: zero_shot_probs(model, processor, list(studies[name])) for name in ("train", "val", "test")}
    names = list(model.config.disease_names)
    thresholds = {"train": fit_clue_thresholds(*split["train"]), "val": fit_clue_thresholds(*split["val"]),
                  "test (upper bound)": fit_clue_thresholds(*split["test"]), "fixed 0.5": [0.5] * len(names)}
    probs, targets = split["test"]
    result = {"model": str(model_dir), "data": str(data_dir), "studies": {k: len(v[0]) for k, v in split.items()},
              "positives": {"test": dict(zip(names, targets.sum(0).astype(int).tolist())),
                            "validation": dict(zip(names, split["val"][1].sum(0).astype(int).tolist()))},
              "thresholds": thresholds, "test_f1": {}}
    for source, values in thresholds.items():
        per = {name: f1(probs[:, d] >= values[d], targets[:, d]) for d, name in enumerate(names)}
        defined = [v for v in per.values() if v is not None]
        result["test_f1"][source] = {"per_observation": per, "macro": float(np.mean(defined))}
    return result


def summarize(out: Path) -> str:
    runs = {path.stem: json.loads(path.read_text()) for path in sorted((out / "runs").glob("*.json"))}
    lines = ["# Clue thresholds: where to tune them", "",
             f"Regenerate: `python benchmarks/clue_thresholds.py --summary-only --out {out}`", "",
             "Test-split clue F1 (zero-shot probabilities of stage 1 >= each disease's threshold) with the "
             "thresholds tuned on each source (F1-best, at most 1.5x as many positives as there are).", "",
             "| run | " + " | ".join(f"macro F1, {source}" for source in SOURCES) + " |", "|---|" + "---|" * len(SOURCES)]
    for name, run in runs.items():
        lines.append(f"| {name} | " + " | ".join(f"{run['test_f1'][s]['macro']:.3f}" for s in SOURCES) + " |")
    for name, run in runs.items():
        observations = list(run["test_f1"]["train"]["per_observation"])
        lines += ["", f"{name}: per observation (test positives; validation positives)", "",
                  "| observation | " + " | ".join(SOURCES) + " |", "|---|" + "---|" * len(SOURCES)]
        for obs in observations:
            cells = [run["test_f1"][s]["per_observation"][obs] for s in SOURCES]
            lines.append(f"| {obs} ({run['positives']['test'][obs]}; {run['positives']['validation'][obs]}) | "
                         + " | ".join("n/a" if c is None else f"{c:.3f}" for c in cells) + " |")
    text = "\n".join(lines) + "\n"
    (out / "clue_thresholds.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a stage-1 folder")
    parser.add_argument("--data", type=Path, help="its data (train, validation and test splits)")
    parser.add_argument("--out", type=Path, required=True, help="a run's JSON, or with --summary-only the folder")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    if args.summary_only:
        print(summarize(args.out))
        return 0
    if args.model is None or args.data is None:
        parser.error("--model (a stage-1 folder) and --data (its phantom) are needed unless --summary-only")
    if not (args.data / "annotation.json").is_file():
        parser.error(f"--data {args.data}: no annotation.json there; pass a folder written by `trrg phantom`")
    result = measure(args.model, args.data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print({source: round(v["macro"], 3) for source, v in result["test_f1"].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
