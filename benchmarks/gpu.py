"""The GPU path: training step time, throughput, peak memory and MFU of both stages, and generation
speed against the memory-bandwidth bound, for real-size models built from configs (random weights,
nothing downloaded: ViT-B/16 + BERT-base + a Llama of --size, ``trrg.assembly.memory_plan``).

    python benchmarks/gpu.py                      # on a GPU: --size 7b; on a CPU: --size tiny
    python benchmarks/gpu.py --size 8b --lora-r 16 --gradient-checkpointing --bandwidth-gbs 3350 --peak-tflops 989
    python benchmarks/gpu.py --memory-plan        # the table of docs/MEMORY_PLAN.md (no model is run)

Training: bf16 autocast over fp32 trainable masters and bf16 frozen weights
(``apply_precision_policy``), attention through SDPA, AdamW, synthetic studies of 2 views. The
pretrain stage trains the image and text encoders; the finetune stage is the project's default
policy (``prepare_for_training``: perception frozen, its features cached as the trainer caches
them, LoRA on q/k/v/o of the LM, clue modules trained).

MFU = model FLOPs per step / step time / the card's peak dense bf16 FLOP/s, with model FLOPs
counted from parameters only (no attention-score matmuls, no recomputation):
  pretrain  6 x sum over parts of (matmul parameters x tokens the part runs): ViT linear layers x
            image tokens (CLS included) + patch convolution x patches, BERT linear layers x
            sentence and prompt tokens (every weight trained: forward 2, backward 4).
  finetune  4 x N_LM x T + 6 x N_LoRA x T, N_LM the LM's matmul parameters (lm_head included,
            the embedding table not), T the batch's LM tokens: the frozen LM runs forward (2) and
            passes gradients back to the clue tokens (2) without weight gradients; the cached
            vision encoder does no work; the clue modules (< 1% of the FLOPs at 1B+) are left out.
Generation: greedy, bf16, LoRA merged, KV cache; ms/token = decode time per new token (prefill
excluded) at batch 1, against the bound = bytes of LM weights read per token (bf16, input
embedding table excluded) / memory bandwidth. GPU-only columns print n/a on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext

import numpy as np
import torch

# Spec-sheet figures (dense bf16 tensor FLOP/s, memory bandwidth) of cards this benchmark knows by
# the name torch reports; pass --peak-tflops / --bandwidth-gbs for any other.
KNOWN_CARDS = {  # name fragment: (bandwidth GB/s, peak dense bf16 TFLOP/s)
    "H200": (4800, 989),
    "H100 PCIe": (2000, 756),
    "H100": (3350, 989),
    "A100-SXM4-80GB": (2039, 312),
    "A100 80GB PCIe": (1935, 312),
    "A100-SXM4-40GB": (1555, 312),
    "L40S": (864, 362),
    "L4": (300, 121),
}
NA = "n/a"


def card_figures(device: torch.device, bandwidth_gbs: float | None, peak_tflops: float | None):
    """(name, bandwidth GB/s, peak TFLOP/s): flags first, then the known-card table (GPU only)."""
    if device.type != "cuda":
        return "cpu", bandwidth_gbs, peak_tflops
    name = torch.cuda.get_device_name(device)
    known = next((figures for fragment, figures in KNOWN_CARDS.items() if fragment in name), (None, None))
    return name, bandwidth_gbs or known[0], peak_tflops or known[1]


# ---------------------------------------------------------------------------------------------
# Models and batches
# ---------------------------------------------------------------------------------------------


def report_tokenizer():
    """The report tokenizer the models are built around (its ids are a subset of the real LM's)."""
    from trrg.assembly.report_tokenizer import phantom_report_corpus, train_report_tokenizer

    return train_report_tokenizer(phantom_report_corpus(200, seed=0), vocab_size=600)


def build_stage(stage: str, size: str, tokenizer, device, lora_r: int = 16, gradient_checkpointing: bool = False,
                attn_implementation: str = "sdpa", precision: str = "bf16"):
    """A measurement model of ``stage`` at ``size`` under the project's training policy, on
    ``device`` with the precision policy applied; returns (model, processor)."""
    from trrg.assembly.build import build_processor
    from trrg.assembly.memory_plan import apply_precision_policy, build_measurement_model

    # Built in bf16 on the device (a 7B model in fp32 on the host would not be needed).
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = build_measurement_model(stage, size, tokenizer, dtype=dtype, device=device,
                                    attn_implementation=attn_implementation)
    processor = build_processor(tokenizer, model.config)
    if stage == "finetune":
        from trrg.assembly.memory_plan import LORA_TARGETS
        from trrg.trainers.arguments import TRRGFinetuneArguments
        from trrg.trainers.finetune_trainer import prepare_for_training

        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The plan's targets (q/k/v/o), so measurement and estimate count the same adapters;
            # --lora_target_modules auto picks peft's q/v for Llama.
            args = TRRGFinetuneArguments(output_dir=folder, lora_r=lora_r, report_to="none",
                                         lora_target_modules=",".join(LORA_TARGETS),
                                         use_cpu=torch.device(device).type != "cuda")
            prepare_for_training(model, args)
    if precision == "bf16":
        apply_precision_policy(model)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, processor


def enable_gradient_checkpointing(model) -> None:
    """On the backbones (the TRRG classes themselves declare no support): the LM's decoder layers,
    or the ViT and BERT layers."""
    if hasattr(model, "language_model"):
        language_model = model.language_model
        base = language_model.get_base_model() if hasattr(language_model, "get_base_model") else language_model
        base.activation_checkpointing_enable()
    else:
        model.vision_model.backbone.activation_checkpointing_enable()
        model.text_model.activation_checkpointing_enable()


def synthetic_studies(count: int, image_size: int, views: int = 2, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[(rng.random((image_size, image_size)) * 255).astype(np.uint8) for _ in range(views)]
            for _ in range(count)]


def training_batch(stage: str, model, processor, batch: int, device) -> dict:
    """A training batch as the stage's collator builds it (finetune: cached vision features)."""
    from trrg.assembly.report_tokenizer import phantom_report_corpus
    from trrg.trainers.collators import sentence_group_id

    studies = synthetic_studies(batch, model.config.image_size)
    reports = phantom_report_corpus(batch, seed=1)
    if stage == "pretrain":
        sentences = [report.split(" . ")[0] + " ." for report in reports]
        inputs = {**processor.image_processor(studies, return_tensors="pt"), **processor.encode_sentences(sentences),
                  **processor.encode_disease_prompts(model.config.disease_prompts, model.config.disease_names),
                  "sentence_group_ids": torch.tensor([sentence_group_id(s) for s in sentences]),
                  "disease_labels": torch.zeros(batch, model.config.num_diseases)}
        return _to(inputs, device)
    inputs = _to(dict(processor(images=studies, reports=reports, return_tensors="pt")), device)
    inputs["disease_labels"] = torch.zeros(batch, model.config.num_diseases, device=device)
    with torch.no_grad(), _autocast(device, True):
        inputs["vision_features"] = model.vision_model(inputs.pop("pixel_values"), inputs["view_mask"])
    return inputs


def _to(inputs: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}


def _autocast(device, enabled: bool):
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if enabled else nullcontext()


# ---------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------


def _matmul_parameters(module, skip: tuple[str, ...] = ()) -> int:
    count = 0
    for name, child in module.named_modules():
        if any(part in name for part in skip):
            continue
        if isinstance(child, (torch.nn.Linear, torch.nn.Conv2d)) and not name.endswith(("lora_A.default", "lora_B.default")):
            count += child.weight.numel()
    return count


def train_flops(stage: str, model, inputs: dict) -> float:
    """Model FLOPs of one training step by the formulas of the module docstring."""
    if stage == "pretrain":
        vision = model.vision_model.backbone
        conv = vision.embeddings.patch_embeddings.projection.weight.numel()
        linear = _matmul_parameters(vision, ("pooler", "patch_embeddings"))
        images = int(inputs["view_mask"].sum())
        patches = (model.config.image_size // model.config.vision_config.patch_size) ** 2
        text_tokens = inputs["input_ids"].numel() + inputs["prompt_input_ids"].numel()
        return 6.0 * (linear * images * (patches + 1) + conv * images * patches
                      + _matmul_parameters(model.text_model, ("pooler",)) * text_tokens)
    tokens = inputs["input_ids"].numel()
    lora = sum(p.numel() for n, p in model.language_model.named_parameters() if "lora_" in n)
    return 4.0 * _matmul_parameters(model.language_model) * tokens + 6.0 * lora * tokens


def lm_weight_bytes(model) -> int:
    """Bytes of LM weights one decode step reads (bf16; the input embedding table is only indexed,
    unless tied to the output head)."""
    language_model = model.language_model
    embedding = language_model.get_input_embeddings().weight
    tied = language_model.get_output_embeddings().weight is embedding
    count = sum(p.numel() for p in language_model.parameters()) - (0 if tied else embedding.numel())
    return 2 * count


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure_training(stage: str, model, inputs: dict, steps: int, device, autocast: bool) -> dict:
    """Mean step time (forward, backward, AdamW step) after one warm-up step, and peak memory."""
    cuda = torch.device(device).type == "cuda"
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5,
                                  fused=True if cuda else None)
    model.train()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(steps + 1):
        if step == 1:
            _sync(device)
            start = time.perf_counter()
        with _autocast(device, autocast):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    if not torch.isfinite(loss.detach()).item():
        raise RuntimeError(f"{stage}: the loss is not finite ({loss.item()})")
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    del optimizer
    return {"step_s": seconds, "peak_bytes": peak, "loss": float(loss.detach())}


def measure_generation(model, processor, batches: list[int], new_tokens: int, device) -> dict[int, dict]:
    """Per batch size: decode ms per new token (prefill excluded) and tokens/s (prefill included)."""
    studies = synthetic_studies(max(batches), model.config.image_size, seed=2)
    results = {}
    with torch.no_grad():
        for batch in batches:
            inputs = _to(dict(processor(images=studies[:batch], return_tensors="pt")), device)
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)

            def run(tokens):
                _sync(device)
                start = time.perf_counter()
                model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
                _sync(device)
                return time.perf_counter() - start

            run(2)  # warm-up
            # Best of 3: the decode time is the difference of two runs, which noise could invert.
            prefill, full = min(run(1) for _ in range(3)), min(run(new_tokens) for _ in range(3))
            results[batch] = {"ms_per_token": 1000 * (full - prefill) / max(new_tokens - 1, 1),
                              "tokens_per_s": batch * new_tokens / full, "reports_per_s": batch / full}
    return results


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def _fmt(value, pattern: str) -> str:
    return NA if value is None else pattern.format(value)


