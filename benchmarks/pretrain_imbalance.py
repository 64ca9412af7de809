"""Effect of the pretrain stage's counter-measures against negated-sentence flooding on zero-shot perception.

    python benchmarks/pretrain_imbalance.py --data runs/ablation/phantom --out docs/pretrain_imbalance.json
        [--num-train 1000 --epochs 8]                  # trains the pretrain stage three times
    python benchmarks/pretrain_imbalance.py --from-json docs/pretrain_imbalance.json
                                                       # no training: the table of a run's JSON

Trains the pretrain stage (stage 1) three times on the same data and budget and reports zero-shot
AUROC / F1@0.5 on the test split:
  none       sentences sampled uniformly from the report, plain BCE prompt loss
  sampling   sentences stating a finding sampled with probability 0.7, plain BCE
  both       that sampling + positive weights ((1 - prevalence) / prevalence) ** 0.5  (the default)
Prints a markdown table (the one in docs/RESULTS.md); --out writes the per-observation figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# name -> (positive_sentence_rate, prompt_pos_weight_power, description in the table)
VARIANTS = {
    "none": (0.0, 0.0, "none: uniform sentence sampling, plain BCE"),
    "sampling": (0.7, 0.0, "sampling: finding sentences drawn with p = 0.7"),
    "both": (0.7, 0.5, "both: + positive weights ((1-p)/p)^0.5 (default)"),
}
RARE = ["Pneumothorax", "Lung Lesion", "Consolidation", "Fracture", "Pleural Other"]


def rare_auroc(perception: dict) -> float | None:
    """Mean AUROC over the rare findings (those with positives in the test split)."""
    values = [perception["per_observation"][name]["auroc"] for name in RARE]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def table(results: dict) -> str:
    """The markdown table of ``{variant: pretrain_perception(...)}``."""
    lines = ["| variant | AUROC macro | F1@0.5 macro | AUROC, rare findings |", "|---|---|---|---|"]
    for name, perception in results.items():
        cells = [perception["auroc_macro"], perception["f1_macro"], rare_auroc(perception)]
        lines.append(f"| {VARIANTS[name][2]} | " + " | ".join(_show(v) for v in cells) + " |")
    return "\n".join(lines) + "\n"


def train(args) -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from ablation import pretrain_perception

    from trrg.commands.demo import DemoPlan, training_args
    from trrg.trainers.arguments import TRRGDataArguments, TRRGPretrainArguments
    from trrg.trainers.pretrain_trainer import build_pretrainer

    plan = DemoPlan(num_train=args.num_train, num_val=0, num_test=0, pretrain_epochs=args.epochs, finetune_epochs=0)
    results = {}
    for name, (rate, power, _) in VARIANTS.items():
        torch.manual_seed(args.seed)
        training = training_args(TRRGPretrainArguments, Path(args.work) / name, plan, "pretrain", args.seed,
                                 positive_sentence_rate=rate, prompt_pos_weight_power=power)
        training.disable_tqdm = True
        data = TRRGDataArguments(data=args.data, eval_split="", max_train_studies=args.num_train)
        trainer, processor = build_pretrainer(training, data)
        trainer.train()
        perception = pretrain_perception((trainer.model, processor), Path(args.data))
        results[name] = perception
        if args.out:  # after every variant, so a crash loses nothing
            Path(args.out).write_text(json.dumps(results, indent=1))
        print(f"{name:9s} positive_sentence_rate={rate} pos_weight_power={power}: AUROC macro "
              f"{_show(perception['auroc_macro'])}, F1@0.5 macro {_show(perception['f1_macro'])}, "
              f"rare-finding AUROC {_show(rare_auroc(perception))}", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="a phantom folder (trrg phantom); required unless --from-json")
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="runs/pretrain_imbalance", help="training outputs")
    parser.add_argument("--out", default=None, help="optional JSON output")
    parser.add_argument("--from-json", type=Path, help="train nothing: print the table of this JSON (an --out of an earlier run)")
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    elif args.data:
        results = train(args)
    else:
        parser.error("--data (to train) or --from-json (to print a measured run) is required")
    print(table(results), end="")


if __name__ == "__main__":
    main()
