"""Backbone families through the path a user takes: small random models of each architecture, built
from config here and saved as ordinary Hugging Face folders (a tokenizer beside each text model and
LM), passed by path to ``trrg init`` -> ``trrg pretrain`` -> ``trrg bridge --llm`` -> ``trrg finetune
--lora_r 4`` -> ``trrg evaluate`` -> ``trrg export``; then one interpreter without ``trrg`` loads every
exported folder by remote code, in bf16, and generates.

Each LM is one row; the vision and text families cycle over the rows. The rows' facts make the table
"Backbones tried" in docs/FINETUNE_ON_YOUR_DATA.md; the test fails when the doc differs, and
``TRRG_WRITE_BACKBONES_TABLE=1`` (the command the doc prints) rewrites it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import transformers
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "FINETUNE_ON_YOUR_DATA.md"
TABLE_START, TABLE_END = "<!-- backbones-tried: generated -->", "<!-- /backbones-tried -->"
REGENERATE = "TRRG_WRITE_BACKBONES_TABLE=1 python -m pytest tests/test_backbone_families.py -m slow -q"

SMALL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


# ---------------------------------------------------------------------------------------------
# The families, each a tiny model built from its config (image side 32: the processor follows it)
# ---------------------------------------------------------------------------------------------

VISION = {
    "ViT": lambda: transformers.ViTModel(transformers.ViTConfig(image_size=32, patch_size=8, **SMALL)),
    "Dinov2": lambda: transformers.Dinov2Model(transformers.Dinov2Config(image_size=32, patch_size=8, **SMALL)),
    "SigLIP vision": lambda: transformers.SiglipVisionModel(transformers.SiglipVisionConfig(image_size=32, patch_size=8,
                                                                                            **SMALL)),
    "Swin": lambda: transformers.SwinModel(transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                                                   num_heads=[2, 2], window_size=4)),
    "ConvNeXt": lambda: transformers.ConvNextModel(transformers.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1],
                                                                               num_stages=2, image_size=32)),
    "ResNet": lambda: transformers.ResNetModel(transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16],
                                                                         depths=[1, 1], image_size=32)),
}

# Text encoders: the tokenizer has no <image>/<clue>, so init adds them and the embeddings must hold them.
# RoBERTa's vocabulary is padded by 2 unused rows, as real checkpoints pad theirs.
TEXT = {
    "BERT": lambda ids: transformers.BertModel(transformers.BertConfig(vocab_size=ids["vocab"], max_position_embeddings=96,
                                                                       pad_token_id=ids["pad"], **SMALL)),
    "RoBERTa": lambda ids: transformers.RobertaModel(transformers.RobertaConfig(
        vocab_size=ids["vocab"] + 2, max_position_embeddings=96, pad_token_id=ids["pad"], bos_token_id=ids["bos"],
        eos_token_id=ids["eos"], **SMALL)),
}


def _lm_config(config_class, ids, **extra):
    return config_class(vocab_size=ids["vocab"], pad_token_id=ids["pad"], bos_token_id=ids["bos"],
                        eos_token_id=ids["eos"], max_position_embeddings=512, num_key_value_heads=1,
                        **{**SMALL, **extra})


LMS = {
    "Llama": lambda ids: transformers.LlamaForCausalLM(_lm_config(transformers.LlamaConfig, ids)),
    "Qwen2": lambda ids: transformers.Qwen2ForCausalLM(_lm_config(transformers.Qwen2Config, ids)),
    "Qwen3": lambda ids: transformers.Qwen3ForCausalLM(_lm_config(transformers.Qwen3Config, ids, head_dim=16)),
    "Gemma 2": lambda ids: transformers.Gemma2ForCausalLM(_lm_config(transformers.Gemma2Config, ids, head_dim=16,
                                                                     query_pre_attn_scalar=16, sliding_window=32)),
    # Gemma3ForCausalLM with a text config; its embedding module scales the table by sqrt(width)
    "Gemma 3": lambda ids: transformers.Gemma3ForCausalLM(_lm_config(transformers.Gemma3TextConfig, ids, head_dim=16,
                                                                     query_pre_attn_scalar=16, sliding_window=32)),
    "Phi-3": lambda ids: transformers.Phi3ForCausalLM(_lm_config(transformers.Phi3Config, ids)),
    "Mistral": lambda ids: transformers.MistralForCausalLM(_lm_config(transformers.MistralConfig, ids, head_dim=16)),
    "GPT-2": lambda ids: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=ids["vocab"], n_positions=512, n_embd=32, n_layer=1, n_head=2, bos_token_id=ids["bos"],
        eos_token_id=ids["eos"], pad_token_id=ids["pad"])),
}


@dataclass
class Row:
    lm: str
    vision: str
    text: str


ROWS = [Row(lm, list(VISION)[i % len(VISION)], list(TEXT)[i % len(TEXT)]) for i, lm in enumerate(LMS)]


def plain_tokenizer():
    """A byte-level BPE tokenizer of report text without TRRG's placeholders, as a real model's is."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from trrg.assembly.report_tokenizer import SPECIAL_TOKENS, phantom_report_corpus

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(phantom_report_corpus(200), trainer=trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)


