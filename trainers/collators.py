"""Collators for both stages: study rows (the schema of ``trrg.processing.studies``) -> model inputs.

Images are decoded on the fly by ``StudyImageReader`` (a corrupt file is skipped and counted, never
fatal) and, without augmentation, kept decoded in a bounded in-memory cache so later epochs skip
PNG decoding.
"""

from __future__ import annotations

import copy
import logging
import zlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from transformers import TrainerCallback

from trrg.modeling.configuration_trrg import CHEXPERT_OBSERVATIONS
from trrg.processing.studies.schema import CachedStudyReader
from trrg.processing.labeler import label_report, labels_to_vector
from trrg.processing.text import clean_report, split_sentences

logger = logging.getLogger(__name__)

UNCERTAIN_POLICIES = {"positive": 1.0, "negative": 0.0}


def disease_targets(rows: Sequence[Mapping], uncertain: str = "positive") -> torch.Tensor:
    """(batch, 14) float targets: uncertain counted per ``uncertain``, not mentioned as absent."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {sorted(UNCERTAIN_POLICIES)}, got {uncertain!r}")
    value = UNCERTAIN_POLICIES[uncertain]
    return torch.tensor([labels_to_vector(row["labels"], uncertain_as=value) for row in rows], dtype=torch.float)


def label_prevalence(labels: Sequence[Mapping], uncertain: str = "positive") -> torch.Tensor:
    """Share of studies positive for each observation (the positive weights are computed from it)."""
    return disease_targets([{"labels": entry} for entry in labels], uncertain).mean(0)


def rare_finding_weights(labels: Sequence[Mapping], uncertain: str = "positive", target_rate: float = 0.1) -> torch.Tensor:
    """Sampling weight per study: max(1, target_rate / prevalence) of its rarest finding.

    A finding in 3% of studies is seen ~3x as often as without it (one in 10% or more: as often as
    before): a language model learns to write a rare finding from how often it sees one, and the
    clue of a pneumothorax is worthless if the LLM has written "pneumothorax" 30 times.
    """
    targets = disease_targets([{"labels": entry} for entry in labels], uncertain)[:, 1:]  # findings only
    boost = (target_rate / targets.mean(0).clamp_min(1e-3)).clamp_min(1.0)  # (findings,)
    return (targets * boost).amax(dim=1).clamp_min(1.0)


def sentence_group_id(sentence: str) -> int:
    """A stable id per sentence text (equal across processes), for multi-positive contrast."""
    return zlib.crc32(sentence.encode("utf-8"))


class VisitRandomness:
    """A random generator per (seed, study id, visit): the same draws whatever process or batch
    position a study lands in, and new draws on each visit. Under a Trainer the visit is the epoch
    (``set_epoch``, from ``CollatorEpochCallback``), so a run resumed from a checkpoint draws what the
    uninterrupted run drew; a study drawn twice in one epoch (oversampling) gets the same draw both
    times. Without epochs (a collator used directly) each call is the study's next visit."""

    def __init__(self, seed: int = 0, stream: int = 0):
        self.seed = seed
        self.stream = stream  # independent draws for each use (stream 0 keeps the original key)
        self.epoch: int | None = None
        self._visits: dict[str, int] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, study_id: str) -> np.random.Generator:
        if self.epoch is None:
            visit = self._visits.get(study_id, 0)
            self._visits[study_id] = visit + 1
        else:
            visit = self.epoch
        return np.random.default_rng([self.seed, zlib.crc32(study_id.encode()), visit, *([self.stream] if self.stream else [])])


class CollatorEpochCallback(TrainerCallback):
    """Tells the training collator which epoch starts, so its random draws (sampled sentence, reference
    clues, single-view visits) are keyed by epoch and survive a resume. (Persistent dataloader workers
    keep the collator of the epoch they were started in.)"""

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        collator = getattr(train_dataloader, "collate_fn", None)
        if hasattr(collator, "set_epoch"):
            collator.set_epoch(int(state.epoch))  # the epoch's start; a resumed epoch's fraction rounds down


