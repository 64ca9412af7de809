"""Does fine-tuning a trained TRRG model on a new site's studies adapt it, perception included?

    python benchmarks/site_adaptation.py --model runs/demo/model --phantom runs/demo/phantom --out docs/site_adaptation
    python benchmarks/site_adaptation.py --out docs/site_adaptation --summary-only
        # no training: rebuilds docs/site_adaptation/site_adaptation.{md,json} from its runs

A hospital takes a trained stage-2 model (the full demo's, `trrg demo`) and fine-tunes it on a few
hundred of its own studies. Its site really differs from the training data: another detector and
positioning (gamma 0.6, contrast squeezed into 70% of the range, a 1-px blur, sensor noise sd 8, each
image rotated up to 6 degrees, zoomed 0.9-1.1x and shifted up to 5%), one view per study (the frontal),
and another house style (sentences last first, "no X" written "there is no evidence of X" where the
labeler reads the same labels: the benchmark checks every reference keeps its labels). 300 train / 50
val / 300 test studies per seed, a phantom drawn with seed 2000 + seed.

Arms (each measured on the site's test split and on the original phantom's test split, both views):
  none            the trained model as it is
  continue        `trrg finetune --model M --data SITE` (the "continue" recipe: the report writer at lr
                  5e-6, the perception frozen, the model's own clue thresholds)
  adapt           `trrg finetune --model M --data SITE --adapt_perception true` (the "adapt" recipe: the
                  perception trained on the site's report labels under its prompt loss, the writer frozen,
                  then averaged half and half with its weights before (--adapted_perception_weight 0.5);
                  thresholds re-tuned)
  adapt_replay    adapt with `--replay_data <the model's own phantom>`: as many of the original training
                  studies as the site has mixed into the training split (the route docs recommend); the
                  thresholds are re-tuned on the site's training studies and as many original ones that were
                  not replayed (until the commit after 7f3b4ea: on the training split itself)
  adapt_alone, adapt_replay_alone
                  the same with the adapted weights kept whole (--adapted_perception_weight 1.0)
  adapt_replay_gentle  adapt_replay at a fifth of the adapt recipe's learning rate (1e-4)
Explored on seed 0, all with the adapted weights kept whole:
  adapt_replay3x  three times as many original studies as site studies
  adapt_replay_slow  a fifth of the adapt recipe's learning rate (1e-4)
  adapt_replay3x_slow  both
  adapt_replay_keep  the model's own clue thresholds kept (not re-tuned after training)
  adapt_replay_slow_keep  adapt_replay_slow keeping them
  adapt_early     adapt training only the vision encoder's first layers (the stem and its first stage: where
                  a detector's rendering differs); the deeper layers and the projections stay (the benchmark
                  restricts what --adapt_perception trains, in this process)
  adapt_replay_early  both

Writes OUT/runs/calibration_noise.json first (how far the original test split's score moves when only the
clue thresholds are re-tuned: the noise floor of "change on the original"), OUT/runs/<arm>_seed<k>.json as
each run ends (a rerun skips finished runs), then OUT/site_adaptation.json and OUT/site_adaptation.md. With
--summary-only nothing is trained.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ARMS = ["none", "continue", "adapt", "adapt_replay", "adapt_alone", "adapt_replay_alone", "adapt_replay_gentle",
        "adapt_replay3x",
        "adapt_replay_slow", "adapt_replay3x_slow", "adapt_replay_keep", "adapt_replay_slow_keep", "adapt_early",
        "adapt_replay_early"]
HEADLINE = ["ce_macro_f1_14", "ce_micro_f1_14", "perception_macro_f1_14", "clue_drop_rate", "ce_normal_collapse",
            "bleu_4"]
SPLITS = {"num_train": 300, "num_val": 50, "num_test": 300}
SHIFT = {"gamma": 0.6, "contrast": 0.7, "blur_radius": 1.0, "noise_sd": 8.0, "max_rotation_deg": 6.0,
         "zoom": (0.9, 1.1), "max_shift": 0.05, "views": "frontal only",
         "report_style": "sentences last first; 'no X' as 'there is no evidence of X' where labels survive"}


# ---------------------------------------------------------------------------------------------
# The site stand-in
# ---------------------------------------------------------------------------------------------


def site_sentence(sentence: str) -> str:
    """The site's phrasing of one sentence: a plain negation "no X" as "there is no evidence of X"."""
    plain = sentence.lower().startswith("no ") and not sentence.lower().startswith("no evidence")
    return f"There is no evidence of {sentence[3:]}" if plain else sentence


