"""``trrg evaluate``: generate reports for a split and score them (NLG + clinical efficacy).

    trrg evaluate --model runs/demo/model --data runs/demo/phantom --split test --out runs/eval
    trrg evaluate ... --max_views 1      # each study read from its first (frontal) view alone

Writes OUT/predictions.jsonl ({"id", "report", "disease_probs"[, "clues"]}), OUT/references.jsonl and
OUT/metrics.json (the keys of `trrg score` on those files, truthfulness metrics included, plus the
protocol: data, split, seed, versions). The data is named by the name its folder records ("phantom",
"dicom data set 3f2a9c1e") when it has one, not by its path: `trrg export --metrics` copies it into the
model card, and a path may name a hospital.
"""

from __future__ import annotations

import argparse


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
    parser.add_argument("--max_views", type=int, default=None,
                        help="read each study from its first N views only (1: frontal alone, as a one-view site)")
    parser.add_argument("--no_meteor", action="store_true", help="skip METEOR (needs java)")
    parser.add_argument("--no_verify", action="store_true",
                        help="keep the text as generated (default: drop sentences that contradict the clues or each "
                             "other, and add the model's sentence for a present clue no sentence states)")
    args = parser.parse_args(argv)
    from trrg.assembly.hub_folders import load_model_folder
    from trrg.evaluation.generation import evaluate_model
    from trrg.evaluation.tables import metrics_table
    from trrg.processing.studies import load_studies, recorded_name

    loaded = load_studies(args.data, splits=[args.split])  # only this split's images are needed
    rows = loaded[args.split]
    if args.max_studies is not None:
        rows = rows.select(range(min(args.max_studies, len(rows))))
    if args.max_views is not None and args.max_views < 1:
        parser.error(f"--max_views must be at least 1 (got {args.max_views})")
    studies = [{**row, "images": row["images"][: args.max_views]} for row in rows]  # [:None] keeps all
    model, processor = load_model_folder(args.model, expected="trrg")
    metrics = evaluate_model(model, processor, studies, args.out, args.batch_size, args.max_new_tokens,
                             args.num_beams, meteor=not args.no_meteor, verify=not args.no_verify,
                             protocol={"model": args.model, "data": recorded_name(loaded) or args.data,
                                       "split": args.split, "max_views": args.max_views})
    print(metrics_table(metrics))
    return 0