class SingleViewSchedule:
    """Decides, per study visit, whether a multi-view study is shown with its first (frontal) view only.

    A model that only ever saw two views per study reads a one-view study badly (the lateral view
    carries part of what it learned to perceive), and many studies have one view (portable AP films,
    sites that file the lateral apart). Showing a share of the visits with the frontal view alone
    teaches both. Depends only on (seed, study id, visit number), so it is the same in any process.
    """

    def __init__(self, rate: float, seed: int = 0):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"--single_view_rate must be in [0, 1] (a share of the visits), got {rate}")
        self.rate = rate
        self._randomness = VisitRandomness(seed, stream=1)

    def __call__(self, study_id: str, views: int) -> bool:
        return views > 1 and self.rate > 0 and bool(self._randomness(study_id).random() < self.rate)

    def set_epoch(self, epoch: int) -> None:
        self._randomness.set_epoch(epoch)

    def first_view_only(self, rows: Sequence[Mapping], view_counts: Sequence[int]) -> set[str]:
        """The ids of this batch's studies to show with their first view only."""
        return {row["id"] for row, views in zip(rows, view_counts) if self(row["id"], views)}


def shown_views(rows: Sequence[Mapping], views: list[list], first_view_only: set[str]) -> list[list]:
    return [study_views[:1] if row["id"] in first_view_only else study_views for row, study_views in zip(rows, views)]


class StudyCollatorMixin:
    """The Trainer side of the study collators (mixed into both trainers): their random draws are keyed
    by epoch (``CollatorEpochCallback``), and evaluation batches show every view (the single-view
    schedule is a training augmentation, but a Trainer hands one collator to both loaders)."""

    def __init__(self, *args, **kwargs):
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [CollatorEpochCallback()]
        super().__init__(*args, **kwargs)

    def get_eval_dataloader(self, eval_dataset=None):
        training_collator, self.data_collator = self.data_collator, evaluation_collator(self.data_collator)
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = training_collator


def evaluation_collator(collator):
    """``collator`` for evaluation batches: every view shown (the single-view schedule is training's
    augmentation); a shallow copy, so caches and readers stay shared."""
    if getattr(collator, "single_view", None) is None or collator.single_view.rate == 0:
        return collator
    evaluating = copy.copy(collator)
    evaluating.single_view = SingleViewSchedule(0.0)
    return evaluating


class SentenceSampler:
    """Picks one sentence of a report per visit, oversampling sentences that state a finding.

    Reports are mostly negated boilerplate ("no pneumothorax ."); sampled uniformly, the sentence
    loss would mostly teach the encoder what normal looks like. With ``positive_rate`` the sampler
    picks, when the report has one, a sentence stating a positive or uncertain finding.
    The choice depends only on (seed, study id, visit number), so it is the same whatever process
    or batch position the study lands in.
    """

    def __init__(self, positive_rate: float, seed: int = 0):
        if not 0.0 <= positive_rate <= 1.0:
            raise ValueError(f"positive_rate must be in [0, 1], got {positive_rate}")
        self.positive_rate = positive_rate
        self._randomness = VisitRandomness(seed)
        self._sentences: dict[str, tuple[list[str], list[str]]] = {}

    def _split(self, study_id: str, report: str) -> tuple[list[str], list[str]]:
        if study_id not in self._sentences:
            sentences = [s for s in split_sentences(clean_report(report)) if s] or [clean_report(report)]
            positive = [s for s in sentences if _states_a_finding(s)]
            self._sentences[study_id] = (sentences, positive)
        return self._sentences[study_id]

    def __call__(self, study_id: str, report: str) -> str:
        rng = self._randomness(study_id)
        sentences, positive = self._split(study_id, report)
        pool = positive if positive and rng.random() < self.positive_rate else sentences
        return pool[int(rng.integers(len(pool)))] + " ."

    def set_epoch(self, epoch: int) -> None:
        self._randomness.set_epoch(epoch)


