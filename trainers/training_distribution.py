"""Fitting a model's ``TRRGTrainingDistribution`` at the end of training (both stages): the layer
statistics of the training studies' views, a threshold on held-out in-distribution studies."""

from __future__ import annotations

import logging

import numpy as np
import torch

from trrg.modeling.distribution_trrg import chosen_layers
from trrg.processing.studies.schema import CachedStudyReader
from trrg.trainers.collators import iter_rows, row_batches
from trrg.trainers.distributed import full_parameters

logger = logging.getLogger(__name__)

FALSE_ALARM_RATE = 0.005  # the share of held-out in-distribution studies flagged
MIN_HELD_OUT = 50  # fewer evaluation studies than this: hold out a fifth of the training split instead
MIN_STUDIES = 20  # fewer training studies than this: no statistics are recorded (the model says "unknown")
MAX_FIT_STUDIES = 2000  # a seeded sample of a larger training split: enough for the covariances, bounded time


@torch.no_grad()
def layer_statistics_of(model, processor, rows, layers: list[int], batch_size: int = 64):
    """Per chosen layer, the (studies, views, size) statistics of the readable studies of ``rows``, and
    their (studies, views) view mask (views padded to the model's most views)."""
    reader = CachedStudyReader(max_cached_studies=0)
    device, encoder = next(model.parameters()).device, model.perception.vision_model
    max_views = getattr(model.config, "max_views", 2)
    per_layer, masks = [[] for _ in layers], []
    for chunk in row_batches(rows, batch_size):
        kept, views = reader.read_batch(chunk)
        pixels = processor.image_processor(views, return_tensors="pt")
        view_mask = pixels["view_mask"]
        features = encoder(pixels["pixel_values"].to(device), view_mask.to(device), layers)
        pad = max_views - view_mask.shape[1]
        masks.append(torch.nn.functional.pad(view_mask, (0, pad)))
        for index, values in enumerate(features.layer_statistics):
            per_layer[index].append(torch.nn.functional.pad(values.float().cpu(), (0, 0, 0, pad)))
    return [torch.cat(parts) for parts in per_layer], torch.cat(masks)


def _by_position(statistics: list[torch.Tensor], view_mask: torch.Tensor) -> list[list[torch.Tensor]]:
    """Per layer, per view position: the (n, size) statistics of the studies that have a view there."""
    return [[layer[view_mask[:, position].bool(), position] for position in range(view_mask.shape[1])]
            for layer in statistics]


def _layers_of(model, processor, rows) -> list[int]:
    """The backbone layers compared: up to five, evenly spaced, the first closest to the pixels."""
    first = next(iter_rows(rows, 1))
    kept, views = CachedStudyReader(max_cached_studies=0).read_batch([first])
    pixels = processor.image_processor(views, return_tensors="pt")["pixel_values"][:, 0]
    backbone = model.perception.vision_model.backbone
    with torch.no_grad():
        hidden = backbone(pixel_values=pixels.to(next(model.parameters()).device, backbone.dtype),
                          output_hidden_states=True).hidden_states
    return chosen_layers(len(hidden))


def fit_training_distribution(model, processor, train_rows, held_out_rows=None, seed: int = 0,
                              false_alarm_rate: float = FALSE_ALARM_RATE) -> dict:
    """Fit ``model.perception.training_distribution`` on ``train_rows`` (at most ``MAX_FIT_STUDIES``, a
    seeded sample); the threshold comes from ``held_out_rows`` (the evaluation split) when it has at least
    ``MIN_HELD_OUT`` studies, else from a fifth of the training studies left out of the fit. Returns what
    was fitted, for the log and the model card."""
    if len(train_rows) < MIN_STUDIES:
        distribution = model.perception.training_distribution
        fitted = distribution is not None and distribution.fitted
        logger.warning("only %d training studies: the training-distribution statistics are not refitted (the "
                       "model keeps %s)", len(train_rows),
                       "those it had, of the data it was trained on before" if fitted else "none: in_distribution stays unknown")
        return {"fit_studies": 0}
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    if held_out_rows is None or len(held_out_rows) < MIN_HELD_OUT:
        rows = list(iter_rows(train_rows))
        order = rng.permutation(len(rows))
        cut = len(rows) // 5
        held_out_rows, train_rows = [rows[i] for i in order[:cut]], [rows[i] for i in order[cut:]]
    if len(train_rows) > MAX_FIT_STUDIES:
        picked = sorted(rng.choice(len(train_rows), MAX_FIT_STUDIES, replace=False).tolist())
        train_rows = [train_rows[i] for i in picked]
    layers = _layers_of(model, processor, train_rows)
    fit_on, fit_mask = layer_statistics_of(model, processor, train_rows, layers)
    check_on, check_mask = layer_statistics_of(model, processor, held_out_rows, layers)
    distribution = model.perception.reset_training_distribution(layers, [values.shape[-1] for values in fit_on])
    held_out = [[layer[:, position] for position in range(check_mask.shape[1])] for layer in check_on]
    distribution.fit(_by_position(fit_on, fit_mask), held_out, check_mask, false_alarm_rate)
    model.train(was_training)
    summary = {"layers": layers, "fit_studies": int(fit_mask.shape[0]), "held_out_studies": int(check_mask.shape[0]),
               "false_alarm_rate": false_alarm_rate, "threshold": round(float(distribution.threshold), 4)}
    model.config.training_distribution.update(summary)
    logger.info("training distribution fitted: %s", summary)
    return summary


def record_training_distribution(trainer) -> None:
    """At the end of training: what the training images look like to the model's encoder, saved with it
    (``fit_training_distribution``; every process fits the same statistics)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    with full_parameters(model):
        fit_training_distribution(model, trainer.processing_class, trainer.train_dataset, trainer.eval_dataset,
                                  seed=trainer.args.seed)
