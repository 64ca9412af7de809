"""Effect of the stage-1 counter-measures against negated-sentence flooding on zero-shot perception.

    python benchmarks/stage1_imbalance.py --data runs/ablation/phantom [--num-train 1000 --epochs 8]

Trains stage 1 three times on the same data and budget and reports zero-shot AUROC / F1@0.5 on the
test split:
  none       sentences sampled uniformly from the report, plain BCE prompt loss
  sampling   sentences stating a finding sampled with probability 0.7, plain BCE
  both       that sampling + positive weights ((1 - prevalence) / prevalence) ** 0.5  (the default)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

VARIANTS = {"none": (0.0, 0.0), "sampling": (0.7, 0.0), "both": (0.7, 0.5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a phantom folder (trrg phantom)")
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="optional JSON output")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from ablation import _stage1_perception

    from trrg.trainers.arguments import TRRGDataArguments, TRRGPretrainArguments
    from trrg.commands.demo import DemoPlan, training_args
    from trrg.trainers.pretrain_trainer import build_pretrainer

    plan = DemoPlan(args.num_train, 0, 0, args.epochs, 0)
    results = {}
    for name, (rate, power) in VARIANTS.items():
        torch.manual_seed(args.seed)
        training = training_args(TRRGPretrainArguments, Path("runs/stage1_imbalance") / name, plan, args.epochs,
                                  args.seed, positive_sentence_rate=rate, prompt_pos_weight_power=power)
        training.disable_tqdm = True
        data = TRRGDataArguments(data=args.data, eval_split="", max_train_studies=args.num_train)
        trainer, processor = build_pretrainer(training, data)
        trainer.train()
        perception = _stage1_perception((trainer.model, processor), Path(args.data))
        results[name] = perception
        rare = ["Pneumothorax", "Lung Lesion", "Consolidation", "Fracture", "Pleural Other"]
        rare_auroc = sum(perception["per_observation"][n]["auroc"] for n in rare) / len(rare)
        print(f"{name:9s} positive_sentence_rate={rate} pos_weight_power={power}: AUROC macro "
              f"{perception['auroc_macro']:.3f}, F1@0.5 macro {perception['f1_macro']:.3f}, "
              f"rare-finding AUROC {rare_auroc:.3f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