def run_benchmark(args) -> str:
    from trrg.assembly.memory_plan import GIB, estimate_memory

    device = torch.device(args.device)
    card, bandwidth, peak_tflops = card_figures(device, args.bandwidth_gbs, args.peak_tflops)
    autocast = args.precision == "bf16"
    tokenizer = report_tokenizer()
    lines = [f"# GPU path benchmark: --size {args.size} on {card} (torch {torch.__version__}), "
             f"{args.precision}, attention {args.attn}, gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}",
             "",
             "| stage | batch | LM/text tokens | step ms | studies/s | peak GiB | plan GiB | TFLOP/step | TFLOP/s | MFU |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    finetune_model = processor = None
    for stage, batch in (("pretrain", args.pretrain_batch), ("finetune", args.finetune_batch)):
        model, processor = build_stage(stage, args.size, tokenizer, device, args.lora_r, args.gradient_checkpointing,
                                       args.attn, args.precision)
        inputs = training_batch(stage, model, processor, batch, device)
        measured = measure_training(stage, model, inputs, args.steps, device, autocast)
        seq_len = inputs["input_ids"].shape[1]
        plan = estimate_memory(stage, args.size, lora_r=args.lora_r, batch=batch, seq_len=seq_len,
                               gradient_checkpointing=args.gradient_checkpointing, tokenizer=tokenizer,
                               device="cuda" if device.type == "cuda" else "cpu",
                               prompt_len=inputs["prompt_input_ids"].shape[1] if stage == "pretrain" else 16)
        flops = train_flops(stage, model, inputs)
        achieved = flops / measured["step_s"]
        mfu = achieved / (peak_tflops * 1e12) if peak_tflops else None
        peak = measured["peak_bytes"] / GIB if measured["peak_bytes"] is not None else None
        label = stage if stage == "pretrain" else f"finetune (LoRA r={args.lora_r})"
        lines.append(f"| {label} | {batch} | {seq_len} | {1000 * measured['step_s']:.1f} | {batch / measured['step_s']:.2f} "
                     f"| {_fmt(peak, '{:.3g}')} | {plan.total / GIB:.3g} | {flops / 1e12:.4g} | {achieved / 1e12:.3g} "
                     f"| {_fmt(mfu, '{:.1%}')} |")
        if stage == "finetune":
            finetune_model = model
        else:
            del model, inputs
            if device.type == "cuda":
                torch.cuda.empty_cache()

    model = finetune_model.eval()
    model.language_model = model.language_model.merge_and_unload()  # generation without LoRA's extra matmuls
    model.to(torch.bfloat16 if autocast else torch.float32)
    weight_bytes = lm_weight_bytes(model)
    bound_ms = 1000 * weight_bytes / (bandwidth * 1e9) if bandwidth else None
    generation = measure_generation(model, processor, args.gen_batches, args.new_tokens, device)
    lines += ["", f"Generation: greedy, {args.new_tokens} new tokens, LM weights read per token "
              f"{weight_bytes / GIB:.4g} GiB, bandwidth {_fmt(bandwidth, '{:g} GB/s')}.", "",
              "| batch | decode ms/token | bound ms/token | bound / measured | tokens/s | reports/s |",
              "|---|---|---|---|---|---|"]
    for batch, result in generation.items():
        bound = bound_ms if batch == 1 else None
        ratio = bound / result["ms_per_token"] if bound else None
        lines.append(f"| {batch} | {result['ms_per_token']:.2f} | {_fmt(bound, '{:.2f}')} | {_fmt(ratio, '{:.0%}')} "
                     f"| {result['tokens_per_s']:.1f} | {result['reports_per_s']:.2f} |")
    if device.type != "cuda":
        lines += ["", "n/a: GPU-only (peak memory from torch.cuda; MFU and the bandwidth bound need "
                  "--peak-tflops / --bandwidth-gbs or a known card). plan GiB: assembly/memory_plan.estimate_memory."]
    return "\n".join(lines)


def parse_args(argv=None):
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="7b" if cuda else "tiny", help="LM size: tiny, 1b, 3b, 7b, 8b")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--steps", type=int, default=10 if cuda else 2, help="timed training steps (after 1 warm-up)")
    parser.add_argument("--pretrain-batch", type=int, default=32)
    parser.add_argument("--finetune-batch", type=int, default=8)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--gen-batches", type=lambda text: [int(x) for x in text.split(",")], default=[1, 16, 64])
    parser.add_argument("--new-tokens", type=int, default=64 if cuda else 16)
    parser.add_argument("--bandwidth-gbs", type=float, help="memory bandwidth (default: the known card's)")
    parser.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s (default: the known card's)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--memory-plan", action="store_true", help="print the memory plan table and exit")
    return parser.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_plan:
        from trrg.assembly.memory_plan import plan_markdown

        text = plan_markdown()
    else:
        text = run_benchmark(args)
    print(text)
    return text


if __name__ == "__main__":
    sys.exit(main() and 0)
