"""``trrg demo``: the main job on the embedded default, end to end on a CPU.

    trrg demo --out runs/demo            # about 15 minutes on 2 cores
    trrg demo --quick --out runs/quick   # under 3 minutes, smaller and shorter: a smoke run

phantom data -> stage 1 (contrastive pre-training) -> bridge (prompt bank) -> stage 2 (report
generation with clues) -> generation on the phantom test split -> OUT/metrics.json (the keys of
`trrg score`), OUT/predictions.jsonl and a hub folder OUT/model.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoPlan:
    num_train: int
    num_val: int
    num_test: int
    stage1_epochs: int
    stage2_epochs: int


PLANS = {
    "full": DemoPlan(num_train=3000, num_val=200, num_test=1000, stage1_epochs=15, stage2_epochs=6),
    "quick": DemoPlan(num_train=800, num_val=150, num_test=300, stage1_epochs=8, stage2_epochs=8),
}


def _training_args(cls, out: Path, plan: DemoPlan, stage: int, seed: int, **extra):
    """The tiny preset's recipe (the one `trrg pretrain`/`finetune` default to) with the plan's epochs."""
    from trrg.trainers.presets import RECIPES

    epochs = plan.stage1_epochs if stage == 1 else plan.stage2_epochs
    options = {**RECIPES["tiny"][stage], "num_train_epochs": epochs, "output_dir": str(out), "logging_steps": 10,
               "save_strategy": "no", "eval_strategy": "no", "seed": seed, "data_seed": seed, "use_cpu": True,
               "dataloader_num_workers": 0, "report_to": "none", "disable_tqdm": False}
    return cls(**{**options, **extra})


def run_stage1(data_dir: Path, out: Path, plan: DemoPlan, seed: int):
    from trrg.trainers.arguments import TRRGDataArguments, TRRGPretrainArguments
    from trrg.trainers.pretrain import build_pretrainer

    args = _training_args(TRRGPretrainArguments, out, plan, 1, seed)
    trainer, processor = build_pretrainer(args, TRRGDataArguments(data=str(data_dir), eval_split=""))
    trainer.train()
    return trainer.model, processor


def run_stage2(model, processor, data_dir: Path, out: Path, plan: DemoPlan, seed: int, freeze_vision: bool = True,
               **extra):
    """Fine-tune a stage-2 model (from ``bridge`` or ``build_generator``) on ``data_dir``'s train split;
    the clue thresholds are tuned on its val split. ``extra`` goes to ``TRRGFinetuneArguments``."""
    from trrg.trainers.arguments import TRRGDataArguments, TRRGFinetuneArguments
    from trrg.trainers.finetune import build_finetuner

    args = _training_args(TRRGFinetuneArguments, out, plan, 2, seed, freeze_vision=freeze_vision,
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

    from trrg.processing.phantom import generate_phantom

    data_dir = out / "phantom"
    if not (data_dir / "annotation.json").exists():
        print(f"[1/5] phantom: {plan.num_train} train / {plan.num_val} val / {plan.num_test} test studies -> {data_dir}")
        generate_phantom(data_dir, num_train=plan.num_train, num_val=plan.num_val, num_test=plan.num_test, seed=args.seed)
    timings["phantom_s"] = time.perf_counter() - started

    print(f"[2/5] stage 1: contrastive pre-training, {plan.stage1_epochs} epochs")
    stage1 = run_stage1(data_dir, out / "stage1", plan, args.seed)
    timings["stage1_s"] = time.perf_counter() - started - sum(timings.values())

    print(f"[3/5] bridge + stage 2: report generation with disease clues, {plan.stage2_epochs} epochs")
    from trrg.trainers.bridge import bridge

    model, processor = run_stage2(*bridge(None, stage1=stage1, seed=args.seed), data_dir, out / "stage2", plan, args.seed)
    timings["stage2_s"] = time.perf_counter() - started - sum(timings.values())

    print("[4/5] generating reports for the phantom test split")
    from trrg.trainers.evaluate import evaluate_model
    from trrg.trainers.studies import load_studies
    from types import SimpleNamespace

    test = list(load_studies(SimpleNamespace(data=str(data_dir), image_root=None, train_split="test", eval_split="",
                                             max_train_studies=None, max_eval_studies=None))["test"])
    protocol = {"data": "CXR phantom (synthetic)", "split": "test", "seed": args.seed, "plan": plan.__dict__,
                "mode": "quick" if args.quick else "full"}
    metrics = evaluate_model(model, processor, test, out, batch_size=64, protocol=protocol)
    timings["evaluate_s"] = time.perf_counter() - started - sum(timings.values())

    print(f"[5/5] exporting the hub folder -> {out / 'model'}")
    from trrg.trainers.export import export_hub_folder

    model.config.trrg_training_data = "phantom"
    timings["total_s"] = time.perf_counter() - started
    metrics["timings"] = {k: round(v, 1) for k, v in timings.items()}
    from trrg.trainers.evaluate import _write_json

    _write_json(out / "metrics.json", metrics)
    export_hub_folder(model, processor, out / "model", metrics, run_info={"command": f"trrg demo{' --quick' if args.quick else ''} --seed {args.seed}"})

    from trrg.trainers.report_table import metrics_table

    print(metrics_table(metrics, title=f"\nTRRG demo ({protocol['mode']}) on the phantom test split, n={metrics['n']}"))
    print(f"wall time {timings['total_s']:.0f} s; metrics: {out / 'metrics.json'}; predictions: {out / 'predictions.jsonl'}")
    return 0