def site_report(report: str) -> str:
    """Another house style: the sentences last first, negations rephrased where the labeler reads the same
    labels (a rephrasing that would change a sentence's labels is not made)."""
    from trrg.processing.labeler import label_report
    from trrg.processing.text import split_sentences

    sentences = []
    for sentence in reversed(split_sentences(report)):
        rephrased = site_sentence(sentence)
        sentences.append(rephrased if label_report(rephrased) == label_report(sentence) else sentence)
    return " ".join(f"{sentence} ." for sentence in sentences)


def site_image(path: Path, rng: np.random.Generator) -> None:
    """Another detector and positioning, written over the file."""
    from PIL import Image, ImageFilter

    with Image.open(path) as image:
        gray = image.convert("L")
    size = gray.size[0]
    angle = np.deg2rad(rng.uniform(-SHIFT["max_rotation_deg"], SHIFT["max_rotation_deg"]))
    zoom = rng.uniform(*SHIFT["zoom"])
    shift_x, shift_y = rng.uniform(-SHIFT["max_shift"], SHIFT["max_shift"], 2) * size
    # One affine map from each output pixel back into the input: rotate, zoom and shift about the centre.
    centre = size / 2
    a, b = np.cos(angle) / zoom, np.sin(angle) / zoom
    d, e = -b, a
    c = centre - a * (centre + shift_x) - b * (centre + shift_y)
    f = centre - d * (centre + shift_x) - e * (centre + shift_y)
    gray = gray.transform(gray.size, Image.AFFINE, (a, b, c, d, e, f), resample=Image.BILINEAR, fillcolor=0)
    gray = gray.filter(ImageFilter.GaussianBlur(SHIFT["blur_radius"]))
    pixels = (np.asarray(gray, dtype=np.float64) / 255.0) ** SHIFT["gamma"]
    pixels = 0.5 + (pixels - 0.5) * SHIFT["contrast"]
    pixels = 255.0 * pixels + rng.normal(0.0, SHIFT["noise_sd"], pixels.shape)
    Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8)).save(path)


def make_site(folder: Path, seed: int, image_size: int) -> Path:
    """The shifted one-view phantom in ``folder`` (R2Gen layout), made once."""
    from trrg.processing.files import write_json_atomically
    from trrg.processing.labeler import label_report
    from trrg.processing.phantom import generate_phantom

    done = folder / "site.json"
    if done.exists():
        return folder
    generate_phantom(folder, seed=seed, image_size=image_size, lateral_fraction=0.0, **SPLITS)
    (folder / "phantom_meta.json").unlink()  # a site's data, not the phantom (the model's config must say so)
    annotation = json.loads((folder / "annotation.json").read_text())
    rng = np.random.default_rng([seed, 11])
    rephrased = 0
    for rows in annotation.values():
        for row in rows:
            styled = site_report(row["report"])
            if label_report(styled) != label_report(row["report"]):  # the references keep their findings
                raise SystemExit(f"{row['id']}: the site's style changed the labels of {row['report']!r}")
            rephrased += "no evidence of" in styled
            row["report"] = styled
            row["image_path"] = row["image_path"][:1]
            site_image(folder / "images" / row["image_path"][0], rng)
    write_json_atomically(folder / "annotation.json", annotation)
    write_json_atomically(done, {**SHIFT, "seed": seed, "reports_with_rephrased_negations": rephrased, **SPLITS})
    return folder


# ---------------------------------------------------------------------------------------------
# One run: the commands a site runs
# ---------------------------------------------------------------------------------------------


