"""The Python fine-tuning example of the README (and the model card, which carries the same block)
runs as written (paths replaced by a tiny model, a JSONL of phantom studies with a split column, and a
temporary output folder)."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _example(path: Path = README, heading: str = "## Fine-tuning in Python") -> str:
    section = path.read_text().split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_model_card_shows_the_same_example():
    assert _example(ROOT / "MODEL_CARD.md", "## Fine-tuning on private data") == _example()


@pytest.mark.slow
def test_readme_python_fine_tuning_example_runs(tiny_phantom, tiny_finetune_model, tmp_path):
    from trrg.assembly.hub_folders import save_hub_folder

    model_dir = save_hub_folder(*tiny_finetune_model, tmp_path / "model")
    annotation = json.loads((tiny_phantom / "annotation.json").read_text())
    lines = [json.dumps({"id": entry["id"], "report": entry["report"], "split": split,
                         "images": [str(tiny_phantom / "images" / path) for path in entry["image_path"]]})
             for split in ("train", "test") for entry in annotation[split][:6]]
    data = tmp_path / "my_studies.jsonl"
    data.write_text("\n".join(lines) + "\n")
    code = _example()
    assignment = 'model_dir, data, out_dir = "runs/demo/model", "my_studies.jsonl", "runs/my-finetune"'
    assert assignment in code, "the README example's paths line changed: update this test"
    code = code.replace(assignment, f"model_dir, data, out_dir = {str(model_dir)!r}, {str(data)!r}, "
                                    f"{str(tmp_path / 'out')!r}")
    assert "num_train_epochs=5" in code
    code = code.replace("num_train_epochs=5", "max_steps=2")  # the example, shortened
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the project's own README
    studies, trainer = namespace["studies"], namespace["trainer"]
    assert sorted(studies) == ["test", "train"] and len(studies["train"]) == 6  # the split column was honoured
    assert not any(p.requires_grad for p in trainer.model.vision_model.parameters())  # freeze_vision applied
    final = tmp_path / "out" / "final"
    assert (final / "model.safetensors").is_file() and (final / "modeling_trrg.py").is_file()
