"""The accelerate configs of trainers/accelerate_configs/ are read the way `accelerate launch` reads
them, and the FSDP wrap policy names layer classes the built models have.

What runs here (CPU, no deepspeed installed):
* every yaml loads as accelerate's ``ClusterConfig``; every key of ``fsdp_config`` and
  ``deepspeed_config`` is an `accelerate launch` option; the environment `accelerate launch` would
  set is built and accelerate's ``FullyShardedDataParallelPlugin`` / ``DeepSpeedPlugin`` are
  constructed from it (``DeepSpeedPlugin`` needs no deepspeed; the DeepSpeed engine itself, and the
  Trainer's DeepSpeed config processing, which imports deepspeed, are not run);
* the FSDP transformer-layer classes are resolved by accelerate's own FSDP2 policy builder on
  finetune models of the tiny and 7B shapes;
* a 2-process FSDP2 step on CPU (gloo). Accelerate itself never enables FSDP on a CPU
  (``AcceleratorState`` only switches to FSDP from a GPU-type distributed setup) and FSDP1 needs an
  accelerator device, so the step calls torch's ``fully_shard`` the way accelerate's
  ``fsdp2_prepare_model`` does, with the wrap policy and options from fsdp.yaml. It records that
  FSDP2 shards the model as it is (``logit_scale`` is a 1-element parameter: FSDP2 rejects 0-dim ones).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "trainers" / "accelerate_configs"
NAMES = ("ddp", "ddp_cpu", "multi_node", "fsdp", "deepspeed_zero2", "deepspeed_zero3")
# DeepSpeed values the HF Trainer fills from TrainingArguments; anything but "auto" must equal the
# command line's value, or the Trainer stops with a mismatch error.
TRAINER_FILLED = ("gradient_accumulation_steps", "gradient_clipping", "train_batch_size",
                  "train_micro_batch_size_per_gpu")


def launch_environment(name: str) -> dict[str, str]:
    """The variables `accelerate launch --config_file <name>.yaml` sets for the training processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(CONFIGS / f"{name}.yaml"), "-m", "trrg.commands.finetune"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        environment = prepare_deepspeed_cmd_env(args)[1]
    elif args.use_fsdp or args.multi_gpu:
        environment = prepare_multi_gpu_env(args)
    else:
        environment = {}
    return {k: v for k, v in environment.items() if k.startswith(("ACCELERATE_", "FSDP_"))}


