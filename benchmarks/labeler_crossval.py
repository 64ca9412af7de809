"""Cross-validated agreement of ``trrg.processing.labeler`` on the IU-Xray train+val reports.

Protocol (printed with the table):

* The train+val studies (R2Gen ids; one report per study, keyed by the ``CXR<n>`` prefix that the
  Open-i gold also uses) are sorted, shuffled with ``random.Random(seed)`` (seed 0) and dealt
  round-robin into 5 folds, so every study is in exactly one fold.
* The labeler has no fitted parameters, so each fold's figures are the fixed rules scored on that
  fold's reports alone; the cross-validated figure is the mean (and spread) over the 5 held-out
  folds, printed beside the figure on all reports pooled.
* Scores: positive-mention F1 vs the CheXbert silver labels (micro over the 14 observations, and per
  observation), and F1 vs the Open-i human gold on the findings mapped by
  ``labeler_iu_xray.GOLD_MAPPING`` (ours positive or uncertain counts as positive; micro and per
  mapped observation).
* Rule development: changes are measured on folds 1-4 only (``--dev`` prints those and hides
  fold 0); fold 0 is scored once, at the end of a round of rule changes (no ``--dev``). The rules
  that predate this protocol were written on all train+val reports, so fold 0 is unseen only for
  the changes made under it; the IU test split (not in shared/) stays the real held-out figure.

    python benchmarks/labeler_crossval.py --shared ../shared            # all 5 folds + pooled
    python benchmarks/labeler_crossval.py --shared ../shared --dev      # folds 1-4 only
    python benchmarks/labeler_crossval.py --shared ../shared --speed    # speed alone (reports/s)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from labeler_iu_xray import GOLD_MAPPING, SILVER_VALUES, f1, load, reports_per_second  # noqa: E402

from trrg.modeling.configuration_trrg import CHEXPERT_OBSERVATIONS  # noqa: E402
from trrg.modeling import labeler_trrg as labeler  # noqa: E402  (its sentence cache; the code lives in the hub bundle)
from trrg.processing.labeler import label_reports  # noqa: E402

DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared"
FOLDS, SEED, HELD_BACK_FOLD = 5, 0, 0


def cpu_reports_per_second(texts: list[str], repeats: int) -> float:
    """Like ``reports_per_second`` but in process (CPU) time, best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        labeler._sentence_mentions.cache_clear()
        start = time.process_time()
        label_reports(texts)
        best = min(best, time.process_time() - start)
    return len(texts) / best


def study_key(report_id: str) -> str:
    return report_id.split("_")[0]


def assign_folds(keys: list[str], folds: int = FOLDS, seed: int = SEED) -> dict[str, int]:
    """Study key -> fold, deterministic for a seed: sorted, shuffled, dealt round-robin."""
    order = sorted(set(keys))
    random.Random(seed).shuffle(order)
    return {key: index % folds for index, key in enumerate(order)}


def positive_scores(pairs: list[tuple[bool, bool]]) -> tuple[int, int, int]:
    return (sum(p and r for p, r in pairs), sum(p and not r for p, r in pairs), sum(r and not p for p, r in pairs))


def score(predictions: list[dict], silver: list[dict], gold_rows: list[dict | None]) -> dict:
    """Positive-mention F1 vs silver (micro, per observation) and vs gold (micro, per mapped one)."""
    silver_micro, silver_per = [0, 0, 0], {}
    for name in CHEXPERT_OBSERVATIONS:
        tp_fp_fn = positive_scores([(p[name] == 1, s[name] == 1) for p, s in zip(predictions, silver)])
        silver_per[name] = f1(*tp_fp_fn)
        silver_micro = [a + b for a, b in zip(silver_micro, tp_fp_fn)]
    gold_micro, gold_per = [0, 0, 0], {}
    with_gold = [(p, g) for p, g in zip(predictions, gold_rows) if g is not None]
    for name, columns in GOLD_MAPPING.items():
        tp_fp_fn = positive_scores(
            [(p[name] in (1, -1), any(g[column] == "1" for column in columns)) for p, g in with_gold]
        )
        gold_per[name] = f1(*tp_fp_fn)
        gold_micro = [a + b for a, b in zip(gold_micro, tp_fp_fn)]
    return {"reports": len(predictions), "gold_reports": len(with_gold),
            "silver_micro": f1(*silver_micro), "silver": silver_per,
            "gold_micro": f1(*gold_micro), "gold": gold_per}


def cell(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.3f}"


def mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.fmean(present) if present else None


