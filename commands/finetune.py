"""``trrg finetune``: stage 2, report generation with the disease clues (``TRRGFinetuneTrainer``).

    trrg finetune --model runs/bridged --data runs/phantom --output_dir runs/finetune --num_train_epochs 10
    trrg finetune --pretrain_model runs/pretrain/final --llm /models/llama-7b --lora_r 16 --data DIR --output_dir OUT
    accelerate launch --config_file trainers/accelerate_configs/ddp.yaml -m trrg.commands.finetune ...
    trrg finetune ... --resume          # continue from the newest checkpoint in --output_dir

Every option the command line leaves out comes from the preset's recipe (``trrg.assembly.presets``).
When --data has the evaluation split (--eval_split, default val) and the command line sets none of
--eval_strategy/--save_strategy/--load_best_model_at_end/--save_total_limit/--logging_steps, each
epoch is evaluated (CE macro-F1 on generated reports), the loss is logged 20 times a run and the
best epoch is kept. Writes OUTPUT_DIR/final: a hub-ready folder with LoRA merged.
"""

from __future__ import annotations

import sys
from pathlib import Path

from trrg.assembly.hub_folders import export_hub_folder
from trrg.commands.parsing import evaluation_argv, parse_with_resume, recipe_argv
from trrg.trainers.arguments import TRRGDataArguments, TRRGFinetuneArguments
from trrg.trainers.checkpointing import resume_point, save_log_history
from trrg.trainers.distributed import end_process_group
from trrg.trainers.finetune_trainer import build_finetuner


USAGE = "%(prog)s (--model B | --pretrain_model P [--llm L]) --data D --output_dir O [--lora_r R] [--resume] [option ...]"


def main(argv: list[str] | None = None) -> int:
    argv = evaluation_argv(recipe_argv(list(sys.argv[1:] if argv is None else argv), stage="finetune"))
    args, data_args = parse_with_resume((TRRGFinetuneArguments, TRRGDataArguments), argv, "trrg finetune", __doc__, USAGE)
    trainer, processor = build_finetuner(args, data_args)
    trainer.train(resume_from_checkpoint=resume_point(args))
    save_log_history(trainer, args.output_dir)
    if trainer.is_world_process_zero():
        final = export_hub_folder(trainer.model, processor, Path(args.output_dir) / "final")
        print(f"stage-2 model (LoRA merged) written to {final}")
    end_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
