"""``trrg demo``: the main job on the embedded default, end to end on a CPU.

    trrg demo --out runs/demo            # about 7 minutes on 2 cores
    trrg demo --quick --out runs/quick   # under 3 minutes, smaller and shorter: a smoke run

phantom data -> stage 1, pretrain (contrastive) -> bridge (prompt bank) -> stage 2, finetune (report
generation with clues) -> generation on the phantom test split -> OUT/metrics.json (the keys of
`trrg score`), OUT/predictions.jsonl and a hub folder OUT/model.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from trrg.assembly.bridge import bridge
from trrg.assembly.hub_folders import export_hub_folder
from trrg.assembly.presets import RECIPES
from trrg.evaluation.generation import evaluate_model
from trrg.evaluation.tables import metrics_table
from trrg.processing.files import write_json_atomically
from trrg.processing.phantom import META_FILE, PHANTOM_VERSION, generate_phantom
from trrg.processing.studies import load_studies
from trrg.trainers.arguments import TRRGDataArguments, TRRGFinetuneArguments, TRRGPretrainArguments
from trrg.trainers.finetune_trainer import build_finetuner
from trrg.trainers.pretrain_trainer import build_pretrainer


@dataclass(frozen=True)
class DemoPlan:
    num_train: int
    num_val: int
    num_test: int
    pretrain_epochs: int
    finetune_epochs: int
    pretrain_augment: bool = False  # stage 1's light augmentation (TRRGPretrainArguments.augment)
    pretrain_batch_size: int | None = None  # stage 1's batch; None: the tiny recipe's


PLANS = {
    # Stage 1 with its augmentation: on these 3,000 studies it raised the zero-shot AUROC on every seed
    # (3 seeds: macro 0.975 -> 0.985, lung lesion 0.884 -> 0.938, fracture 0.860 -> 0.931;
    # docs/perception/phantom-1.3-3000studies). On 1,000 it gains little (0.921 -> 0.925 macro, better on 2
    # of 3 seeds, 30% more time; docs/perception/phantom-1.3-augment-gap), so the recipe keeps it off.
    # Stage 1 at batch 64, not the recipe's 32: at 3,000 studies with the augmentation batch 32 takes ~190 s
    # more (the full demo in 589 s of its 600 s budget) for CE macro-F1 0.827 -> 0.841 on one seed
    # (docs/RESULTS.md, "Stage 1 at batch 32").
    "full": DemoPlan(num_train=3000, num_val=200, num_test=1000, pretrain_epochs=30, finetune_epochs=6,
                     pretrain_augment=True, pretrain_batch_size=64),
    "quick": DemoPlan(num_train=800, num_val=150, num_test=300, pretrain_epochs=8, finetune_epochs=8,
                      pretrain_batch_size=64),
}


def training_args(cls, out: Path, plan: DemoPlan, stage: str, seed: int, **extra):
    """The tiny preset's recipe (the one `trrg pretrain`/`finetune` default to) with the plan's epochs (and
    stage-1 batch, where the plan sets one)."""
    epochs = plan.pretrain_epochs if stage == "pretrain" else plan.finetune_epochs
    batch = {"per_device_train_batch_size": plan.pretrain_batch_size} if stage == "pretrain" and plan.pretrain_batch_size else {}
    options = {**RECIPES["tiny"][stage], **batch, "num_train_epochs": epochs, "output_dir": str(out), "logging_steps": 10,
               "save_strategy": "no", "eval_strategy": "no", "seed": seed, "data_seed": seed, "use_cpu": True,
               "dataloader_num_workers": 0, "report_to": "none", "disable_tqdm": False}
    return cls(**{**options, **extra})


def phantom_is_current(folder: Path, arguments: dict) -> bool:
    """``folder`` holds a phantom of this package's version drawn with these arguments."""
    meta_file = folder / META_FILE
    if not (folder / "annotation.json").exists() or not meta_file.exists():
        return False
    meta = json.loads(meta_file.read_text())
    drawn = meta.get("arguments", {})
    return meta.get("version") == PHANTOM_VERSION and all(drawn.get(key) == value for key, value in arguments.items())


