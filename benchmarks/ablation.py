"""The ablation that tests TRRG's claim, on the CXR phantom.

    python benchmarks/ablation.py --out docs/ablation                  # 3 seeds, configurations a-f
    python benchmarks/ablation.py --out docs/ablation --summary-only --configs a b c d e f e_uniform e_mixed e_unweighted
        # no training: rebuilds docs/ablation/ablation.{md,json,png} from docs/ablation/runs, byte for byte
    python benchmarks/ablation.py --out /tmp/abl --seeds 0 --num-train 200 --num-test 100 \
        --pretrain-epochs 2 --finetune-epochs 2                         # a smoke run

Configurations (same data, tokenizer, backbones and training recipe; every arm of a seed starts its
LLM and visual path from the same weights):
  a  plain captioner: vision encoder trained end to end from random init, no clues, no pretrain stage
  b  + stage-1 pre-training (`trrg pretrain`; its vision encoder frozen while fine-tuning), no clues
  c  + clue injection: one (disease, state) token per disease from the zero-shot decisions
  d  + cross-modal clue interaction (gated)
  e  + disease-aware consistency loss (= full TRRG, the defaults)
  f  (e) fed the reference labels as clues at test time: the upper bound clue quality allows
Probes of the training recipe (seed 0 unless asked): e_uniform (no oversampling of rare findings),
e_mixed (half the visits on the model's own clues), e_unweighted (no finding-token weight).
The pretrained model's zero-shot perception on the test split (AUROC, F1@0.5 per observation) is
reported too. Every arm is evaluated as the package decodes (verified decoding) and with plain decoding
(``plain_decoding`` in its run file: verification brings the perception into arms without clue modules);
``false_finding_rate`` (stated findings the reference does not support) is defined for every arm.

Writes OUT/runs/pretrain_seed<k>.json (that perception) and OUT/runs/<config>_seed<k>.json as each
run ends (a crash loses nothing; a rerun skips finished runs), then OUT/ablation.json, OUT/ablation.md
and OUT/ablation.png. The chart needs matplotlib (`pip install -e ".[benchmarks]"`). With
--summary-only nothing is trained, no data is generated and neither torch nor trrg is imported: the
three outputs are rebuilt from OUT/runs alone (the recorded versions are the runs' own).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

ALL_ON = {"use_clue_injection": True, "use_clue_interaction": True}
CONFIGS = {
    "a": {"label": "(a) plain captioner", "pretrained": False, "clue": {"use_clue_injection": False, "use_clue_interaction": False}, "consistency": 0.0},
    "b": {"label": "(b) + stage-1 pre-training", "pretrained": True, "clue": {"use_clue_injection": False, "use_clue_interaction": False}, "consistency": 0.0},
    "c": {"label": "(c) + clue injection", "pretrained": True, "clue": {"use_clue_injection": True, "use_clue_interaction": False}, "consistency": 0.0},
    "d": {"label": "(d) + clue interaction", "pretrained": True, "clue": ALL_ON, "consistency": 0.0},
    "e": {"label": "(e) + consistency loss = TRRG", "pretrained": True, "clue": ALL_ON, "consistency": 0.5},
    # The upper bound clue quality allows: the reference labels as clues at test time too.
    "f": {"label": "(f) TRRG, oracle clues", "pretrained": True, "clue": ALL_ON, "consistency": 0.5, "oracle": True},
    # Training-recipe probes (experiment switches live here, not in the public config):
    "e_mixed": {"label": "(e') TRRG, half the visits on its own clues", "pretrained": True, "clue": ALL_ON, "consistency": 0.5,
                "train": {"reference_clue_rate": 0.5}},
    "f_b32": {"label": "(f) oracle, batch 32", "pretrained": True, "clue": ALL_ON, "consistency": 0.5, "oracle": True,
              "train": {"per_device_train_batch_size": 32}},
    "f_b16": {"label": "(f) oracle, batch 16", "pretrained": True, "clue": ALL_ON, "consistency": 0.5, "oracle": True,
              "train": {"per_device_train_batch_size": 16}},
    "e_b16": {"label": "(e) batch 16", "pretrained": True, "clue": ALL_ON, "consistency": 0.5,
              "train": {"per_device_train_batch_size": 16}},
    "e_uniform": {"label": "(e) uniform sampling", "pretrained": True, "clue": ALL_ON, "consistency": 0.5,
                  "train": {"oversample_rare_findings": False}},
    "e_unweighted": {"label": "(e'') TRRG, no finding-token weight", "pretrained": True, "clue": ALL_ON, "consistency": 0.5,
                     "train": {"finding_token_weight": 1.0}},
}
CLUE_METRICS = {"perception_macro_f1_14", "clue_drop_rate", "clue_unsupported_rate"}
HEADLINE = ["bleu_4", "cider", "ce_micro_f1_14", "ce_macro_f1_14", "perception_macro_f1_14", "ce_macro_f1_5",
            "ce_normal_collapse", "clue_drop_rate", "clue_unsupported_rate"]
# Columns added where the runs carry them (runs before them rebuild unchanged): see finding_truthfulness.
EXTRA = ["false_finding_rate", "clue_unsupported_rate_vs_encoder"]


CHART_METRICS = ("ce_macro_f1_14", "ce_micro_f1_14", "bleu_4", "ce_normal_collapse")


def _studies(data_dir: Path, split: str) -> list[dict]:
    from trrg.processing.studies import load_studies

    return list(load_studies(data_dir)[split])


def pretrain_perception(pretrained, data_dir: Path) -> dict:
    """Zero-shot perception of a pretrain-stage ``(model, processor)`` on ``data_dir``'s test split."""
    import torch

    from trrg.evaluation.perception import perception_scores
    from trrg.assembly.bridge import encode_prompt_bank
    from trrg.processing.studies.schema import CachedStudyReader
    from trrg.trainers.collators import disease_targets

    model, processor = pretrained
    model.eval()
    bank = encode_prompt_bank(model, processor)
    rows = _studies(data_dir, "test")
    reader, probs = CachedStudyReader(), []
    for start in range(0, len(rows), 64):
        kept, views = reader.read_batch(rows[start : start + 64])
        pixels = processor.image_processor(views, return_tensors="pt")
        probs.append(model.predict_diseases(pixels["pixel_values"], pixels["view_mask"], bank))
    targets = disease_targets(rows).numpy()
    return perception_scores(torch.cat(probs).numpy(), targets, model.config.disease_names)


