"""Batched report generation over study rows, and evaluating a model on a split: generate, write the
predictions and references, score them as ``trrg score`` does (used by the finetune trainer's
evaluation, ``trrg evaluate``, the demo and the benchmarks)."""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from trrg.evaluation.score import contradiction_examples, score_reports
from trrg.evaluation.truthfulness import clue_decisions
from trrg.processing.files import write_json_atomically, write_jsonl_atomically
from trrg.processing.studies.schema import CachedStudyReader


def generate_reports(model, processor, rows: Sequence[Mapping], batch_size: int = 16, max_new_tokens: int = 96,
                     num_beams: int = 1, clue_probs_for: Callable[[list[Mapping]], torch.Tensor] | None = None,
                     reader: CachedStudyReader | None = None, progress: bool = False, verify: bool = True) -> list[dict]:
    """One ``{"id", "report", "disease_probs", "clues", "verified"}`` per readable study (unreadable ones are
    skipped and counted by the reader): the report, the model's zero-shot probabilities and the clue
    decisions it injected (1 present, 0 absent), from the model's report pipeline.

    ``clue_probs_for(rows)`` replaces the zero-shot perception (benchmarks use it to feed reference
    labels as clues, an upper bound); the clue decisions are then taken from those probabilities.
    ``verify``: the pipeline's verified decoding (sentences that contradict the clues or each other dropped).
    """
    reader = reader or CachedStudyReader()
    was_training = model.training
    reporter = model.eval().report_pipeline(processor)
    outputs = []
    batches = range(0, len(rows), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="generating", unit="batch")
    for start in batches:
        kept, views = reader.read_batch(rows[start : start + batch_size])
        if not kept:
            continue
        clue_probs = None if clue_probs_for is None else clue_probs_for(kept)
        reports = reporter(views, batch_size=len(views), clue_probs=clue_probs, max_new_tokens=max_new_tokens,
                           num_beams=num_beams, do_sample=False, verify=verify)
        outputs += [prediction_row(row["id"], report) for row, report in zip(kept, reports)]
    model.train(was_training)
    return outputs


def prediction_row(study_id, report) -> dict:
    """A line of predictions.jsonl from a ``TRRGReport``: probabilities and decisions in the model's
    disease order, probabilities rounded to 4 decimals."""
    perception = report.perception
    row = {"id": study_id, "report": report.report,
           "disease_probs": [round(p, 4) for p in perception.disease_probs.values()],
           "clues": [int(present) for present in perception.clues.values()], "verified": report.verified}
    if perception.familiarity is not None:  # the model carries statistics of its training images
        row["familiarity"] = round(perception.familiarity, 4)
    return row


def out_of_distribution(predictions: Sequence[Mapping]) -> dict:
    """``out_of_distribution_rate``: the share of studies whose familiarity is above 1 (unlike the
    model's training images), with the count; ``None`` (unknown) when the model holds no statistics."""
    scores = [p["familiarity"] for p in predictions if p.get("familiarity") is not None]
    if not scores or len(scores) < len(predictions):
        return {"out_of_distribution_rate": None, "out_of_distribution_count": None}
    flagged = sum(score > 1.0 for score in scores)
    return {"out_of_distribution_rate": flagged / len(scores), "out_of_distribution_count": flagged}


def evaluate_model(model, processor, rows, out_dir: str | Path, batch_size: int = 16, max_new_tokens: int = 96,
                   num_beams: int = 1, meteor: bool = True, clue_probs_for=None, protocol: dict | None = None,
                   progress: bool = True, perception_threshold: float = 0.5, verify: bool = True) -> dict:
    """Generate for ``rows``, write predictions/references, score, and write metrics.json.

    Scored as ``trrg score`` scores the written files: when the predictions carry ``clues`` (or only
    ``disease_probs``, then decided at ``perception_threshold``) the truthfulness metrics are added."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictions = generate_reports(model, processor, rows, batch_size, max_new_tokens, num_beams,
                                   clue_probs_for=clue_probs_for, progress=progress, verify=verify)
    references = {row["id"]: row["report"] for row in rows}
    write_jsonl_atomically(out / "predictions.jsonl", predictions)
    write_jsonl_atomically(out / "references.jsonl", [{"id": p["id"], "report": references[p["id"]]} for p in predictions])
    clues, disease_probs = _perception_columns(predictions, perception_threshold)
    metrics = score_reports([p["report"] for p in predictions], [references[p["id"]] for p in predictions],
                            meteor=meteor, clues=clues, disease_probs=disease_probs,
                            perception_threshold=perception_threshold)
    metrics.update({"generation": {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "do_sample": False,
                                   "clues": "zero-shot perception" if clue_probs_for is None else "given",
                                   # as the pipeline did it (it declines for a perception never trained)
                                   "verified": all(p.get("verified", verify) for p in predictions)},
                    "skipped_studies": len(rows) - len(predictions), **versions(), **(protocol or {}),
                    **out_of_distribution(predictions),
                    "self_contradiction_examples": contradiction_examples([p["report"] for p in predictions],
                                                                          [p["id"] for p in predictions])})
    write_json_atomically(out / "metrics.json", metrics)
    return metrics


def _perception_columns(predictions: list[dict], threshold: float):
    """``clues`` / ``disease_probs`` of the predictions (``None`` for a field no prediction has), checked
    with errors naming the study id (the same check as ``trrg score``'s)."""
    columns = [[p.get(field) for p in predictions] for field in ("clues", "disease_probs")]
    clue_decisions(*columns, threshold, names=[f"prediction {p['id']!r}" for p in predictions])
    return tuple(column if any(value is not None for value in column) else None for column in columns)


def versions() -> dict:
    """The versions a result was measured with, recorded beside it."""
    import transformers

    import trrg

    return {"versions": {"trrg": trrg.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
                         "python": platform.python_version()}}
