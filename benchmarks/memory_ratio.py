"""Peak resident memory of the real-size model path (init, bridge, export, loading) against the
checkpoint's bytes, each step in its own process.

    python benchmarks/memory_ratio.py [--llm-layers 12] [--llm-dtype float32] [--encoders base] [--json FILE]

Built from configs with random weights (nothing is downloaded): a Qwen2ForCausalLM with
Qwen2.5-0.5B's widths and 151,936-row vocabulary but ``--llm-layers`` of its 24 layers (12: 315 M
parameters, 1.26 GB of fp32 safetensors), saved with ``save_pretrained`` next to a tokenizer of
Qwen2's length (151,665: the table is padded beyond it, as Qwen2's is); a ViT-B/16 and a BERT-base
(``--encoders small``: a 4-layer ViT and a 2-layer BERT) saved by path; and the stage-1 folder
``trrg init --preset base --stage pretrain`` makes of them. Then each step runs in a fresh
interpreter that reports its own peak resident set when it ends (``VmHWM`` of ``/proc/self/status``,
Linux: the high-water mark of this process only, nothing inherited from the one that started it):

    init     trrg init --preset base --vision VIT --llm QWEN2 --out INIT   (stage 2, built directly)
    bridge   trrg bridge --preset base --pretrain_model STAGE1 --llm QWEN2 --out BRIDGED
    export   trrg export --checkpoint BRIDGED --out EXPORTED
    load     AutoModel.from_pretrained(BRIDGED, trust_remote_code=True), then every weight read once

"checkpoint" is the size of the ``model.safetensors`` the step writes (init, bridge, export) or
reads (load); "ratio" is peak / checkpoint, the figure RESULTS.md keeps (goal: at most 1.35).
"baseline" is a process that only imports what the steps import (torch, transformers, the model
classes, ``trrg``): the interpreter's and libraries' share of every peak; "excess" is
(peak - baseline) / checkpoint, the copies of the weights a step holds at once. The anonymous and
mapped-file parts are sampled every 5 ms (their peaks need not coincide): safetensors are memory-
mapped, so weights read from a file count as mapped pages (reclaimable page cache), weights made
or converted in memory as anonymous ones. Takes ~2 minutes on 2 cores; other processes do not
change the figures (memory, not time). ``--tiny`` runs the same steps on a toy LLM (a test keeps
the script working).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 1.35
# Qwen2.5-0.5B's widths (config.json of Qwen/Qwen2.5-0.5B), fewer layers to land near 300 M parameters.
QWEN2_WIDTHS = {"vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14,
                "num_key_value_heads": 2, "max_position_embeddings": 32768, "tie_word_embeddings": True,
                "rope_theta": 1000000.0, "bos_token_id": 151643, "eos_token_id": 151643}
QWEN2_TOKENIZER_SIZE = 151665  # len() of Qwen2's tokenizer: its config's vocab_size is padded beyond it
TINY_WIDTHS = {**QWEN2_WIDTHS, "vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128,
               "num_attention_heads": 4, "max_position_embeddings": 512, "bos_token_id": 1000, "eos_token_id": 1000}
TINY_TOKENIZER_SIZE = 1000

# Around the code a fresh interpreter runs: a thread samples the anonymous and the file-backed
# (memory-mapped files, libraries) parts of the resident set every 5 ms; at the end the process
# prints its peak (VmHWM, exact) and the sampled peaks of the two parts.
SAMPLE = """
import threading, time
def _resident():
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    return {key: int(status[key].split()[0]) for key in ("VmHWM", "RssAnon", "RssFile")}
_peaks = {"RssAnon": 0, "RssFile": 0}
def _sample():
    while True:
        now = _resident()
        for key in _peaks:
            _peaks[key] = max(_peaks[key], now[key])
        time.sleep(0.005)