def finetune_argv(arm: str, model: Path, data: Path, out: Path, seed: int, original: Path) -> list[list[str]]:
    """The `trrg finetune` command lines of an arm, run one after the other (each on the last's model);
    ``original``: the model's own training data (for replay)."""
    common = ["--data", str(data), "--seed", str(seed), "--data_seed", str(seed), "--use_cpu", "True",
              "--disable_tqdm", "True", "--dataloader_num_workers", "0", "--report_to", "none"]
    adapt = ["--adapt_perception", "True"]
    replay = adapt + ["--replay_data", str(original)]
    whole = ["--adapted_perception_weight", "1.0"]
    three_times, slow = ["--replay_studies", str(3 * SPLITS["num_train"])], ["--learning_rate", "1e-4"]
    keep = ["--calibrate_clue_thresholds", "False"]
    steps = {"continue": [[]], "adapt": [adapt], "adapt_replay": [replay], "adapt_alone": [adapt + whole],
             "adapt_replay_alone": [replay + whole], "adapt_replay_gentle": [replay + slow],
             "adapt_replay3x": [replay + three_times + whole],
             "adapt_replay_slow": [replay + slow + whole], "adapt_replay3x_slow": [replay + three_times + slow + whole],
             "adapt_replay_keep": [replay + keep + whole], "adapt_replay_slow_keep": [replay + slow + keep + whole],
             "adapt_early": [adapt + whole], "adapt_replay_early": [replay + whole]}[arm]
    argv, current = [], model
    for index, extra in enumerate(steps):
        step_out = out / f"step{index}"
        argv.append(["--model", str(current), "--output_dir", str(step_out), *common, *extra])
        current = step_out / "final"
    return argv


def run_arm(arm: str, seed: int, model_dir: Path, site: Path, phantom: Path, work: Path, phantom_test: int) -> dict:
    from trrg.assembly.hub_folders import load_model_folder
    from trrg.commands.finetune import main as finetune
    from trrg.evaluation.generation import evaluate_model
    from trrg.processing.studies import load_studies

    out = work / f"{arm}_seed{seed}"
    started = time.perf_counter()
    final = model_dir
    if arm != "none":
        for argv in finetune_argv(arm, model_dir, site, out, seed, phantom):
            with first_layers_only(arm.endswith("_early")):
                if finetune(argv) != 0:
                    raise SystemExit(f"trrg finetune {' '.join(argv)} failed")
        final = out / f"step{len(finetune_argv(arm, model_dir, site, out, seed, phantom)) - 1}" / "final"
    train_s = time.perf_counter() - started
    model, processor = load_model_folder(final, expected="trrg")
    result = {"arm": arm, "seed": seed, "train_s": train_s, "clue_thresholds": model.config.clue_config.clue_thresholds,
              "finetune_argv": [" ".join(argv) for argv in finetune_argv(arm, model_dir, site, out, seed, phantom)]
              if arm != "none" else []}
    tests = {"site": list(load_studies(site)["test"]), "original": list(load_studies(phantom)["test"])[:phantom_test]}
    for name, rows in tests.items():
        metrics = evaluate_model(model, processor, rows, out / f"eval_{name}", batch_size=64, meteor=False, progress=False)
        result[name] = {key: metrics[key] for key in HEADLINE}
        result.setdefault("versions", metrics.get("versions"))
    return result


def calibration_noise(model_dir: Path, phantom: Path, phantom_test: int, studies: int, draws: int = 10) -> dict:
    """How far the original test split's perception macro-F1 moves when nothing but the clue thresholds
    change: the model as it is, its thresholds re-tuned (the route's rule, ``fit_clue_thresholds``) on
    ``draws`` random draws of ``studies`` of its own training studies (as many as the adapt route's
    training split holds). The noise floor of the "change on the original" column."""
    from trrg.assembly.hub_folders import load_model_folder
    from trrg.evaluation.perception import f1_at
    from trrg.processing.studies import load_studies
    from trrg.trainers.clue_calibration import fit_clue_thresholds, perceive
    from trrg.trainers.collators import disease_targets

    model, processor = load_model_folder(model_dir, expected="trrg")
    model.eval()
    source = load_studies(phantom)
    probs, targets = {}, {}
    for split, rows in (("train", list(source["train"])), ("test", list(source["test"])[:phantom_test])):
        kept, split_probs = perceive(model, processor, rows)
        probs[split], targets[split] = split_probs.numpy(), disease_targets(kept, "positive").numpy() > 0.5

    def macro_f1(thresholds) -> float:
        return float(np.mean([f1_at(probs["test"][:, d], targets["test"][:, d], t) or 0.0
                              for d, t in enumerate(thresholds)]))

    scores = []
    for draw in range(draws):
        chosen = np.random.default_rng(draw).choice(len(probs["train"]), studies, replace=False)
        scores.append(macro_f1(fit_clue_thresholds(probs["train"][chosen], targets["train"][chosen])))
    return {"model": str(model_dir), "studies": studies, "draws": draws, "phantom_test": phantom_test,
            "own_thresholds": round(macro_f1(model.config.clue_config.clue_thresholds), 4),
            "retuned": {"mean": round(float(np.mean(scores)), 4), "sd": round(float(np.std(scores)), 4),
                        "min": round(min(scores), 4), "max": round(max(scores), 4)}}


