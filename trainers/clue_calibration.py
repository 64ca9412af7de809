"""Per-disease clue thresholds, tuned for F1 before stage 2 trains.

The stage-1 zero-shot probabilities rank rare findings well (high AUROC) but often sit below 0.5
for them; one global threshold would switch those clues off. Stage 2 writes what its clues say, so
the decision threshold of each disease is chosen where the clue's F1 is best.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from trrg.processing.studies.schema import CachedStudyReader
from trrg.trainers.collators import disease_targets, row_batches


def best_f1_threshold(probs: np.ndarray, targets: np.ndarray, default: float = 0.5, max_positive_ratio: float = 1.5,
                      bounds: tuple[float, float] = (0.02, 0.98)) -> float:
    """The threshold t maximising F1 of (probs >= t) against binary ``targets`` (one disease), among
    those that call at most ``max_positive_ratio`` times as many studies positive as there are.

    The cap matters because the clue decisions of all diseases reach the LLM together: unbounded
    F1-best thresholds of a weak perception call ~4 findings per study where real reports state ~1
    (on the phantom, 1 in 3 test studies got 5 or more clues), and an LLM that never saw such
    crowded combinations drops clues. Candidates lie halfway between consecutive distinct
    probabilities. Without a positive (or a negative) there is nothing to tune: ``default``.
    """
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets) > 0.5
    positives = int(targets.sum())
    if positives == 0 or positives == len(targets):
        return default
    order = np.argsort(-probs, kind="stable")
    sorted_probs, sorted_targets = probs[order], targets[order]
    true_positives = np.cumsum(sorted_targets)
    predicted = np.arange(1, len(probs) + 1)
    f1 = 2 * true_positives / (predicted + positives)
    last_of_tie = np.r_[sorted_probs[1:] != sorted_probs[:-1], True]  # a threshold keeps all equal scores
    f1 = np.where(last_of_tie & (predicted <= max_positive_ratio * positives), f1, -1.0)
    best = int(np.argmax(f1))
    below = sorted_probs[best + 1] if best + 1 < len(sorted_probs) else sorted_probs[best] - 1e-3
    return float(np.clip((sorted_probs[best] + below) / 2, *bounds))


def fit_clue_thresholds(probs: np.ndarray, targets: np.ndarray, default: float = 0.5) -> list[float]:
    """(studies, diseases) probabilities and binary targets -> one F1-best threshold per disease."""
    return [best_f1_threshold(probs[:, d], targets[:, d], default) for d in range(probs.shape[1])]


@torch.no_grad()
def perceive(model, processor, rows, batch_size: int = 64, vision_cache=None,
             reader=None) -> tuple[list[Mapping], torch.Tensor]:
    """The stage-2 model's zero-shot probabilities for ``rows`` (a list or a ``datasets.Dataset``):
    from ``vision_cache``'s features when given (studies it lacks were unreadable), else from the
    images (unreadable studies are skipped)."""
    reader = reader or CachedStudyReader()
    kept_rows, probs = [], []
    device = next(model.parameters()).device
    for chunk in row_batches(rows, batch_size):
        if vision_cache is not None:
            kept, features, view_mask = vision_cache.features_of_rows(chunk)
            if not kept:
                continue
            features = type(features)(**{key: value.to(device) for key, value in features.items()})
            view_mask = view_mask.to(device)
        else:
            kept, views = reader.read_batch(chunk)
            pixels = processor.image_processor(views, return_tensors="pt").to(device)
            view_mask = pixels["view_mask"]
            features = model.vision_model(pixels["pixel_values"], view_mask)
        probs.append(model.perception_from_features(features, view_mask).disease_probs.float().cpu())
        kept_rows += kept
    return kept_rows, torch.cat(probs)


def calibrate_clue_thresholds(model, processor, rows, uncertain: str = "positive",
                              vision_cache=None) -> list[float]:
    """Tune ``model.config.clue_config.clue_thresholds`` on ``rows``; returns the thresholds."""
    was_training = model.training
    model.eval()
    kept, probs = perceive(model, processor, rows, vision_cache=vision_cache)
    model.train(was_training)
    thresholds = fit_clue_thresholds(probs.numpy(), disease_targets(kept, uncertain).numpy())
    model.config.clue_config.clue_thresholds = [round(t, 4) for t in thresholds]
    return model.config.clue_config.clue_thresholds
