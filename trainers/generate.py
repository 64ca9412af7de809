"""``trrg generate``: write a report (and show the disease clues) for one study's images.

    trrg generate --model runs/demo/model frontal.png lateral.png
    trrg generate --model org/trrg --json --num_beams 3 study.dcm
"""

from __future__ import annotations

import argparse
import json


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trrg generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="TRRG stage-2 folder or hub id (local cache)")
    parser.add_argument("images", nargs="+", help="the views of ONE study (frontal first): PNG, JPEG or DICOM")
    parser.add_argument("--max_new_tokens", type=int, default=96)
    parser.add_argument("--num_beams", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from trrg.modeling.image_processing_trrg import XRayImageError
    from trrg.trainers.checkpoints import load_model_folder

    model, processor = load_model_folder(args.model, expected="trrg") if _is_folder(args.model) else _from_hub(args.model)
    try:
        inputs = processor(images=[args.images], return_tensors="pt")
    except XRayImageError as error:
        raise SystemExit(f"trrg generate: {error}") from error
    model.eval()
    with torch.no_grad():
        probs = model.predict_diseases(inputs["pixel_values"], inputs["view_mask"])[0].tolist()
        ids = model.generate(**inputs, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    report = processor.batch_decode(ids, prompt_length=inputs["input_ids"].shape[1])[0]
    clues = dict(zip(model.config.disease_names, (round(p, 4) for p in probs)))
    threshold = model.config.clue_config.clue_threshold
    if args.json:
        print(json.dumps({"report": report, "disease_probs": clues, "clue_threshold": threshold}))
        return 0
    print(report)
    print(f"\ndisease clues (zero-shot p >= {threshold}):")
    detected = [(n, p) for n, p in sorted(clues.items(), key=lambda kv: -kv[1]) if p >= threshold]
    print("\n".join(f"  {name}: {p:.2f}" for name, p in detected) or "  none")
    return 0


def _is_folder(name: str) -> bool:
    from pathlib import Path

    return Path(name).is_dir()


def _from_hub(model_id: str):
    from transformers import AutoModel, AutoProcessor

    return AutoModel.from_pretrained(model_id, trust_remote_code=True), AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