EARLY_LAYERS = ("vision_model.backbone.embedder.", "vision_model.backbone.encoder.stages.0.")


@contextlib.contextmanager
def first_layers_only(active: bool):
    """For the *_early arms: --adapt_perception trains the perception's parameters under EARLY_LAYERS only
    (the tiny preset's ResNet stem and first stage), while the context lasts."""
    from trrg.trainers import finetune_trainer

    prepare = finetune_trainer.prepare_for_training

    def early_only(model, args):
        model = prepare(model, args)
        for name, parameter in model.perception.named_parameters():
            if not name.startswith(EARLY_LAYERS):
                parameter.requires_grad_(False)
        return model

    if active:
        finetune_trainer.prepare_for_training = early_only
    try:
        yield
    finally:
        finetune_trainer.prepare_for_training = prepare


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------


def summarise(results: list[dict]) -> dict:
    table = {}
    for arm in ARMS:
        runs = [run for run in results if run["arm"] == arm]
        if runs:
            table[arm] = {test: {metric: {"mean": float(np.mean([run[test][metric] for run in runs if run[test][metric] is not None])),
                                          "sd": float(np.std([run[test][metric] for run in runs if run[test][metric] is not None])),
                                          "n": len(runs)} for metric in HEADLINE} for test in ("site", "original")}
            table[arm]["gain_per_seed"] = [round(run["site"]["ce_macro_f1_14"] - _none(results, run["seed"], "site"), 4)
                                           for run in runs if _none(results, run["seed"], "site") is not None]
            table[arm]["original_change_per_seed"] = [
                round(run["original"]["ce_macro_f1_14"] - _none(results, run["seed"], "original"), 4)
                for run in runs if _none(results, run["seed"], "original") is not None]
    return table


def _none(results: list[dict], seed: int, test: str) -> float | None:
    return next((run[test]["ce_macro_f1_14"] for run in results if run["arm"] == "none" and run["seed"] == seed), None)