def spread(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.pstdev(present) if len(present) > 1 else None


def print_table(title: str, names: list[str], key: str, per_fold: dict[int, dict], pooled: dict) -> None:
    folds = sorted(per_fold)
    header = " ".join(f"fold{fold}" for fold in folds)
    print(f"\n{title}")
    print(f"{'':28s} {header}   mean    std  pooled")
    micro = [per_fold[fold][f"{key}_micro"] for fold in folds]
    print(f"{'micro':28s} " + " ".join(cell(v) for v in micro) + f" {cell(mean(micro))} {cell(spread(micro))} "
          f"{cell(pooled[f'{key}_micro'])}")
    for name in names:
        values = [per_fold[fold][key][name] for fold in folds]
        print(f"{name:28s} " + " ".join(cell(v) for v in values) + f" {cell(mean(values))} {cell(spread(values))} "
              f"{cell(pooled[key][name])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED,
                        help="the shared/ folder (holds data/iu_xray/); default ../shared beside the checkout")
    parser.add_argument("--folds", type=int, default=FOLDS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--dev", action="store_true",
                        help=f"score the development folds only (hide fold {HELD_BACK_FOLD})")
    parser.add_argument("--speed", action="store_true", help="only time label_reports over all reports")
    parser.add_argument("--repeats", type=int, default=7, help="timing repeats (best is reported)")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    rows, gold = load(args.shared / "data" / "iu_xray")
    texts = [row["report"] for row in rows]
    if args.speed:
        cached, uncached = reports_per_second(texts, args.repeats), reports_per_second(texts, args.repeats, False)
        cpu = cpu_reports_per_second(texts, args.repeats)
        print(f"speed: {cached:.0f} reports/s over {len(texts)} reports in one process (wall clock, best of "
              f"{args.repeats}; sentence cache emptied before each pass); {uncached:.0f} reports/s with the cache "
              f"bypassed; {cpu:.0f} reports per CPU-second (process time, cache emptied: less sensitive to other "
              f"processes on the machine; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
        return 0

    silver = [{name: SILVER_VALUES[row["labels"][name]] for name in CHEXPERT_OBSERVATIONS} for row in rows]
    gold_rows = [gold.get(study_key(row["id"])) for row in rows]
    predictions = label_reports(texts)
    fold_of = assign_folds([study_key(row["id"]) for row in rows], args.folds, args.seed)
    folds = [fold for fold in range(args.folds) if not (args.dev and fold == HELD_BACK_FOLD)]
    per_fold = {}
    for fold in folds:
        members = [i for i, row in enumerate(rows) if fold_of[study_key(row["id"])] == fold]
        per_fold[fold] = score([predictions[i] for i in members], [silver[i] for i in members],
                               [gold_rows[i] for i in members])
    members = [i for i, row in enumerate(rows) if fold_of[study_key(row["id"])] in folds]
    pooled = score([predictions[i] for i in members], [silver[i] for i in members], [gold_rows[i] for i in members])

    print(__doc__.split("\n\n")[1].rstrip().replace("Protocol (printed with the table):", "Protocol:"))
    print(__doc__.split("\n\n")[2].rstrip())
    print(f"\nIU-Xray train+val: {len(rows)} studies, folds of "
          + ", ".join(f"{fold}: {per_fold[fold]['reports']}" for fold in folds)
          + (f" (fold {HELD_BACK_FOLD} hidden: --dev)" if args.dev else "")
          + f"; seed {args.seed}; 'pooled' = the scored folds together")
    print_table("Positive-mention F1 vs CheXbert silver (held-out folds)", list(CHEXPERT_OBSERVATIONS), "silver",
                per_fold, pooled)
    print_table("F1 vs Open-i human gold, positive or uncertain = positive (held-out folds)", list(GOLD_MAPPING),
                "gold", per_fold, pooled)
    micro_silver = mean([per_fold[fold]["silver_micro"] for fold in folds])
    micro_gold = mean([per_fold[fold]["gold_micro"] for fold in folds])
    if not args.dev:
        print(f"\ncross-validated (mean of {len(folds)} held-out folds): positive micro-F1 vs CheXbert "
              f"{micro_silver:.3f}, vs human gold {micro_gold:.3f}; all {len(rows)} reports: "
              f"{pooled['silver_micro']:.3f} and {pooled['gold_micro']:.3f}")
    else:
        print(f"\ndevelopment folds {folds}: mean positive micro-F1 vs CheXbert {micro_silver:.3f}, "
              f"vs human gold {micro_gold:.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"folds": per_fold, "pooled": pooled, "seed": args.seed,
                                        "dev_only": args.dev}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