threading.Thread(target=_sample, daemon=True).start()
"""
PRINT_PEAK = """
print(__import__("json").dumps({"peak": _resident()["VmHWM"] * 1024, "anon": _peaks["RssAnon"] * 1024,
                                "file": _peaks["RssFile"] * 1024}))
"""

# One step in its own interpreter: python -c STEP NAME ARGS...
STEP = """
import sys
step, args = sys.argv[1], sys.argv[2:]
if step == "load":  # then read every weight once, as the first forward does (safetensors are mapped lazily)
    from transformers import AutoModel
    model = AutoModel.from_pretrained(args[0], trust_remote_code=True)
    sum(float(tensor.float().sum()) for tensor in model.state_dict().values())
elif step == "baseline":  # what the steps import, nothing run
    import torch, transformers, safetensors.torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.qwen2 import modeling_qwen2
    from transformers.models.vit import modeling_vit
    from transformers.models.bert import modeling_bert
    import trrg.commands.init, trrg.commands.bridge, trrg.commands.export
    from trrg.modeling import modeling_trrg
else:
    from trrg.cli import main
    if main([step, *args]) != 0:
        raise SystemExit(f"trrg {step} failed")
"""


def peak_of(code: str, *args, env: dict) -> dict:
    """Peak resident bytes of ``python -c code args...`` in a fresh interpreter, from its own VmHWM
    (Linux: that process's high-water mark, nothing inherited from this one), with the sampled
    peaks of its anonymous and file-backed parts and the seconds it took."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", SAMPLE + code + PRINT_PEAK, *map(str, args)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args[:2]))} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "seconds": time.perf_counter() - start}


def run_step(step: str, *args, env: dict) -> dict:
    return peak_of(STEP, step, *args, env=env)


# ---------------------------------------------------------------------------------------------
# The model folders a user would have downloaded, built from configs
# ---------------------------------------------------------------------------------------------


