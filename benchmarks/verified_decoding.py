"""Verified decoding, measured: what the sentence check and clue completion change, and what they cost.

    python benchmarks/verified_decoding.py --out docs/verified_decoding \
        --run user_seed0=runs/user/finetune/final:runs/user/phantom [--run NAME=MODEL:DATA ...] [--threads 1]
    python benchmarks/verified_decoding.py --out docs/verified_decoding --summary-only
        # no generation: rebuilds docs/verified_decoding/verified_decoding.{md,json} from its runs

For each trained stage-2 model and the test split of its data, the reports are generated twice with
the report pipeline (greedy, 96 new tokens, batch 16, as `trrg evaluate`), each pass timed:

  as generated   ``verify=False``: the writer's text
  dropped only   the same text with the sentence check applied afterwards (sentences that contradict the
                 clues or an earlier sentence dropped; what verified decoding did before clue completion)
  verified       ``verify=True``, the default of `trrg generate`/`evaluate`, the demo and the Space: the
                 check, then clue completion (a present clue no sentence states gets a sampled next
                 sentence that states it, when one of the candidates does and passes the check)

and scored with the `trrg score` protocol (docs/METRICS.md; no METEOR). A run whose name ends in
``_seed<k>`` is one seed of a group (``user_seed0``, ``user_seed1``, ...): the summary gives each group's
mean and sd. Writes OUT/runs/<name>.json as each run ends (a rerun skips finished runs).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

METRICS = ["ce_micro_f1_14", "ce_macro_f1_14", "bleu_4", "clue_drop_rate", "clue_unsupported_rate",
           "self_contradiction_rate", "ce_normal_collapse"]
COLUMNS = ["as generated", "dropped only", "verified"]


def generate(model, processor, rows: list[dict], verify: bool) -> tuple[list[dict], float]:
    from trrg.evaluation.generation import generate_reports

    started = time.perf_counter()
    predictions = generate_reports(model, processor, rows, batch_size=16, max_new_tokens=96, verify=verify)
    return predictions, time.perf_counter() - started


def dropped_only(prediction: dict) -> str:
    """The writer's text with the sentence check applied (no regeneration)."""
    from trrg.modeling.configuration_trrg import CHEXPERT_OBSERVATIONS
    from trrg.modeling.labeler_trrg import label_sentences
    from trrg.modeling.verification_trrg import verify_sentences

    clues = dict(zip(CHEXPERT_OBSERVATIONS, map(bool, prediction["clues"])))
    kept, rejected = verify_sentences(label_sentences(prediction["report"]), clues)
    return " ".join(f"{sentence} ." for sentence in kept) if rejected else prediction["report"]


def measure(name: str, model_dir: Path, data: Path, split: str) -> dict:
    from trrg.assembly.hub_folders import load_model_folder
    from trrg.evaluation.generation import versions
    from trrg.evaluation.score import score_reports
    from trrg.processing.studies import load_studies

    model, processor = load_model_folder(model_dir, expected="trrg")
    rows = list(load_studies(data)[split])
    plain, plain_s = generate(model, processor, rows, verify=False)
    checked, checked_s = generate(model, processor, rows, verify=True)
    references = [row["report"] for row in rows]
    texts = {"as generated": [p["report"] for p in plain], "dropped only": [dropped_only(p) for p in plain],
             "verified": [p["report"] for p in checked]}
    columns = {}
    for column, reports in texts.items():
        clues = [p["clues"] for p in (checked if column == "verified" else plain)]
        metrics = score_reports(reports, references, meteor=False, clues=clues)
        columns[column] = {key: None if metrics[key] is None else float(metrics[key]) for key in METRICS}
        columns[column]["counts"] = {key: metrics.get(key) for key in ("clue_drop_count", "clue_present_count",
                                                                        "clue_unsupported_count", "self_contradiction_count")}
    completed = sum(len(after) > len(before) for after, before in zip(texts["verified"], texts["dropped only"]))
    return {"name": name, "model": str(model_dir), "data": str(data), "split": split, "studies": len(rows),
            "seconds": {"as generated": round(plain_s, 2), "verified": round(checked_s, 2)},
            "time_ratio": round(checked_s / plain_s, 3), "reports_completed": completed, "columns": columns,
            "versions": versions()}


