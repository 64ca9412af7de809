"""The ceiling first: how well can a SUPERVISED classifier of the tiny preset's size read each of the
14 CheXpert observations off the phantom's pixels, given plenty of data and the labels directly?

    python benchmarks/decidability.py --out docs/decidability                       # 20,000 studies, 128 px
    python benchmarks/decidability.py --out docs/decidability --image-size 256 --num-train 4000 --epochs 5
    python benchmarks/decidability.py --out docs/decidability --views frontal       # the frontal view only
    python benchmarks/decidability.py --out docs/decidability --fracture-step 0.08 --num-train 6000  # what-ifs:
    python benchmarks/decidability.py --out docs/decidability --fracture-contrast 3 --num-train 6000 # not the phantom
    python benchmarks/decidability.py --out docs/decidability --fracture-callus 0.25 --num-train 6000 # as drawn
    python benchmarks/decidability.py --out docs/decidability --fracture-callus 0.25 --epochs 8     # at 20,000
    python benchmarks/decidability.py --out docs/decidability --summary-only        # tables from OUT/runs
    python benchmarks/decidability.py --out /tmp/d --num-train 300 --num-test 200 --epochs 1   # a smoke run

The classifier: the tiny preset's vision encoder (``PRESETS["tiny"].vision``, a 4-stage ResNet
16-32-64-128, composed from config, random init) as ``TRRGVisionEncoder`` runs it (each view's
feature map average- and max-pooled), and one linear layer over the pooled features of both views
concatenated (frontal, lateral: 2 x 256 features; ``--views frontal``: the frontal's 256) giving
14 logits, trained with BCE on the study's labels (uncertain counted positive, not mentioned as
negative, as the stage-1 trainer's ``disease_targets`` does), AdamW, warm-up then a cosine schedule,
batch 64, no augmentation (``--augment``: stage 1's, each view of each batch). Pixels as the processor
gives them: grey levels scaled to [-1, 1], replicated to 3 channels. ``--head`` changes the head only:
``study`` is one linear layer over the mean of the views' features (stage 1's study embedding; with
shared weights for both views it was the higher ceiling at 1,000 studies, docs/decidability/heads-at-1000),
``cosine`` is stage 1's zero-shot form, scale x (cos(e, positive) - cos(e, negated)), e the L2-normalised
projected study embedding, against free prompt vectors instead of a text encoder's, and ``cosine_bias``
adds a learnt bias per disease to it; ``cosine_local`` averages cosine's logits with stage 1's local
ones (each disease's patch evidence pooled by log-sum-exp, as ``local_disease_logits``).

    python benchmarks/decidability.py --out docs/decidability/heads-at-1000 --num-train 1000 --epochs 30 \
        --batch-size 32 --threads 2 --augment --head study --seed 0

Studies are rendered in memory with the phantom's own functions, study ``i`` from the generator seeded
``(data_seed, i)`` exactly as ``trrg phantom`` does (train: indices 0..N-1, every study with a lateral
view); the test studies are indices from 10,000,000 on, so every run, whatever its size, resolution or
views, is scored on the same test studies. An AUROC near 1 says the finding is decidable from the
pixels at that resolution by a model that size; one far below says the phantom does not draw it
visibly enough (or the model is too small to see it), whatever stage 1's text alignment does.

Per observation: test AUROC and positives, and for the weak ones AUROC per drawn attribute
(the positives of that subgroup against all negatives: nodule vs mass, pneumothorax size, ...).
Writes OUT/runs/<label>.json when a run ends (a rerun with the same settings skips it), then
OUT/decidability.json and OUT/decidability.md; --summary-only rebuilds those two from OUT/runs alone.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TEST_OFFSET = 10_000_000  # test study indices start here: the same test studies for every run
PROJECTION_DIM = 128  # the tiny preset's joint image-text space (--head cosine)
LOCAL_POOL_SHARPNESS = 5.0  # stage 1's config default (--head cosine_local)
WEAK = 0.95  # below this test AUROC an observation counts as not (yet) decidable
# Subgroups scored separately (positives with this drawn attribute against all negatives).
SUBGROUPS = {
    "Lung Lesion": ("lung_lesion", lambda a: "mass 30-60 mm" if a["kind"] == "mass"
                    else f"nodule {'6-10' if a['size_mm'] <= 10 else '11-15'} mm"),
    "Pneumothorax": ("pneumothorax", lambda a: f"{a['size']}"),
    "Fracture": ("fracture", lambda a: f"rib {a['rib']}"),
    "Lung Opacity": ("airspace", lambda a: f"ground glass, {a['zone']} zone"),
    "Atelectasis": ("atelectasis", lambda a: a["side"]),
    "Pleural Other": ("pleural_thickening", lambda a: a["side"]),
    "Enlarged Cardiomediastinum": ("enlarged_cardiomediastinum",
                                   lambda a: f"half width {'<0.21' if a['half_width'] < 0.21 else '>=0.21'}"),
}
# The rendering parameters that govern the small findings: (observation, file, a pattern on the line, what it is).
PARAMETERS = (
    ("Lung Lesion", "processing/phantom_reports.py", r"size_mm = int\(rng.integers\(6, 16\)\)",
     "nodule diameter 6-15 mm (75% of lesions), mass 30-60 mm"),
    ("Lung Lesion", "processing/phantom_render.py", r"^MM_PER_UNIT = ", "200 mm per half image width: 3.1 mm/px at 128 px, a 6 mm nodule is ~2 px across"),
    ("Lung Lesion", "processing/phantom_render.py", r"strength = 0.28 if attrs\[\"kind\"\] == \"nodule\"",
     "lesion density 0.28 (nodule) / 0.34 (mass); edge min(0.008, r/3)"),
    ("Fracture", "processing/phantom_render.py", r"^RIB_DENSITY = ", "rib density 0.09 (lateral view: LATERAL_RIB_DENSITY 0.05)"),
    ("Fracture", "processing/phantom_render.py", r"return 0.03 \* \(beyond > 0\)",
     "fragment step 0.03 units (~1 px at 128 px), taken back within 0.06 units"),
    ("Fracture", "processing/phantom_render.py", r"broken = broken \* _soft\(0.018 - np.abs",
     "gap 2 x 0.018 = 0.036 units (~2.3 px at 128 px) in one posterior rib of half height 0.026"),
    ("Pneumothorax", "processing/phantom_render.py", r"shrink = \(0.88, 0.76, 0.6\)",
     "collapsed lung scale small/moderate/large 0.88/0.76/0.6 (size drawn 50/35/15%)"),
    ("Pneumothorax", "processing/phantom_render.py", r"drawn = 0.12 \* line - 0.1 \* rim",
     "pleural line +0.12, air rim -0.1 density and no vessels (lateral: +0.1 / -0.07)"),
    ("Lung Opacity", "processing/phantom_render.py", r"^AIRSPACE_DENSITY = ",
     "ground glass density 0.22 (consolidation 0.34, multifocal 0.3)"),
    ("Lung Opacity", "processing/phantom_render.py", r"haze = _ellipse\(x, y, cx, cy, 0.22, 0.2, edge=0.06\)",
     "ground-glass haze: ellipse 0.22 x 0.2 units, soft edge 0.06, 15% texture; vessels kept"),
    ("Atelectasis", "processing/phantom_render.py", r"return 0.2 \* bands",
     "linear band density 0.2, half thickness 0.018 units (~1.2 px at 128 px)"),
    ("Pleural Other", "processing/phantom_render.py", r"return 0.25 \* lungs\[side\] \* \(1.0 - inner\) \* upper",
     "pleural band density 0.25 (lateral apical cap 0.16)"),
    ("(all)", "processing/phantom_reports.py", r"^UNCERTAIN_PROBABILITY = ",
     "12% of hedgeable findings are hedged (label -1, counted positive) and drawn at the smallest size"),
)


def _study(seed: int, index: int, image_size: int):
    """Frontal and lateral uint8 images, the labels and the findings of phantom study ``(seed, index)``,
    as ``sample_study`` makes it (without the finding regions, which cost time and are not needed)."""
    from trrg.processing.phantom import _rngs
    from trrg.processing.phantom_render import render_frontal, render_lateral, sample_anatomy
    from trrg.processing.phantom_reports import sample_findings, write_report

    rngs = _rngs((seed, index))
    anatomy = sample_anatomy(rngs["anatomy"])
    findings = sample_findings(rngs["findings"])
    _, labels = write_report(rngs["report"], findings)
    images = np.stack([render_frontal(anatomy, findings, image_size), render_lateral(anatomy, findings, image_size)])
    return images, labels, findings


def patch_fracture_step(step: float | None) -> None:
    """A what-if, in this process only (the phantom's source is not changed): the fractured rib's
    fragment displaced by ``step`` units at the break instead of ``_fracture_step``'s 0.03, taken back
    over max(0.06, 2 x step) units."""
    if step is None:
        return
    import trrg.processing.phantom_render as phantom_render

    back = max(0.06, 2 * step)
    phantom_render._fracture_step = lambda beyond: step * (beyond > 0) * phantom_render._soft(beyond - back, 0.015)


def patch_fracture_contrast(factor: float | None) -> None:
    """A what-if, in this process only: the fracture's own density change (the gap and the stepped
    fragment, ``_ribs``/``_lateral_ribs``' second output) multiplied by ``factor`` on both views."""
    if factor is None:
        return
    import trrg.processing.phantom_render as phantom_render

    def scaled(ribs_function):
        def ribs(x, y, fracture):
            bands, change = ribs_function(x, y, fracture)
            return bands + (factor - 1.0) * change, factor * change
        return ribs

    phantom_render._ribs = scaled(phantom_render._ribs)
    phantom_render._lateral_ribs = scaled(phantom_render._lateral_ribs)


def patch_fracture_callus(density: float | None, radius: float = 0.03) -> None:
    """A what-if, in this process only: a round callus of ``density`` (a nodule is drawn at 0.28) and
    ``radius`` units (0.03: 12 mm across, ~4 px at 128 px) added where the fracture changes the rib
    (the centroid of the change), on both views."""
    if density is None:
        return
    import trrg.processing.phantom_render as phantom_render

    def with_callus(ribs_function, rib_density_name):
        def ribs(x, y, fracture):
            bands, change = ribs_function(x, y, fracture)
            weight = np.abs(change)
            if fracture is None or weight.sum() == 0:
                return bands, change
            cx, cy = float((weight * x).sum() / weight.sum()), float((weight * y).sum() / weight.sum())
            callus = phantom_render._ellipse(x, y, cx, cy, radius, radius, edge=0.008)
            callus = density / getattr(phantom_render, rib_density_name) * callus
            return bands + callus, change + callus
        return ribs

    phantom_render._ribs = with_callus(phantom_render._ribs, "RIB_DENSITY")
    phantom_render._lateral_ribs = with_callus(phantom_render._lateral_ribs, "LATERAL_RIB_DENSITY")


def render(seed: int, indices, image_size: int):
    """(n, 2, S, S) uint8 images, (n, 14) float targets, the findings of each study."""
    from trrg.modeling.labeler_trrg import labels_to_vector

    images = None
    targets, findings = [], []
    for row, index in enumerate(indices):
        pixels, labels, drawn = _study(seed, index, image_size)
        if images is None:
            images = np.empty((len(indices), *pixels.shape), dtype=np.uint8)
        images[row] = pixels
        targets.append(labels_to_vector(labels, uncertain_as=1.0, missing_as=0.0))
        findings.append(drawn)
    return images, np.asarray(targets, dtype=np.float32), findings


class Classifier:
    """The tiny preset's vision encoder and a linear head over the pooled features of the views used."""

    def __new__(cls, views: str, seed: int, vision_overrides: dict | None = None, head: str = "views"):
        import torch
        import torch.nn.functional as F
        from torch import nn

        from trrg.assembly.presets import PRESETS, config_of
        from trrg.modeling.constants_trrg import CHEXPERT_OBSERVATIONS
        from trrg.modeling.modeling_trrg import (TRRGVisionEncoder, disease_logits_from_prompt_bank,
                                                 local_disease_logits, patch_embeddings)

        torch.manual_seed(seed)

        class _Classifier(nn.Module):
            def __init__(self):
                super().__init__()
                vision = {**PRESETS["tiny"].vision, **(vision_overrides or {})}
                self.encoder = TRRGVisionEncoder(config_of(vision, "vision"), token_grid=None)
                self.num_views = 2 if views == "both" else 1
                self.head_kind, diseases = head, len(CHEXPERT_OBSERVATIONS)
                if head == "views":
                    self.head = nn.Linear(self.num_views * self.encoder.global_size, diseases)
                elif head == "study":
                    self.head = nn.Linear(self.encoder.global_size, diseases)
                else:  # "cosine": stage 1's zero-shot form, with free prompt vectors instead of a text encoder
                    self.projection = nn.Linear(self.encoder.global_size, PROJECTION_DIM, bias=False)
                    self.prompts = nn.Parameter(torch.randn(diseases, 2, PROJECTION_DIM) * 0.02)
                    self.logit_scale = nn.Parameter(torch.tensor([math.log(1 / 0.07)]))
                    # cosine_bias: and a learnt per-disease bias (each finding's base rate)
                    self.bias = nn.Parameter(torch.zeros(diseases), requires_grad=head == "cosine_bias")
                    if head == "cosine_local":  # and stage 1's local half: the best patches against the prompts
                        self.patch_projection = nn.Linear(self.encoder.hidden_size, PROJECTION_DIM, bias=False)

            def forward(self, images: torch.Tensor) -> torch.Tensor:  # (batch, views, S, S) uint8
                pixels = images[:, : self.num_views].float().div(255.0).sub(0.5).div(0.5)
                pixels = pixels.unsqueeze(2).expand(-1, -1, 3, -1, -1)  # grey replicated to 3 channels
                mask = torch.ones(pixels.shape[:2], dtype=torch.long)
                features = self.encoder(pixels, mask)
                if self.head_kind == "views":
                    return self.head(features.view_embeds.flatten(1))
                if self.head_kind == "study":
                    return self.head(features.study_embeds)
                study = F.normalize(self.projection(features.study_embeds), dim=-1)
                prompts, scale = F.normalize(self.prompts, dim=-1), self.logit_scale.exp()
                logits = disease_logits_from_prompt_bank(study, prompts, scale) + self.bias
                if self.head_kind != "cosine_local":
                    return logits
                patches, patch_mask = patch_embeddings(features.patch_tokens, mask, self.patch_projection)
                return (logits + local_disease_logits(patches, patch_mask, prompts, scale, LOCAL_POOL_SHARPNESS)) / 2

            def after_step(self) -> None:
                if self.head_kind.startswith("cosine"):  # stage 1's clamp (logit_scale_max)
                    with torch.no_grad():
                        self.logit_scale.clamp_(0, math.log(100.0))

        return _Classifier()


def train(model, images: np.ndarray, targets: np.ndarray, args) -> float:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(images) / args.batch_size)
    total, warmup = steps_per_epoch * args.epochs, min(args.warmup_steps, steps_per_epoch * args.epochs // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (step + 1) / (warmup + 1) if step < warmup
                                                 else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    images_t, targets_t = torch.from_numpy(images), torch.from_numpy(targets)
    generator = torch.Generator().manual_seed(args.seed)
    augment_rng = np.random.default_rng([args.seed, 7])
    model.train()
    started = time.perf_counter()
    for epoch in range(args.epochs):
        order, running = torch.randperm(len(images), generator=generator), 0.0
        for step in range(steps_per_epoch):
            batch = order[step * args.batch_size : (step + 1) * args.batch_size]
            inputs = augmented(images[batch.numpy()], augment_rng) if args.augment else images_t[batch]
            loss = loss_fn(model(inputs), targets_t[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            model.after_step()
            schedule.step()
            running += loss.item()
        print(f"  epoch {epoch + 1}/{args.epochs}: loss {running / steps_per_epoch:.4f}, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    return time.perf_counter() - started


def augmented(images: np.ndarray, rng: np.random.Generator):
    """Each view of a (batch, views, S, S) uint8 batch through stage 1's light augmentation
    (``augment_xray``, the processor's own), so the ceiling can be read with the demo's augmentation."""
    import torch
    from PIL import Image

    from trrg.modeling.image_processing_trrg import augment_xray

    out = np.empty_like(images)
    for study, views in enumerate(images):
        for view, pixels in enumerate(views):
            out[study, view] = np.asarray(augment_xray(Image.fromarray(pixels), rng))
    return torch.from_numpy(out)


def predict(model, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate([torch.sigmoid(model(torch.from_numpy(images[start : start + batch_size]))).numpy()
                               for start in range(0, len(images), batch_size)])


def score(probs: np.ndarray, targets: np.ndarray, findings: list[dict], train_targets: np.ndarray) -> dict:
    from trrg.evaluation.perception import auroc
    from trrg.modeling.constants_trrg import CHEXPERT_OBSERVATIONS

    per_observation, subgroups = {}, {}
    for column, name in enumerate(CHEXPERT_OBSERVATIONS):
        per_observation[name] = {"auroc": auroc(probs[:, column], targets[:, column]),
                                 "positives": int(targets[:, column].sum()),
                                 "train_positives": int(train_targets[:, column].sum())}
        if name not in SUBGROUPS:
            continue
        finding, key = SUBGROUPS[name]
        negatives = targets[:, column] == 0
        groups: dict[str, list[int]] = {}
        for row, drawn in enumerate(findings):
            if targets[row, column] == 1 and finding in drawn:
                groups.setdefault(key(drawn[finding]), []).append(row)
        subgroups[name] = {
            group: {"auroc": auroc(np.concatenate([probs[rows, column], probs[negatives, column]]),
                                   np.concatenate([np.ones(len(rows)), np.zeros(int(negatives.sum()))])),
                    "positives": len(rows)}
            for group, rows in sorted(groups.items())}
    defined = [v["auroc"] for v in per_observation.values() if v["auroc"] is not None]
    return {"per_observation": per_observation, "auroc_macro": float(np.mean(defined)), "subgroups": subgroups}


def run_label(args) -> str:
    views = "" if args.views == "both" else f"_{args.views}"
    what_if = "" if args.fracture_step is None else f"_fracturestep{args.fracture_step:g}"
    what_if += "" if args.fracture_contrast is None else f"_fracturecontrast{args.fracture_contrast:g}"
    what_if += "" if args.fracture_callus is None else f"_fracturecallus{args.fracture_callus:g}"
    what_if += _vision_label(args.vision)
    what_if += "_augment" if getattr(args, "augment", False) else ""
    what_if += "" if getattr(args, "head", "views") == "views" else f"_head-{args.head}"
    return f"{args.image_size}px_{args.num_train}train_{args.epochs}ep{views}{what_if}_seed{args.seed}"


def _vision_label(vision: dict | None) -> str:
    """``_vision-hidden_sizes16-32-64-depths1-1-1`` for an encoder other than the tiny preset's."""
    if not vision:
        return ""
    parts = [f"{key}{'-'.join(map(str, value)) if isinstance(value, list) else value}" for key, value in sorted(vision.items())]
    return "_vision-" + "-".join(parts)


def run(args) -> Path:
    import torch

    torch.set_num_threads(args.threads)
    runs = Path(args.out) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / f"{run_label(args)}.json"
    if path.exists():
        print(f"{path} exists: skipped (delete it to rerun)")
        return path
    patch_fracture_step(args.fracture_step)
    patch_fracture_contrast(args.fracture_contrast)
    patch_fracture_callus(args.fracture_callus)
    started = time.perf_counter()
    train_images, train_targets, _ = render(args.data_seed, range(args.num_train), args.image_size)
    test_images, test_targets, test_findings = render(args.data_seed, range(TEST_OFFSET, TEST_OFFSET + args.num_test),
                                                      args.image_size)
    render_seconds = time.perf_counter() - started
    print(f"rendered {args.num_train} + {args.num_test} studies at {args.image_size} px in {render_seconds:.0f} s",
          flush=True)
    model = Classifier(args.views, args.seed, args.vision, args.head)
    seconds = train(model, train_images, train_targets, args)
    result = score(predict(model, test_images), test_targets, test_findings, train_targets)
    result.update({
        "label": run_label(args), "seed": args.seed,
        "render_seconds": round(render_seconds, 1), "train_seconds": round(seconds, 1),
        "train_ms_per_study_epoch": round(1000 * seconds / (args.num_train * args.epochs), 2),
        "parameters": sum(p.numel() for p in model.parameters()),
        "settings": {key: getattr(args, key) for key in ("num_train", "num_test", "image_size", "views", "epochs",
                                                        "batch_size", "lr", "weight_decay", "warmup_steps",
                                                        "data_seed", "threads", "fracture_step", "fracture_contrast", "fracture_callus",
                                                        "vision", "augment", "head")},
        "versions": _versions(),
        "phantom_version": _phantom_version(),
    })
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{result['label']}: macro AUROC {result['auroc_macro']:.3f}, train {seconds:.0f} s", flush=True)
    return path


def _phantom_version() -> str:
    from trrg.processing.phantom import PHANTOM_VERSION

    return PHANTOM_VERSION


def _versions() -> dict:
    import platform

    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


def _locate(relative: str, pattern: str) -> str:
    """``file:line`` of the first line matching ``pattern`` (the parameter may move; this follows it)."""
    for number, line in enumerate((REPO / relative).read_text().splitlines(), 1):
        if re.search(pattern, line):
            return f"{relative}:{number}"
    return f"{relative} (not found: {pattern})"


def summarize(out: Path, command: str) -> dict:
    """OUT/decidability.json and OUT/decidability.md from OUT/runs (no torch, no training)."""
    results = [json.loads(path.read_text()) for path in sorted((out / "runs").glob("*.json"))]
    results.sort(key=lambda r: (_what_if(r["settings"]) != "", r["settings"]["image_size"],
                                r["settings"]["views"] != "both", -r["settings"]["num_train"]))
    summary = {"command": command, "weak_below": WEAK, "runs": {}, "parameters": [
        {"observation": name, "where": _locate(file, pattern), "what": what} for name, file, pattern, what in PARAMETERS]}
    for r in results:
        entry = summary["runs"][r["label"]] = {
            key: r[key] for key in ("settings", "auroc_macro", "per_observation", "subgroups", "train_seconds",
                                    "render_seconds", "train_ms_per_study_epoch", "parameters", "versions")}
        entry["phantom_version"] = r.get("phantom_version", "1.2")  # runs before 1.3 did not record it
        if r.get("note"):  # e.g. how the run shared the machine, added by hand to the run's file
            summary["runs"][r["label"]]["note"] = r["note"]
        summary["runs"][r["label"]]["weak"] = [name for name, v in r["per_observation"].items()
                                               if v["auroc"] is not None and v["auroc"] < WEAK]
    (out / "decidability.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "decidability.md").write_text(_markdown(summary))
    return summary


def _what_if(settings: dict) -> str:
    """The what-if patches of a run's settings in words ("" for the phantom as it is)."""
    words = []
    if settings.get("fracture_step") is not None:
        words.append(f"fracture step {settings['fracture_step']:g} (drawn: 0.03)")
    if settings.get("fracture_contrast") is not None:
        words.append(f"fracture contrast x{settings['fracture_contrast']:g}")
    if settings.get("fracture_callus") is not None:
        words.append(f"12 mm callus of density {settings['fracture_callus']:g} at the break")
    return ", ".join(words)


def _markdown(summary: dict) -> str:
    runs = summary["runs"]
    show = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    names = list(next(iter(runs.values()))["per_observation"]) if runs else []
    lines = [f"Regenerate from the runs in this folder: `{summary['command']}`", "",
             "# Decidability: a supervised classifier's ceiling on the CXR phantom", "",
             "The tiny preset's vision encoder (ResNet 16-32-64-128 from config, random init), a head over the "
             "average+max pooled features of the views (views: one linear layer over each view's features; "
             "study: over their mean across views, stage 1's study embedding; cosine / cosine_bias: stage 1's "
             "zero-shot form against free prompt vectors, with a learnt bias per disease in the second; "
             "cosine_local: cosine averaged with stage 1's local logits), BCE on "
             "the study's 14 labels (uncertain as positive), AdamW + cosine; test AUROC on the same held-out phantom studies for every run "
             "(benchmarks/decidability.py's docstring). "
             f"Observations below {WEAK} are marked *; 'pos' is the test positives. What-if runs patch the "
             "renderer in their own process only (--fracture-step/-contrast/-callus), on 6,000 or 20,000 "
             "studies: compare a what-if with the runs of the same size. Phantom 1.3 draws the fracture of the "
             "1.2 renderer's `--fracture-callus 0.25` what-if.", "",
             "| run | phantom | studies (train/test) | px | views | head | epochs | train s | ms per study-epoch | macro AUROC |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in runs.items():
        s = r["settings"]
        views = s["views"] + (f", what-if: {_what_if(s)}" if _what_if(s) else "")
        lines.append(f"| {label} | {r.get('phantom_version', '1.2')} | {s['num_train']}/{s['num_test']} | "
                     f"{s['image_size']} | {views} | {s.get('head', 'views')} | {s['epochs']} | "
                     f"{r['train_seconds']:.0f} | {r['train_ms_per_study_epoch']:.2f} | {show(r['auroc_macro'])} |")
    lines += [f"\nNote on {label}: {r['note']}." for label, r in runs.items() if r.get("note")]
    lines += ["", "| observation | " + " | ".join(f"AUROC {label}" for label in runs) + " | pos |",
              "|---|" + "---|" * (len(runs) + 1)]
    for name in names:
        cells = []
        for r in runs.values():
            value = r["per_observation"][name]["auroc"]
            cells.append(show(value) + (" *" if value is not None and value < WEAK else ""))
        positives = next(iter(runs.values()))["per_observation"][name]["positives"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {positives} |")
    lines.append("| **macro** | " + " | ".join(show(r["auroc_macro"]) for r in runs.values()) + " | |")
    lines += ["", "By drawn attribute (that subgroup's positives against all negatives):", "",
              "| observation | subgroup | " + " | ".join(f"AUROC {label}" for label in runs) + " | pos |",
              "|---|---|" + "---|" * (len(runs) + 1)]
    first = next(iter(runs.values()))["subgroups"] if runs else {}
    for name, groups in first.items():
        for group, values in groups.items():
            cells = [show(r["subgroups"].get(name, {}).get(group, {}).get("auroc")) for r in runs.values()]
            lines.append(f"| {name} | {group} | " + " | ".join(cells) + f" | {values['positives']} |")
    lines += ["", "Rendering parameters that govern the small findings (current values; the phantom is not changed "
              "here):", "", "| observation | where | what |", "|---|---|---|"]
    lines += [f"| {p['observation']} | `{p['where']}` | {p['what']} |" for p in summary["parameters"]]
    threads = sorted({r["settings"].get("threads", 1) for r in runs.values()})
    lines += ["", f"Times on 2 CPU cores, {' or '.join(map(str, threads))} torch thread(s) (each run's settings), "
              "at times shared with other work; compare runs within one table only."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/decidability")
    parser.add_argument("--num-train", type=int, default=20000)
    parser.add_argument("--num-test", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=128, help="the demo's (tiny preset's) size is 128")
    parser.add_argument("--views", choices=("both", "frontal"), default="both")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3, help="the tiny pretrain recipe's rate")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="model init and batch order")
    parser.add_argument("--data-seed", type=int, default=0, help="the phantom seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--fracture-step", type=float, default=None,
                        help="what-if: the fractured rib's step in units (the phantom draws 0.03), this process only")
    parser.add_argument("--fracture-contrast", type=float, default=None,
                        help="what-if: the fracture's density change (gap, stepped fragment) times this, this process only")
    parser.add_argument("--fracture-callus", type=float, default=None,
                        help="what-if: a 12 mm callus of this density at the break (a nodule: 0.28), this process only; "
                             "phantom 1.3 draws one of 0.25 (FRACTURE_SPOT_DENSITY): give this on 1.2 code only")
    parser.add_argument("--vision", type=json.loads, default=None,
                        help='the encoder with these keys of the tiny vision config replaced (JSON), e.g. '
                             '\'{"hidden_sizes": [16, 32, 64], "depths": [1, 1, 1]}\': a 3-stage ResNet, 8x8 map at 128 px')
    parser.add_argument("--augment", action="store_true",
                        help="train with stage 1's light augmentation (each view of each batch, freshly drawn)")
    parser.add_argument("--head", choices=("views", "study", "cosine", "cosine_bias", "cosine_local"), default="views",
                        help="views: a linear layer over each view's pooled features (the ceiling); study: over their "
                             "mean across views (stage 1's study embedding); cosine: stage 1's zero-shot form, "
                             "scale x (cos(e, positive) - cos(e, negated)) of the L2-normalised projected study "
                             "embedding e against free per-disease prompt vectors, scale learnt and clamped at 100; "
                             "cosine_bias: that plus a learnt bias per disease; cosine_local: cosine's logits averaged with "
                             "stage 1's local ones (the best patches against the prompts)")
    parser.add_argument("--summary-only", action="store_true", help="only rebuild the tables from OUT/runs")
    args = parser.parse_args(argv)
    if not args.summary_only:
        run(args)
    summary = summarize(Path(args.out), f"python benchmarks/decidability.py --out {args.out} --summary-only")
    print((Path(args.out) / "decidability.md").read_text())
    return 0 if summary["runs"] else 1


if __name__ == "__main__":
    sys.exit(main())
