"""The hub folder is an API: safetensors only, auto_map, flat remote code, loadable without `trrg`."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from trrg.assembly.hub_folders import save_hub_folder

# Runs in a fresh interpreter where `import trrg` fails, as for a user who only has the hub folder.
REMOTE_LOAD = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class BlockTRRG(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "trrg" or name.startswith("trrg."):
                raise ImportError("trrg is not installed for this user")
    sys.meta_path.insert(0, BlockTRRG())
    try:
        import trrg
        raise SystemExit("trrg was importable")
    except ImportError:
        pass
    import numpy as np
    from transformers import AutoModel, AutoProcessor, pipeline
    source, kind = sys.argv[1], sys.argv[2]
    model = AutoModel.from_pretrained(source, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
    image = (np.random.default_rng(0).random((90, 70)) * 255).astype("uint8")
    result = {"model": type(model).__name__, "module": type(model).__module__, "processor": type(processor).__name__}
    if kind == "generator":
        inputs = processor(images=[[image, image]], return_tensors="pt")
        ids = model.generate(**inputs, max_new_tokens=5, num_beams=2)
        result["report"] = processor.batch_decode(ids, prompt_length=inputs["input_ids"].shape[1])[0]
        result["new_tokens"] = ids.shape[1] - inputs["input_ids"].shape[1]
        # The pipeline the model card shows: by its task name, and found from the config alone.
        for task in ("image-text-to-text", None):
            reporter = pipeline(task, model=source, trust_remote_code=True)
            out = reporter([image, image], max_new_tokens=5, num_beams=2, return_evidence_maps=True)
            result[f"pipeline {task}"] = {"class": type(reporter).__name__, "module": type(reporter).__module__,
                                          "report": out.report, "sentences": len(out.sentences),
                                          "maps": list(out.perception.evidence_maps.shape),
                                          "probs": len(out.perception.disease_probs)}
    else:
        pixels = processor.image_processor([[image]], return_tensors="pt")
        result["embed_shape"] = list(model.get_image_embeds(**pixels).shape)
    print(json.dumps(result))
    """
)


class RemoteLoad:
    """``REMOTE_LOAD`` in a fresh interpreter, started at once (each mostly imports transformers, so
    the module's loads run side by side); ``result()`` waits for its JSON line."""

    def __init__(self, source, kind, env_extra, cwd):
        env = {**os.environ, **env_extra, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self.errors = open(cwd / "remote_load.stderr", "w")  # a file, not a pipe nobody reads yet
        self.process = subprocess.Popen([sys.executable, "-c", REMOTE_LOAD, str(source), kind], stdout=subprocess.PIPE,
                                        stderr=self.errors, text=True, env=env, cwd=cwd)

    def result(self) -> dict:
        stdout, _ = self.process.communicate(timeout=300)
        self.errors.close()
        assert self.process.returncode == 0, open(self.errors.name).read()[-3000:]
        return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hub_folder(tiny_finetune_model, tmp_path_factory):
    model, processor = tiny_finetune_model
    return save_hub_folder(model, processor, tmp_path_factory.mktemp("hub") / "trrg-tiny")


@pytest.fixture(scope="module")
def pretrain_folder(tiny_pretrain_model, tmp_path_factory):
    model, processor = tiny_pretrain_model
    return save_hub_folder(model, processor, tmp_path_factory.mktemp("hub") / "pretrain")


def offline_hub_cache(folder, cache):
    """``folder`` as the cached snapshot of the hub id trrg-org/trrg-tiny."""
    snapshot = cache / "models--trrg-org--trrg-tiny" / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (cache / "models--trrg-org--trrg-tiny" / "refs").mkdir()
    (cache / "models--trrg-org--trrg-tiny" / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    return cache


@pytest.fixture(scope="module")
def remote_loads(hub_folder, pretrain_folder, tmp_path_factory):
    """The module's three remote-code loads, started together."""
    work = {name: tmp_path_factory.mktemp(name) for name in ("folder", "hub_id", "pretrain")}
    cache = offline_hub_cache(hub_folder, work["hub_id"] / "hub_cache")
    return {
        "folder": RemoteLoad(hub_folder, "generator", {"HF_HOME": str(work["folder"] / "home")}, work["folder"]),
        "hub_id": RemoteLoad("trrg-org/trrg-tiny", "generator",
                             {"HF_HOME": str(work["hub_id"] / "home"), "HF_HUB_CACHE": str(cache)}, work["hub_id"]),
        "pretrain": RemoteLoad(pretrain_folder, "contrastive", {"HF_HOME": str(work["pretrain"] / "home")},
                               work["pretrain"]),
    }


def test_folder_holds_safetensors_remote_code_and_auto_map(hub_folder):
    names = {p.name for p in hub_folder.iterdir()}
    assert {"model.safetensors", "config.json", "processor_config.json", "tokenizer.json", "configuration_trrg.py",
            "modeling_trrg.py", "processing_trrg.py", "image_processing_trrg.py", "pipeline_trrg.py",
            "labeler_trrg.py"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    config = json.loads((hub_folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_trrg.TRRGForConditionalGeneration"
    assert config["auto_map"]["AutoConfig"] == "configuration_trrg.TRRGConfig"
    assert config["custom_pipelines"]["image-text-to-text"]["impl"] == "pipeline_trrg.TRRGReportPipeline"
    for code in hub_folder.glob("*.py"):  # remote code must be flat and self-contained
        text = code.read_text()
        assert "import trrg" not in text and "from trrg" not in text and "from .." not in text, code.name


def test_remote_code_load_without_the_package_writes_a_report(remote_loads):
    result = remote_loads["folder"].result()
    assert result["model"] == "TRRGForConditionalGeneration" and result["processor"] == "TRRGProcessor"
    assert result["module"].startswith("transformers_modules.")  # the folder's copy, not the package
    assert result["new_tokens"] > 0 and result["report"].strip()
    check_pipeline(result)


def test_load_by_hub_id_from_an_offline_cache(remote_loads):
    result = remote_loads["hub_id"].result()
    assert result["model"] == "TRRGForConditionalGeneration" and result["new_tokens"] > 0
    check_pipeline(result)


def check_pipeline(result: dict) -> None:
    """``pipeline(task, model=..., trust_remote_code=True)`` builds the folder's TRRGReportPipeline, with
    the task named or read from config.json's custom_pipelines, and it writes what generate() writes."""
    for task in ("image-text-to-text", None):
        out = result[f"pipeline {task}"]
        assert out["class"] == "TRRGReportPipeline" and out["module"].startswith("transformers_modules."), task
        assert out["report"] == result["report"] and out["probs"] == 14 and out["maps"] == [2, 14, 4, 4], task


def test_pretrain_model_round_trips_through_remote_code(remote_loads, pretrain_folder, tiny_pretrain_model):
    config = json.loads((pretrain_folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_trrg.TRRGContrastiveModel"
    result = remote_loads["pretrain"].result()
    assert result["model"] == "TRRGContrastiveModel"
    assert result["embed_shape"] == [1, tiny_pretrain_model[0].config.projection_dim]
