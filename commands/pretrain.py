"""``trrg pretrain``: stage 1, contrastive pre-training of the image encoder (``TRRGPretrainer``).

    trrg pretrain --data runs/phantom/annotation.json --output_dir runs/pretrain --num_train_epochs 15
    accelerate launch --config_file trainers/accelerate_configs/ddp.yaml -m trrg.commands.pretrain ...
    trrg pretrain ... --resume          # continue from the newest checkpoint in --output_dir

Every option the command line leaves out comes from the preset's recipe (``trrg.assembly.presets``).
Writes OUTPUT_DIR/final, a stage-1 folder for `trrg bridge` / `trrg finetune --pretrain_model`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from trrg.assembly.hub_folders import save_hub_folder
from trrg.commands.parsing import parse_with_resume, recipe_argv
from trrg.trainers.arguments import TRRGDataArguments, TRRGPretrainArguments
from trrg.trainers.checkpointing import resume_point, save_log_history
from trrg.trainers.distributed import end_process_group
from trrg.trainers.pretrain_trainer import build_pretrainer


USAGE = "%(prog)s --data D --output_dir O [--model tiny|FOLDER] [--resume] [option ...]"


def main(argv: list[str] | None = None) -> int:
    argv = recipe_argv(list(sys.argv[1:] if argv is None else argv), stage="pretrain")
    args, data_args = parse_with_resume((TRRGPretrainArguments, TRRGDataArguments), argv, "trrg pretrain", __doc__, USAGE)
    trainer, processor = build_pretrainer(args, data_args)
    trainer.train(resume_from_checkpoint=resume_point(args))
    save_log_history(trainer, args.output_dir)
    final = Path(args.output_dir) / "final"
    if trainer.is_world_process_zero():
        save_hub_folder(trainer.model, processor, final)
        print(f"stage-1 model written to {final}")
    end_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
