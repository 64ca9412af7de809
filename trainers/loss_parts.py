"""Logging the parts of a loss next to the total (TRL style: few, short overrides)."""

from __future__ import annotations

import torch


class LossPartsMixin:
    """Averages named output fields (e.g. ``lm_loss``, ``consistency_loss``) over the steps since the
    last log and adds them to the Trainer's training logs, averaged over processes too."""

    loss_parts: tuple[str, ...] = ()

    def record_loss_parts(self, outputs) -> None:
        if not self.model.training:
            return
        sums = self.__dict__.setdefault("_loss_part_sums", {})
        for name in self.loss_parts:
            value = getattr(outputs, name, None)
            if value is not None:
                total, count = sums.get(name, (0.0, 0))
                sums[name] = (total + float(value.detach()), count + 1)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        sums = self.__dict__.get("_loss_part_sums", {})
        if "loss" in logs and sums:
            names = sorted(sums)
            means = torch.tensor([sums[n][0] / sums[n][1] for n in names], device=self.args.device)
            means = self.accelerator.reduce(means, reduction="mean")
            logs.update({name: round(float(value), 6) for name, value in zip(names, means)})
            sums.clear()
        super().log(logs, *args, **kwargs)
