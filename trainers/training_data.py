"""The studies a training run reads, named by ``TRRGDataArguments``: loaded and checked up front,
before hours of training are spent, and truncated when asked."""

from __future__ import annotations

import re

import datasets

from trrg.processing.studies import StudyDataError, load_studies
from trrg.processing.studies.provenance import OUR_NAME
from trrg.trainers.arguments import TRRGDataArguments


def load_training_studies(data_args: TRRGDataArguments, seed: int = 0) -> datasets.DatasetDict:
    """The study ``DatasetDict`` named by ``--data``, validated, with ``--train_split`` present; with
    ``--replay_data``, its training split holds the replayed studies too (``with_replay``)."""
    if not data_args.data:
        raise StudyDataError("--data is required: an R2Gen annotation.json (e.g. from `trrg phantom`), its folder, "
                             "a JSON/JSONL file or an imagefolder")
    studies = load_studies(data_args.data, image_root=data_args.image_root)
    if data_args.train_split not in studies:
        raise StudyDataError(f"--data {data_args.data} has no split {data_args.train_split!r} "
                             f"(it has {sorted(studies)}); pass --train_split")
    studies = _truncate(studies, data_args)
    if data_args.replay_data:
        studies[data_args.train_split] = with_replay(studies[data_args.train_split], data_args, seed)
    return studies


def with_replay(train: datasets.Dataset, data_args: TRRGDataArguments, seed: int) -> datasets.Dataset:
    """The training split with ``--replay_studies`` studies of ``--replay_data``'s training split (drawn
    with ``seed``) appended; named after both, so the model records what it was fine-tuned on."""
    source = _replay_source(data_args, seed)
    count = len(train) if data_args.replay_studies is None else data_args.replay_studies
    if not 0 < count <= len(source):
        raise StudyDataError(f"--replay_studies {count}: --replay_data {data_args.replay_data} has {len(source)} "
                             f"training studies; pass a number from 1 to {len(source)}")
    columns = [name for name in train.column_names if name in source.column_names]
    replay = source.select(range(count)).select_columns(columns).cast(train.select_columns(columns).features)
    mixed = datasets.concatenate_datasets([train.select_columns(columns), replay])
    mixed.info.dataset_name = f"{training_data_label(train)} + {count} replayed from {training_data_label(source)}"
    return mixed


def replay_calibration_studies(mixed: datasets.Dataset, data_args: TRRGDataArguments, seed: int) -> datasets.Dataset:
    """Where the clue thresholds are re-tuned after ``--adapt_perception`` with ``--replay_data``: the site's
    training studies and as many of the replay source's training studies as were replayed, the next ones of
    ``with_replay``'s draw, so none of them was replayed. A perception just trained on the replayed studies
    is surer of them than of the original's other studies, and thresholds tuned on them cost the original
    (docs/site_adaptation). ``mixed`` itself where it is not ``with_replay``'s output for ``seed`` or the
    source has too few studies left."""
    source = _replay_source(data_args, seed)
    count = len(mixed) // 2 if data_args.replay_studies is None else data_args.replay_studies
    if not 0 < count < len(mixed) or len(source) < 2 * count:
        return mixed
    replayed = mixed.select(range(len(mixed) - count, len(mixed)))
    if list(replayed["id"]) != list(source.select(range(count))["id"]):
        return mixed
    columns = mixed.column_names
    unseen = source.select(range(count, 2 * count)).select_columns(columns).cast(mixed.features)
    return datasets.concatenate_datasets([mixed.select(range(len(mixed) - count)), unseen])


def _replay_source(data_args: TRRGDataArguments, seed: int) -> datasets.Dataset:
    """``--replay_data``'s training split, shuffled with ``seed``: the replay draws from its start."""
    source = load_studies(data_args.replay_data)
    if data_args.train_split not in source:
        raise StudyDataError(f"--replay_data {data_args.replay_data} has no split {data_args.train_split!r} "
                             f"(it has {sorted(source)}): replay draws from the training split")
    return source[data_args.train_split].shuffle(seed=seed)


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
    if name and _is_our_label(str(name)):  # a raw load_dataset's name is its folder's, which may name a hospital
        return str(name)
    fingerprint = getattr(dataset, "_fingerprint", None)
    if fingerprint:
        return f"in-memory data set {str(fingerprint)[:8]}"
    return f"{len(dataset)} studies given in memory"


# Labels training_data_label writes itself: with_replay composes two of them.
_IN_MEMORY = re.compile(r"^(?:in-memory data set [0-9a-f]{8}|\d+ studies given in memory)$")
_REPLAYED = re.compile(r"^(?P<data>.+) \+ \d+ replayed from (?P<replay>.+)$")


def _is_our_label(name: str) -> bool:
    composed = _REPLAYED.match(name)
    if composed:
        return all(_is_our_label(part) for part in (composed["data"], composed["replay"]))
    return bool(OUR_NAME.match(name) or _IN_MEMORY.match(name))