def qwen2_tokenizer(size: int):
    """A word-level tokenizer of Qwen2's length with its special tokens (no merges to train: only
    its length matters here, as the embedding table follows it)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    words = specials + [f"w{index}" for index in range(size - len(specials))]
    backend = Tokenizer(models.WordLevel({word: index for index, word in enumerate(words)}, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


# Stage-1 encoders: "base" is ViT-B/16 + BERT-base (the sizes a user brings), "small" a cheap stand-in.
ENCODERS = {
    "base": ({"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
             {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}),
    "small": ({"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 3, "intermediate_size": 768},
              {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256}),
}


def save_backbones(work: Path, llm_layers: int, llm_dtype: str, encoders: str, tiny: bool = False) -> dict[str, Path]:
    """Folders of a Qwen2 LM (+ tokenizer), a ViT and a BERT (+ tokenizer), random weights."""
    import torch
    from transformers import BertConfig, BertModel, Qwen2Config, Qwen2ForCausalLM, ViTConfig, ViTModel

    from trrg.assembly.report_tokenizer import phantom_report_corpus, train_report_tokenizer

    torch.manual_seed(0)
    folders = {name: work / name for name in ("qwen2", "vit", "bert")}
    widths, tokenizer_size = (TINY_WIDTHS, TINY_TOKENIZER_SIZE) if tiny else (QWEN2_WIDTHS, QWEN2_TOKENIZER_SIZE)
    llm = Qwen2ForCausalLM(Qwen2Config(num_hidden_layers=llm_layers, dtype=llm_dtype, **widths))
    llm.to(getattr(torch, llm_dtype)).save_pretrained(folders["qwen2"])
    qwen2_tokenizer(tokenizer_size).save_pretrained(folders["qwen2"])
    del llm
    vision, text = ENCODERS[encoders]
    ViTModel(ViTConfig(image_size=224, patch_size=16, **vision), add_pooling_layer=False).save_pretrained(folders["vit"])
    text_tokenizer = train_report_tokenizer(phantom_report_corpus(200, seed=0), vocab_size=600)
    BertModel(BertConfig(vocab_size=len(text_tokenizer), max_position_embeddings=128, **text)).save_pretrained(folders["bert"])
    text_tokenizer.save_pretrained(folders["bert"])
    return folders


def weight_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


def measure(work: Path, llm_layers: int, llm_dtype: str, encoders: str, tiny: bool = False) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "HF_MODULES_CACHE": str(work / "modules")}  # remote code lands in work/
    backbones = save_backbones(work, llm_layers, llm_dtype, encoders, tiny)
    stage1, init, bridged, exported = (work / name for name in ("stage1", "init", "bridged", "exported"))
    from trrg.cli import main as trrg  # the stage-1 folder is an input, not a measured step: built here

    if trrg(["init", "--preset", "base", "--stage", "pretrain", "--vision", str(backbones["vit"]),
             "--text", str(backbones["bert"]), "--out", str(stage1)]) != 0:
        raise RuntimeError("trrg init --stage pretrain failed")
    steps = {
        "baseline": (("baseline",), None),
        "init": (("init", "--preset", "base", "--vision", backbones["vit"], "--llm", backbones["qwen2"], "--out", init), init),
        "bridge": (("bridge", "--preset", "base", "--pretrain_model", stage1, "--llm", backbones["qwen2"],
                    "--out", bridged), bridged),
        "export": (("export", "--checkpoint", bridged, "--out", exported), exported),
        "load": (("load", bridged), bridged),
    }
    rows = {}
    for name, (argv, folder) in steps.items():
        rows[name] = {**run_step(*argv, env=env), "checkpoint": weight_bytes(folder) if folder else None}
    return {"llm_bytes": weight_bytes(backbones["qwen2"]), "stage1_bytes": weight_bytes(stage1), "llm_layers": llm_layers,
            "llm_dtype": llm_dtype, "encoders": encoders, "steps": rows}


def table(result: dict) -> str:
    baseline = result["steps"]["baseline"]["peak"]
    lines = ["| step | peak RSS | of it, anonymous / mapped files | checkpoint | ratio | excess over baseline | s |",
             "|---|---|---|---|---|---|---|"]
    for name, row in result["steps"].items():
        parts = f"{row['anon'] / 1e9:.2f} / {row['file'] / 1e9:.2f} GB"
        if row["checkpoint"] is None:
            lines.append(f"| {name} (imports only) | {row['peak'] / 1e9:.2f} GB | {parts} | | | | {row['seconds']:.0f} |")
            continue
        ratio, excess = row["peak"] / row["checkpoint"], (row["peak"] - baseline) / row["checkpoint"]
        flag = "" if ratio <= GOAL else " (over)"
        lines.append(f"| {name} | {row['peak'] / 1e9:.2f} GB | {parts} | {row['checkpoint'] / 1e9:.2f} GB | "
                     f"{ratio:.2f}x{flag} | {excess:.2f}x | {row['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm-layers", type=int, default=12, help="Qwen2 layers (12: 315 M parameters)")
    parser.add_argument("--llm-dtype", choices=("float32", "bfloat16"), default="float32",
                        help="dtype of the saved LLM (downloaded checkpoints are mostly bfloat16)")
    parser.add_argument("--encoders", choices=sorted(ENCODERS), default="base",
                        help="stage-1 ViT + BERT sizes (base: ViT-B/16 + BERT-base)")
    parser.add_argument("--tiny", action="store_true", help="a toy LLM and small encoders: checks the script runs")
    parser.add_argument("--work", type=Path, default=None, help="folder for the models (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        result = measure(Path(work), args.llm_layers, args.llm_dtype, "small" if args.tiny else args.encoders, args.tiny)
    print(f"Qwen2 LM: {args.llm_layers} layers, {result['llm_bytes'] / 1e9:.2f} GB of {args.llm_dtype} safetensors; "
          f"stage 1 ({result['encoders']} ViT + BERT): {result['stage1_bytes'] / 1e9:.2f} GB; "
          f"goal: every step at most {GOAL}x its checkpoint")
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
