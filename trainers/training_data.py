"""The studies a training run reads, named by ``TRRGDataArguments``: loaded and checked up front,
before hours of training are spent, and truncated when asked."""

from __future__ import annotations

import datasets

from trrg.processing.studies import StudyDataError, load_studies
from trrg.trainers.arguments import TRRGDataArguments


def load_training_studies(data_args: TRRGDataArguments) -> datasets.DatasetDict:
    """The study ``DatasetDict`` named by ``--data``, validated, with ``--train_split`` present."""
    if not data_args.data:
        raise StudyDataError("--data is required: an R2Gen annotation.json (e.g. from `trrg phantom`), its folder, "
                             "a JSON/JSONL file or an imagefolder")
    studies = load_studies(data_args.data, image_root=data_args.image_root)
    if data_args.train_split not in studies:
        raise StudyDataError(f"--data {data_args.data} has no split {data_args.train_split!r} "
                             f"(it has {sorted(studies)}); pass --train_split")
    return _truncate(studies, data_args)


def evaluation_split(studies: datasets.DatasetDict, data_args: TRRGDataArguments, eval_strategy) -> datasets.Dataset | None:
    """The evaluation split named by ``--eval_split``, or None; an error naming ``--eval_split`` when
    the training arguments evaluate during training and the data has no such split."""
    if data_args.eval_split in studies:
        return studies[data_args.eval_split]
    if str(getattr(eval_strategy, "value", eval_strategy)) != "no":
        raise StudyDataError(f"--eval_strategy {getattr(eval_strategy, 'value', eval_strategy)} needs an evaluation "
                             f"split, but --data {data_args.data} has no split {data_args.eval_split!r} (--eval_split; "
                             f"it has {sorted(studies)}): pass --eval_split with one of them, or --eval_strategy no")
    return None


def _truncate(studies: datasets.DatasetDict, data_args: TRRGDataArguments) -> datasets.DatasetDict:
    limits = {data_args.train_split: data_args.max_train_studies, data_args.eval_split: data_args.max_eval_studies}
    for split, limit in limits.items():
        if split in studies and limit is not None and limit < len(studies[split]):
            studies[split] = studies[split].select(range(limit))
    return studies


def training_data_name(source) -> str:
    """What a model was fine-tuned on, for its config (``trrg_training_data``; the Space's banner
    reads it): "phantom" for the synthetic phantom, else the data format's name ("r2gen data set",
    "records data set", ...). Never the path, which may name a hospital or a patient."""
    from pathlib import Path

    from trrg.processing.studies import format_of, resolve_source

    source = resolve_source(source)
    if isinstance(source, (str, Path)):
        folder = Path(source) if Path(source).is_dir() else Path(source).parent
        if (folder / "phantom_meta.json").is_file():
            return "phantom"
    return f"{format_of(source).name} data set"