def markdown(summary: dict, protocol: dict) -> str:
    lines = [f"Command: `{protocol['command']}`", "",
             f"Model: `{protocol['model']}`; site stand-in: {protocol['site']}; original test: the first "
             f"{protocol['phantom_test']} studies of `{protocol['phantom']}`'s test split (both views); seeds "
             f"{protocol['seeds']} (site data and training); `trrg score` protocol (docs/METRICS.md), no METEOR. "
             "Mean ± sd over seeds.", "",
             "| arm | site CE macro-F1 | site perception macro-F1 | site clue drop | site collapse | site BLEU-4 | "
             "gain over none per seed | original CE macro-F1 | change on the original per seed | "
             "original perception macro-F1 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, tests in summary.items():
        site, original = tests["site"], tests["original"]
        cell = lambda m: f"{m['mean']:.3f} ± {m['sd']:.3f}"  # noqa: E731
        lines.append(f"| {arm} | {cell(site['ce_macro_f1_14'])} | {cell(site['perception_macro_f1_14'])} | "
                     f"{cell(site['clue_drop_rate'])} | {cell(site['ce_normal_collapse'])} | {cell(site['bleu_4'])} | "
                     f"{', '.join(f'{g:+.3f}' for g in tests['gain_per_seed'])} | {cell(original['ce_macro_f1_14'])} | "
                     f"{', '.join(f'{c:+.4f}' for c in tests['original_change_per_seed'])} | "
                     f"{cell(original['perception_macro_f1_14'])} |")
    noise = protocol.get("calibration_noise")
    if noise:
        lines += ["", f"Calibration noise (`calibration_noise`): the model as it is scores perception macro-F1 "
                  f"{noise['own_thresholds']:.4f} on these {noise['phantom_test']} original test studies with its own "
                  f"thresholds; re-tuned on {noise['draws']} random draws of {noise['studies']} of its training studies "
                  f"(the route's rule, nothing else changed) it scores {noise['retuned']['mean']:.4f} ± "
                  f"{noise['retuned']['sd']:.4f} (min {noise['retuned']['min']:.4f}, max {noise['retuned']['max']:.4f})."]
    return "\n".join(lines) + "\n"


def write_summary(out: Path, seeds: list[int], command: str) -> str:
    results = [json.loads(path.read_text()) for path in sorted((out / "runs").glob("*_seed*.json"))]
    results = [run for run in results if run["seed"] in seeds]
    if not results:
        raise SystemExit(f"{out / 'runs'}: no finished runs for seeds {seeds}")
    first = results[0]
    protocol = {"command": command, "model": first["model"], "phantom": first["phantom"],
                "phantom_test": first["phantom_test"], "site": f"phantom seed 2000 + seed, shifted ({SHIFT}; {SPLITS})",
                "seeds": sorted({run["seed"] for run in results}), "versions": first.get("versions")}
    noise_file = out / "runs" / "calibration_noise.json"
    if noise_file.exists():
        protocol["calibration_noise"] = json.loads(noise_file.read_text())
    summary = summarise(results)
    table = markdown(summary, protocol)
    (out / "site_adaptation.json").write_text(json.dumps({"protocol": protocol, "summary": summary}, indent=2) + "\n")
    (out / "site_adaptation.md").write_text(table)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="OUT/runs keeps one JSON per run")
    parser.add_argument("--model", type=Path, default=Path("runs/demo/model"), help="a trained stage-2 folder")
    parser.add_argument("--phantom", type=Path, default=Path("runs/demo/phantom"), help="the model's own phantom")
    parser.add_argument("--work", type=Path, default=Path("runs/site_adaptation"), help="data and checkpoints")
    parser.add_argument("--arms", nargs="+", default=ARMS, choices=ARMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--phantom-test", type=int, default=500, help="original test studies scored")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--summary-only", action="store_true", help="rebuild the outputs from OUT/runs; no training")
    args = parser.parse_args(argv)
    seeds = "" if args.seeds == [0, 1, 2] else " --seeds " + " ".join(map(str, args.seeds))
    command = f"python benchmarks/site_adaptation.py --out {args.out}{seeds} --summary-only"
    if not args.summary_only:
        train_all(args)
    print(write_summary(args.out, args.seeds, command))


def train_all(args) -> None:
    import torch

    from trrg.assembly.hub_folders import load_model_folder

    if not (args.model / "config.json").exists():
        raise SystemExit(f"--model {args.model}: no trained stage-2 folder there; make one with `trrg demo --out runs/demo`")
    if args.threads:
        torch.set_num_threads(args.threads)
    image_size = load_model_folder(args.model, expected="trrg")[0].config.image_size
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    noise_file = args.out / "runs" / "calibration_noise.json"
    if not noise_file.exists():  # the route's training split: the site's studies and as many replayed
        noise = calibration_noise(args.model, args.phantom, args.phantom_test, 2 * SPLITS["num_train"])
        noise_file.write_text(json.dumps(noise, indent=2) + "\n")
    for seed in args.seeds:
        site = make_site(args.work / f"site_seed{seed}", 2000 + seed, image_size)
        for arm in args.arms:
            path = args.out / "runs" / f"{arm}_seed{seed}.json"
            if path.exists():
                continue
            result = run_arm(arm, seed, args.model, site, args.phantom, args.work, args.phantom_test)
            result.update({"model": str(args.model), "phantom": str(args.phantom), "phantom_test": args.phantom_test})
            path.write_text(json.dumps(result, indent=2) + "\n")
            print(f"{arm} seed {seed}: site CE macro-F1 {result['site']['ce_macro_f1_14']:.3f}, original "
                  f"{result['original']['ce_macro_f1_14']:.3f} ({result['train_s']:.0f} s training)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
