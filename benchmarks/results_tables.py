"""The tables of docs/RESULTS.md, rendered from the measurements committed under docs/.

    python benchmarks/results_tables.py goals       # the ablation's goals, from docs/ablation/ablation.json
    python benchmarks/results_tables.py demo        # `trrg demo` full + quick, from docs/results/demo_*_metrics.json
    python benchmarks/results_tables.py userroute   # the user's route, from docs/results/userroute_*.json
    python benchmarks/results_tables.py views       # both views vs the frontal alone, from docs/results/demo_full_*

Nothing is trained or measured here: each table is printed from the JSON a measured run wrote (the
demo's and the user route's OUT/metrics.json, copied into docs/results/; the ablation's summary,
itself rebuilt from docs/ablation/runs by `benchmarks/ablation.py --summary-only`). The pretrain-stage
imbalance table is printed by `benchmarks/pretrain_imbalance.py --from-json docs/pretrain_imbalance.json`.
tests/test_benchmarks_regenerate.py checks that docs/RESULTS.md holds exactly these tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _minus(text: str) -> str:
    return text.replace("-", "\u2212")  # the typographic minus the prose uses


def _signed(value: float) -> str:
    return _minus(f"{value:+.3f}")


def goals_table(ablation: dict) -> str:
    """The issue's goals against the ablation's means over seeds (arms (e) = full TRRG, (f) = oracle clues)."""
    summary, differences = ablation["summary"], ablation["differences"]
    seeds = len(ablation["protocol"]["seeds"])
    oracle = summary["f"]["ce_macro_f1_14"]
    over_b = differences["(e) full TRRG - (b) stage 1 only (the clue modules' contribution)"]
    over_a = differences["(e) full TRRG - (a) plain captioner"]
    own = differences["(e) report - (e) its own perception"]
    drop, collapse = summary["e"]["clue_drop_rate"], summary["e"]["ce_normal_collapse"]
    report, perception = summary["e"]["ce_macro_f1_14"], summary["e"]["perception_macro_f1_14"]

    def pm(stat: dict) -> str:
        return f"{stat['mean']:.3f} ± {stat['std']:.3f}"

    rows = [
        # goal, measured, met; "first design" figures are round 1's (the clue pathway before its redesign)
        ("oracle clues → report CE macro-F1(14) ≥ 0.90", f"**{pm(oracle)}** (first design: 0.30)", oracle["mean"] >= 0.90),
        ("full TRRG − stage-1-only (b) ≥ +0.05 on every seed",
         f"{_signed(over_b['mean'])} ± {over_b['std']:.3f} ({', '.join(_signed(d) for d in over_b['per_seed'])})",
         min(over_b["per_seed"]) >= 0.05),
        ("full TRRG − plain captioner (a) ≥ +0.15", f"{_signed(over_a['mean'])} ± {over_a['std']:.3f}", over_a["mean"] >= 0.15),
        ("report macro-F1 ≥ own perception macro-F1",
         f"{report['mean']:.3f} vs {perception['mean']:.3f}: {_minus(format(own['mean'], '.3f'))} ± {own['std']:.3f}",
         own["mean"] >= 0),
        ("clue drop rate ≤ 5%", f"{pm(drop)} (first design: 0.47)", drop["mean"] <= 0.05),
        ("normal collapse ≤ 0.10", pm(collapse), collapse["mean"] <= 0.10),
    ]
    lines = [f"| goal (issue) | measured (mean ± std over {seeds} seeds) | met? |", "|---|---|---|"]
    lines += [f"| {goal} | {measured} | {'yes' if met else 'no'} |" for goal, measured, met in rows]
    return "\n".join(lines) + "\n"


def _timing(metrics: dict, stage: str) -> float:
    timings = metrics["timings"]  # runs before the stage renaming wrote stage1_s / stage2_s
    return timings.get(f"{stage}_s", timings.get({"pretrain": "stage1_s", "finetune": "stage2_s"}.get(stage, ""), 0.0))


def _epochs(plan: dict, stage: str) -> int:
    return plan.get(f"{stage}_epochs", plan.get({"pretrain": "stage1_epochs", "finetune": "stage2_epochs"}[stage]))


def _rate_with_counts(metrics: dict, rate: str, numerator: str, denominator: str) -> str:
    return f"{metrics[rate]:.3f} ({metrics[numerator]}/{metrics[denominator]})"


def _f3(metrics: dict, *keys: str) -> str:
    return " / ".join(f"{metrics[key]:.3f}" for key in keys)


# docs/results/<file> (a demo run's OUT/metrics.json) -> its column's heading, newest first
DEMO_COLUMNS = (
    ("demo_full_phantom13_firstview_metrics.json",
     "full: `bash scripts/demo.sh` (phantom 1.3, stage 1 reading each study with both views and with its frontal "
     "view alone, no single-view visits; a fresh clone at cddec49, on a machine 2.1x slower than 84ce914's)"),
    ("demo_full_phantom13_keyed_metrics.json",
     "full, stage 1 with single-view visits (phantom 1.3, augmentation drawn per batch and epoch, "
     "verified decoding; a fresh clone at 496d0bf)"),
    ("demo_full_phantom13_metrics.json",
     "full, the augmentation drawn by one generator (phantom 1.3, verified decoding; a fresh clone at 84ce914)"),
    ("demo_full_phantom12_singleview_metrics.json",
     "full, phantom 1.2 (stage 1 global + local, single-view visits 0.5)"),
    ("demo_full_phantom12_metrics.json", "full, before single-view visits (phantom 1.2, stage 1 global + local)"),
    ("demo_full_metrics.json", "full, before (phantom 1.1, stage 1 global only)"),
    ("demo_quick_phantom13_firstview_metrics.json",
     "quick: `trrg demo --quick --out runs/quick15` (phantom 1.3, stage 1 reading the frontal view alone as well; "
     "the working tree at 2d6981e, on the machine 1.6-1.9x slower)"),
    ("demo_quick_metrics.json", "quick, before (phantom 1.1)"),
)


def demo_table(columns: list[tuple[str, dict]]) -> str:
    """`trrg demo` runs side by side, from their OUT/metrics.json: (heading, metrics) per column."""

    def wall(m: dict) -> str:
        parts = [m["timings"]["phantom_s"], _timing(m, "pretrain"), _timing(m, "finetune"), m["timings"]["evaluate_s"]]
        return (f"{m['timings']['total_s']:.0f} s (phantom {parts[0]:.0f}, pretrain {parts[1]:.0f}, "
                f"finetune {parts[2]:.0f}, generation + scoring {parts[3]:.0f})")

    rows = [
        ("data (train / val / test studies, 2 views, 128 px)",
         lambda m: f"{m['plan']['num_train']:,} / {m['plan']['num_val']:,} / {m['plan']['num_test']:,}"),
        ("epochs (pretrain / finetune)", lambda m: f"{_epochs(m['plan'], 'pretrain')} / {_epochs(m['plan'], 'finetune')}"),
        ("wall time, 2 cores (load: see the text)", wall),
        ("bleu_1 / bleu_4", lambda m: _f3(m, "bleu_1", "bleu_4")),
        ("meteor / rouge_l / cider", lambda m: _f3(m, "meteor", "rouge_l", "cider")),
        ("ce_micro_precision_14 / recall_14", lambda m: _f3(m, "ce_micro_precision_14", "ce_micro_recall_14")),
        ("**ce_micro_f1_14 / ce_macro_f1_14**", lambda m: _f3(m, "ce_micro_f1_14", "ce_macro_f1_14")),
        ("**perception_macro_f1_14** (its own clue decisions)", lambda m: _f3(m, "perception_macro_f1_14")),
        ("**clue_drop_rate / clue_unsupported_rate**",
         lambda m: _rate_with_counts(m, "clue_drop_rate", "clue_drop_count", "clue_present_count") + " / "
         + _rate_with_counts(m, "clue_unsupported_rate", "clue_unsupported_count", "clue_report_positive_count")),
        ("ce_micro_f1_5 / ce_macro_f1_5", lambda m: _f3(m, "ce_micro_f1_5", "ce_macro_f1_5")),
        ("ce_example_f1", lambda m: _f3(m, "ce_example_f1")),
        ("**ce_normal_collapse**", lambda m: _f3(m, "ce_normal_collapse")),
    ]
    lines = ["| | " + " | ".join(heading for heading, _ in columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {label} | " + " | ".join(cell(m) for _, m in columns) + " |" for label, cell in rows]
    return "\n".join(lines) + "\n"


# docs/results/<file> -> (model, views at test): the demo models read with both views and with the frontal alone
VIEWS_COLUMNS = (
    ("demo_full_phantom12_metrics.json", "demo model trained on two views, both views"),
    ("demo_full_phantom12_frontal_only_metrics.json", "same model, frontal only (`--max_views 1`)"),
    ("demo_full_phantom12_singleview_metrics.json", "single-view visits 0.5, both views"),
    ("demo_full_phantom12_singleview_frontal_only_metrics.json", "same model, frontal only (`--max_views 1`)"),
)


def views_table(columns: list[tuple[str, dict]]) -> str:
    """The same test studies read with both views and with the frontal view alone, per model."""
    rows = [
        ("**ce_micro_f1_14 / ce_macro_f1_14**", lambda m: _f3(m, "ce_micro_f1_14", "ce_macro_f1_14")),
        ("perception_macro_f1_14 (its own clue decisions)", lambda m: _f3(m, "perception_macro_f1_14")),
        ("clue_drop_rate", lambda m: _rate_with_counts(m, "clue_drop_rate", "clue_drop_count", "clue_present_count")),
        ("**ce_normal_collapse**", lambda m: _f3(m, "ce_normal_collapse")),
        ("bleu_4", lambda m: _f3(m, "bleu_4")),
    ]
    lines = ["| | " + " | ".join(heading for heading, _ in columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {label} | " + " | ".join(cell(m) for _, m in columns) + " |" for label, cell in rows]
    return "\n".join(lines) + "\n"


# (docs/results/<metrics>, docs/results/<report counts>, heading), newest first
USERROUTE_COLUMNS = (
    ("userroute_phantom13_augment_metrics.json", "userroute_phantom13_augment_report_counts.json",
     "phantom 1.3, the next column's route with `--augment True` for stage 1 (`runs/userroute18`; not the default)"),
    ("userroute_phantom13_firstview_metrics.json", "userroute_phantom13_firstview_report_counts.json",
     "phantom 1.3, stage 1 reading each study from its frontal view alone as well (`runs/userroute17`)"),
    ("userroute_phantom13_batch32_metrics.json", "userroute_phantom13_batch32_report_counts.json",
     "phantom 1.3, stage 1 at batch 32 (`runs/userroute14`)"),
    ("userroute_phantom13_metrics.json", "userroute_phantom13_report_counts.json",
     "phantom 1.3, stage 1 for 30 epochs (`runs/userroute13`)"),
    ("userroute_phantom12_metrics.json", "userroute_phantom12_report_counts.json",
     "phantom 1.2, stage 1 global + local (`runs/userroute2`)"),
    ("userroute_metrics.json", "userroute_report_counts.json", "before: phantom 1.1, stage 1 global only"),
)


def userroute_table(columns: list[tuple[str, dict, dict]]) -> str:
    """The user's route (trrg pretrain, finetune, evaluate with default flags): (heading, its
    OUT/metrics.json, the distinct reports of its predictions.jsonl) per column."""
    rows = [
        ("ce_micro_f1_14 / ce_macro_f1_14", lambda m, c: _f3(m, "ce_micro_f1_14", "ce_macro_f1_14")),
        ("perception_macro_f1_14 (its own clue decisions)", lambda m, c: _f3(m, "perception_macro_f1_14")),
        ("clue_drop_rate / clue_unsupported_rate",
         lambda m, c: _rate_with_counts(m, "clue_drop_rate", "clue_drop_count", "clue_present_count") + " / "
         + _rate_with_counts(m, "clue_unsupported_rate", "clue_unsupported_count", "clue_report_positive_count")),
        ("ce_normal_collapse", lambda m, c: _f3(m, "ce_normal_collapse")),
        ("bleu_4 / meteor / cider", lambda m, c: _f3(m, "bleu_4", "meteor", "cider")),
        ("distinct reports / test studies", lambda m, c: f"{len(c['report_counts'])} / {c['studies']:,}"),
    ]
    lines = ["| metric | " + " | ".join(heading for heading, _, _ in columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {label} | " + " | ".join(cell(m, c) for _, m, c in columns) + " |" for label, cell in rows]
    return "\n".join(lines) + "\n"


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def render(table: str, docs: Path = DOCS) -> str:
    if table == "goals":
        return goals_table(_load(docs / "ablation" / "ablation.json"))
    if table == "demo":
        return demo_table([(heading, _load(docs / "results" / name)) for name, heading in DEMO_COLUMNS
                           if (docs / "results" / name).is_file()])
    if table == "views":
        return views_table([(heading, _load(docs / "results" / name)) for name, heading in VIEWS_COLUMNS])
    if table == "userroute":
        return userroute_table([(heading, _load(docs / "results" / metrics), _load(docs / "results" / counts))
                                for metrics, counts, heading in USERROUTE_COLUMNS])
    raise ValueError(f"unknown table {table!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=["goals", "demo", "userroute", "views"])
    parser.add_argument("--docs", type=Path, default=DOCS, help="the docs folder to read (default: this checkout's)")
    args = parser.parse_args(argv)
    print(render(args.table, args.docs), end="")


if __name__ == "__main__":
    main()