def _states_a_finding(sentence: str) -> bool:
    labels = label_report(sentence)
    return any(labels[name] in (1, -1) for name in CHEXPERT_OBSERVATIONS if name != "No Finding")


class PretrainCollator:
    """Stage 1: views + one sampled sentence per study + the disease prompts + disease targets."""

    def __init__(self, processor, disease_prompts: Mapping, disease_names: Sequence[str], *,
                 positive_sentence_rate: float, uncertain: str, seed: int, augment: bool, strict_images: bool,
                 single_view_rate: float):
        self.processor = processor
        self.single_view = SingleViewSchedule(single_view_rate, seed)
        self.sampler = SentenceSampler(positive_sentence_rate, seed)
        self.prompts = processor.encode_disease_prompts(disease_prompts, disease_names)
        self.uncertain = uncertain
        self.augment = augment
        self.reader = CachedStudyReader(strict=strict_images, max_cached_studies=0 if augment else 20000)
        # Keyed by (seed, the batch's study ids, epoch), not one generator advanced call by call: dataloader
        # workers each hold a copy of the collator, made afresh every epoch, and a shared generator's copies
        # drew the same augmentation in every worker and every epoch.
        self._augmentation = VisitRandomness(seed, stream=2)

    @classmethod
    def from_arguments(cls, processor, config, args, data_args=None, **overrides) -> "PretrainCollator":
        """The collator ``args`` (``TRRGPretrainArguments`` or any object with its fields) and ``data_args``
        (``TRRGDataArguments``; its defaults when None) describe, with ``config``'s disease prompts."""
        settings = {"uncertain": getattr(data_args, "uncertain", "positive"),
                    "strict_images": getattr(data_args, "strict_images", False),
                    "positive_sentence_rate": args.positive_sentence_rate, "seed": args.seed, "augment": args.augment,
                    "single_view_rate": args.single_view_rate}
        return cls(processor, config.disease_prompts, config.disease_names, **{**settings, **overrides})

    def __call__(self, rows: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        rows, views = self.reader.read_batch(rows)
        views = shown_views(rows, views, self.single_view.first_view_only(rows, [len(v) for v in views]))
        pixels = self.processor.image_processor(views, return_tensors="pt", **self._augment_kwargs(rows))
        sentences = [self.sampler(row["id"], row["report"]) for row in rows]
        text = self.processor.encode_sentences(sentences)
        return {
            **pixels,
            **text,
            **self.prompts,
            "sentence_group_ids": torch.tensor([sentence_group_id(s) for s in sentences], dtype=torch.long),
            "disease_labels": disease_targets(rows, self.uncertain),
        }

    def set_epoch(self, epoch: int) -> None:
        """Key this epoch's draws (sentence, single view) by ``epoch`` (``CollatorEpochCallback``)."""
        self.sampler.set_epoch(epoch)
        self.single_view.set_epoch(epoch)
        self._augmentation.set_epoch(epoch)

    def _augment_kwargs(self, rows: Sequence[Mapping]) -> dict:
        if not self.augment:
            return {}
        return {"augment": True, "generator": self._augmentation("\n".join(str(row["id"]) for row in rows))}


class ReferenceClueSchedule:
    """Decides, per study visit, whether stage 2 trains on the reference labels as clues.

    Trained only on its own (mostly right) clues, the LLM learns that clues are a hint to weigh
    against the image; trained on reference labels, it learns that a clue is to be written. Mixing
    both (``rate`` of the visits take reference clues) teaches it to write what the clues say. The
    choice depends only on (seed, study id, visit number), so it is the same in any process.
    """

    def __init__(self, rate: float, seed: int = 0):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"reference_clue_rate must be in [0, 1], got {rate}")
        self.rate = rate
        self._randomness = VisitRandomness(seed)

    def __call__(self, study_id: str) -> bool:
        return bool(self._randomness(study_id).random() < self.rate)

    def set_epoch(self, epoch: int) -> None:
        self._randomness.set_epoch(epoch)