# ---------------------------------------------------------------------------------------------
# LoRA targets (fast)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family, expected", [("Llama", ["q_proj", "v_proj"]), ("GPT-2", ["c_attn"]),
                                              ("Phi-3", ["o_proj", "qkv_proj"]), ("Gemma 2", ["q_proj", "v_proj"])])
def test_default_lora_targets_fit_the_architecture(family, expected):
    """peft's defaults where peft knows the model type (Llama, GPT-2's Conv1D, Gemma 2); Phi-3, which
    peft does not list, gets the linear layers of its attention (the fused qkv_proj and o_proj)."""
    from peft import LoraConfig, get_peft_model

    from trrg.trainers.lora_targets import default_lora_targets

    torch.manual_seed(0)
    lm = LMS[family]({"vocab": 64, "pad": 0, "bos": 1, "eos": 2})
    targets = default_lora_targets(lm)
    assert targets == expected
    adapted = get_peft_model(lm, LoraConfig(r=2, target_modules=targets))
    wrapped = {name.rsplit(".", 1)[-1] for name, module in adapted.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == set(expected)


def test_lora_targets_outside_peft_are_the_attention_linears():
    from trrg.trainers.lora_targets import attention_linear_names, default_lora_targets

    lm = LMS["Llama"]({"vocab": 64, "pad": 0, "bos": 1, "eos": 2})
    assert attention_linear_names(lm) == ["k_proj", "o_proj", "q_proj", "v_proj"]  # the MLP's are not
    lm.config.model_type = "an_architecture_peft_does_not_list"
    assert default_lora_targets(lm) == ["k_proj", "o_proj", "q_proj", "v_proj"]


# ---------------------------------------------------------------------------------------------
# The matrix (slow): every command in-process, one remote-code interpreter beside them
# ---------------------------------------------------------------------------------------------

REMOTE_GENERATE = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class BlockTRRG(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "trrg" or name.startswith("trrg."):
                raise ImportError("trrg is not installed for this user")
    sys.meta_path.insert(0, BlockTRRG())
    import numpy as np, torch
    from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor
    image = (np.random.default_rng(0).random((64, 64)) * 255).astype("uint8")
    results, folders = {}, []
    for line in sys.stdin:  # each export as soon as the test has written it: this runs beside the training
        folder = line.strip()
        folders.append(folder)
        # bf16 runs on any CPU torch supports (natively with AVX512-BF16/AMX, converted elsewhere)
        model = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype=torch.bfloat16).eval()
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        inputs = processor(images=[[image, image]], return_tensors="pt")
        ids = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3)
        results[folder] = {"module": type(model).__module__, "lm_dtype": str(model.language_model.dtype),
                           "clue_table_dtype": str(model.clue_injector.token_table.dtype),
                           "attention": model.language_model.config._attn_implementation,
                           "new_tokens": ids.shape[1] - inputs["input_ids"].shape[1]}
    # the stage-2 model is an image-text-to-text model for the Auto classes too
    results["image_text_to_text"] = type(AutoModelForImageTextToText.from_pretrained(
        folders[0], trust_remote_code=True)).__name__
    print(json.dumps(results))
    """
)


def _run(command: str, argv: list[str]) -> None:
    """``trrg COMMAND ARGV`` in this process (the command module's ``main``: errors keep their traceback)."""
    import importlib

    from trrg import cli

    assert importlib.import_module(f"trrg.commands.{cli.COMMANDS[command][0]}").main(argv) == 0, (command, argv)


def _save(model, folder: Path, tokenizer=None) -> str:
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return str(folder)


def _tensors(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
    with safe_open(folder / "model.safetensors", "pt") as weights:
        return {key: weights.get_tensor(key) for key in weights.keys() if key.startswith(prefix)}


def _vocab_size(folder: Path) -> int:
    """The vocabulary a TRRG folder's config.json gives its text encoder or LM (the weights agree, or it
    would not have loaded in the next command)."""
    return json.loads((folder / "config.json").read_text())["text_config"]["vocab_size"]


def _train_row(row: Row, tokenizer, ids: dict, data: Path, work: Path) -> dict:
    """One row through every command; returns what the table reports."""
    from trrg.trainers.lora_targets import default_lora_targets

    torch.manual_seed(0)
    lm = LMS[row.lm](ids)
    lm_rows = lm.get_input_embeddings().num_embeddings
    vision = _save(VISION[row.vision](), work / "vision")
    text_model = TEXT[row.text](ids)
    text_rows = text_model.get_input_embeddings().num_embeddings
    text = _save(text_model, work / "text", tokenizer)
    llm = _save(lm, work / "llm", tokenizer)
    _run("init", ["--preset", "base", "--stage", "pretrain", "--vision", vision, "--text", text, "--out", str(work / "init")])
    steps = ["--max_steps", "1", "--per_device_train_batch_size", "4", "--eval_split", "", "--save_strategy", "no",
             "--logging_strategy", "no", "--use_cpu", "True", "--warmup_steps", "0"]  # warm-up: a first step at lr 0
    _run("pretrain", ["--model", str(work / "init"), "--data", str(data), "--output_dir", str(work / "s1"), *steps])
    _run("bridge", ["--pretrain_model", str(work / "s1" / "final"), "--llm", llm, "--out", str(work / "bridged")])
    _run("finetune", ["--model", str(work / "bridged"), "--data", str(data), "--output_dir", str(work / "s2"),
                      "--lora_r", "4", "--learning_rate", "1e-2", *steps])
    _run("evaluate", ["--model", str(work / "s2" / "final"), "--data", str(data), "--out", str(work / "eval"),
                      "--max_new_tokens", "4", "--no_meteor"])
    _run("export", ["--checkpoint", str(work / "s2" / "final"), "--out", str(work / "export"),
                    "--metrics", str(work / "eval" / "metrics.json")])

    # LoRA (the default targets, merged at export) changed those LM weights and no other.
    targets = default_lora_targets(lm)
    before, after = _tensors(work / "bridged", "language_model."), _tensors(work / "export", "language_model.")
    changed = sorted({key.split(".")[-2] for key in before if not torch.equal(before[key], after[key])})
    assert changed == sorted(targets), (row.lm, changed, targets)
    return {"export": work / "export", "lora": targets, "text_rows": (text_rows, _vocab_size(work / "init")),
            "lm_rows": (lm_rows, _vocab_size(work / "bridged"))}


def backbones_table(rows: list[Row], facts: list[dict]) -> str:
    def rows_change(before: int, after: int) -> str:
        return f"{before} -> {after}" if after != before else f"{after} (kept)"

    lines = ["| LM | vision | text encoder | LoRA targets (default) | LM attention (as loaded) | text encoder embedding rows "
             "| LM embedding rows |", "|---|---|---|---|---|---|---|"]
    for row, fact in zip(rows, facts):
        lines.append(f"| {row.lm} | {row.vision} | {row.text}{' (padded vocabulary)' if row.text == 'RoBERTa' else ''} | "
                     f"{', '.join(fact['lora'])} | {fact['attention']} | {rows_change(*fact['text_rows'])} | "
                     f"{rows_change(*fact['lm_rows'])} |")
    return "\n".join(lines)


@pytest.mark.slow
def test_every_backbone_family_trains_exports_and_generates_by_remote_code(tmp_path):
    from trrg.processing.phantom import generate_phantom

    data = tmp_path / "phantom"
    generate_phantom(data, num_train=16, num_val=4, num_test=4, image_size=64, seed=0)
    tokenizer = plain_tokenizer()
    ids = {"vocab": len(tokenizer), "pad": tokenizer.pad_token_id, "bos": tokenizer.bos_token_id,
           "eos": tokenizer.eos_token_id}
    # The interpreter without trrg starts now and loads each export while the next row trains (one
    # thread each, two cores); stderr to a file, not a pipe: a full pipe would stall it.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    errors_file = tmp_path / "remote.stderr"
    with open(errors_file, "w") as errors:
        remote = subprocess.Popen([sys.executable, "-c", REMOTE_GENERATE], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=errors, text=True, env=env, cwd=tmp_path)
    try:
        facts = []
        for row in ROWS:
            facts.append(_train_row(row, tokenizer, ids, data, tmp_path / row.lm.replace(" ", "_")))
            remote.stdin.write(f"{facts[-1]['export']}\n")
            remote.stdin.flush()
        stdout, _ = remote.communicate(timeout=300)
    finally:
        remote.kill()  # a no-op once it has ended; a failed row leaves no interpreter waiting for input
        remote.wait()
    assert remote.returncode == 0, errors_file.read_text()[-3000:]
    loaded = json.loads(stdout.strip().splitlines()[-1])
    for row, fact in zip(ROWS, facts):
        result = loaded[str(fact["export"])]
        assert result["module"].startswith("transformers_modules."), row  # the folder's code, not the package
        assert (result["lm_dtype"], result["clue_table_dtype"]) == ("torch.bfloat16", "torch.float32"), row
        assert result["new_tokens"] == 3, row
        fact["attention"] = result["attention"]
    assert loaded["image_text_to_text"] == "TRRGForConditionalGeneration"

    table = backbones_table(ROWS, facts)
    assert f"Command: `{REGENERATE}`" in GUIDE.read_text(encoding="utf-8")
    before, rest = GUIDE.read_text(encoding="utf-8").split(TABLE_START)
    documented, after = rest.split(TABLE_END)
    if os.environ.get("TRRG_WRITE_BACKBONES_TABLE") == "1":
        GUIDE.write_text(f"{before}{TABLE_START}\n{table}\n{TABLE_END}{after}", encoding="utf-8")
    else:
        assert documented.strip() == table, f"docs/FINETUNE_ON_YOUR_DATA.md's table is stale: run {REGENERATE}"
