"""The Python examples of the README (and the model card, which carries the same blocks) run as written:
"Using a model" (the report pipeline, then the raw calls; paths replaced by a tiny model folder and two
phantom views, the lateral one as DICOM) and "Fine-tuning in Python" (paths replaced by a tiny model, a
JSONL of phantom studies with a split column, and a temporary output folder)."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _example(path: Path = README, heading: str = "## Fine-tuning in Python") -> str:
    section = path.read_text().split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _examples(path: Path, heading: str) -> list[str]:
    """Every python block of a section."""
    section = path.read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_model_card_shows_the_same_example():
    assert _example(ROOT / "MODEL_CARD.md", "## Fine-tuning on private data") == _example()
    assert _examples(ROOT / "MODEL_CARD.md", "## How to load") == _examples(README, "## Using a model")


def test_readme_using_a_model_runs_and_the_pipeline_writes_what_the_raw_calls_write(tiny_finetune_model, tmp_path):
    import numpy as np

    from trrg.modeling.labeler_trrg import label_sentences
    from PIL import Image
    from space_helpers import EXAMPLES, write_dicom

    from trrg.assembly.hub_folders import save_hub_folder

    folder = save_hub_folder(*tiny_finetune_model, tmp_path / "model")
    frontal = EXAMPLES / "phantom_normal_frontal.png"
    lateral = np.asarray(Image.open(EXAMPLES / "phantom_normal_lateral.png").convert("L"), dtype=np.uint16) * 16
    dicom = write_dicom(tmp_path / "lateral.dcm", lateral)
    namespaces = []
    for code in _examples(README, "## Using a model"):
        for placeholder, value in (("path/or/org-name", folder), ("frontal.png", frontal), ("lateral.dcm", dicom)):
            assert f'"{placeholder}"' in code, f"the README example no longer names {placeholder}: update this test"
            code = code.replace(f'"{placeholder}"', repr(str(value)))
        namespaces.append({})
        exec(compile(code, str(README), "exec"), namespaces[-1])  # noqa: S102 - the project's own README
    pipeline_run, raw = namespaces
    result, processor = pipeline_run["result"], raw["processor"]
    written = processor.batch_decode(raw["ids"], prompt_length=raw["inputs"]["input_ids"].shape[1])[0]
    # the raw calls give the text as generated: the pipeline's with verify=False; verified, it keeps the
    # sentences the check did not reject, in order
    as_generated = pipeline_run["reporter"]([str(frontal), str(dicom)], verify=False)
    assert as_generated.report == written
    kept = [text for text, _ in label_sentences(written) if text not in {r.text for r in result.rejected}]
    assert [s.text for s in result.sentences if s.text in kept] == kept
    assert list(result.perception.disease_probs.values()) == raw["clues"].disease_probs[0].tolist()
    assert tuple(result.perception.evidence_maps.shape[:2]) == (2, 14)  # frontal and lateral (DICOM) views


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
