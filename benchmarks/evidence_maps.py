"""Where the evidence lies: the pointing game of a trained perception's maps on the phantom's drawn regions.

    python benchmarks/evidence_maps.py --out docs/evidence_maps --group demo-budget \\
        --model runs/ablation-demo/pretrain_seed0/final --data runs/ablation-demo/phantom --seed 0
    python benchmarks/evidence_maps.py --out docs/evidence_maps --summary-only
        # no model: rebuilds docs/evidence_maps/evidence_maps.{md,json} from its runs

Two kinds of map of the same perception (stage 1's folder, or a stage-2 folder: the same perception):
  patches      ``evidence_maps``: per patch of the last feature map, cos(patch, positive prompt) -
               cos(patch, negated prompt), the terms the local logit pools (4 x 4 for the tiny preset)
  layer<k>     ``attribution_maps``: gradient x activation of the disease's zero-shot logit at the
               backbone's hidden state k, on that layer's grid (k = 0, the shipped default, is the stem's
               output: 32 x 32 for the tiny preset; chosen with --split val)
  layer0 at the patch grid  the shipped attribution maps max-pooled to the patch grid: the cell holding
               their peak, read by the same game (and chance) as ``patches``
For every positive finding with a drawn region on a view (phantom_meta.json), a hit when the map's peak
cell overlaps the region, beside the rate of a random cell (``evaluation.perception.pointing_game``): a
finer grid is a stricter game (its chance is lower), so compare each map with its own chance.

--split val measures the validation split (where the default layer was chosen).
Writes OUT/runs/<group>_seed<k>.json per measured folder, then OUT/evidence_maps.{json,md} (per group:
mean over seeds). With --summary-only nothing is measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

SHOWN = ["Lung Lesion", "Fracture", "Lung Opacity", "Pneumothorax", "Atelectasis"]


def measure(folder: Path, data_dir: Path, layers: list[int], limit: int | None, split: str = "test") -> dict:
    """The pointing game per map kind on ``data_dir``'s ``split`` (the first ``limit`` studies)."""
    import torch

    from trrg.assembly.bridge import encode_prompt_bank
    from trrg.assembly.hub_folders import load_model_folder, model_kind
    from trrg.modeling.modeling_trrg import ATTRIBUTION_LAYER
    from trrg.evaluation.perception import pointing_cases, pointing_game
    from trrg.processing.phantom import finding_regions
    from trrg.processing.studies import load_studies
    from trrg.processing.studies.schema import CachedStudyReader

    stage_one = model_kind(folder) == "trrg_contrastive"
    model, processor = load_model_folder(folder, expected="trrg_contrastive" if stage_one else "trrg")
    model.eval()
    prompt_bank = encode_prompt_bank(model, processor) if stage_one else model.prompt_bank
    names = list(model.config.disease_names)
    rows = list(load_studies(data_dir, splits=[split])[split])[:limit]
    meta = json.loads((data_dir / "phantom_meta.json").read_text())
    reader = CachedStudyReader(max_cached_studies=0)
    cases: dict[str, list] = {}
    grids: dict[str, list[int]] = {}
    for start in range(0, len(rows), 32):
        kept, views = reader.read_batch(rows[start : start + 32])
        pixels = processor.image_processor(views, return_tensors="pt")
        pixel_values, view_mask = pixels["pixel_values"], pixels["view_mask"]
        with torch.no_grad():
            maps = {"patches": model.perception(model.perception.vision_model(pixel_values, view_mask), view_mask,
                                                prompt_bank, return_maps=True).evidence_maps}
        for layer in layers:
            maps[f"layer{layer}"] = model.perception.attribution_maps(pixel_values, view_mask, prompt_bank, layer=layer)
        if f"layer{ATTRIBUTION_LAYER}" in maps:  # the shipped maps read at the patch grid: the same game as "patches"
            fine, patch_grid = maps[f"layer{ATTRIBUTION_LAYER}"], maps["patches"].shape[-2:]
            maps[f"layer{ATTRIBUTION_LAYER} at the patch grid"] = torch.nn.functional.adaptive_max_pool2d(
                fine.flatten(0, 1), patch_grid).unflatten(0, fine.shape[:2])
        for kind, kind_maps in maps.items():
            grids[kind] = list(kind_maps.shape[-2:])
            cases.setdefault(kind, []).extend(pointing_cases(kept, views, kind_maps.float().numpy(), names,
                                                             lambda study: finding_regions(meta, study)))
    return {"pointing": {kind: pointing_game(kind_cases) for kind, kind_cases in cases.items()}, "grids": grids,
            "split": split, "studies": len(rows)}


def _versions() -> dict:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


