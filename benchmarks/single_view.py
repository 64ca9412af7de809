"""Does a model trained on two-view studies read a one-view study, and does showing some training
visits with the frontal view alone (`--single_view_rate`) fix it?

    python benchmarks/single_view.py --out docs/single_view                  # rates 0, 0.3, 0.5; seeds 0 1
    python benchmarks/single_view.py --out docs/single_view --summary-only   # rebuilds the tables from the runs

Same phantom (1.2, seed 0: 1,000 train / 100 val / 600 test studies, every one frontal + lateral,
128 px) and the tiny recipe for every arm; only `single_view_rate` differs, and it is used in both
stages. Each arm trains stage 1 (10 epochs), bridges, fine-tunes stage 2 (8 epochs) and is measured
on the test studies twice: with both views, and with the frontal view alone (the same studies, the
lateral dropped, as a site that files one view would send them). Reported: stage 1's zero-shot
perception (macro AUROC, macro F1 at 0.5), and the reports' CE (micro/macro F1 over 14, the `trrg
score` protocol, no METEOR), the model's own clue decisions' macro F1, clue drop rate and normal
collapse.

Writes OUT/runs/rate<r>_seed<k>.json as each arm ends (a rerun skips finished arms), then
OUT/single_view.json and OUT/single_view.md. With --summary-only nothing is trained and neither
torch nor trrg is imported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

DATA = {"num_train": 1000, "num_val": 100, "num_test": 600, "seed": 0}
EPOCHS = {"pretrain": 10, "finetune": 8}
PERCEPTION = ["auroc_macro", "f1_macro"]
REPORT = ["ce_micro_f1_14", "ce_macro_f1_14", "perception_macro_f1_14", "clue_drop_rate", "ce_normal_collapse"]
VIEWS = {"both views": None, "frontal only": 1}


def with_views(rows: list[dict], count: int | None) -> list[dict]:
    return rows if count is None else [{**row, "images": row["images"][:count]} for row in rows]


def zero_shot_perception(model, processor, rows: list[dict]) -> dict:
    """Stage 1's zero-shot macro AUROC / F1@0.5 on ``rows``."""
    import torch

    from trrg.assembly.bridge import encode_prompt_bank
    from trrg.evaluation.perception import perception_scores
    from trrg.processing.studies.schema import CachedStudyReader
    from trrg.trainers.collators import disease_targets

    model.eval()
    bank, reader, probs = encode_prompt_bank(model, processor), CachedStudyReader(), []
    for start in range(0, len(rows), 64):
        kept, views = reader.read_batch(rows[start : start + 64])
        pixels = processor.image_processor(views, return_tensors="pt")
        with torch.no_grad():
            probs.append(model.predict_diseases(pixels["pixel_values"], pixels["view_mask"], bank))
    scores = perception_scores(torch.cat(probs).numpy(), disease_targets(rows).numpy(), model.config.disease_names)
    return {key: scores[key] for key in PERCEPTION}


def run_arm(rate: float, seed: int, data_dir: Path, work: Path) -> dict:
    import torch

    from trrg.assembly.bridge import bridge
    from trrg.commands.demo import DemoPlan, run_finetune, run_pretrain
    from trrg.evaluation.generation import evaluate_model
    from trrg.processing.studies import load_studies

    plan = DemoPlan(num_train=0, num_val=0, num_test=0, pretrain_epochs=EPOCHS["pretrain"],
                    finetune_epochs=EPOCHS["finetune"])
    test = list(load_studies(data_dir)["test"])
    started = time.perf_counter()
    torch.manual_seed(seed)
    pretrained = run_pretrain(data_dir, work / f"rate{rate}_seed{seed}_pretrain", plan, seed, single_view_rate=rate,
                              disable_tqdm=True)
    result = {"single_view_rate": rate, "seed": seed, "pretrain": {}, "finetune": {}}
    for name, count in VIEWS.items():
        result["pretrain"][name] = zero_shot_perception(*pretrained, with_views(test, count))
    model, processor = run_finetune(*bridge(None, pretrained=pretrained, seed=seed), data_dir,
                                    work / f"rate{rate}_seed{seed}_finetune", plan, seed, single_view_rate=rate,
                                    disable_tqdm=True)
    for name, count in VIEWS.items():
        metrics = evaluate_model(model, processor, with_views(test, count),
                                 work / f"rate{rate}_seed{seed}_eval_{name.replace(' ', '_')}", batch_size=64,
                                 meteor=False, progress=False)
        result["finetune"][name] = {key: metrics[key] for key in REPORT}
        result["versions"] = metrics["versions"]
    result["wall_s"] = time.perf_counter() - started
    return result