def _run_config(key: str, seed: int, pretrained, data_dir: Path, plan, work: Path) -> dict:
    from trrg.assembly.bridge import bridge
    from trrg.trainers.collators import disease_targets
    from trrg.commands.demo import run_finetune
    from trrg.evaluation.generation import evaluate_model
    from trrg.assembly.build import build_finetune_model

    config = CONFIGS[key]
    started = time.perf_counter()
    if config["pretrained"]:
        model, processor = bridge(None, clue=config["clue"], seed=seed, pretrained=pretrained)
    else:  # the same tokenizer as the pretrained model, so only the encoder's training differs
        model, processor = build_finetune_model("tiny", tokenizer=pretrained[1].tokenizer, clue=config["clue"], seed=seed)
    model.config.clue_config.consistency_loss_weight = config["consistency"]
    model, processor = run_finetune(model, processor, data_dir, work / f"{key}_seed{seed}", plan, seed,
                                    freeze_vision=config["pretrained"], **config.get("train", {}))
    oracle = (lambda rows: disease_targets(rows)) if config.get("oracle") else None
    metrics = evaluate_model(model, processor, _studies(data_dir, "test"), work / f"{key}_seed{seed}_eval",
                             batch_size=64, meteor=False, clue_probs_for=oracle, progress=False)
    metrics["train_and_eval_s"] = time.perf_counter() - started
    metrics["clue_thresholds"] = model.config.clue_config.clue_thresholds
    metrics.update(finding_truthfulness(work / f"{key}_seed{seed}_eval"))
    # Verified decoding (the default) completes and checks the report with the model's perception, so
    # it brings the clues into every arm, even those without a clue module: the arms are compared with
    # plain decoding too, which is what the paper's modules alone do.
    plain = evaluate_model(model, processor, _studies(data_dir, "test"), work / f"{key}_seed{seed}_eval_plain",
                           batch_size=64, meteor=False, clue_probs_for=oracle, progress=False, verify=False)
    plain.update(finding_truthfulness(work / f"{key}_seed{seed}_eval_plain"))
    metrics["plain_decoding"] = {metric: plain.get(metric) for metric in [*HEADLINE, *EXTRA]}
    return metrics


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _written_reports(eval_dir: Path) -> tuple[list[dict], list[str]]:
    predictions = _jsonl(eval_dir / "predictions.jsonl")
    references = {row["id"]: row["report"] for row in _jsonl(eval_dir / "references.jsonl")}
    return predictions, [references[p["id"]] for p in predictions]


