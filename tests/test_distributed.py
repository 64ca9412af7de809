"""Both stages under 2 CPU processes (gloo, torchrun; on one node and on two) give the losses of 1
process with the same global batch, and stage 2's evaluation (generation on every process) gives the
metrics and the best checkpoint of 1 process; a run killed with SIGKILL resumes from its last
complete checkpoint and ends where an uninterrupted run ends."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from trrg.assembly.hub_folders import save_hub_folder

pytestmark = pytest.mark.slow

COMMON = ["--max_steps", "3", "--logging_steps", "1", "--save_strategy", "no", "--use_cpu", "True",
          "--report_to", "none", "--learning_rate", "2e-3", "--seed", "0", "--data_seed", "0",
          "--disable_tqdm", "True", "--eval_split", "", "--dataloader_num_workers", "0"]
# Exact up to float summation order (apart from batch norm, below): the sentence loss is computed
# over gathered embeddings and the LM loss is re-weighted to the global token mean.
TOLERANCE = 1e-4
# The tiny preset's ResNet uses BatchNorm: in stage 1 each process normalises with the statistics of
# its own half batch, as DDP without SyncBatchNorm (not available for CPU) does, so stage-1 losses
# agree to this relative tolerance instead (LayerNorm backbones such as ViT/Swin are exact).
STAGE1_BATCHNORM_TOLERANCE = 0.02


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _start(module, args, processes, out, launcher_args=("--standalone",), log=None) -> subprocess.Popen:
    launcher = [sys.executable, "-m", "torch.distributed.run", *launcher_args, f"--nproc_per_node={processes}"]
    command = (launcher if processes > 1 or launcher_args != ("--standalone",) else [sys.executable])
    command = command + ["-m", module, *args, "--output_dir", str(out)]
    # stderr to a file, not a pipe: a full pipe would stall a run while the test waits on the other
    with open(log or f"{out}.stderr", "w") as errors:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=_env())


def _history(run: subprocess.Popen, out, log=None) -> list[dict]:
    try:
        run.wait(timeout=300)  # a rank waiting for a collective that never comes fails here, not forever
    except subprocess.TimeoutExpired:
        run.kill()
        raise AssertionError(f"{out}: no end within 300 s (a hang?)\n" + open(log or f"{out}.stderr").read()[-4000:])
    assert run.returncode == 0, open(log or f"{out}.stderr").read()[-4000:]
    return json.loads((out / "log_history.json").read_text())


def _losses(history: list[dict]) -> list[dict]:
    return [entry for entry in history if "loss" in entry and "train_runtime" not in entry]


def _two_nodes(module, args, out) -> list[subprocess.Popen]:
    """Two launchers of one process each, as on two machines: a c10d rendezvous on localhost."""
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rendezvous = ("--nnodes=2", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=trrg-test")
    return [_start(module, args, 1, out, rendezvous, log=f"{out}.node{node}.stderr") for node in (0, 1)]


def _one_and_two_processes(module, args, tmp_path, nodes: int = 1) -> tuple[list[dict], list[dict]]:
    """The training logs of the 1-process run (batch 16) and of the 2-process run (8 each; on one node,
    or on ``nodes`` = 2 launchers of one process), side by side: each process has one thread, and
    starting them together halves the time spent importing."""
    one = _start(module, args + ["--per_device_train_batch_size", "16"], 1, tmp_path / "one")
    two_args = args + ["--per_device_train_batch_size", "8"]
    if nodes == 2:
        launchers = _two_nodes(module, two_args, tmp_path / "two")
        for node, launcher in enumerate(launchers):
            history = _history(launcher, tmp_path / "two", log=f"{tmp_path / 'two'}.node{node}.stderr")
    else:
        history = _history(_start(module, two_args, 2, tmp_path / "two"), tmp_path / "two")
    return _history(one, tmp_path / "one"), history


def _assert_close(one, two, keys, tolerance, steps=3):
    one, two = _losses(one), _losses(two)
    assert len(one) == len(two) == steps
    for a, b in zip(one, two):
        for key in keys:
            assert abs(a[key] - b[key]) <= tolerance * max(1.0, abs(a[key])), (key, a, b)


def test_pretrain_on_two_nodes_matches_one_process(tiny_pretrain_model, tiny_phantom, tmp_path):
    """Two machines, one process each (torchrun --nnodes 2, c10d rendezvous on localhost)."""
    model = save_hub_folder(*tiny_pretrain_model, tmp_path / "pretrain")
    args = ["--model", str(model), "--data", str(tiny_phantom), *COMMON]
    one, two = _one_and_two_processes("trrg.commands.pretrain", args, tmp_path, nodes=2)
    _assert_close(one, two, ("loss", "sentence_loss", "prompt_loss"), STAGE1_BATCHNORM_TOLERANCE)


def test_finetune_two_processes_with_evaluation_match_one(tiny_finetune_model, tiny_phantom, tmp_path):
    """Evaluation generates on every process: with an evaluation split, the best checkpoint chosen by
    the CE metric, no rank misses the metric (it crashed on rank 1) and the metrics and the best
    checkpoint are those of one process."""
    model = save_hub_folder(*tiny_finetune_model, tmp_path / "finetune")
    evaluation = ["--eval_split", "val", "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps",
                  "--save_steps", "2", "--load_best_model_at_end", "True", "--metric_for_best_model", "ce_macro_f1_14",
                  "--per_device_eval_batch_size", "1", "--generation_max_new_tokens", "24"]
    common = [a for a in COMMON if a not in ("--eval_split", "", "--save_strategy", "no")]
    args = ["--model", str(model), "--data", str(tiny_phantom), *common, *evaluation, "--max_steps", "4"]
    one, two = _one_and_two_processes("trrg.commands.finetune", args, tmp_path)
    _assert_close(one, two, ("loss", "lm_loss", "consistency_loss"), TOLERANCE, steps=4)
    evaluations = [[entry for entry in log if "eval_ce_macro_f1_14" in entry] for log in (one, two)]
    assert len(evaluations[0]) == len(evaluations[1]) == 2  # at steps 2 and 4, in both runs
    for a, b in zip(*evaluations):
        for key in ("eval_ce_macro_f1_14", "eval_ce_micro_f1_14", "eval_bleu_4", "eval_rouge_l"):
            assert abs(a[key] - b[key]) <= 1e-6, (key, a, b)
    best = [json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())["best_model_checkpoint"]
            for run in (tmp_path / "one", tmp_path / "two")]
    assert best[0] is not None and best[0].rsplit("/", 1)[-1] == best[1].rsplit("/", 1)[-1]


def test_sigkill_then_resume_ends_where_an_uninterrupted_run_ends(tiny_finetune_model, tiny_phantom, tmp_path):
    model = save_hub_folder(*tiny_finetune_model, tmp_path / "finetune")
    args = ["--model", str(model), "--data", str(tiny_phantom), "--max_steps", "9", "--save_steps", "3",
            "--save_strategy", "steps", "--logging_steps", "1", "--per_device_train_batch_size", "8",
            "--use_cpu", "True", "--report_to", "none", "--learning_rate", "2e-3", "--seed", "0",
            "--disable_tqdm", "True", "--eval_split", ""]
    command = [sys.executable, "-m", "trrg.commands.finetune", *args]
    # The uninterrupted reference runs beside the victim (one thread each, so neither waits long).
    reference = _start("trrg.commands.finetune", args, 1, tmp_path / "full")

    run_dir = tmp_path / "killed"
    victim = subprocess.Popen(command + ["--output_dir", str(run_dir)], env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run_dir / "checkpoint-3" / "trainer_state.json").exists():
        assert victim.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (run_dir / "final").exists()

    reference.wait(timeout=600)
    assert reference.returncode == 0, (tmp_path / "full.stderr").read_text()[-3000:]
    resumed = subprocess.run(command + ["--output_dir", str(run_dir), "--resume"], capture_output=True, text=True,
                             env=_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    full_log = json.loads((tmp_path / "full" / "log_history.json").read_text())
    resumed_log = json.loads((run_dir / "log_history.json").read_text())
    final = {e["step"]: e["loss"] for e in full_log if "loss" in e and "train_runtime" not in e}
    after = {e["step"]: e["loss"] for e in resumed_log if "loss" in e and "train_runtime" not in e}
    assert max(after) == max(final) == 9
    assert abs(after[9] - final[9]) <= 1e-4 * max(1.0, final[9])
    # Checkpoints carry the remote code and the processor, so each is a loadable hub folder.
    names = {p.name for p in (run_dir / "checkpoint-6").iterdir()}
    assert {"modeling_trrg.py", "processor_config.json", "model.safetensors"} <= names


def test_a_finished_run_destroys_its_process_group(tmp_path, monkeypatch):
    """Left to the interpreter's teardown, gloo's threads abort it ("terminate called without an
    active exception", exit -6): a torchrun rank failed that way on a fresh clone after training."""
    import inspect

    import torch.distributed as dist

    from trrg.commands import finetune, pretrain
    from trrg.trainers.distributed import end_process_group

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    end_process_group()
    assert not dist.is_initialized()
    end_process_group()  # nothing to end: a no-op
    for command in (pretrain, finetune):  # both training commands end with it, after the final folder
        source = inspect.getsource(command.main)
        assert source.index("end_process_group()") > source.index("written to")