def plugin_from(name: str, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin

    for key, value in launch_environment(name).items():
        monkeypatch.setenv(key, value)
    return DeepSpeedPlugin() if name.startswith("deepspeed") else FullyShardedDataParallelPlugin()


@pytest.mark.parametrize("name", NAMES)
def test_config_loads_and_names_only_launch_options(name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    raw = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert isinstance(config, ClusterConfig) and config.distributed_type.value == raw["distributed_type"]
    options = {action.dest for action in launch_command_parser()._actions}
    for key in raw.get("fsdp_config", {}):
        assert (key if key.startswith("fsdp") else f"fsdp_{key}") in options, key
    for key in raw.get("deepspeed_config", {}):
        assert key in options, key
    launch_environment(name)  # accelerate launch's own checks pass


def test_fsdp_plugin_and_wrap_policy_name_real_layer_classes(monkeypatch):
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

    from trrg.assembly.memory_plan import build_measurement_model, counting_tokenizer

    plugin = plugin_from("fsdp", monkeypatch)
    assert plugin.fsdp_version == 2 and plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
    assert plugin.cpu_ram_efficient_loading and plugin.reshard_after_forward
    for size in ("tiny", "7b"):
        model = build_measurement_model("finetune", size, counting_tokenizer(), device="meta")
        policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
        units = [type(m).__name__ for m in model.modules() if policy(m)]
        assert units == ["LlamaDecoderLayer"] * model.config.text_config.num_hidden_layers, size
    # The pretrain stage has no LLM layer: the config says to use DDP there, and accelerate says why.
    pretrain = build_measurement_model("pretrain", "tiny", counting_tokenizer(), device="meta")
    with pytest.raises(ValueError, match="Could not find the transformer layer class LlamaDecoderLayer"):
        fsdp2_prepare_auto_wrap_policy(plugin, pretrain)


@pytest.mark.parametrize("name", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_plugin_builds_and_leaves_trainer_values_to_the_trainer(name, monkeypatch):
    plugin = plugin_from(name, monkeypatch)
    config = plugin.deepspeed_config
    assert config["zero_optimization"]["stage"] == int(name[-1])
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "none"
    for key in TRAINER_FILLED:
        assert config[key] == "auto", (key, config[key])
    assert plugin.zero3_init_flag is False
    if name.endswith("3"):
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


# ---------------------------------------------------------------------------------------------
# Two CPU processes
# ---------------------------------------------------------------------------------------------

WORKER = r'''
import copy, json, os, sys, warnings
warnings.filterwarnings("ignore")
import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.set_num_threads(1)
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
sys.path.insert(0, os.environ["TRRG_BENCHMARKS"])
import gpu
from trrg.modeling.modeling_trrg import VisionFeatures

plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables of fsdp.yaml
model, processor = gpu.build_stage("finetune", "tiny", gpu.report_tokenizer(), "cpu", lora_r=8, precision="fp32")
model.train()
inputs = gpu.training_batch("finetune", model, processor, 4, "cpu")  # frozen features cached before sharding
policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
bf16 = os.environ.get("ACCELERATE_MIXED_PRECISION") == "bf16"  # accelerate: param and reduce dtype bf16
mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16) if bf16 else MixedPrecisionPolicy()

def shard(module_tree):
    units = []
    for module in list(module_tree.modules()):
        if module is not module_tree and policy(module):
            units.append(type(module).__name__)  # before fully_shard renames the class FSDP<name>
            fully_shard(module, mp_policy=mp, reshard_after_forward=plugin.reshard_after_forward)
    fully_shard(module_tree, mp_policy=mp, reshard_after_forward=plugin.reshard_after_forward)
    return units

try:
    shard(copy.deepcopy(model))
    unpatched_error = None
except Exception as error:
    unpatched_error = f"{type(error).__name__}: {error}"
units = shard(model)

# Evaluation on the sharded model: each rank generates for its share of 5 studies (3 and 2, padded
# to 3), predictions gathered; then every rank generates for all 5 with the same gathered weights.
from PIL import Image
from trrg.trainers.finetune_trainer import generate_on_every_process
from trrg.evaluation.generation import generate_reports
from trrg.trainers.distributed import full_parameters
images = os.path.join(os.environ["TRRG_REPORT_DIR"], f"images{rank}")
os.makedirs(images, exist_ok=True)
rows = []
for i in range(5):
    path = os.path.join(images, f"{i}.png")
    Image.fromarray((torch.rand(64, 64, generator=torch.Generator().manual_seed(i)) * 255).byte().numpy()).save(path)
    rows.append({"id": f"study{i}", "images": [path], "report": "no pneumothorax ."})
model.eval()
shared = generate_on_every_process(model, processor, rows, batch_size=1, max_new_tokens=8)
with full_parameters(model):
    whole = generate_reports(model, processor, rows, batch_size=1, max_new_tokens=8)
model.train()
by_id = {p["id"]: (p["report"], p["disease_probs"]) for p in whole}
evaluation = {"ids": [p["id"] for p in shared], "same_as_whole": all(by_id[p["id"]] == (p["report"], p["disease_probs"]) for p in shared),
              "resharded": isinstance(next(model.parameters()), DTensor)}

part = {k: v[2 * rank:2 * rank + 2] if torch.is_tensor(v) else v for k, v in inputs.items()}
part["vision_features"] = VisionFeatures(**{k: v[2 * rank:2 * rank + 2] for k, v in inputs["vision_features"].items()})
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
name = "language_model.base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"
parameter = dict(model.named_parameters())[name]
before = parameter.full_tensor().clone()
loss = model(**part).loss
loss.backward()
optimizer.step()
report = json.dumps({
    "rank": rank, "unpatched_error": unpatched_error, "units": units, "loss": float(loss),
    "sharded": isinstance(parameter, DTensor), "updated": bool((parameter.full_tensor() != before).any()),
    "bf16": bf16, "fsdp_modules": sum(isinstance(m, FSDPModule) for m in model.modules()), "evaluation": evaluation})
# One file per rank: two ranks printing to the launcher's shared stdout can interleave on one line.
with open(os.path.join(os.environ["TRRG_REPORT_DIR"], f"rank{rank}.json"), "w") as handle:
    handle.write(report)
dist.barrier()
dist.destroy_process_group()
'''


@pytest.fixture(scope="module")
def fsdp_cpu_step(tmp_path_factory):
    """Both ranks' reports of one FSDP2 step (2 processes, gloo), configured by fsdp.yaml."""
    folder = tmp_path_factory.mktemp("fsdp")
    worker = folder / "worker.py"
    worker.write_text(WORKER)
    environment = {**os.environ, **launch_environment("fsdp"), "TRRG_BENCHMARKS": str(ROOT / "benchmarks"),
                   "TRRG_REPORT_DIR": str(folder),
                   "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker)]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    reports = [json.loads((folder / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    return sorted(reports, key=lambda report: report["rank"])


@pytest.mark.slow
def test_two_process_cpu_fsdp2_step_with_the_yaml_wrap_policy(fsdp_cpu_step):
    for report in fsdp_cpu_step:
        assert report["units"] == ["LlamaDecoderLayer", "LlamaDecoderLayer"]  # the tiny LM's two layers
        assert report["fsdp_modules"] == 3 and report["sharded"] and report["bf16"]
        assert report["updated"] and 0 < report["loss"] < 100
    # Each rank trained on its own half of the batch.
    assert fsdp_cpu_step[0]["loss"] != fsdp_cpu_step[1]["loss"]


@pytest.mark.slow
def test_fsdp2_evaluation_generates_on_every_rank_without_a_hang(fsdp_cpu_step):
    """Each rank generated for its own share of the studies (uneven: 3 and 2) on the sharded model; the
    gathered predictions are every study once, the same on both ranks and the same as generating all
    studies with the whole weights; the model is sharded again afterwards (the fixture's timeout
    catches a hang)."""
    for report in fsdp_cpu_step:
        evaluation = report["evaluation"]
        assert sorted(evaluation["ids"]) == [f"study{i}" for i in range(5)]
        assert evaluation["same_as_whole"] and evaluation["resharded"], evaluation


@pytest.mark.slow
def test_fsdp2_shards_the_unmodified_model(fsdp_cpu_step):
    for report in fsdp_cpu_step:
        assert report["unpatched_error"] is None, report["unpatched_error"]
