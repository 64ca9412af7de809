"""Does the model still perceive when another site's detector renders the same chests differently,
and does stage 1's light augmentation (`--augment`: small affine, brightness/contrast +-10 %) help?

    python benchmarks/rendering_shift.py --out docs/rendering_shift               # augment off/on; seed 0
    python benchmarks/rendering_shift.py --out docs/rendering_shift --summary-only

Same phantom for every arm (1.2, seed 0: 1,000 train / 100 val / 600 test studies, frontal + lateral,
128 px) and the tiny recipe with today's defaults; only stage 1's `augment` differs. Each arm trains
stage 1 (10 epochs), bridges and fine-tunes stage 2 (8 epochs), and is measured on the test studies
as drawn and as another detector would give them: gamma 0.9, Gaussian blur 0.5 px, sensor noise
sd 3 (a shift of a kind the augmentation does not draw: it has no gamma, blur or noise). Reported:
stage 1's zero-shot macro AUROC / F1 at 0.5, and the reports' CE micro/macro-F1 (`trrg score`
protocol, no METEOR), the model's own clue decisions' macro-F1, clue drop rate and normal collapse.

Writes OUT/runs/<arm>_seed<k>.json as each arm ends (a rerun skips finished arms), then
OUT/rendering_shift.json and OUT/rendering_shift.md; --summary-only rebuilds those from OUT/runs.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from single_view import EPOCHS, PERCEPTION, REPORT, train_arms, zero_shot_perception  # noqa: E402

ARMS = {"augment_off": {"augment": False}, "augment_on": {"augment": True}}
SHIFT = {"gamma": 0.9, "blur_radius": 0.5, "noise_sd": 3.0}
TESTS = ("as drawn", "shifted rendering")


def shifted_rows(rows: list[dict], seed: int = 0) -> list[dict]:
    """The same studies with every view re-rendered (in memory, PNG bytes)."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    shifted = []
    for row in rows:
        views = []
        for path in row["images"]:
            with Image.open(path) as image:
                gray = image.convert("L").filter(ImageFilter.GaussianBlur(SHIFT["blur_radius"]))
            pixels = 255.0 * (np.asarray(gray, dtype=np.float64) / 255.0) ** SHIFT["gamma"]
            pixels += rng.normal(0.0, SHIFT["noise_sd"], pixels.shape)
            buffer = io.BytesIO()
            Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8)).save(buffer, format="PNG")
            views.append({"path": Path(path).name, "bytes": buffer.getvalue()})
        shifted.append({**row, "images": views})
    return shifted


def run_arm(arm: str, seed: int, data_dir: Path, work: Path) -> dict:
    import torch

    from trrg.assembly.bridge import bridge
    from trrg.commands.demo import DemoPlan, run_finetune, run_pretrain
    from trrg.evaluation.generation import evaluate_model
    from trrg.processing.studies import load_studies

    plan = DemoPlan(num_train=0, num_val=0, num_test=0, pretrain_epochs=EPOCHS["pretrain"],
                    finetune_epochs=EPOCHS["finetune"])
    drawn = list(load_studies(data_dir)["test"])
    tests = {"as drawn": drawn, "shifted rendering": shifted_rows(drawn)}
    started = time.perf_counter()
    torch.manual_seed(seed)
    pretrained = run_pretrain(data_dir, work / f"{arm}_seed{seed}_pretrain", plan, seed, disable_tqdm=True,
                              **ARMS[arm])
    result = {"arm": arm, "settings": ARMS[arm], "seed": seed, "shift": SHIFT, "pretrain": {}, "finetune": {}}
    for name, rows in tests.items():
        result["pretrain"][name] = zero_shot_perception(*pretrained, rows)
    model, processor = run_finetune(*bridge(None, pretrained=pretrained, seed=seed), data_dir,
                                    work / f"{arm}_seed{seed}_finetune", plan, seed, disable_tqdm=True)
    for name, rows in tests.items():
        metrics = evaluate_model(model, processor, rows, work / f"{arm}_seed{seed}_eval_{name.replace(' ', '_')}",
                                 batch_size=64, meteor=False, progress=False)
        result["finetune"][name] = {key: metrics[key] for key in REPORT}
        result["versions"] = metrics["versions"]
    result["wall_s"] = time.perf_counter() - started
    return result


def markdown(results: list[dict], command: str) -> str:
    def cell(key, stage, test, arm):
        values = [run[stage][test][key] for run in results if run["arm"] == arm]
        return f"{np.mean(values):.3f}" + (f" ± {np.std(values):.3f}" if len(values) > 1 else "")

    arms = [arm for arm in ARMS if any(run["arm"] == arm for run in results)]
    seeds = sorted({run["seed"] for run in results})
    lines = [f"Command: `{command}`", "",
             f"Phantom {results[0]['phantom']} ({results[0]['data']}); shift: {results[0]['shift']}; seeds {seeds}; "
             f"versions {results[0]['versions']}.", "",
             "| arm | test images | " + " | ".join(f"stage 1 {key}" for key in PERCEPTION) + " | "
             + " | ".join(REPORT) + " |", "|---" * (2 + len(PERCEPTION) + len(REPORT)) + "|"]
    for arm in arms:
        for test in TESTS:
            cells = [cell(key, "pretrain", test, arm) for key in PERCEPTION] + [cell(key, "finetune", test, arm)
                                                                             for key in REPORT]
            lines.append(f"| {arm} | {test} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/rendering_shift"))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    command = f"python benchmarks/rendering_shift.py --out {args.out} --summary-only"
    if not args.summary_only:
        train_all(args)
    results = [json.loads(path.read_text()) for path in sorted((args.out / "runs").glob("*_seed*.json"))]
    if not results:
        raise SystemExit(f"{args.out / 'runs'}: no finished arms")
    table = markdown(results, command)
    (args.out / "rendering_shift.md").write_text(table)
    (args.out / "rendering_shift.json").write_text(json.dumps({"protocol": {"command": command}, "runs": results},
                                                              indent=2) + "\n")
    print(table)


def train_all(args) -> None:
    train_arms(args, {arm: arm for arm in args.arms}, run_arm)


if __name__ == "__main__":
    sys.exit(main())
