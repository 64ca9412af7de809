"""``trrg evaluate``: generate reports for a split and score them (NLG + clinical efficacy).

    trrg evaluate --model runs/demo/model --data runs/demo/phantom --split test --out runs/eval

Writes OUT/predictions.jsonl ({"id", "report", "disease_probs"[, "clues"]}), OUT/references.jsonl and
OUT/metrics.json (the keys of `trrg score` on those files, truthfulness metrics included, plus the
protocol: data, split, seed, versions).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path


def evaluate_model(model, processor, rows, out_dir: str | Path, batch_size: int = 16, max_new_tokens: int = 96,
                   num_beams: int = 1, meteor: bool = True, clue_probs_for=None, protocol: dict | None = None,
                   progress: bool = True, perception_threshold: float = 0.5) -> dict:
    """Generate for ``rows``, write predictions/references, score, and write metrics.json.

    Scored as ``trrg score`` scores the written files: when the predictions carry ``clues`` (or only
    ``disease_probs``, then decided at ``perception_threshold``) the truthfulness metrics are added."""
    from trrg.evaluation.score import score_reports
    from trrg.trainers.generation import generate_reports

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictions = generate_reports(model, processor, rows, batch_size, max_new_tokens, num_beams,
                                   clue_probs_for=clue_probs_for, progress=progress)
    references = {row["id"]: row["report"] for row in rows}
    _write_jsonl(out / "predictions.jsonl", predictions)
    _write_jsonl(out / "references.jsonl", [{"id": p["id"], "report": references[p["id"]]} for p in predictions])
    clues, disease_probs = _perception_columns(predictions, perception_threshold)
    metrics = score_reports([p["report"] for p in predictions], [references[p["id"]] for p in predictions],
                            meteor=meteor, clues=clues, disease_probs=disease_probs,
                            perception_threshold=perception_threshold)
    metrics.update({"generation": {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "do_sample": False,
                                   "clues": "zero-shot perception" if clue_probs_for is None else "given"},
                    "skipped_studies": len(rows) - len(predictions), **_versions(), **(protocol or {})})
    _write_json(out / "metrics.json", metrics)
    return metrics


def _perception_columns(predictions: list[dict], threshold: float):
    """``clues`` / ``disease_probs`` of the predictions (``None`` for a field no prediction has), checked
    with errors naming the study id (the same check as ``trrg score``'s)."""
    from trrg.evaluation.truthfulness import clue_decisions

    columns = [[p.get(field) for p in predictions] for field in ("clues", "disease_probs")]
    clue_decisions(*columns, threshold, names=[f"prediction {p['id']!r}" for p in predictions])
    return tuple(column if any(value is not None for value in column) else None for column in columns)


def _versions() -> dict:
    import torch
    import transformers

    import trrg

    return {"versions": {"trrg": trrg.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
                         "python": platform.python_version()}}


def _write_jsonl(path: Path, rows) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    tmp.replace(path)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trrg evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="TRRG stage-2 folder")
    parser.add_argument("--data", required=True, help="R2Gen annotation.json or its folder (or a JSON/JSONL/imagefolder data set)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True, help="folder for predictions.jsonl and metrics.json")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=96)
    parser.add_argument("--num_beams", type=int, default=1)
    parser.add_argument("--max_studies", type=int, default=None)
    parser.add_argument("--no_meteor", action="store_true", help="skip METEOR (needs java)")
    args = parser.parse_args(argv)
    from types import SimpleNamespace

    from trrg.trainers.checkpoints import load_model_folder
    from trrg.trainers.studies import load_studies

    studies = load_studies(SimpleNamespace(data=args.data, image_root=None, train_split=args.split, eval_split="",
                                           max_train_studies=args.max_studies, max_eval_studies=None))
    model, processor = load_model_folder(args.model, expected="trrg")
    metrics = evaluate_model(model, processor, list(studies[args.split]), args.out, args.batch_size, args.max_new_tokens,
                             args.num_beams, meteor=not args.no_meteor,
                             protocol={"model": args.model, "data": args.data, "split": args.split})
    from trrg.trainers.report_table import metrics_table

    print(metrics_table(metrics))
    return 0
