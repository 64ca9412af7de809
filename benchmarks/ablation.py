"""The ablation that tests TRRG's claim, on the CXR phantom.

    python benchmarks/ablation.py --out docs/ablation                  # 3 seeds, configurations a-f
    python benchmarks/ablation.py --out docs/ablation --summary-only   # rebuild the table from OUT/runs
    python benchmarks/ablation.py --out /tmp/abl --seeds 0 --num-train 200 --num-test 100 \
        --stage1-epochs 2 --stage2-epochs 2                             # a smoke run

Configurations (same data, tokenizer, backbones and training recipe; every arm of a seed starts its
LLM and visual path from the same weights):
  a  plain captioner: vision encoder trained end to end from random init, no clues, no stage 1
  b  + stage-1 pre-training (frozen stage-1 vision encoder), no clues
  c  + clue injection: one (disease, state) token per disease from the zero-shot decisions
  d  + cross-modal clue interaction (gated)
  e  + disease-aware consistency loss (= full TRRG, the defaults)
  f  (e) fed the reference labels as clues at test time: the upper bound clue quality allows
Probes of the training recipe (seed 0 unless asked): e_uniform (no oversampling of rare findings),
e_mixed (half the visits on the model's own clues), e_unweighted (no finding-token weight).
Stage 1's zero-shot perception on the test split (AUROC, F1@0.5 per observation) is reported too.

Writes OUT/runs/<config>_seed<k>.json as each run ends (a crash loses nothing; a rerun skips
finished runs), then OUT/ablation.json, OUT/ablation.md and OUT/ablation.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ALL_ON = {"use_clue_injection": True, "use_clue_interaction": True}
CONFIGS = {
    "a": {"label": "(a) plain captioner", "stage1": False, "clue": {"use_clue_injection": False, "use_clue_interaction": False}, "consistency": 0.0},
    "b": {"label": "(b) + stage-1 pre-training", "stage1": True, "clue": {"use_clue_injection": False, "use_clue_interaction": False}, "consistency": 0.0},
    "c": {"label": "(c) + clue injection", "stage1": True, "clue": {"use_clue_injection": True, "use_clue_interaction": False}, "consistency": 0.0},
    "d": {"label": "(d) + clue interaction", "stage1": True, "clue": ALL_ON, "consistency": 0.0},
    "e": {"label": "(e) + consistency loss = TRRG", "stage1": True, "clue": ALL_ON, "consistency": 0.5},
    # The upper bound clue quality allows: the reference labels as clues at test time too.
    "f": {"label": "(f) TRRG, oracle clues", "stage1": True, "clue": ALL_ON, "consistency": 0.5, "oracle": True},
    # Training-recipe probes (experiment switches live here, not in the public config):
    "e_mixed": {"label": "(e') TRRG, half the visits on its own clues", "stage1": True, "clue": ALL_ON, "consistency": 0.5,
                "train": {"reference_clue_rate": 0.5}},
    "f_b32": {"label": "(f) oracle, batch 32", "stage1": True, "clue": ALL_ON, "consistency": 0.5, "oracle": True,
              "train": {"per_device_train_batch_size": 32}},
    "f_b16": {"label": "(f) oracle, batch 16", "stage1": True, "clue": ALL_ON, "consistency": 0.5, "oracle": True,
              "train": {"per_device_train_batch_size": 16}},
    "e_b16": {"label": "(e) batch 16", "stage1": True, "clue": ALL_ON, "consistency": 0.5,
              "train": {"per_device_train_batch_size": 16}},
    "e_uniform": {"label": "(e) uniform sampling", "stage1": True, "clue": ALL_ON, "consistency": 0.5,
                  "train": {"oversample_rare_findings": False}},
    "e_unweighted": {"label": "(e'') TRRG, no finding-token weight", "stage1": True, "clue": ALL_ON, "consistency": 0.5,
                     "train": {"finding_token_weight": 1.0}},
}
CLUE_METRICS = {"perception_macro_f1_14", "clue_drop_rate", "clue_unsupported_rate"}
HEADLINE = ["bleu_4", "cider", "ce_micro_f1_14", "ce_macro_f1_14", "perception_macro_f1_14", "ce_macro_f1_5",
            "ce_normal_collapse", "clue_drop_rate", "clue_unsupported_rate"]


def _studies(data_dir: Path, split: str) -> list[dict]:
    from trrg.trainers.training_data import load_training_studies

    args = SimpleNamespace(data=str(data_dir), image_root=None, train_split=split, eval_split="",
                           max_train_studies=None, max_eval_studies=None)
    return list(load_studies(args)[split])


def _stage1_perception(stage1, data_dir: Path) -> dict:
    from trrg.evaluation.perception import perception_scores
    from trrg.assembly.bridge import encode_prompt_bank
    from trrg.processing.studies.schema import CachedStudyReader
    from trrg.trainers.collators import disease_targets

    model, processor = stage1
    model.eval()
    bank = encode_prompt_bank(model, processor)
    rows = _studies(data_dir, "test")
    reader, probs = CachedStudyReader(), []
    for start in range(0, len(rows), 64):
        kept, views = reader.read_batch(rows[start : start + 64])
        pixels = processor.image_processor(views, return_tensors="pt")
        probs.append(model.predict_diseases(pixels["pixel_values"], pixels["view_mask"], bank))
    targets = disease_targets(rows).numpy()
    return perception_scores(torch.cat(probs).numpy(), targets, model.config.disease_names)


def _run_config(key: str, seed: int, stage1, data_dir: Path, plan, work: Path) -> dict:
    from trrg.assembly.bridge import bridge
    from trrg.trainers.collators import disease_targets
    from trrg.commands.demo import run_finetune
    from trrg.evaluation.generation import evaluate_model
    from trrg.assembly.build import build_finetune_model

    config = CONFIGS[key]
    started = time.perf_counter()
    if config["stage1"]:
        model, processor = bridge(None, clue=config["clue"], seed=seed, pretrained=stage1)
    else:  # the same tokenizer as stage 1, so only the encoder's training differs
        model, processor = build_finetune_model("tiny", tokenizer=stage1[1].tokenizer, clue=config["clue"], seed=seed)
    model.config.clue_config.consistency_loss_weight = config["consistency"]
    model, processor = run_finetune(model, processor, data_dir, work / f"{key}_seed{seed}", plan, seed,
                                  freeze_vision=config["stage1"], **config.get("train", {}))
    oracle = (lambda rows: disease_targets(rows)) if config.get("oracle") else None
    metrics = evaluate_model(model, processor, _studies(data_dir, "test"), work / f"{key}_seed{seed}_eval",
                             batch_size=64, meteor=False, clue_probs_for=oracle, progress=False)
    metrics["train_and_eval_s"] = time.perf_counter() - started
    metrics["clue_thresholds"] = model.config.clue_config.clue_thresholds
    return metrics


def _stage1_for(seed: int, data_dir: Path, work: Path, plan):
    """Stage 1 of this seed, trained once and kept (so later configurations reuse it)."""
    from trrg.assembly.hub_folders import load_model_folder
    from trrg.commands.demo import run_pretrain
    from trrg.assembly.hub_folders import save_hub_folder

    folder = work / f"stage1_seed{seed}" / "final"
    if (folder / "model.safetensors").exists():
        return load_model_folder(folder, expected="trrg_contrastive")
    torch.manual_seed(seed)
    model, processor = run_pretrain(data_dir, work / f"stage1_seed{seed}", plan, seed)
    save_hub_folder(model, processor, folder)
    return model, processor


def _summarise(results: dict, keys: list[str], seeds: list[int]) -> dict:
    table = {}
    for key in keys:
        runs = [results[(key, s)] for s in seeds if (key, s) in results]
        table[key] = {"label": CONFIGS[key]["label"], "seeds": len(runs)}
        for metric in HEADLINE:
            values = [r[metric] for r in runs if r.get(metric) is not None]
            table[key][metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0} if values else None
    return table


def _paired_difference(results: dict, first: str, second: str, seeds: list[int], metric: str) -> dict | None:
    diffs = [results[(first, s)][metric] - results[(second, s)][metric] for s in seeds
             if (first, s) in results and (second, s) in results]
    if not diffs:
        return None
    return {"per_seed": diffs, "mean": float(np.mean(diffs)), "std": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0}


def _markdown(summary: dict, perception: dict, differences: dict, protocol: dict) -> str:
    lines = ["# Ablation on the CXR phantom (tiny preset, CPU)", "",
             f"Command: `{protocol['command']}`  ", f"Seeds: {protocol['seeds']}; data: {protocol['data']}; "
             f"test studies: {protocol['num_test']}; metrics: `trrg score` protocol (docs/METRICS.md), no METEOR.", "",
             "| configuration | " + " | ".join(HEADLINE) + " |", "|---|" + "---|" * len(HEADLINE)]
    for key, row in summary.items():
        injects = CONFIGS[key]["clue"]["use_clue_injection"]
        cells = [f"{row[m]['mean']:.3f} ± {row[m]['std']:.3f}" if row[m] and (injects or m not in CLUE_METRICS)
                 else "n/a" for m in HEADLINE]
        lines.append(f"| {row['label']} (n={row['seeds']}) | " + " | ".join(cells) + " |")
    lines += ["", "perception / clue metrics are n/a for arms that inject no clues (their reports are not written "
              "from a perception). Oracle arm: the perception is the reference labels, so its perception F1 is 1."]
    lines += ["", "## Paired differences over seeds (CE macro-F1, 14 observations)", ""]
    for name, diff in differences.items():
        if diff:
            per_seed = ", ".join(f"{d:+.3f}" for d in diff["per_seed"])
            lines.append(f"- {name}: {diff['mean']:+.3f} ± {diff['std']:.3f} (per seed: {per_seed})")
    lines += ["", "## Stage-1 zero-shot perception on the test split (mean over seeds)", "",
              "| observation | positives | AUROC | F1@0.5 |", "|---|---|---|---|"]
    for name, row in perception.items():
        auroc = "n/a" if row["auroc"] is None else f"{row['auroc']:.3f}"
        f1 = "n/a" if row["f1"] is None else f"{row['f1']:.3f}"
        lines.append(f"| {name} | {row['positives']} | {auroc} | {f1} |")
    return "\n".join(lines) + "\n"


def _bar_chart(summary: dict, path: Path, metrics=("ce_macro_f1_14", "ce_micro_f1_14", "bleu_4", "ce_normal_collapse")) -> None:
    """A grouped bar chart (mean with std whiskers) drawn with PIL (no plotting dependency)."""
    from PIL import Image, ImageDraw

    keys = list(summary)
    width, height, left, bottom, top = 1100, 520, 60, 90, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    colors = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    plot_h = height - bottom - top
    group_w = (width - left - 20) / len(keys)
    bar_w = group_w / (len(metrics) + 1)
    for tick in range(0, 11, 2):
        y = height - bottom - plot_h * tick / 10
        draw.line([(left, y), (width - 20, y)], fill=(225, 225, 225))
        draw.text((15, y - 6), f"{tick / 10:.1f}", fill="black")
    for g, key in enumerate(keys):
        for m, metric in enumerate(metrics):
            value = summary[key][metric]
            if value is None:
                continue
            x0 = left + g * group_w + (m + 0.5) * bar_w
            y0 = height - bottom - plot_h * max(0.0, min(1.0, value["mean"]))
            draw.rectangle([x0, y0, x0 + bar_w * 0.9, height - bottom], fill=colors[m])
            spread = plot_h * value["std"]
            cx = x0 + bar_w * 0.45
            draw.line([(cx, y0 - spread), (cx, y0 + spread)], fill="black", width=2)
        draw.text((left + g * group_w + 5, height - bottom + 8), summary[key]["label"][:30], fill="black")
    for m, metric in enumerate(metrics):
        draw.rectangle([left + m * 220, height - 40, left + m * 220 + 14, height - 26], fill=colors[m])
        draw.text((left + m * 220 + 20, height - 40), metric, fill="black")
    draw.text((left, 12), "TRRG ablation on the CXR phantom (mean over seeds, whiskers = std)", fill="black")
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/ablation")
    parser.add_argument("--work", default="runs/ablation", help="training outputs and the phantom data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=["a", "b", "c", "d", "e", "f"])
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--stage1-epochs", type=int, default=10)
    parser.add_argument("--stage2-epochs", type=int, default=8)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--summary-only", action="store_true",
                        help="train nothing: summarise the runs already in OUT/runs (missing ones are left out, n shows how many)")
    args = parser.parse_args()
    from trrg.processing.phantom import generate_phantom
    from trrg.commands.demo import DemoPlan

    out, work = Path(args.out), Path(args.work)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    data_dir = work / "phantom"
    if not (data_dir / "annotation.json").exists():
        generate_phantom(data_dir, num_train=args.num_train, num_val=200, num_test=args.num_test, seed=args.data_seed)
    plan = DemoPlan(num_train=args.num_train, num_val=200, num_test=args.num_test,
                    pretrain_epochs=args.pretrain_epochs, finetune_epochs=args.finetune_epochs)
    results, perceptions = {}, []
    for seed in args.seeds:
        pending = [k for k in args.configs if not (out / "runs" / f"{k}_seed{seed}.json").exists()]
        perception_file = out / "runs" / f"stage1_seed{seed}.json"
        stage1 = None
        if args.summary_only:
            _collect(out, seed, args.configs, results, perceptions)
            continue
        if pending or not perception_file.exists():
            stage1 = _stage1_for(seed, data_dir, work, plan)
            perception_file.write_text(json.dumps(_stage1_perception(stage1, data_dir), indent=1))
        perceptions.append(json.loads(perception_file.read_text()))
        for key in args.configs:
            path = out / "runs" / f"{key}_seed{seed}.json"
            if not path.exists():
                print(f"== seed {seed}: {CONFIGS[key]['label']}", flush=True)
                path.write_text(json.dumps(_run_config(key, seed, stage1, data_dir, plan, work), indent=1))
            results[(key, seed)] = json.loads(path.read_text())

    summary = _summarise(results, args.configs, args.seeds)
    names = list(perceptions[0]["per_observation"])
    perception = {n: {"positives": perceptions[0]["per_observation"][n]["positives"],
                      "auroc": _mean([p["per_observation"][n]["auroc"] for p in perceptions]),
                      "f1": _mean([p["per_observation"][n]["f1"] for p in perceptions])} for n in names}
    pairs = {"(e) full TRRG - (a) plain captioner": ("e", "a"),
             "(e) full TRRG - (b) stage 1 only (the clue modules' contribution)": ("e", "b"),
             "(c) clue injection - (b) stage 1 only": ("c", "b"),
             "(d) + clue interaction - (c) clue injection only": ("d", "c"),
             "(e) + consistency loss - (d)": ("e", "d"),
             "(f) oracle clues - (e) zero-shot clues": ("f", "e"),
             "(e) - (e) with uniform sampling (the oversampling of rare findings)": ("e", "e_uniform"),
             "(e') half the visits on own clues - (e)": ("e_mixed", "e"),
             "(e'') no finding-token weight - (e)": ("e_unweighted", "e")}
    differences = {name: _paired_difference(results, first, second, args.seeds, "ce_macro_f1_14")
                   for name, (first, second) in pairs.items()}
    differences["(e) report - (e) its own perception"] = _paired_difference(
        {**{("report", s): r for (k, s), r in results.items() if k == "e"},
         **{("perception", s): {"ce_macro_f1_14": r.get("perception_macro_f1_14")} for (k, s), r in results.items() if k == "e"}},
        "report", "perception", args.seeds, "ce_macro_f1_14")
    import trrg

    protocol = {"command": "python benchmarks/ablation.py " + " ".join(sys.argv[1:]),
                "seeds": args.seeds, "data": f"CXR phantom, data seed {args.data_seed}, {args.num_train} train",
                "num_test": args.num_test, "plan": plan.__dict__,
                "versions": {"trrg": trrg.__version__, "torch": torch.__version__, "python": platform.python_version()}}
    (out / "ablation.json").write_text(json.dumps({"protocol": protocol, "summary": summary, "differences": differences,
                                                   "stage1_perception": perception,
                                                   "stage1_perception_macro": {"auroc": _mean([p["auroc_macro"] for p in perceptions]),
                                                                               "f1": _mean([p["f1_macro"] for p in perceptions])}}, indent=1))
    markdown = _markdown(summary, perception, differences, protocol)
    (out / "ablation.md").write_text(markdown)
    _bar_chart(summary, out / "ablation.png")
    print(markdown)


def _collect(out: Path, seed: int, keys, results: dict, perceptions: list) -> None:
    for key in keys:
        path = out / "runs" / f"{key}_seed{seed}.json"
        if path.exists():
            results[(key, seed)] = json.loads(path.read_text())
    perception_file = out / "runs" / f"stage1_seed{seed}.json"
    if perception_file.exists():
        perceptions.append(json.loads(perception_file.read_text()))


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


if __name__ == "__main__":
    main()
