"""Agreement and speed of ``trrg.processing.labeler`` on the IU-Xray train+val reports.

Compares with
* CheXbert silver labels (``annotation_trainval_chexbert.json``; "1.0"/"0.0"/"-1.0"/"" per
  observation): per observation the F1 of positive, negative and uncertain mentions, and the
  micro-F1 of positive and of negative mentions over all 14 observations;
* the OpenI human gold labels (``openi_gold_trainval.csv``, ChestX-ray14 label set, keyed by the
  ``CXR<n>`` prefix of the R2Gen id), on the findings that map onto CheXpert (``GOLD_MAPPING``):
  micro-F1 where our positive or uncertain counts as positive;
and times ``label_reports`` over all reports (best of several repeats).

    python benchmarks/labeler_iu_xray.py [--data-dir /work/shared/data/iu_xray] [--out figures.json]
    python benchmarks/labeler_iu_xray.py --show 5   # also print disagreements, for rule work
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from trrg.modeling.configuration_trrg import CHEXPERT_OBSERVATIONS
from trrg.modeling import labeler_trrg as labeler  # its internals (the sentence cache); the code lives in the hub bundle
from trrg.processing.labeler import label_reports

DEFAULT_DATA_DIR = Path("/work/shared/data/iu_xray")
SILVER_VALUES = {"1.0": 1, "0.0": 0, "-1.0": -1, "": None}
# ChestX-ray14 gold column(s) -> CheXpert observation. Infiltration, Emphysema, Fibrosis and Hernia
# have no CheXpert counterpart and are left out.
GOLD_MAPPING: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("Atelectasis",),
    "Cardiomegaly": ("Cardiomegaly",),
    "Pleural Effusion": ("Effusion",),
    "Pneumothorax": ("Pneumothorax",),
    "Consolidation": ("Consolidation",),
    "Edema": ("Edema",),
    "Pneumonia": ("Pneumonia",),
    "Lung Lesion": ("Mass", "Nodule"),
    "Pleural Other": ("Pleural_Thickening",),
    "No Finding": ("normal",),
}


def f1(true_positive: int, false_positive: int, false_negative: int) -> float | None:
    """F1, or None when neither side has the class (JSON has no NaN)."""
    denominator = 2 * true_positive + false_positive + false_negative
    return 2 * true_positive / denominator if denominator else None


def show(score: float | None) -> str:
    return "    n/a" if score is None else f"{score:7.3f}"


def counts(predicted: list, reference: list, value) -> tuple[int, int, int]:
    pairs = list(zip(predicted, reference))
    true_positive = sum(p == value and r == value for p, r in pairs)
    false_positive = sum(p == value and r != value for p, r in pairs)
    false_negative = sum(p != value and r == value for p, r in pairs)
    return true_positive, false_positive, false_negative


def silver_agreement(predictions: list[dict], silver: list[dict]) -> dict:
    per_observation, micro = {}, {1: [0, 0, 0], 0: [0, 0, 0]}
    for name in CHEXPERT_OBSERVATIONS:
        predicted = [labels[name] for labels in predictions]
        reference = [labels[name] for labels in silver]
        per_observation[name] = {}
        for value, key in ((1, "positive_f1"), (0, "negative_f1"), (-1, "uncertain_f1")):
            tp_fp_fn = counts(predicted, reference, value)
            per_observation[name][key] = f1(*tp_fp_fn)
            if value in micro:
                micro[value] = [total + part for total, part in zip(micro[value], tp_fp_fn)]
    return {
        "per_observation": per_observation,
        "positive_micro_f1": f1(*micro[1]),
        "negative_micro_f1": f1(*micro[0]),
    }


def gold_agreement(predictions: list[dict], ids: list[str], gold: dict[str, dict[str, str]]) -> dict:
    true_positive = false_positive = false_negative = 0
    matched = 0
    for labels, report_id in zip(predictions, ids):
        row = gold.get(report_id.split("_")[0])
        if row is None:
            continue
        matched += 1
        for name, columns in GOLD_MAPPING.items():
            predicted = labels[name] in (1, -1)
            actual = any(row[column] == "1" for column in columns)
            true_positive += predicted and actual
            false_positive += predicted and not actual
            false_negative += actual and not predicted
    return {"micro_f1": f1(true_positive, false_positive, false_negative), "reports": matched,
            "mapping": {name: list(columns) for name, columns in GOLD_MAPPING.items()}}


def reports_per_second(texts: list[str], repeats: int, use_cache: bool = True) -> float:
    """One ``label_reports`` pass over all reports, best of ``repeats``. The labeler's sentence
    cache is emptied before each pass (only sentences repeated *within* the pass hit it), or
    bypassed altogether with ``use_cache=False``."""
    cached = labeler._sentence_mentions
    if not use_cache:
        labeler._sentence_mentions = cached.__wrapped__
    try:
        best = float("inf")
        for _ in range(repeats):
            cached.cache_clear()
            start = time.perf_counter()
            label_reports(texts)
            best = min(best, time.perf_counter() - start)
    finally:
        labeler._sentence_mentions = cached
    return len(texts) / best


def show_disagreements(rows: list[dict], predictions: list[dict], silver: list[dict], limit: int) -> None:
    for name in CHEXPERT_OBSERVATIONS:
        shown = 0
        for row, predicted, reference in zip(rows, predictions, silver):
            if predicted[name] != reference[name] and shown < limit:
                shown += 1
                print(f"[{name}] ours={predicted[name]} silver={reference[name]} :: {row['report']}")


def load(data_dir: Path) -> tuple[list[dict], dict[str, dict[str, str]]]:
    annotation, gold_csv = data_dir / "annotation_trainval_chexbert.json", data_dir / "openi_gold_trainval.csv"
    for path in (annotation, gold_csv):
        if not path.is_file():
            sys.exit(f"labeler_iu_xray: {path} not found; pass --data-dir with the IU-Xray benchmark files")
    data = json.loads(annotation.read_text())
    rows = data["train"] + data["val"]
    with gold_csv.open(newline="") as file:
        gold = {row["filename"]: row for row in csv.DictReader(file)}
    return rows, gold


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (best is reported)")
    parser.add_argument("--show", type=int, default=0, help="print up to N disagreements per observation")
    args = parser.parse_args(argv)

    rows, gold = load(args.data_dir)
    texts = [row["report"] for row in rows]
    silver = [{name: SILVER_VALUES[row["labels"][name]] for name in CHEXPERT_OBSERVATIONS} for row in rows]
    predictions = label_reports(texts)
    figures = {
        "reports": len(rows),
        "silver": silver_agreement(predictions, silver),
        "gold": gold_agreement(predictions, [row["id"] for row in rows], gold),
        "reports_per_second": reports_per_second(texts, args.repeats),
        "reports_per_second_uncached": reports_per_second(texts, args.repeats, use_cache=False),
    }
    if args.show:
        show_disagreements(rows, predictions, silver, args.show)

    print(f"IU-Xray train+val: {figures['reports']} reports")
    print(f"{'observation':28s} {'pos F1':>7s} {'neg F1':>7s} {'unc F1':>7s}   (vs CheXbert silver)")
    for name, scores in figures["silver"]["per_observation"].items():
        print(f"{name:28s} {show(scores['positive_f1'])} {show(scores['negative_f1'])} {show(scores['uncertain_f1'])}")
    print(f"silver micro-F1: positive mentions {figures['silver']['positive_micro_f1']:.3f}, "
          f"negative mentions {figures['silver']['negative_micro_f1']:.3f}")
    print(f"gold micro-F1 (positive or uncertain = positive; {figures['gold']['reports']} reports; "
          f"mapping {GOLD_MAPPING}): {figures['gold']['micro_f1']:.3f}")
    print(f"speed: {figures['reports_per_second']:.0f} reports/s in one process (best of {args.repeats}, "
          f"sentence cache emptied before each pass); {figures['reports_per_second_uncached']:.0f} reports/s "
          "with the cache bypassed")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