def group_of(name: str) -> str:
    return re.sub(r"_seed\d+$", "", name)


def summarise(runs: list[dict]) -> dict:
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(group_of(run["name"]), []).append(run)
    summary = {}
    for group, members in groups.items():
        cells = {}
        for column in COLUMNS:
            cells[column] = {}
            for key in METRICS:
                values = [m["columns"][column][key] for m in members if m["columns"][column][key] is not None]
                cells[column][key] = {"mean": float(np.mean(values)), "sd": float(np.std(values))} if values else None
        ratios = [m["time_ratio"] for m in members]
        summary[group] = {"runs": [m["name"] for m in members], "columns": cells,
                          "time_ratio": {"mean": float(np.mean(ratios)), "max": float(np.max(ratios))},
                          "studies": members[0]["studies"]}
    return summary


def markdown(summary: dict, runs: list[dict], command: str) -> str:
    lines = [f"Command: `{command}`", "",
             "Greedy, 96 new tokens, batch 16, the report pipeline; `trrg score` protocol without METEOR; "
             "mean ± sd over the runs of a group (one run: sd 0). Time ratio: verified / as generated "
             "generation time, the check and clue completion included.", ""]
    for group, entry in summary.items():
        lines += [f"**{group}** ({', '.join(entry['runs'])}; {entry['studies']} test studies each; time ratio mean "
                  f"{entry['time_ratio']['mean']:.2f}, max {entry['time_ratio']['max']:.2f}):", "",
                  "| | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
        for column in COLUMNS:
            cells = entry["columns"][column]
            lines.append(f"| {column} | " + " | ".join(
                "n/a" if cells[k] is None else f"{cells[k]['mean']:.4f} ± {cells[k]['sd']:.4f}" for k in METRICS) + " |")
        lines.append("")
    lines += ["Per run:", "", "| run | model | seconds as generated / verified | ratio | reports completed | "
              "clue drop as generated → verified | unsupported | self-contradiction |", "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        generated, verified = run["columns"]["as generated"], run["columns"]["verified"]
        lines.append(f"| {run['name']} | `{run['model']}` | {run['seconds']['as generated']} / {run['seconds']['verified']} | "
                     f"{run['time_ratio']:.2f} | {run['reports_completed']} | {generated['clue_drop_rate']:.3f} → "
                     f"{verified['clue_drop_rate']:.3f} | {generated['clue_unsupported_rate']:.3f} → "
                     f"{verified['clue_unsupported_rate']:.3f} | {generated['self_contradiction_rate']:.3f} → "
                     f"{verified['self_contradiction_rate']:.3f} |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path, command: str) -> str:
    runs = [json.loads(path.read_text()) for path in sorted((out / "runs").glob("*.json"))]
    if not runs:
        raise SystemExit(f"{out / 'runs'}: no finished runs")
    summary = summarise(runs)
    (out / "verified_decoding.json").write_text(json.dumps({"command": command, "summary": summary}, indent=2) + "\n")
    table = markdown(summary, runs, command)
    (out / "verified_decoding.md").write_text(table)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="OUT/runs keeps one JSON per run")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=MODEL:DATA",
                        help="a trained stage-2 folder and the data whose test split it is measured on")
    parser.add_argument("--split", default="test")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--summary-only", action="store_true", help="rebuild the outputs from OUT/runs")
    args = parser.parse_args(argv)
    command = f"python benchmarks/verified_decoding.py --out {args.out} --summary-only"
    if not args.summary_only:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        (args.out / "runs").mkdir(parents=True, exist_ok=True)
        for spec in args.run:
            name, _, paths = spec.partition("=")
            model_dir, _, data = paths.partition(":")
            path = args.out / "runs" / f"{name}.json"
            if not (name and model_dir and data):
                raise SystemExit(f"--run {spec!r}: write NAME=MODEL_FOLDER:DATA")
            if path.exists():
                continue
            result = measure(name, Path(model_dir), Path(data), args.split)
            result["threads"] = torch.get_num_threads()
            path.write_text(json.dumps(result, indent=2) + "\n")
            print(f"{name}: {json.dumps(result['columns']['verified'])}", flush=True)
    print(write_summary(args.out, command))


if __name__ == "__main__":
    sys.exit(main())
