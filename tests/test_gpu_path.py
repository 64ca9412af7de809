"""The GPU path, checked on the CPU: both stages in bf16 (forward, backward, batched generate with
left padding), the measurement models of benchmarks/gpu.py, its table, and the memory plan against
measured figures.

What "dtype right" means here (the policy of ``apply_precision_policy``: frozen weights and buffers
bf16, trainable weights fp32 masters, the step under bf16 autocast):
* losses: every loss the model returns is fp32 (a bf16 loss has ~3 significant digits; the
  cross-entropy and BCE reductions need fp32);
* gradients: finite, fp32 (the masters' dtype), on the parameter's device;
* clue tables (``token_table``, ``state_table``): trainable, so fp32 masters; the clue tokens
  reach the LLM in its embedding dtype;
* prompt bank: a buffer, so stored bf16 on the model's device; its rows stay unit vectors;
* the perception (disease probabilities, which decide the clues against per-observation
  thresholds) comes back fp32, computed in fp32 from the bf16 features.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import pytest
import torch

from conftest import xray_like

ROOT = Path(__file__).resolve().parents[1]
BF16 = torch.bfloat16
# Activations: the estimate against the bytes autograd saves (CPU, bf16 autocast), tiny shapes.
ACTIVATION_TOLERANCE = 0.05


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("trrg_benchmark_gpu", ROOT / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu = _load_benchmark()


def _autocast():
    return torch.autocast("cpu", dtype=BF16)


@pytest.fixture(scope="module")
def pretrain_stage(tiny_tokenizer):
    model, processor = gpu.build_stage("pretrain", "tiny", tiny_tokenizer, "cpu")
    return model, processor, gpu.training_batch("pretrain", model, processor, 4, "cpu")


@pytest.fixture(scope="module")
def finetune_stage(tiny_tokenizer):
    model, processor = gpu.build_stage("finetune", "tiny", tiny_tokenizer, "cpu", lora_r=8)
    return model, processor, gpu.training_batch("finetune", model, processor, 4, "cpu")


def _train_step(model, inputs):
    model.train()
    model.zero_grad(set_to_none=True)
    with _autocast():
        output = model(**inputs)
    output.loss.backward()
    return output


def _check_gradients(model):
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]
    assert trained
    for name, parameter in trained:
        assert parameter.dtype == torch.float32 and parameter.grad.dtype == torch.float32, name
        assert parameter.grad.device == parameter.device and torch.isfinite(parameter.grad).all(), name
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert all(p.dtype == BF16 and p.grad is None for p in frozen)


# ---------------------------------------------------------------------------------------------
# Real-size shapes, built from configs
# ---------------------------------------------------------------------------------------------


def test_measurement_models_have_the_published_shapes():
    from trrg.assembly.memory_plan import build_measurement_model, counting_tokenizer

    finetune = build_measurement_model("finetune", "7b", counting_tokenizer(), device="meta")
    assert sum(p.numel() for p in finetune.language_model.parameters()) == 6_738_415_616  # Llama-2-7B
    assert finetune.language_model.config._attn_implementation == "sdpa"
    assert finetune.vision_model.backbone.config._attn_implementation == "sdpa"
    assert finetune.config.image_size == 224 and finetune.config.image_token_grid == 7
    pretrain = build_measurement_model("pretrain", "7b", counting_tokenizer(), device="meta")
    vit = sum(p.numel() for n, p in pretrain.vision_model.named_parameters() if "pooler" not in n)
    assert vit == 85_798_656  # ViT-B/16 at 224 px without its pooler
    assert pretrain.text_model.config.vocab_size == 30522 and pretrain.text_model.config.num_hidden_layers == 12


# ---------------------------------------------------------------------------------------------
# bf16 on CPU: both stages
# ---------------------------------------------------------------------------------------------


def test_pretrain_bf16_forward_backward(pretrain_stage):
    model, _, inputs = pretrain_stage
    output = _train_step(model, inputs)
    assert torch.isfinite(output.loss) and output.loss.dtype == torch.float32
    assert output.prompt_loss.dtype == torch.float32  # BCE autocasts to fp32
    _check_gradients(model)


def test_pretrain_sentence_loss_is_fp32_under_bf16(pretrain_stage):
    model, _, inputs = pretrain_stage
    with torch.no_grad(), _autocast():
        output = model(**inputs)
    assert output.sentence_loss.dtype == torch.float32


def test_finetune_bf16_lora_forward_backward_and_dtypes(finetune_stage):
    model, _, inputs = finetune_stage
    output = _train_step(model, inputs)
    for name in ("loss", "lm_loss", "consistency_loss"):
        assert getattr(output, name).dtype == torch.float32 and torch.isfinite(getattr(output, name)), name
    _check_gradients(model)
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad and p.grad is not None for p in lora)
    for table in (model.clue_injector.token_table, model.clue_injector.state_table):
        assert table.dtype == torch.float32 and table.grad is not None and torch.isfinite(table.grad).all()
    bank = model.prompt_bank
    assert bank.dtype == BF16 and bank.device == model.logit_scale.device
    assert torch.allclose(bank.float().norm(dim=-1), torch.ones(bank.shape[:2]), atol=1e-2)
    assert output.clue_states.dtype == torch.long and set(output.clue_states.unique().tolist()) <= {0, 1}


def test_finetune_perception_is_fp32_with_bf16_weights(finetune_stage):
    model, processor, _ = finetune_stage
    inputs = processor(images=[[xray_like(1, 64, 64)]], return_tensors="pt")
    probs = model.eval().predict_diseases(inputs["pixel_values"].to(BF16), inputs["view_mask"])
    assert probs.dtype == torch.float32


def test_generate_bf16_batch_with_left_padding_matches_batch_of_one(tiny_tokenizer):
    """Study A (one view) padded on the left beside study B (two views) gives A's own perception
    and first report token; generation runs for both."""
    from trrg.assembly.build import set_generation_defaults
    from trrg.assembly.memory_plan import build_measurement_model
    from trrg.assembly.build import build_processor

    model = build_measurement_model("finetune", "tiny", tiny_tokenizer).to(BF16).eval()
    set_generation_defaults(model)
    processor = build_processor(tiny_tokenizer, model.config)
    study_a, study_b = [xray_like(3, 64, 64)], [xray_like(4, 64, 64), xray_like(5, 64, 64)]
    pair = processor(images=[study_a, study_b], return_tensors="pt")
    alone = processor(images=[study_a], return_tensors="pt")
    assert pair["attention_mask"][0, 0] == 0 and pair["attention_mask"][1].all()  # A is left-padded
    new = 6
    with torch.no_grad():
        both = model.generate(**{**pair, "pixel_values": pair["pixel_values"].to(BF16)}, max_new_tokens=new,
                              min_new_tokens=new)
        one = model.generate(**{**alone, "pixel_values": alone["pixel_values"].to(BF16)}, max_new_tokens=new,
                             min_new_tokens=new)
        probs_pair = model.predict_diseases(pair["pixel_values"].to(BF16), pair["view_mask"])
        probs_one = model.predict_diseases(alone["pixel_values"].to(BF16), alone["view_mask"])
    assert both.shape == (2, pair["input_ids"].shape[1] + new) and one.shape == (1, alone["input_ids"].shape[1] + new)
    assert torch.allclose(probs_pair[0].float(), probs_one[0].float(), atol=1e-2)
    assert both[0, -new] == one[0, -new]


# ---------------------------------------------------------------------------------------------
# The memory plan against measurements
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_memory_estimate_matches_measured_bytes(stage, tiny_tokenizer):
    """Weights, gradients and AdamW states exactly; activations (+ autocast's bf16 weight copies)
    against the bytes autograd saves, within ACTIVATION_TOLERANCE. The CPU has no peak-memory
    counter: the measured figure is what the graph holds at the end of the forward pass."""
    from trrg.assembly.memory_plan import estimate_memory, saved_tensor_bytes, state_bytes

    model, processor = gpu.build_stage(stage, "tiny", tiny_tokenizer, "cpu", lora_r=4)
    inputs = gpu.training_batch(stage, model, processor, 3, "cpu")
    model.train()
    holder = {}

    def forward():
        with _autocast():
            holder["loss"] = model(**inputs).loss

    saved = saved_tensor_bytes(model, forward)
    holder.pop("loss").backward()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    optimizer.step()
    measured = state_bytes(model, optimizer)
    prompt_len = inputs["prompt_input_ids"].shape[1] if stage == "pretrain" else 16
    estimate = estimate_memory(stage, "tiny", lora_r=4, batch=3, seq_len=inputs["input_ids"].shape[1], device="cpu",
                               tokenizer=tiny_tokenizer, prompt_len=prompt_len)
    assert (estimate.weights, estimate.gradients, estimate.optimizer) == (
        measured["weights"], measured["gradients"], measured["optimizer"])
    predicted = estimate.activations + estimate.autocast_copies
    print(f"{stage}: activations + copies estimated {predicted}, saved {saved} ({predicted / saved - 1:+.1%})")
    assert abs(predicted / saved - 1) < ACTIVATION_TOLERANCE, (predicted, saved)


def test_memory_plan_orders_and_doc_table():
    from trrg.assembly.memory_plan import estimate_memory, plan_markdown

    plain = estimate_memory("finetune", "7b", lora_r=16, batch=8, seq_len=256)
    checkpointed = estimate_memory("finetune", "7b", lora_r=16, batch=8, seq_len=256, gradient_checkpointing=True)
    bigger_rank = estimate_memory("finetune", "7b", lora_r=64, batch=8, seq_len=256)
    assert checkpointed.activations < plain.activations / 5 and checkpointed.static == plain.static
    assert bigger_rank.optimizer > plain.optimizer and bigger_rank.params.trained > plain.params.trained
    # 7B frozen weights in bf16: ~13 GiB.
    assert 12.5 < plain.weights / 2**30 < 13.5
    doc = (ROOT / "docs" / "MEMORY_PLAN.md").read_text()
    assert "python benchmarks/gpu.py --memory-plan" in doc
    assert plan_markdown() in doc


# ---------------------------------------------------------------------------------------------
# The benchmark script
# ---------------------------------------------------------------------------------------------


def test_benchmark_runs_tiny_on_cpu_and_prints_its_table(capsys):
    text = gpu.main(["--size", "tiny", "--device", "cpu", "--steps", "1", "--pretrain-batch", "4",
                     "--finetune-batch", "2", "--new-tokens", "3", "--gen-batches", "1,16,64", "--threads", "1"])
    assert text == capsys.readouterr().out.rstrip("\n")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    assert {"pretrain", "finetune (LoRA r=16)", "1", "16", "64"} <= set(rows)
    for stage in ("pretrain", "finetune (LoRA r=16)"):
        cells = [cell.strip() for cell in rows[stage].split("|")[1:-1]]
        step_ms, peak, plan, mfu = float(cells[3]), cells[5], float(cells[6]), cells[9]
        assert step_ms > 0 and plan > 0 and peak == "n/a" and mfu == "n/a"  # GPU-only columns on a CPU
    assert rows["1"].split("|")[3].strip() == "n/a"  # bandwidth bound: no bandwidth known for a CPU
    assert all(math.isfinite(float(rows[b].split("|")[5])) for b in ("1", "16", "64"))
    assert re.search(r"LM weights read per token [\d.e-]+ GiB", text)