def row_batches(rows, batch_size: int) -> Iterator[list[dict]]:
    """``rows`` (a list or a ``datasets.Dataset``) in lists of at most ``batch_size`` row dicts, without
    materialising a whole Arrow split as Python rows."""
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        if isinstance(chunk, Mapping):  # a Dataset slice: columns of lists
            chunk = [dict(zip(chunk, values)) for values in zip(*chunk.values())]
        yield list(chunk)


def iter_rows(rows, batch_size: int = 1024) -> Iterator[dict]:
    """The row dicts of ``rows`` (a list or a ``datasets.Dataset``), read ``batch_size`` at a time."""
    for chunk in row_batches(rows, batch_size):
        yield from chunk


class FrozenVisionCache:
    """The frozen stage-1 encoder's features, computed once per study and kept on the CPU.

    In stage 2 the perception is frozen (and in eval mode), so a study's features never change. The
    trainer fills the cache in its own process, on the training device, before training (``fill``);
    after that no image is decoded and no vision forward pass runs. DataLoader workers never run the
    encoder (CUDA cannot start in a forked worker) and never hold features: the collator reads only
    ``index`` (study id -> slot, views) and the trainer swaps the slots for the features
    (``features_for``) in its own process. Not for a trainable or augmented encoder.
    """

    def __init__(self, model, max_bytes: int = 16 * 2**30):
        self.model = model
        self.max_bytes = max_bytes
        self.index: dict[str, tuple[int, int]] = {}
        self._patches: list[torch.Tensor] = []  # per slot: (views, tokens, width)
        self._globals: list[torch.Tensor] = []  # per slot: (views, width)
        self.encoded_studies = 0  # vision forward passes' studies, for tests and logs

    def fill(self, rows, reader, image_processor, batch_size: int = 64) -> bool:
        """Encode every study of ``rows`` not cached yet (unreadable ones are skipped and counted by
        ``reader``). False, with the cache emptied, when the features would exceed ``max_bytes``: the
        encoder then runs in every step instead."""
        for chunk in row_batches(rows, batch_size):
            missing = [row for row in chunk if row["id"] not in self.index]
            if missing:
                kept, views = reader.read_batch(missing)
                self._encode(kept, views, image_processor)
            if self._projected_bytes(len(rows)) > self.max_bytes:
                logger.warning("frozen features of %d studies would take %.1f GB (> %.1f GB): not cached, the encoder "
                               "runs in every step", len(rows), self._projected_bytes(len(rows)) / 1e9, self.max_bytes / 1e9)
                self.__init__(self.model, self.max_bytes)
                return False
        return True

    def _projected_bytes(self, studies: int) -> float:
        if not self._patches:
            return 0.0
        stored = sum(t.numel() * t.element_size() for t in (*self._patches, *self._globals))
        return stored / len(self._patches) * studies

    @torch.no_grad()
    def _encode(self, rows: Sequence[Mapping], views: list, image_processor) -> None:
        pixels = image_processor(views, return_tensors="pt")
        device = next(self.model.parameters()).device
        view_mask = pixels["view_mask"]
        features = self.model.vision_model(pixels["pixel_values"].to(device, self.model.dtype), view_mask.to(device))
        for i, row in enumerate(rows):
            real = view_mask[i].bool()
            self.index[row["id"]] = (len(self._patches), int(real.sum()))
            self._patches.append(features.patch_tokens[i, real.to(device)].cpu())
            self._globals.append(features.view_embeds[i, real.to(device)].cpu())
        self.encoded_studies += len(rows)

    def features_for(self, slots: torch.Tensor, view_mask: torch.Tensor):
        """``VisionFeatures`` (on ``view_mask``'s device) of the cached studies ``slots``, each showing
        its first ``view_mask[i].sum()`` views (the single-view schedule may show fewer than cached)."""
        from trrg.modeling.modeling_trrg import VisionFeatures, masked_mean

        shown = view_mask.sum(1).tolist()
        parts = [(self._patches[slot][:n], self._globals[slot][:n]) for slot, n in zip(slots.tolist(), shown)]
        width = view_mask.shape[1]
        patch_tokens = torch.zeros(len(parts), width, *parts[0][0].shape[1:], dtype=parts[0][0].dtype)
        view_embeds = torch.zeros(len(parts), width, parts[0][1].shape[-1], dtype=parts[0][1].dtype)
        for i, (patches, globals_) in enumerate(parts):
            patch_tokens[i, : patches.shape[0]] = patches
            view_embeds[i, : globals_.shape[0]] = globals_
        device = view_mask.device
        patch_tokens, view_embeds = patch_tokens.to(device), view_embeds.to(device)
        return VisionFeatures(patch_tokens=patch_tokens, view_embeds=view_embeds,
                              study_embeds=masked_mean(view_embeds, view_mask, dim=1))

    def features_of_rows(self, rows: Sequence[Mapping], single_view: SingleViewSchedule | None = None):
        """(cached rows, VisionFeatures, view_mask) for ``rows``; rows not in the cache (unreadable) are left out."""
        rows = [row for row in rows if row["id"] in self.index]
        slots, view_mask = cached_view_mask(rows, self.index, single_view)
        return rows, self.features_for(slots, view_mask), view_mask


