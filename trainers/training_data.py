"""The studies a training run reads, named by ``TRRGDataArguments``: loaded and checked up front,
before hours of training are spent, and truncated when asked."""

from __future__ import annotations

import datasets

from trrg.processing.studies import StudyDataError, load_studies
from trrg.processing.studies.provenance import OUR_NAME
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


def training_data_label(dataset) -> str:
    """What a model is fine-tuned on, for its config (``trrg_training_data``; the Space's banner reads it),
    whichever way the data came: the name ``load_studies`` gave it ("phantom", "dicom data set 3f2a9c1e",
    ...), else a content fingerprint of an in-memory ``datasets.Dataset``, else the number of studies
    of a plain list. Never a path, which may name a hospital or a patient."""
    name = getattr(getattr(dataset, "info", None), "dataset_name", None)
    if name and OUR_NAME.match(name):  # a raw load_dataset's name is its folder's, which may name a hospital
        return str(name)
    fingerprint = getattr(dataset, "_fingerprint", None)
    if fingerprint:
        return f"in-memory data set {str(fingerprint)[:8]}"
    return f"{len(dataset)} studies given in memory"
