"""``trrg generate``: write a report (and show the disease clues) for one study's images, through the
model's report pipeline.

    trrg generate --model runs/demo/model frontal.png lateral.png
    trrg generate --model org/trrg --json --num_beams 3 study.dcm

``--json`` prints the pipeline's ``TRRGReport.to_dict()``: the report, its sentences with the
observations each states, the probabilities, the clues injected as present, the thresholds, the
evidence maps (with ``--attribution_maps``, the finer attribution maps the Space draws too) and
``in_distribution``.
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
    parser.add_argument("--attribution_maps", action="store_true",
                        help="with --json, also give the attribution maps (the backbone's finest grid; one backward "
                             "pass per disease)")
    parser.add_argument("--no_verify", action="store_true",
                        help="keep the text as generated (default: drop sentences that contradict the clues or each "
                             "other, and add the model's sentence for a present clue no sentence states)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from trrg.assembly.hub_folders import load_model_folder
    from trrg.modeling.image_processing_trrg import XRayImageError

    model, processor = load_model_folder(args.model, expected="trrg") if _is_folder(args.model) else _from_hub(args.model)
    reporter = model.eval().report_pipeline(processor)
    try:
        result = reporter(args.images, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                          return_evidence_maps=True, return_attribution_maps=args.attribution_maps,
                          verify=not args.no_verify)
    except XRayImageError as error:
        raise SystemExit(f"trrg generate: {error}") from error
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    perception = result.perception
    present = [name for name, injected in perception.clues.items() if injected]
    print(distribution_note(perception.in_distribution, perception.familiarity, model.config))
    print(result.report)
    print("\ndisease clues injected as present (zero-shot p >= the disease's threshold):")
    print("\n".join(f"  {name}: {perception.disease_probs[name]:.2f} (threshold {perception.clue_thresholds[name]:.2f})"
                    for name in present) or "  none")
    if result.rejected:
        print("\nsentences left out (they contradicted the clues or an earlier sentence):")
        print("\n".join(f"  {r.text} ({r.reason}: {r.observation})" for r in result.rejected))
    return 0


def distribution_note(in_distribution: bool | None, familiarity: float | None, config) -> str:
    """One line above the report: whether this image resembles the model's training images."""
    trained_on = getattr(config, "trrg_training_data", None) or "its training data"
    if in_distribution is None:
        return (f"NOTE: this model carries no statistics of its training images ({trained_on}): it cannot tell "
                "whether this image resembles them. Read the report with that in mind.")
    if not in_distribution:
        return (f"WARNING: this image does not resemble the images this model was trained on ({trained_on}; "
                f"familiarity {familiarity:.2f}, above 1 is unlike them). The findings below are unreliable for it.")
    return f"in distribution: this image resembles the model's training images ({trained_on}; familiarity {familiarity:.2f})"


def _is_folder(name: str) -> bool:
    from pathlib import Path

    return Path(name).is_dir()


def _from_hub(model_id: str):
    from transformers import AutoModel, AutoProcessor

    return AutoModel.from_pretrained(model_id, trust_remote_code=True), AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
