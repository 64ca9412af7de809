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
    from trrg.assembly.hub_folders import load_model_folder

    model, processor = load_model_folder(args.model, expected="trrg") if _is_folder(args.model) else _from_hub(args.model)
    try:
        inputs = processor(images=[args.images], return_tensors="pt")
    except XRayImageError as error:
        raise SystemExit(f"trrg generate: {error}") from error
    model.eval()
    with torch.no_grad():
        perception = model.predict_clues(inputs["pixel_values"], inputs["view_mask"], return_maps=True)
        ids = model.generate(**inputs, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    report = processor.batch_decode(ids, prompt_length=inputs["input_ids"].shape[1])[0]
    names = model.config.disease_names
    probs = dict(zip(names, (round(p, 4) for p in perception["disease_probs"][0].tolist())))
    present = [name for name, state in zip(names, perception["clue_states"][0].tolist()) if state]
    thresholds = dict(zip(names, model.clue_thresholds.tolist()))
    if args.json:
        print(json.dumps({"report": report, "disease_probs": probs, "clues_present": present,
                          "clue_thresholds": {n: round(t, 4) for n, t in thresholds.items()},
                          "evidence_maps": compact_maps(perception["evidence_maps"][0], names, len(args.images))}))
        return 0
    print(report)
    print("\ndisease clues injected as present (zero-shot p >= the disease's threshold):")
    print("\n".join(f"  {name}: {probs[name]:.2f} (threshold {thresholds[name]:.2f})" for name in present) or "  none")
    return 0


def compact_maps(maps, names, views: int) -> dict:
    """(views, diseases, h, w) evidence maps -> {"grid": [h, w], "views": [{disease: rows}, ...]}, values
    rounded to 2 decimals (cos+ - cos- per patch of the square model input, frontal view first)."""
    return {"grid": list(maps.shape[-2:]),
            "views": [{name: [[round(v, 2) for v in row] for row in maps[view, index].tolist()]
                       for index, name in enumerate(names)} for view in range(views)]}


def _is_folder(name: str) -> bool:
    from pathlib import Path

    return Path(name).is_dir()


def _from_hub(model_id: str):
    from transformers import AutoModel, AutoProcessor

    return AutoModel.from_pretrained(model_id, trust_remote_code=True), AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