def finding_truthfulness(eval_dir: Path, clues_from: Path | None = None) -> dict:
    """How many of the findings an arm's reports state are unsupported, comparable across every arm.

    ``false_finding_rate``: of the 13 findings the reports state positive, the share the reference
    report does not (arms without clues have no clue-unsupported rate; this one needs no clues).
    With ``clues_from`` (another arm's eval folder on the same test studies, e.g. (e) of the same
    seed, whose clues are this stage-1 encoder's zero-shot decisions), also
    ``clue_unsupported_rate_vs_encoder``: the share those clues do not support."""
    from trrg.evaluation.clinical import label_matrix
    from trrg.evaluation.truthfulness import clue_faithfulness
    from trrg.processing.labeler import label_reports

    predictions, references = _written_reports(eval_dir)
    stated = label_reports([p["report"] for p in predictions])
    reference_positive = np.isin(label_matrix(label_reports(references)), (1, -1)).astype(np.int8)
    faithfulness = clue_faithfulness(reference_positive, stated)
    scores = {"false_finding_rate": faithfulness["clue_unsupported_rate"],
              "false_finding_count": faithfulness["clue_unsupported_count"]}
    if clues_from is not None:
        clue_rows, _ = _written_reports(clues_from)
        clues = {row["id"]: row["clues"] for row in clue_rows}
        encoder = clue_faithfulness(np.asarray([clues[p["id"]] for p in predictions], dtype=np.int8), stated)
        scores |= {"clue_unsupported_rate_vs_encoder": encoder["clue_unsupported_rate"],
                   "clue_drop_rate_vs_encoder": encoder["clue_drop_rate"]}
    return scores


def _pretrained_for(seed: int, data_dir: Path, work: Path, plan):
    """The pretrain stage of this seed, trained once and kept (so later configurations reuse it)."""
    import torch

    from trrg.assembly.hub_folders import load_model_folder, save_hub_folder
    from trrg.commands.demo import run_pretrain

    folder = work / f"pretrain_seed{seed}" / "final"
    if (folder / "model.safetensors").exists():
        return load_model_folder(folder, expected="trrg_contrastive")
    torch.manual_seed(seed)
    model, processor = run_pretrain(data_dir, work / f"pretrain_seed{seed}", plan, seed)
    save_hub_folder(model, processor, folder)
    return model, processor


def headline(results: dict) -> list[str]:
    return HEADLINE + [m for m in EXTRA if any(m in run for run in results.values())]


def _summarise(results: dict, keys: list[str], seeds: list[int]) -> dict:
    table, metrics = {}, headline(results)
    for key in keys:
        runs = [results[(key, s)] for s in seeds if (key, s) in results]
        table[key] = {"label": CONFIGS[key]["label"], "seeds": len(runs)}
        for metric in metrics:
            values = [r[metric] for r in runs if r.get(metric) is not None]
            table[key][metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0} if values else None
    return table


def _paired_difference(results: dict, first: str, second: str, seeds: list[int], metric: str) -> dict | None:
    diffs = [results[(first, s)][metric] - results[(second, s)][metric] for s in seeds
             if (first, s) in results and (second, s) in results
             and results[(first, s)].get(metric) is not None and results[(second, s)].get(metric) is not None]
    if not diffs:
        return None
    return {"per_seed": diffs, "mean": float(np.mean(diffs)), "std": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0}


