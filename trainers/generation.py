"""Batched report generation over study rows (used by evaluation, ``trrg evaluate`` and the demo)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from trrg.trainers.data import CachedStudyReader, disease_targets


@torch.no_grad()
def generate_reports(model, processor, rows: Sequence[Mapping], batch_size: int = 16, max_new_tokens: int = 96,
                     num_beams: int = 1, oracle_clues: bool = False, reader: CachedStudyReader | None = None,
                     progress: bool = False) -> list[dict]:
    """One ``{"id", "report", "disease_probs"}`` per readable study (unreadable ones are skipped and counted
    by the reader). ``oracle_clues`` injects the reference labels instead of the zero-shot clues."""
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
        if oracle_clues:
            inputs["clue_probs"] = disease_targets(kept).to(device)
        probs = inputs["clue_probs"] if oracle_clues else model.predict_diseases(inputs["pixel_values"], inputs["view_mask"])
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
        texts = processor.batch_decode(ids, prompt_length=inputs["input_ids"].shape[1])
        for row, text, p in zip(kept, texts, probs.float().cpu().tolist()):
            outputs.append({"id": row["id"], "report": text, "disease_probs": [round(v, 4) for v in p]})
    model.train(was_training)
    return outputs
