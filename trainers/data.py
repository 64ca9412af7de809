"""Collators for both stages: study rows (the schema of ``trrg.processing.datasets``) -> model inputs.

Images are decoded on the fly by ``StudyImageReader`` (a corrupt file is skipped and counted, never
fatal) and, without augmentation, kept decoded in a bounded in-memory cache so later epochs skip
PNG decoding.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from trrg.modeling.configuration_trrg import CHEXPERT_OBSERVATIONS
from trrg.processing.datasets import StudyImageReader
from trrg.processing.labeler import label_report, labels_to_vector
from trrg.processing.text import clean_report, split_sentences

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


class CachedStudyReader(StudyImageReader):
    """``StudyImageReader`` with a bounded LRU cache of decoded views keyed by study id, and an error
    when no study of a batch can be read (so a batch never silently becomes empty)."""

    def __init__(self, strict: bool = False, max_cached_studies: int = 20000):
        super().__init__(strict=strict)
        self.max_cached_studies = max_cached_studies
        self._cache: OrderedDict[str, list] = OrderedDict()

    def read(self, study: Mapping):
        key = study["id"]
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        views = super().read(study)
        if views is not None and self.max_cached_studies > 0:
            self._cache[key] = views
            if len(self._cache) > self.max_cached_studies:
                self._cache.popitem(last=False)
        return views

    def read_batch(self, rows: Sequence[Mapping]) -> tuple[list[Mapping], list[list]]:
        kept, views = super().read_batch(rows)
        if not kept:
            raise RuntimeError(
                f"no image of the {len(rows)} studies in this batch could be read (first id {rows[0]['id']!r}); "
                "see the warnings above for the files and reasons"
            )
        return kept, views


def sentence_group_id(sentence: str) -> int:
    """A stable id per sentence text (equal across processes), for multi-positive contrast."""
    return zlib.crc32(sentence.encode("utf-8"))


class SentenceSampler:
    """Picks one sentence of a report per visit, oversampling sentences that state a finding.

    Reports are mostly negated boilerplate ("no pneumothorax ."); sampled uniformly, the sentence
    loss would mostly teach the encoder what normal looks like. With ``positive_rate`` the sampler
    picks, when the report has one, a sentence stating a positive or uncertain finding.
    The choice depends only on (seed, study id, visit number), so it is the same whatever process
    or batch position the study lands in.
    """

    def __init__(self, positive_rate: float = 0.7, seed: int = 0):
        if not 0.0 <= positive_rate <= 1.0:
            raise ValueError(f"positive_rate must be in [0, 1], got {positive_rate}")
        self.positive_rate = positive_rate
        self.seed = seed
        self._visits: dict[str, int] = {}
        self._sentences: dict[str, tuple[list[str], list[str]]] = {}

    def _split(self, study_id: str, report: str) -> tuple[list[str], list[str]]:
        if study_id not in self._sentences:
            sentences = [s for s in split_sentences(clean_report(report)) if s] or [clean_report(report)]
            positive = [s for s in sentences if _states_a_finding(s)]
            self._sentences[study_id] = (sentences, positive)
        return self._sentences[study_id]

    def __call__(self, study_id: str, report: str) -> str:
        visit = self._visits.get(study_id, 0)
        self._visits[study_id] = visit + 1
        rng = np.random.default_rng([self.seed, zlib.crc32(study_id.encode()), visit])
        sentences, positive = self._split(study_id, report)
        pool = positive if positive and rng.random() < self.positive_rate else sentences
        return pool[int(rng.integers(len(pool)))] + " ."


def _states_a_finding(sentence: str) -> bool:
    labels = label_report(sentence)
    return any(labels[name] in (1, -1) for name in CHEXPERT_OBSERVATIONS if name != "No Finding")


class PretrainCollator:
    """Stage 1: views + one sampled sentence per study + the disease prompts + disease targets."""

    def __init__(self, processor, disease_prompts: Mapping, disease_names: Sequence[str],
                 positive_sentence_rate: float = 0.7, uncertain: str = "positive", seed: int = 0,
                 augment: bool = False, strict_images: bool = False):
        self.processor = processor
        self.sampler = SentenceSampler(positive_sentence_rate, seed)
        self.prompts = processor.encode_disease_prompts(disease_prompts, disease_names)
        self.uncertain = uncertain
        self.augment = augment
        self.reader = CachedStudyReader(strict=strict_images, max_cached_studies=0 if augment else 20000)
        self._generator = torch.Generator().manual_seed(seed)

    def __call__(self, rows: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        rows, views = self.reader.read_batch(rows)
        pixels = self.processor.image_processor(views, return_tensors="pt", **self._augment_kwargs())
        sentences = [self.sampler(row["id"], row["report"]) for row in rows]
        text = self.processor.encode_sentences(sentences)
        return {
            **pixels,
            **text,
            **self.prompts,
            "sentence_group_ids": torch.tensor([sentence_group_id(s) for s in sentences], dtype=torch.long),
            "disease_labels": disease_targets(rows, self.uncertain),
        }

    def _augment_kwargs(self) -> dict:
        return {"augment": True, "generator": self._generator} if self.augment else {}


class FinetuneCollator:
    """Stage 2: views + cleaned reference report (LM labels) + disease targets (consistency loss)."""

    def __init__(self, processor, uncertain: str = "positive", strict_images: bool = False, with_reports: bool = True,
                 oracle_clues: bool = False):
        self.processor = processor
        self.uncertain = uncertain
        self.with_reports = with_reports
        self.oracle_clues = oracle_clues  # reference labels as clues: the upper bound clue quality allows
        self.reader = CachedStudyReader(strict=strict_images)

    def __call__(self, rows: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        rows, views = self.reader.read_batch(rows)
        reports = [clean_report(row["report"]) for row in rows] if self.with_reports else None
        batch = dict(self.processor(images=views, reports=reports, return_tensors="pt"))
        batch["disease_labels"] = disease_targets(rows, self.uncertain)
        if self.oracle_clues:
            batch["clue_probs"] = batch["disease_labels"].clone()
        return batch