def _summary_table(summary: dict) -> list[str]:
    metrics = [m for m in next(iter(summary.values())) if m not in ("label", "seeds")]
    lines = ["| configuration | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for key, row in summary.items():
        injects = CONFIGS[key]["clue"]["use_clue_injection"]
        cells = [f"{row[m]['mean']:.3f} ± {row[m]['std']:.3f}" if row[m] and (injects or m not in CLUE_METRICS)
                 else "n/a" for m in metrics]
        lines.append(f"| {row['label']} (n={row['seeds']}) | " + " | ".join(cells) + " |")
    return lines


def _markdown(summary: dict, perception: dict, differences: dict, protocol: dict, plain: dict | None = None) -> str:
    lines = ["# Ablation on the CXR phantom (tiny preset, CPU)", "",
             f"Command: `{protocol['command']}`  ", f"Seeds: {protocol['seeds']}; data: {protocol['data']}; "
             f"test studies: {protocol['num_test']}; metrics: `trrg score` protocol (docs/METRICS.md), no METEOR.", "",
             *_summary_table(summary)]
    lines += ["", "perception / clue metrics are n/a for arms that inject no clues (their reports are not written "
              "from a perception). Oracle arm: the perception is the reference labels, so its perception F1 is 1."]
    if plain:
        lines += ["", "The table above decodes as the package ships (verified decoding: every sentence checked against "
                  "the model's clue decisions, missing clues completed), which brings the perception into the arms "
                  "without a clue module too. false_finding_rate: of the 13 findings the reports state, the share the "
                  "reference does not; clue_unsupported_rate_vs_encoder (arms without clues): the share the seed's "
                  "stage-1 clues (those (e) decided) do not support.", "",
                  "## Plain decoding (verification off): the clue modules alone", "", *_summary_table(plain["summary"]),
                  "", "Paired differences over seeds, plain decoding:", ""]
        for name, diff in plain["differences"].items():
            if diff:
                per_seed = ", ".join(f"{d:+.3f}" for d in diff["per_seed"])
                lines.append(f"- {name}: {diff['mean']:+.3f} ± {diff['std']:.3f} (per seed: {per_seed})")
    lines += ["", "## Paired differences over seeds (CE macro-F1, 14 observations)", ""]
    for name, diff in differences.items():
        if diff:
            per_seed = ", ".join(f"{d:+.3f}" for d in diff["per_seed"])
            lines.append(f"- {name}: {diff['mean']:+.3f} ± {diff['std']:.3f} (per seed: {per_seed})")
    lines += ["", "## Stage-1 zero-shot perception on the test split (mean over seeds)", "",
              "| observation | positives | AUROC | F1@0.5 |", "|---|---|---|---|"]
    for name, row in perception.items():
        auroc = "n/a" if row["auroc"] is None else f"{row['auroc']:.3f}"
        f1 = "n/a" if row["f1"] is None else f"{row['f1']:.3f}"
        lines.append(f"| {name} | {row['positives']} | {auroc} | {f1} |")
    return "\n".join(lines) + "\n"


def bar_chart(summary: dict, path: Path, metrics=CHART_METRICS) -> None:
    """A grouped bar chart: per arm, the mean of each metric over seeds, whiskers = std where n > 1.

    Drawn with matplotlib's Agg renderer on its default style (a local matplotlibrc changes
    nothing) and saved without a timestamp or version stamp, so the same summary gives the same bytes."""
    import matplotlib
    import matplotlib.style
    from matplotlib.figure import Figure

    keys = list(summary)
    x = np.arange(len(keys))
    width = 0.8 / len(metrics)
    with matplotlib.style.context("default"), matplotlib.rc_context({"svg.hashsalt": "trrg-ablation"}):
        figure = Figure(figsize=(11, 5.2), dpi=100)
        axes = figure.subplots()
        for m, metric in enumerate(metrics):
            values = [summary[key][metric] for key in keys]
            means = [np.nan if v is None else v["mean"] for v in values]
            errors = [np.nan if v is None or summary[key]["seeds"] < 2 else v["std"] for v, key in zip(values, keys)]
            axes.bar(x + (m - (len(metrics) - 1) / 2) * width, means, width * 0.92, yerr=errors, capsize=2,
                     error_kw={"elinewidth": 1}, label=metric, color=f"C{m}")
        labels = [textwrap.fill(summary[key]["label"], 20, break_on_hyphens=False) + f"\nn={summary[key]['seeds']}" for key in keys]
        axes.set_xticks(x, labels, fontsize=7)
        axes.set_ylim(0, 1.05)
        axes.set_ylabel("mean over seeds")
        axes.grid(axis="y", color="0.9")
        axes.set_axisbelow(True)
        axes.legend(ncols=len(metrics), loc="upper left", fontsize=8, frameon=False)
        axes.set_title("TRRG ablation on the CXR phantom (mean over seeds; whiskers = std over seeds where n > 1)",
                       fontsize=10)
        figure.tight_layout()
        figure.savefig(path, **_no_stamp(path))


def _no_stamp(path: Path) -> dict:
    """savefig options that keep dates and the matplotlib version out of the file."""
    suffix = path.suffix.lower()
    if suffix == ".svg":
        return {"metadata": {"Date": None, "Creator": None}}
    if suffix == ".pdf":
        return {"metadata": {"CreationDate": None, "Creator": None, "Producer": None}}
    return {"metadata": {"Software": None}} if suffix == ".png" else {}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/ablation")
    parser.add_argument("--work", default="runs/ablation", help="training outputs and the phantom data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=["a", "b", "c", "d", "e", "f"], choices=list(CONFIGS))
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--summary-only", action="store_true",
                        help="train nothing: summarise the runs already in OUT/runs (missing ones are left out, n shows how many)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    plan = {"num_train": args.num_train, "num_val": 200, "num_test": args.num_test,
            "pretrain_epochs": args.pretrain_epochs, "finetune_epochs": args.finetune_epochs}
    if args.summary_only:
        if not (out / "runs").is_dir():
            sys.exit(f"ablation: {out / 'runs'} not found: nothing to summarise")
        results, perceptions = _collect(out, args.seeds, args.configs)
    else:
        results, perceptions = _train(out, Path(args.work), args, plan)
    if not perceptions or not results:
        sys.exit(f"ablation: no finished runs of {args.configs} for seeds {args.seeds} in {out / 'runs'}")

    summary = _summarise(results, args.configs, args.seeds)
    names = list(perceptions[0]["per_observation"])
    perception = {n: {"positives": perceptions[0]["per_observation"][n]["positives"],
                      "auroc": _mean([p["per_observation"][n]["auroc"] for p in perceptions]),
                      "f1": _mean([p["per_observation"][n]["f1"] for p in perceptions])} for n in names}
    pairs = {"(e) full TRRG - (a) plain captioner": ("e", "a"),
             "(e) full TRRG - (b) stage 1 only (the clue modules' contribution)": ("e", "b"),
             "(c) clue injection - (b) stage 1 only": ("c", "b"),
             "(d) + clue interaction - (c) clue injection only": ("d", "c"),
             "(e) + consistency loss - (d)": ("e", "d"),
             "(f) oracle clues - (e) zero-shot clues": ("f", "e"),
             "(e) - (e) with uniform sampling (the oversampling of rare findings)": ("e", "e_uniform"),
             "(e') half the visits on own clues - (e)": ("e_mixed", "e"),
             "(e'') no finding-token weight - (e)": ("e_unweighted", "e")}
    differences = {name: _paired_difference(results, first, second, args.seeds, "ce_macro_f1_14")
                   for name, (first, second) in pairs.items()}
    if any("false_finding_rate" in run for run in results.values()):
        differences["(e) full TRRG - (b) stage 1 only, false_finding_rate (not CE)"] = _paired_difference(
            results, "e", "b", args.seeds, "false_finding_rate")
    differences["(e) report - (e) its own perception"] = _paired_difference(
        {**{("report", s): r for (k, s), r in results.items() if k == "e"},
         **{("perception", s): {"ce_macro_f1_14": r.get("perception_macro_f1_14")} for (k, s), r in results.items() if k == "e"}},
        "report", "perception", args.seeds, "ce_macro_f1_14")

    protocol = {"command": "python benchmarks/ablation.py " + " ".join(argv),
                "seeds": args.seeds, "data": f"CXR phantom, data seed {args.data_seed}, {args.num_train} train",
                "num_test": args.num_test, "plan": plan, "versions": _run_versions(results)}
    plain = _plain_decoding(results, args.configs, args.seeds)
    (out / "ablation.json").write_text(json.dumps({"protocol": protocol, "summary": summary, "differences": differences,
                                                   "pretrain_perception": perception,
                                                   **({"plain_decoding": plain} if plain else {}),
                                                   "pretrain_perception_macro": {"auroc": _mean([p["auroc_macro"] for p in perceptions]),
                                                                                 "f1": _mean([p["f1_macro"] for p in perceptions])}}, indent=1))
    markdown = _markdown(summary, perception, differences, protocol, plain)
    (out / "ablation.md").write_text(markdown)
    bar_chart(summary, out / "ablation.png")
    print(markdown)


def _plain_decoding(results: dict, keys: list[str], seeds: list[int]) -> dict | None:
    """The summary and paired differences of the runs' plain-decoding evaluations (None without any)."""
    plain = {run_key: run["plain_decoding"] for run_key, run in results.items() if "plain_decoding" in run}
    if not plain:
        return None
    differences = {f"{metric}, ({first}) - ({second})": _paired_difference(plain, first, second, seeds, metric)
                   for first, second in (("e", "b"), ("e", "a")) for metric in ("ce_macro_f1_14", "false_finding_rate")}
    return {"summary": _summarise(plain, [k for k in keys if any(rk[0] == k for rk in plain)], seeds),
            "differences": differences}


def _train(out: Path, work: Path, args, plan: dict) -> tuple[dict, list]:
    """Train and evaluate what OUT/runs lacks (the phantom is generated first if WORK has none)."""
    from trrg.commands.demo import DemoPlan
    from trrg.processing.phantom import generate_phantom

    (out / "runs").mkdir(parents=True, exist_ok=True)
    data_dir = work / "phantom"
    if not (data_dir / "annotation.json").exists():
        generate_phantom(data_dir, num_train=args.num_train, num_val=plan["num_val"], num_test=args.num_test,
                         seed=args.data_seed)
    demo_plan = DemoPlan(**plan)
    results, perceptions = {}, []
    for seed in args.seeds:
        pending = [k for k in args.configs if not (out / "runs" / f"{k}_seed{seed}.json").exists()]
        perception_file = out / "runs" / f"pretrain_seed{seed}.json"
        pretrained = None
        if pending or not perception_file.exists():
            pretrained = _pretrained_for(seed, data_dir, work, demo_plan)
            perception_file.write_text(json.dumps(pretrain_perception(pretrained, data_dir), indent=1))
        perceptions.append(json.loads(perception_file.read_text()))
        for key in args.configs:
            path = out / "runs" / f"{key}_seed{seed}.json"
            if not path.exists():
                print(f"== seed {seed}: {CONFIGS[key]['label']}", flush=True)
                path.write_text(json.dumps(_run_config(key, seed, pretrained, data_dir, demo_plan, work), indent=1))
            results[(key, seed)] = json.loads(path.read_text())
        _add_encoder_support(out, work, seed, args.configs, results)
    return results, perceptions


def _add_encoder_support(out: Path, work: Path, seed: int, keys: list[str], results: dict) -> None:
    """For the arms without clues, how much of what they state the seed's stage-1 perception (the
    clues (e) decided) supports: (e)'s clue-unsupported rate, measured on them."""
    if "e" not in keys:
        return
    for key in keys:
        run = results[(key, seed)]
        if CONFIGS[key]["clue"]["use_clue_injection"] or run.get("clue_unsupported_rate_vs_encoder") is not None:
            continue
        run.update(finding_truthfulness(work / f"{key}_seed{seed}_eval", clues_from=work / f"e_seed{seed}_eval"))
        if "plain_decoding" in run:
            run["plain_decoding"].update(finding_truthfulness(work / f"{key}_seed{seed}_eval_plain",
                                                              clues_from=work / f"e_seed{seed}_eval"))
        (out / "runs" / f"{key}_seed{seed}.json").write_text(json.dumps(run, indent=1))


def _collect(out: Path, seeds, keys) -> tuple[dict, list]:
    results, perceptions = {}, []
    for seed in seeds:
        for key in keys:
            path = out / "runs" / f"{key}_seed{seed}.json"
            if path.exists():
                results[(key, seed)] = json.loads(path.read_text())
        perception_file = out / "runs" / f"pretrain_seed{seed}.json"
        if perception_file.exists():
            perceptions.append(json.loads(perception_file.read_text()))
    return results, perceptions


def _run_versions(results: dict) -> dict:
    """The package versions the runs were measured with (each run records them), not this process's."""
    seen: dict[str, list] = {}
    for run in results.values():
        for name, version in (run.get("versions") or {}).items():
            if version not in seen.setdefault(name, []):
                seen[name].append(version)
    return {name: values[0] if len(values) == 1 else values for name, values in seen.items()}


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


if __name__ == "__main__":
    main()