def summarize(out: Path, command: str) -> dict:
    """OUT/evidence_maps.{json,md} from OUT/runs (no torch)."""
    results = [json.loads(path.read_text()) for path in sorted((out / "runs").glob("*_seed*.json"))]
    groups = sorted({r["group"] for r in results})
    summary = {"command": command, "groups": {}}
    for group in groups:
        runs = [r for r in results if r["group"] == group]
        kinds = list(runs[0]["pointing"])
        per_kind = {}
        for kind in kinds:
            names = sorted({n for r in runs for n in r["pointing"][kind]})
            per_kind[kind] = {
                "grid": runs[0]["grids"][kind],
                "per_observation": {n: {key: float(np.mean([r["pointing"][kind][n][key] for r in runs
                                                            if n in r["pointing"][kind]]))
                                        for key in ("hit_rate", "chance_rate", "cases")} for n in names},
                "hit_per_seed": {n: [round(r["pointing"][kind][n]["hit_rate"], 3) for r in runs if n in r["pointing"][kind]]
                                 for n in names},
            }
            values = per_kind[kind]["per_observation"].values()
            per_kind[kind]["mean_hit"] = float(np.mean([v["hit_rate"] for v in values]))
            per_kind[kind]["mean_chance"] = float(np.mean([v["chance_rate"] for v in values]))
        summary["groups"][group] = {"seeds": sorted(r["seed"] for r in runs), "models": [r["model"] for r in runs],
                                    "data": runs[0]["data"], "split": runs[0]["split"], "studies": runs[0]["studies"],
                                    "versions": runs[0]["versions"], "kinds": per_kind}
    (out / "evidence_maps.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "evidence_maps.md").write_text(_markdown(summary))
    return summary


def _markdown(summary: dict) -> str:
    lines = ["# Where the evidence lies: the pointing game per map", "",
             f"Regenerate from the runs in this folder: `{summary['command']}`", "",
             "Hit: the share of positive findings (with a drawn region on the view) whose map peaks in a cell "
             "that overlaps the region; chance: a random cell's rate on the same grid (a finer grid is a stricter "
             "game). `patches`: the evidence maps (the local logit's per-patch contrast); `layer<k>`: the "
             "attribution maps (gradient x activation at the backbone's hidden state k; 0, the stem's output, is the shipped default). "
             "Mean over seeds; hit (chance)."]
    for group, values in summary["groups"].items():
        kinds = values["kinds"]
        lines += ["", f"## {group}", "",
                  f"Models: {', '.join(values['models'])}; data: {values['data']} ({values['studies']} studies of its "
                  f"{values['split']} split); seeds {values['seeds']}; versions {values['versions']}.", "",
                  "| map | grid | " + " | ".join(SHOWN) + " | mean over observations |", "|---|---|" + "---|" * (len(SHOWN) + 1)]
        for kind, kind_values in kinds.items():
            per = kind_values["per_observation"]
            cells = [f"{per[n]['hit_rate']:.2f} ({per[n]['chance_rate']:.2f})" if n in per else "n/a" for n in SHOWN]
            grid = "x".join(str(side) for side in kind_values["grid"])
            lines.append(f"| {kind} | {grid} | " + " | ".join(cells)
                         + f" | {kind_values['mean_hit']:.2f} ({kind_values['mean_chance']:.2f}) |")
        shipped = kinds.get("layer0", {}).get("hit_per_seed", {})
        if shipped:
            lines += ["", "layer0 per seed: " + "; ".join(f"{n} {shipped[n]}" for n in SHOWN if n in shipped)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/evidence_maps"))
    parser.add_argument("--group", help="the table the run belongs to (e.g. demo-budget)")
    parser.add_argument("--model", type=Path, help="a trained stage-1 or stage-2 folder")
    parser.add_argument("--data", type=Path, help="the phantom it was trained on (with phantom_meta.json)")
    parser.add_argument("--seed", type=int, default=0, help="the seed the model was trained with (a label)")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="backbone hidden states to draw attribution maps on")
    parser.add_argument("--split", default="test", help="the split measured (validation: to choose a layer)")
    parser.add_argument("--limit", type=int, default=None, help="measure the first N studies of the split")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--summary-only", action="store_true", help="rebuild the tables from OUT/runs")
    args = parser.parse_args(argv)
    if not args.summary_only:
        missing = [flag for flag, value in (("--group", args.group), ("--model", args.model), ("--data", args.data))
                   if value is None]
        if missing:
            parser.error(f"pass {', '.join(missing)} (or --summary-only to rebuild the tables)")
        if not (args.data / "phantom_meta.json").is_file():
            parser.error(f"--data {args.data}: no phantom_meta.json there; pass a folder written by `trrg phantom`")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        from trrg.processing.studies.schema import StudyDataError

        try:
            result = measure(args.model, args.data, args.layers, args.limit, args.split)
        except (FileNotFoundError, StudyDataError, ValueError) as error:  # a wrong folder or split: say which
            parser.error(str(error))
        result.update({"group": args.group, "seed": args.seed, "model": str(args.model), "data": str(args.data),
                       "versions": _versions()})
        runs = args.out / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        (runs / f"{args.group}_seed{args.seed}.json").write_text(json.dumps(result, indent=1) + "\n")
    summary = summarize(args.out, f"python benchmarks/evidence_maps.py --out {args.out} --summary-only")
    print((args.out / "evidence_maps.md").read_text())
    return 0 if summary["groups"] else 1


if __name__ == "__main__":
    sys.exit(main())