def run_pretrain(data_dir: Path, out: Path, plan: DemoPlan, seed: int, **extra):
    """Train stage 1 on ``data_dir``'s train split; ``extra`` goes to ``TRRGPretrainArguments``."""
    args = training_args(TRRGPretrainArguments, out, plan, "pretrain", seed, **extra)
    trainer, processor = build_pretrainer(args, TRRGDataArguments(data=str(data_dir), eval_split=""))
    trainer.train()
    return trainer.model, processor


def run_finetune(model, processor, data_dir: Path, out: Path, plan: DemoPlan, seed: int, freeze_vision: bool = True,
               **extra):
    """Fine-tune a stage-2 model (from ``bridge`` or ``build_finetune_model``) on ``data_dir``'s train split;
    the clue thresholds are tuned on that train split first. ``extra`` goes to ``TRRGFinetuneArguments``."""
    args = training_args(TRRGFinetuneArguments, out, plan, "finetune", seed, freeze_vision=freeze_vision,
                          load_best_model_at_end=False, **extra)
    trainer, processor = build_finetuner(args, TRRGDataArguments(data=str(data_dir), eval_split="val"), model, processor)
    trainer.train()
    return trainer.model, processor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trrg demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--quick", action="store_true", help="the < 3 minute smoke version")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    plan = PLANS["quick" if args.quick else "full"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings, started = {}, time.perf_counter()

    data_dir = out / "phantom"
    wanted = {"num_train": plan.num_train, "num_val": plan.num_val, "num_test": plan.num_test, "seed": args.seed}
    if not phantom_is_current(data_dir, wanted):  # a rerun reuses its data, never an older phantom's
        print(f"[1/5] phantom {PHANTOM_VERSION}: {plan.num_train} train / {plan.num_val} val / {plan.num_test} test "
              f"studies -> {data_dir}")
        generate_phantom(data_dir, **wanted)
    timings["phantom_s"] = time.perf_counter() - started

    print(f"[2/5] stage 1, pretrain: contrastive pre-training, {plan.pretrain_epochs} epochs"
          + (", light augmentation" if plan.pretrain_augment else ""))
    pretrained = run_pretrain(data_dir, out / "pretrain", plan, args.seed, augment=plan.pretrain_augment)
    timings["pretrain_s"] = time.perf_counter() - started - sum(timings.values())

    print(f"[3/5] bridge + stage 2, finetune: report generation with disease clues, {plan.finetune_epochs} epochs")
    model, processor = run_finetune(*bridge(None, pretrained=pretrained, seed=args.seed), data_dir, out / "finetune", plan,
                                    args.seed)
    timings["finetune_s"] = time.perf_counter() - started - sum(timings.values())

    print("[4/5] generating reports for the phantom test split")
    test = list(load_studies(data_dir)["test"])
    protocol = {"data": "CXR phantom (synthetic)", "split": "test", "seed": args.seed, "plan": plan.__dict__,
                "mode": "quick" if args.quick else "full"}
    metrics = evaluate_model(model, processor, test, out, batch_size=64, protocol=protocol)
    timings["evaluate_s"] = time.perf_counter() - started - sum(timings.values())

    print(f"[5/5] exporting the hub folder -> {out / 'model'}")
    model.config.trrg_training_data = "phantom"
    timings["total_s"] = time.perf_counter() - started
    metrics["timings"] = {k: round(v, 1) for k, v in timings.items()}
    write_json_atomically(out / "metrics.json", metrics)
    export_hub_folder(model, processor, out / "model", metrics, run_info={"command": f"trrg demo{' --quick' if args.quick else ''} --seed {args.seed}"})

    print(metrics_table(metrics, title=f"\nTRRG demo ({protocol['mode']}) on the phantom test split, n={metrics['n']}"))
    print(f"wall time {timings['total_s']:.0f} s; metrics: {out / 'metrics.json'}; predictions: {out / 'predictions.jsonl'}")
    return 0
