"""Truthful by construction, measured on a trained model: the out-of-distribution flag and verified decoding.

    python benchmarks/truthful_checks.py --model runs/demo/model --phantom runs/demo/phantom \
        --predictions runs/demo --out docs/truthful [--shared ../shared]
    python benchmarks/truthful_checks.py --out docs/truthful --summary-only   # rebuilds the table from its JSON

1. Out-of-distribution flag: the share of studies whose familiarity is above 1 on the model's own
   phantom test split (both views), and on images it never saw the like of: blank and uniform grey
   images, noise, a photograph-like RGB image, the phantom's frontal views rotated by 90 degrees and
   upside down, its lateral views given alone, and (with --shared) the ten real NIH ChestX-ray14 and
   five Open-i images of ../shared. A model saved without statistics is fitted first on its phantom's
   train split with the val split held out (what training does at its end).
2. Verified decoding: the predictions of a run (`trrg demo`/`trrg evaluate` output with
   predictions.jsonl, references.jsonl, clue decisions) scored as written and with the sentence check
   applied to the same text (the check only drops sentences), and its cost in seconds.

Writes OUT/truthful_checks.json and OUT/truthful_checks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

VERIFY_METRICS = ["ce_micro_f1_14", "ce_macro_f1_14", "bleu_4", "clue_drop_rate", "clue_unsupported_rate",
                  "self_contradiction_rate", "ce_normal_collapse"]


def flag_rates(model_dir: Path, phantom: Path, shared: Path | None) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from trrg.assembly.hub_folders import load_model_folder
    from trrg.processing.studies import load_studies
    from trrg.processing.studies.schema import CachedStudyReader
    from trrg.trainers.training_distribution import fit_training_distribution

    model, processor = load_model_folder(model_dir, expected="trrg")
    model.eval()
    studies = load_studies(phantom)
    fitted_here = not model.perception.training_distribution.fitted
    if fitted_here:
        fit_training_distribution(model, processor, studies["train"], studies["val"])

    def familiarity(views: list[list]) -> torch.Tensor:
        scores = []
        for start in range(0, len(views), 64):
            inputs = processor(images=views[start : start + 64], return_tensors="pt")
            scores.append(model.predict_clues(inputs["pixel_values"], inputs["view_mask"]).familiarity)
        return torch.cat(scores)

    reader = CachedStudyReader(max_cached_studies=0)
    _, test_views = reader.read_batch(list(studies["test"]))
    rng = np.random.default_rng(0)
    side = 256
    sets = {
        "phantom test split (both views)": test_views,
        "blank (black) image": [[Image.fromarray(np.zeros((side, side), np.uint8))]],
        "uniform grey image": [[Image.fromarray(np.full((side, side), 128, np.uint8))]],
        "noise": [[Image.fromarray((rng.random((side, side)) * 255).astype(np.uint8))] for _ in range(5)],
        "photograph-like RGB": [[Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).resize((side, side))]
                                for _ in range(5)],
        "phantom frontal rotated 90 degrees": [[views[0].rotate(90)] for views in test_views[:100]],
        "phantom frontal upside down": [[views[0].transpose(Image.FLIP_TOP_BOTTOM)] for views in test_views[:100]],
        "phantom lateral alone": [[views[1]] for views in test_views[:100] if len(views) > 1],
    }
    if shared is not None:
        sets["NIH ChestX-ray14 (real, ../shared)"] = [[str(p)] for p in sorted((shared / "data/cxr_samples").glob("*.png"))]
        sets["Open-i (real, ../shared)"] = [[str(p)] for p in sorted((shared / "data/iu_xray/images").glob("*.png"))]
    rows = {}
    for name, views in sets.items():
        scores = familiarity(views)
        rows[name] = {"studies": len(views), "flagged": int((scores > 1).sum()), "flagged_rate": float((scores > 1).float().mean()),
                      "familiarity_min": float(scores.min()), "familiarity_median": float(scores.median())}
    return {"model": str(model_dir), "fitted_here": fitted_here, "distribution": model.config.training_distribution,
            "sets": rows}


def verification(run: Path) -> dict:
    from trrg.evaluation.score import score_reports
    from trrg.modeling.configuration_trrg import CHEXPERT_OBSERVATIONS
    from trrg.modeling.labeler_trrg import label_sentences
    from trrg.modeling.verification_trrg import verify_sentences

    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    references = {row["id"]: row["report"] for row in map(json.loads, (run / "references.jsonl").read_text().splitlines())}
    started, verified, rejected = time.perf_counter(), [], 0
    for prediction in predictions:
        kept, dropped = verify_sentences(label_sentences(prediction["report"]),
                                         dict(zip(CHEXPERT_OBSERVATIONS, map(bool, prediction["clues"]))))
        rejected += len(dropped)
        verified.append(" ".join(f"{sentence} ." for sentence in kept) if dropped else prediction["report"])
    check_s = time.perf_counter() - started
    columns = {}
    for name, texts in (("as generated", [p["report"] for p in predictions]), ("verified", verified)):
        metrics = score_reports(texts, [references[p["id"]] for p in predictions], meteor=False,
                                clues=[p["clues"] for p in predictions])
        columns[name] = {key: None if metrics[key] is None else float(metrics[key]) for key in VERIFY_METRICS}
    return {"run": str(run), "studies": len(predictions), "rejected_sentences": rejected,
            "reports_changed": sum(text != p["report"] for text, p in zip(verified, predictions)),
            "check_seconds": round(check_s, 3), "columns": columns}


def markdown(result: dict, command: str) -> str:
    flags, verify = result["flags"], result["verification"]
    lines = [f"Command: `{command}`", "",
             f"Out-of-distribution flag of `{flags['model']}` (statistics {'fitted by this script' if flags['fitted_here'] else 'saved with the model'}: "
             f"layers {flags['distribution']['layers']}, false-alarm rate {flags['distribution'].get('false_alarm_rate')}):", "",
             "| images | studies | flagged | rate | familiarity min / median |", "|---|---|---|---|---|"]
    for name, row in flags["sets"].items():
        lines.append(f"| {name} | {row['studies']} | {row['flagged']} | {row['flagged_rate']:.3f} | "
                     f"{row['familiarity_min']:.2f} / {row['familiarity_median']:.2f} |")
    lines += ["", f"Verified decoding on `{verify['run']}` ({verify['studies']} studies; {verify['rejected_sentences']} sentences "
              f"dropped in {verify['reports_changed']} reports; the check took {verify['check_seconds']} s):", "",
              "| | " + " | ".join(VERIFY_METRICS) + " |", "|---" * (len(VERIFY_METRICS) + 1) + "|"]
    for name, column in verify["columns"].items():
        lines.append(f"| {name} | " + " | ".join("n/a" if column[k] is None else f"{column[k]:.4f}" for k in VERIFY_METRICS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=Path("runs/demo/model"))
    parser.add_argument("--phantom", type=Path, default=Path("runs/demo/phantom"))
    parser.add_argument("--predictions", type=Path, default=Path("runs/demo"), help="a folder with predictions.jsonl")
    parser.add_argument("--shared", type=Path, default=None, help="../shared, for the real X-rays (optional)")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    command = f"python benchmarks/truthful_checks.py --out {args.out} --summary-only"
    path = args.out / "truthful_checks.json"
    if not args.summary_only:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {"flags": flag_rates(args.model, args.phantom, args.shared), "verification": verification(args.predictions)}
        path.write_text(json.dumps(result, indent=2) + "\n")
    result = json.loads(path.read_text())
    table = markdown(result, command)
    (args.out / "truthful_checks.md").write_text(table)
    print(table)


if __name__ == "__main__":
    sys.exit(main())
