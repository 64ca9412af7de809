"""Batched report generation over study rows (used by evaluation, ``trrg evaluate`` and the demo)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from trrg.modeling.modeling_trrg import clue_states_from_probs
from trrg.trainers.data import CachedStudyReader


@torch.no_grad()
def generate_reports(model, processor, rows: Sequence[Mapping], batch_size: int = 16, max_new_tokens: int = 96,
                     num_beams: int = 1, clue_probs_for: Callable[[list[Mapping]], torch.Tensor] | None = None,
                     reader: CachedStudyReader | None = None, progress: bool = False) -> list[dict]:
    """One ``{"id", "report", "disease_probs", "clues"}`` per readable study (unreadable ones are
    skipped and counted by the reader): the report, the model's zero-shot probabilities and the clue
    decisions it injected (1 present, 0 absent).

    ``clue_probs_for(rows)`` replaces the zero-shot perception (benchmarks use it to feed reference
    labels as clues, an upper bound); the clue decisions are then taken from those probabilities.
    """
    reader = reader or CachedStudyReader()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    batches = range(0, len(rows), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="generating", unit="batch")
    for start in batches:
        kept, views = reader.read_batch(rows[start : start + batch_size])
        inputs = processor(images=views, return_tensors="pt").to(device)
        if clue_probs_for is not None:
            inputs["clue_probs"] = clue_probs_for(kept).to(device)
            perception = {"disease_probs": inputs["clue_probs"],
                          "clue_states": clue_states_from_probs(inputs["clue_probs"], model.clue_thresholds)}
        else:
            perception = model.predict_clues(inputs["pixel_values"], inputs["view_mask"])
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
        texts = processor.batch_decode(ids, prompt_length=inputs["input_ids"].shape[1])
        probs = perception["disease_probs"].float().cpu().tolist()
        clues = perception["clue_states"].cpu().tolist()
        for row, text, p, c in zip(kept, texts, probs, clues):
            outputs.append({"id": row["id"], "report": text, "disease_probs": [round(v, 4) for v in p], "clues": c})
    model.train(was_training)
    return outputs
