"""What the training images look like to the model's vision encoder, to tell when an image is not.

A model trained on one kind of image (the synthetic phantom, one hospital's scanners) writes a fluent
report for any image, with confident clues. ``TRRGTrainingDistribution`` records at the end of
training, for each view position (frontal, lateral) and each of a few of the encoder's layers, the
mean and the shrunk precision matrix of the layer's per-channel mean and standard deviation over the
image (``layer_statistics``: how the image is *rendered* — contrast, texture, noise — which the
last layer is trained to ignore). A view's score is the mean over layers of its Mahalanobis distance
divided by the median distance of held-out in-distribution views; a study's score is its largest
view score, divided by the threshold that flags ``false_alarm_rate`` of held-out in-distribution
studies. ``familiarity`` above 1: unlike the training images.

Why several layers: on the demo's phantom-trained model, the last pooled layer alone left 3 of 10 real
NIH chest X-rays within its threshold; with the first layers the smallest score was about twice the threshold.

Limits: the check knows only what the encoder's features separate. An image that the encoder renders
like its training images (a new kind of finding drawn in the same style, a subtle scanner change)
passes; about ``false_alarm_rate`` of in-distribution studies are flagged too (a few more when the
held-out split is small). A model saved without the statistics answers ``None``: unknown.
"""

from __future__ import annotations

import torch
from torch import nn


def shrunk_covariance(features: torch.Tensor) -> torch.Tensor:
    """(n, dim) -> (dim, dim) Ledoit-Wolf covariance: the sample covariance pulled towards a scaled
    identity by the analytically optimal amount, so it is invertible and stable when n is not much
    larger than dim (a few hundred studies, a 1024-wide encoder)."""
    x = features.double() - features.double().mean(0)
    n, dim = x.shape
    sample = x.T @ x / n
    identity = torch.eye(dim, dtype=x.dtype)
    target = torch.trace(sample) / dim
    # Ledoit & Wolf (2004), "A well-conditioned estimator for large-dimensional covariance matrices":
    # spread = 1/n^2 sum_k ||x_k x_k^T - S||_F^2, expanded so no (n, dim, dim) tensor is built.
    squared_norms = (x * x).sum(1)
    spread = ((squared_norms**2).sum() - 2 * ((x @ sample) * x).sum() + n * (sample**2).sum()) / n**2
    distance = ((sample - target * identity) ** 2).sum()
    shrinkage = float(torch.clamp(spread / distance.clamp_min(1e-12), 0.0, 1.0))
    return (1 - shrinkage) * sample + shrinkage * target * identity


def mahalanobis(features: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """(..., dim) features -> (...) Mahalanobis distances to ``mean`` under ``precision``."""
    centred = features.float() - mean.float()
    return torch.einsum("...i,ij,...j->...", centred, precision.float(), centred).clamp_min(0).sqrt()


def layer_statistics(hidden_state: torch.Tensor) -> torch.Tensor:
    """One encoder layer's output -> (images, 2 * channels): per channel, the mean and the standard
    deviation over the image (a feature map (images, channels, h, w) or tokens (images, tokens, channels))."""
    values = hidden_state.float().flatten(2) if hidden_state.dim() == 4 else hidden_state.float().transpose(1, 2)
    return torch.cat([values.mean(-1), values.std(-1)], dim=-1)


def chosen_layers(num_hidden_states: int, count: int = 5) -> list[int]:
    """Up to ``count`` evenly spaced indices into an encoder's hidden states, the first (closest to the
    pixels) always among them."""
    if num_hidden_states <= count:
        return list(range(num_hidden_states))
    step = (num_hidden_states - 1) / (count - 1)
    return sorted({round(i * step) for i in range(count)})


class TRRGTrainingDistribution(nn.Module):
    """Per chosen layer and view position: mean, precision and median held-out distance of the
    layer statistics of the training images, and one study-level threshold. Buffers, saved with the
    weights; sized by ``layer_sizes`` (the statistics' width per chosen layer, from the config). With no
    layers (a model saved before the statistics existed, or not fitted), ``familiarity`` is None."""

    def __init__(self, layer_sizes: list[int], max_views: int):
        super().__init__()
        self.layer_sizes = list(layer_sizes)
        for index, size in enumerate(self.layer_sizes):
            self.register_buffer(f"mean_{index}", torch.zeros(max_views, size))
            self.register_buffer(f"precision_{index}", torch.zeros(max_views, size, size))
            self.register_buffer(f"scale_{index}", torch.zeros(max_views))
        self.register_buffer("threshold", torch.zeros(()))

    @property
    def fitted(self) -> bool:
        return bool(self.layer_sizes) and float(self.threshold) > 0

    def _part(self, name: str, index: int) -> torch.Tensor:
        return getattr(self, f"{name}_{index}")

    @torch.no_grad()
    def fit(self, features: list[list[torch.Tensor]], held_out: list[list[torch.Tensor]],
            held_out_mask: torch.Tensor, false_alarm_rate: float) -> None:
        """``features[layer][position]``: (n, size) statistics of the training views at that position;
        ``held_out[layer][position]``: (m, size) of the held-out studies' views, all studies in the same
        order, with ``held_out_mask`` (m, positions) saying which study has a view there."""
        positions = min(len(features[0]), held_out_mask.shape[1], self._part("scale", 0).shape[0])
        for index in range(len(self.layer_sizes)):
            for position in range(positions):
                fit_on = features[index][position]
                if len(fit_on) < 2:
                    continue
                self._part("mean", index)[position] = fit_on.double().mean(0).float()
                precision = torch.linalg.pinv(shrunk_covariance(fit_on), hermitian=True)
                self._part("precision", index)[position] = precision.float()
                real = held_out_mask[:, position].bool()
                distances = mahalanobis(held_out[index][position][real], self._part("mean", index)[position],
                                        self._part("precision", index)[position])
                self._part("scale", index)[position] = distances.median() if len(distances) else 1.0
        self.threshold.fill_(1.0)  # view scores are unscaled until the threshold is set from them
        scores = self.study_scores(held_out, held_out_mask)
        self.threshold.fill_(float(torch.quantile(scores.double(), 1 - false_alarm_rate)))

    def study_scores(self, statistics: list[list[torch.Tensor]], view_mask: torch.Tensor) -> torch.Tensor:
        """(studies,) largest view score / threshold; ``statistics[layer][position]``: (studies, size)."""
        scores = torch.zeros(view_mask.shape[0])
        for position in range(min(view_mask.shape[1], self._part("scale", 0).shape[0])):
            judged_as = position if float(self._part("scale", 0)[position]) > 0 else 0  # unseen position: frontal's
            per_layer = [mahalanobis(statistics[index][position], self._part("mean", index)[judged_as],
                                     self._part("precision", index)[judged_as]) / self._part("scale", index)[judged_as]
                         for index in range(len(self.layer_sizes))]
            view_score = torch.stack(per_layer, dim=1).mean(1).cpu()
            scores = torch.maximum(scores, view_score.masked_fill(~view_mask[:, position].bool().cpu(), 0.0))
        return scores / self.threshold.float().cpu()

    def familiarity(self, statistics: list[torch.Tensor], view_mask: torch.Tensor) -> torch.Tensor | None:
        """``statistics[layer]``: (studies, views, size) -> (studies,) familiarity scores (above 1:
        unlike the training images), or None when the model holds no fitted statistics."""
        if not self.fitted:
            return None
        by_position = [[layer[:, position] for position in range(layer.shape[1])] for layer in statistics]
        return self.study_scores(by_position, view_mask)