def cached_view_mask(rows: Sequence[Mapping], index: Mapping[str, tuple[int, int]],
                     single_view: SingleViewSchedule | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(slots, view_mask) of cached ``rows``: each study shows its cached views, or its first view alone
    when ``single_view`` picks it for this visit."""
    slots, views = zip(*(index[row["id"]] for row in rows))
    first_only = single_view.first_view_only(rows, views) if single_view is not None else set()
    shown = [1 if row["id"] in first_only else count for row, count in zip(rows, views)]
    view_mask = torch.zeros(len(rows), max(shown), dtype=torch.long)
    for i, count in enumerate(shown):
        view_mask[i, :count] = 1
    return torch.tensor(slots, dtype=torch.long), view_mask


class FindingTokenWeights:
    """LM-loss weights per label token: tokens of report sentences that state a finding (positive or
    uncertain, per the labeler) get ``weight``, the rest 1. Reports are mostly negated boilerplate,
    so without it the few tokens that carry a diagnosis barely move the loss. Cached per report."""

    def __init__(self, tokenizer, weight: float):
        if weight < 1.0:
            raise ValueError(f"finding_token_weight must be >= 1, got {weight}")
        self.tokenizer = tokenizer
        self.weight = weight
        self._pieces: dict[int, str] = {}
        self._cache: dict[tuple[int, ...], list[float]] = {}

    def _ends_sentence(self, token_id: int) -> bool:
        if token_id not in self._pieces:
            self._pieces[token_id] = self.tokenizer.decode([token_id]).strip()
        return self._pieces[token_id].endswith((".", "!", "?"))

    def report_weights(self, report_ids: list[int]) -> list[float]:
        weights, sentence = [], []
        for token_id in report_ids:
            sentence.append(token_id)
            if self._ends_sentence(token_id) or len(sentence) + len(weights) == len(report_ids):
                text = self.tokenizer.decode(sentence, skip_special_tokens=True)
                weights += [self.weight if _states_a_finding(text) else 1.0] * len(sentence)
                sentence = []
        return weights

    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        """(batch, length) labels (-100 outside the report) -> (batch, length) weights."""
        out = torch.ones(labels.shape, dtype=torch.float)
        for row in range(labels.shape[0]):
            positions = (labels[row] != -100).nonzero().flatten()
            report_ids = tuple(labels[row, positions].tolist())
            if report_ids not in self._cache:  # keyed by the text: an augmented visit has its own
                self._cache[report_ids] = self.report_weights(list(report_ids))
            out[row, positions] = torch.tensor(self._cache[report_ids])
        return out


class FinetuneCollator:
    """Stage 2: views (or the slots of cached frozen features) + cleaned reference report (LM labels) +
    disease targets (consistency loss) + the clue decisions to force (reference labels on a share of
    visits). Its settings have no defaults here: they are ``TRRGFinetuneArguments``' (``from_arguments``).

    With ``vision_index`` (a ``FrozenVisionCache``'s study id -> (slot, views), set by the trainer once
    the cache is filled) no image is read: the batch carries ``vision_feature_slots``, which the trainer
    replaces by the cached features in its own process.
    """

    def __init__(self, processor, *, uncertain: str, strict_images: bool, reference_clue_rate: float, seed: int,
                 finding_token_weight: float, single_view_rate: float, with_reports: bool = True):
        self.processor = processor
        self.single_view = SingleViewSchedule(single_view_rate, seed)
        self.uncertain = uncertain
        self.with_reports = with_reports
        self.reference_clues = ReferenceClueSchedule(reference_clue_rate, seed) if reference_clue_rate > 0 else None
        self.label_weights = FindingTokenWeights(processor.tokenizer, finding_token_weight) if finding_token_weight != 1.0 else None
        self.reader = CachedStudyReader(strict=strict_images)
        self.vision_index: Mapping[str, tuple[int, int]] | None = None

    @classmethod
    def from_arguments(cls, processor, args, data_args=None, **overrides) -> "FinetuneCollator":
        """The collator ``args`` (``TRRGFinetuneArguments`` or any object with its fields) and ``data_args``
        (``TRRGDataArguments``; its defaults when None) describe."""
        settings = {"uncertain": getattr(data_args, "uncertain", "positive"),
                    "strict_images": getattr(data_args, "strict_images", False),
                    "reference_clue_rate": args.reference_clue_rate, "seed": args.seed,
                    "finding_token_weight": args.finding_token_weight, "single_view_rate": args.single_view_rate}
        return cls(processor, **{**settings, **overrides})

    def __call__(self, rows: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        if self.vision_index is not None:
            rows = [row for row in rows if row["id"] in self.vision_index]  # unreadable ones were counted at fill
            if not rows:
                raise RuntimeError("no study of this batch could be read; see the warnings above for the files and reasons")
            slots, view_mask = cached_view_mask(rows, self.vision_index, self.single_view)
            batch = {"vision_feature_slots": slots, "view_mask": view_mask}
            batch.update(self.processor.encode_prompts(view_mask.sum(1).tolist(), reports=self._reports(rows)))
        else:
            rows, views = self.reader.read_batch(rows)
            views = shown_views(rows, views, self.single_view.first_view_only(rows, [len(v) for v in views]))
            batch = dict(self.processor(images=views, reports=self._reports(rows), return_tensors="pt"))
        batch["disease_labels"] = disease_targets(rows, self.uncertain)
        if self.label_weights is not None and "labels" in batch:
            batch["label_weights"] = self.label_weights(batch["labels"])
        if self.reference_clues is not None:
            forced = torch.tensor([self.reference_clues(row["id"]) for row in rows])
            states = batch["disease_labels"].long()
            batch["clue_states"] = torch.where(forced[:, None], states, torch.full_like(states, -1))
        return batch

    def set_epoch(self, epoch: int) -> None:
        """Key this epoch's draws (reference clues, single view) by ``epoch`` (``CollatorEpochCallback``)."""
        if self.reference_clues is not None:
            self.reference_clues.set_epoch(epoch)
        self.single_view.set_epoch(epoch)

    def _reports(self, rows) -> list[str] | None:
        return [clean_report(row["report"]) for row in rows] if self.with_reports else None


def study_columns_kept(args) -> None:
    """The collators read the study columns (images, report, labels), which the model's forward does
    not name: the Trainer must not drop them (``remove_unused_columns``, True in TrainingArguments)."""
    if args is not None and getattr(args, "remove_unused_columns", False):
        logger.info("remove_unused_columns set to False: TRRG's collators read the study columns")
        args.remove_unused_columns = False
