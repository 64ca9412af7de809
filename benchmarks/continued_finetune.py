"""Which learning rate fine-tunes an already trained TRRG model on a small private data set?

    python benchmarks/continued_finetune.py --model runs/demo/model --out docs/continued_finetune
    python benchmarks/continued_finetune.py --out docs/continued_finetune --summary-only
        # no training: rebuilds docs/continued_finetune/continued_finetune.{md,json} from its runs

The situation of a hospital that takes a trained stage-2 model (here the full demo's, `trrg demo`)
and fine-tunes it on a few hundred of its own studies. The stand-in for its data is a phantom drawn
with another seed and then shifted the way a second site differs: another detector response (gamma
0.9, a slight blur, sensor noise: mild enough that the frozen perception still works, macro AUROC
0.85 vs 0.86 unshifted on frontal views, so what is measured is the report writer's adaptation) and
another house style (each report's sentences in reverse order, so the findings come first; the
labels are those of the sentences, so they do not change). Frontal and lateral views, as the model
was trained. 200 train / 50 val / 400 test studies per seed.

Arms (same data, same seed, the tiny recipe's batch size, schedule and warm-up, `--epochs` epochs):
  none            the trained model as it is, no fine-tuning
  hf              `TRRGFinetuneArguments` left at Hugging Face's defaults (lr 5e-5, 3 epochs, batch 8,
                  linear decay, no warm-up): what the Python route gives when nothing is set
  lr<X>           fine-tuned at learning rate X; the clue thresholds recalibrated on the train split
                  (the default of `trrg finetune`)
  lr<X>_keep      the same, keeping the model's own clue thresholds (--calibrate_clue_thresholds false)
  lr<X>_e<N>      the same, for N epochs instead of --epochs

Writes OUT/runs/<arm>_seed<k>.json as each run ends (a rerun skips finished runs), then
OUT/continued_finetune.json and OUT/continued_finetune.md. With --summary-only nothing is trained and
neither torch nor trrg is imported: the outputs are rebuilt from OUT/runs alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_ARMS = ["none", "hf", "lr5e-06", "lr2e-05", "lr5e-05", "lr2e-04", "lr2e-03", "lr5e-05_keep", "lr2e-04_keep",
                "lr2e-05_e15", "lr5e-05_e15", "lr5e-06_keep"]
HEADLINE = ["ce_micro_f1_14", "ce_macro_f1_14", "perception_macro_f1_14", "clue_drop_rate", "clue_unsupported_rate",
            "ce_normal_collapse", "bleu_4"]
SPLITS = {"num_train": 200, "num_val": 50, "num_test": 400}
GAMMA, BLUR_RADIUS, NOISE_SD = 0.9, 0.5, 3.0
TRAINING_KEYS = ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "lr_scheduler_type", "warmup_steps",
                 "weight_decay", "calibrate_clue_thresholds")


def arm_settings(arm: str) -> dict:
    """The `TRRGFinetuneArguments` an arm changes; ``{}`` for "none" (no fine-tuning)."""
    if arm in ("none", "hf"):
        return {"hf_defaults": True} if arm == "hf" else {}
    rate, *options = arm.removeprefix("lr").split("_")
    settings = {"learning_rate": float(rate), "calibrate_clue_thresholds": "keep" not in options}
    for option in options:
        if option.startswith("e") and option[1:].isdigit():
            settings["num_train_epochs"] = int(option[1:])
        elif option != "keep":
            raise SystemExit(f"--arms: unknown arm {arm!r}; use none, hf or lr<rate>[_keep][_e<epochs>] "
                             "(e.g. lr5e-05_keep, lr2e-05_e15)")
    return settings


# ---------------------------------------------------------------------------------------------
# The private-site stand-in
# ---------------------------------------------------------------------------------------------


def shifted_report(report: str) -> str:
    """Another house style: the same sentences, last first (each keeps its full stop, so the labeler
    reads the same sentences: ``make_private_site`` checks that every label survives)."""
    from trrg.processing.text import split_sentences

    return " ".join(f"{sentence}." for sentence in reversed(split_sentences(report)))


def shift_image(path: Path, rng: np.random.Generator) -> None:
    """Another detector: gamma, a slight blur and sensor noise, written over the file."""
    from PIL import Image, ImageFilter

    with Image.open(path) as image:
        gray = image.convert("L").filter(ImageFilter.GaussianBlur(BLUR_RADIUS))
    pixels = 255.0 * (np.asarray(gray, dtype=np.float64) / 255.0) ** GAMMA
    pixels += rng.normal(0.0, NOISE_SD, pixels.shape)
    Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8)).save(path)


def make_private_site(folder: Path, seed: int, image_size: int) -> Path:
    """A shifted phantom in ``folder`` (R2Gen layout), made once."""
    from trrg.processing.files import write_json_atomically
    from trrg.processing.phantom import generate_phantom

    done = folder / "shifted.json"
    if done.exists():
        return folder
    generate_phantom(folder, seed=seed, image_size=image_size, lateral_fraction=1.0, **SPLITS)
    from trrg.processing.labeler import label_report

    annotation = json.loads((folder / "annotation.json").read_text())
    rng = np.random.default_rng([seed, 7])
    for rows in annotation.values():
        for row in rows:
            shifted = shifted_report(row["report"])
            if label_report(shifted) != label_report(row["report"]):  # the references must keep their findings
                raise SystemExit(f"{row['id']}: reordering changed the labels of {row['report']!r}")
            row["report"] = shifted
            for image in row["image_path"]:
                shift_image(folder / "images" / image, rng)
    write_json_atomically(folder / "annotation.json", annotation)
    write_json_atomically(done, {"gamma": GAMMA, "blur_radius": BLUR_RADIUS, "noise_sd": NOISE_SD,
                                 "report_style": "sentences reversed", "seed": seed, **SPLITS})
    return folder


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------


def run_arm(arm: str, seed: int, model_dir: Path, data_dir: Path, work: Path, epochs: int) -> dict:
    import torch

    from trrg.assembly.hub_folders import load_model_folder
    from trrg.commands.demo import DemoPlan, training_args
    from trrg.evaluation.generation import evaluate_model
    from trrg.processing.studies import load_studies
    from trrg.trainers.arguments import TRRGDataArguments, TRRGFinetuneArguments
    from trrg.trainers.finetune_trainer import build_finetuner

    torch.manual_seed(seed)
    model, processor = load_model_folder(model_dir, expected="trrg")
    started = time.perf_counter()
    settings = arm_settings(arm)
    if settings:
        if settings.get("hf_defaults"):  # only what a run needs here; everything else transformers' default
            args = TRRGFinetuneArguments(output_dir=str(work / f"{arm}_seed{seed}"), seed=seed, data_seed=seed,
                                         use_cpu=True, save_strategy="no", eval_strategy="no", disable_tqdm=True,
                                         dataloader_num_workers=0, report_to="none")
        else:
            plan = DemoPlan(num_train=0, num_val=0, num_test=0, pretrain_epochs=0, finetune_epochs=epochs)
            args = training_args(TRRGFinetuneArguments, work / f"{arm}_seed{seed}", plan, "finetune", seed,
                                 load_best_model_at_end=False, disable_tqdm=True, **settings)
        trainer, processor = build_finetuner(args, TRRGDataArguments(data=str(data_dir), eval_split="val"), model,
                                             processor)
        trainer.train()
        model = trainer.model
    train_s = time.perf_counter() - started
    rows = list(load_studies(data_dir)["test"])
    metrics = evaluate_model(model, processor, rows, work / f"{arm}_seed{seed}_eval", batch_size=64, meteor=False,
                             progress=False)
    return {"arm": arm, "seed": seed, "settings": settings, "train_s": train_s,
            "training": {key: getattr(args, key) for key in TRAINING_KEYS} if settings else None,
            "clue_thresholds": model.config.clue_config.clue_thresholds, **metrics}


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------


def describe_training(training: dict | None) -> str:
    if training is None:
        return "not fine-tuned"
    thresholds = "recalibrated" if training["calibrate_clue_thresholds"] else "kept"
    return (f"lr {training['learning_rate']:g}, {training['num_train_epochs']:g} ep, batch "
            f"{training['per_device_train_batch_size']}, {training['lr_scheduler_type']}, warm-up "
            f"{training['warmup_steps']}; thresholds {thresholds}")


def summarise(results: list[dict], arms: list[str]) -> dict:
    table = {}
    for arm in arms:
        runs = [run for run in results if run["arm"] == arm]
        if runs:
            table[arm] = {"training": describe_training(runs[0]["training"]),
                          **{metric: {"mean": float(np.mean([run[metric] for run in runs])),
                                      "sd": float(np.std([run[metric] for run in runs])), "n": len(runs)}
                             for metric in HEADLINE}}
    return table


def markdown(summary: dict, protocol: dict) -> str:
    lines = [f"Command: `{protocol['command']}`", "",
             f"Model: `{protocol['model']}` (`trrg demo --out runs/demo_r2s3`); private-site stand-in: {protocol['data']}; "
             f"seeds {protocol['seeds']} (data and training); "
             "metrics: `trrg score` protocol (docs/METRICS.md), no METEOR. Mean ± sd over seeds.", "",
             "| arm | training | " + " | ".join(HEADLINE) + " |", "|---" * (len(HEADLINE) + 2) + "|"]
    for arm, metrics in summary.items():
        cells = [f"{metrics[m]['mean']:.3f} ± {metrics[m]['sd']:.3f}" for m in HEADLINE]
        lines.append(f"| {arm} | {metrics['training']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path, arms: list[str], seeds: list[int], command: str) -> str:
    runs = sorted((out / "runs").glob("*_seed*.json"))
    results = [json.loads(path.read_text()) for path in runs]
    results = [run for run in results if run["arm"] in arms and run["seed"] in seeds]
    if not results:
        raise SystemExit(f"{out / 'runs'}: no finished runs for arms {arms} and seeds {seeds}")
    first = results[0]
    data = f"phantom seed 1000 + seed, shifted ({', '.join(f'{k} {v}' for k, v in SPLITS.items())})"
    protocol = {"command": command, "model": first["model"], "data": data,
                "seeds": sorted({run["seed"] for run in results}), "versions": first.get("versions")}
    summary = summarise(results, arms)
    table = markdown(summary, protocol)
    (out / "continued_finetune.json").write_text(json.dumps({"protocol": protocol, "summary": summary}, indent=2) + "\n")
    (out / "continued_finetune.md").write_text(table)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="OUT/runs keeps one JSON per run")
    parser.add_argument("--model", type=Path, default=Path("runs/demo/model"), help="a trained stage-2 folder")
    parser.add_argument("--work", type=Path, default=Path("runs/continued_finetune"), help="data and checkpoints")
    parser.add_argument("--arms", nargs="+", default=DEFAULT_ARMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--summary-only", action="store_true", help="rebuild the outputs from OUT/runs; no training")
    args = parser.parse_args(argv)
    for arm in args.arms:
        arm_settings(arm)
    command = f"python benchmarks/continued_finetune.py --out {args.out} --summary-only"
    if not args.summary_only:
        train_all(args)
    print(write_summary(args.out, args.arms, args.seeds, command))


def train_all(args) -> None:
    import torch

    from trrg.assembly.hub_folders import load_model_folder

    if not (args.model / "config.json").exists():
        raise SystemExit(f"--model {args.model}: no trained stage-2 folder there; make one with `trrg demo --out runs/demo`")
    if args.threads:
        torch.set_num_threads(args.threads)
    image_size = load_model_folder(args.model, expected="trrg")[0].config.image_size
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        data_dir = make_private_site(args.work / f"private_seed{seed}", 1000 + seed, image_size)
        for arm in args.arms:
            path = args.out / "runs" / f"{arm}_seed{seed}.json"
            if path.exists():
                continue
            result = run_arm(arm, seed, args.model, data_dir, args.work, args.epochs)
            result.update({"model": str(args.model),
                           "data": f"phantom seed {1000 + seed} shifted ({', '.join(f'{k} {v}' for k, v in SPLITS.items())})"})
            path.write_text(json.dumps(result, indent=2) + "\n")
            print(f"{arm} seed {seed}: CE macro-F1 {result['ce_macro_f1_14']:.3f}, collapse "
                  f"{result['ce_normal_collapse']:.3f} ({result['train_s']:.0f} s training)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