def summarise(results: list[dict], rates: list[float]) -> dict:
    def stat(values):
        return {"mean": float(np.mean(values)), "sd": float(np.std(values)), "n": len(values)}

    summary = {}
    for rate in rates:
        runs = [run for run in results if run["single_view_rate"] == rate]
        if runs:
            summary[str(rate)] = {stage: {view: {key: stat([run[stage][view][key] for run in runs]) for key in keys}
                                          for view in VIEWS}
                                  for stage, keys in (("pretrain", PERCEPTION), ("finetune", REPORT))}
    return summary


def markdown(summary: dict, protocol: dict) -> str:
    def cell(entry):
        return f"{entry['mean']:.3f} ± {entry['sd']:.3f}"

    lines = [f"Command: `{protocol['command']}`", "",
             f"Phantom {protocol['phantom']} ({protocol['data']}); tiny recipe, stage 1 {EPOCHS['pretrain']} epochs, "
             f"stage 2 {EPOCHS['finetune']} epochs; seeds {protocol['seeds']}; mean ± sd over seeds; versions "
             f"{protocol['versions']}.", "",
             "Stage 1, zero-shot perception on the test studies:", "",
             "| single_view_rate | views at test | " + " | ".join(PERCEPTION) + " |", "|---" * (len(PERCEPTION) + 2) + "|"]
    for rate, stages in summary.items():
        for view in VIEWS:
            lines.append(f"| {rate} | {view} | " + " | ".join(cell(stages["pretrain"][view][k]) for k in PERCEPTION) + " |")
    lines += ["", "Stage 2, the reports (`trrg score` protocol, no METEOR):", "",
              "| single_view_rate | views at test | " + " | ".join(REPORT) + " |", "|---" * (len(REPORT) + 2) + "|"]
    for rate, stages in summary.items():
        for view in VIEWS:
            lines.append(f"| {rate} | {view} | " + " | ".join(cell(stages["finetune"][view][k]) for k in REPORT) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path, rates: list[float], seeds: list[int], command: str) -> str:
    results = [json.loads(path.read_text()) for path in sorted((out / "runs").glob("rate*_seed*.json"))]
    results = [run for run in results if run["single_view_rate"] in rates and run["seed"] in seeds]
    if not results:
        raise SystemExit(f"{out / 'runs'}: no finished arms for rates {rates} and seeds {seeds}")
    protocol = {"command": command, "phantom": results[0]["phantom"], "data": results[0]["data"],
                "seeds": sorted({run["seed"] for run in results}), "versions": results[0]["versions"]}
    summary = summarise(results, rates)
    table = markdown(summary, protocol)
    (out / "single_view.json").write_text(json.dumps({"protocol": protocol, "summary": summary}, indent=2) + "\n")
    (out / "single_view.md").write_text(table)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="OUT/runs keeps one JSON per arm")
    parser.add_argument("--work", type=Path, default=Path("runs/single_view"), help="data and checkpoints")
    parser.add_argument("--rates", nargs="+", type=float, default=[0.0, 0.3, 0.5])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--summary-only", action="store_true", help="rebuild the outputs from OUT/runs; no training")
    args = parser.parse_args(argv)
    rates = " ".join(f"{rate:g}" for rate in args.rates)
    command = (f"python benchmarks/single_view.py --out {args.out} --rates {rates} "
               f"--seeds {' '.join(map(str, args.seeds))} --summary-only")
    if not args.summary_only:
        train_all(args)
    print(write_summary(args.out, args.rates, args.seeds, command))


def train_arms(args, arms: dict, run) -> None:
    """Every ``(seed, arm)`` without a run file yet: ``run(arm, seed, data_dir, work)`` on the shared
    phantom (made once), written to OUT/runs/<arm name>_seed<k>.json as it ends. ``arms``: {name: arm}.
    Also used by rendering_shift.py."""
    import torch

    from trrg.commands.demo import phantom_is_current
    from trrg.processing.phantom import PHANTOM_VERSION, generate_phantom

    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = args.work / "phantom"
    if not phantom_is_current(data_dir, DATA):
        generate_phantom(data_dir, lateral_fraction=1.0, **DATA)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for name, arm in arms.items():
            path = args.out / "runs" / f"{name}_seed{seed}.json"
            if path.exists():
                continue
            result = run(arm, seed, data_dir, args.work)
            result.update({"phantom": PHANTOM_VERSION, "data": ", ".join(f"{k} {v}" for k, v in DATA.items())})
            path.write_text(json.dumps(result, indent=2) + "\n")
            ce = {view: f"{scores['ce_macro_f1_14']:.3f}" for view, scores in result["finetune"].items()}
            print(f"{name} seed {seed}: CE macro-F1 {ce} ({result['wall_s']:.0f} s)", flush=True)


def train_all(args) -> None:
    train_arms(args, {f"rate{rate:g}": rate for rate in args.rates}, run_arm)


if __name__ == "__main__":
    sys.exit(main())
