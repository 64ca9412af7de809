"""Every command of the README's command table runs exactly as written: with only the flags the
README shows, whatever versions the dependency ranges resolved to.

The README's placeholders (DIR, D, O, S1, ...) are filled with tiny inputs; nothing else is added.
`trrg demo` (the README's main command, minutes long) and `trrg space` (a server) are run elsewhere:
the demo by `scripts/demo.sh`, the Space by tests/test_space.py.
"""

import json
import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN_HERE = {"demo", "space"}


def readme_commands() -> dict[str, list[str]]:
    """The first column of the README's command table: ``{name: argv}``, optional ``[...]`` parts dropped."""
    commands = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*`trrg (\w+)([^`]*)`", line)
        if match:
            argv = shlex.split(re.sub(r"\[[^\]]*\]", " ", match.group(2)))
            commands[match.group(1)] = argv
    return commands


def test_the_readme_lists_every_command():
    from trrg.cli import COMMANDS

    assert set(readme_commands()) == set(COMMANDS)


@pytest.fixture(scope="module")
def smallest_phantom(tmp_path_factory):
    """The data the placeholder D stands for: 16 train, 4 val, 4 test studies. The commands run with the
    recipe's defaults (30 stage-1 epochs, an evaluation each stage-2 epoch), so the data set is what
    keeps this test short; the images are resized to the preset's size whatever size they are drawn at."""
    from trrg.processing.phantom import generate_phantom

    folder = tmp_path_factory.mktemp("readme-phantom") / "data"
    generate_phantom(folder, num_train=16, num_val=4, num_test=4, image_size=64, seed=0)
    return folder


@pytest.mark.slow
def test_readme_commands_run_as_written(smallest_phantom, tmp_path, capsys):
    from trrg.cli import main

    commands = readme_commands()
    work = tmp_path
    image = smallest_phantom / "images" / "phantom_000000" / "0.png"
    (work / "reports.jsonl").write_text(json.dumps({"id": "r1", "report": "small left pleural effusion ."}) + "\n")
    from test_prepare import make_mimic_tree  # a tiny raw MIMIC-CXR-JPG tree

    mimic = make_mimic_tree(work / "mimic-cxr-jpg")
    filled = {  # placeholder -> value, per command, in the order a user runs them
        "init": {"DIR": work / "init"},
        "phantom": {"DIR": work / "phantom", "S": "1", "N": "6"},
        "prepare": {"R": mimic, "DIR": work / "prepared"},
        "label": {"INPUT": work / "reports.jsonl", "OUT": work / "labels.jsonl"},
        "pretrain": {"D": smallest_phantom, "O": work / "pretrain"},
        "bridge": {"P": work / "pretrain" / "final", "B": work / "bridged"},
        "finetune": {"B": work / "bridged", "D": smallest_phantom, "O": work / "finetune"},
        "generate": {"M": work / "finetune" / "final", "IMAGE": image},
        "evaluate": {"M": work / "finetune" / "final", "D": smallest_phantom, "O": work / "eval"},
        "score": {"P": work / "eval" / "predictions.jsonl", "R": work / "eval" / "references.jsonl",
                  "M.json": work / "scores.json"},
        "export": {"C": work / "finetune" / "final", "O": work / "export"},
    }
    assert set(filled) | NOT_RUN_HERE == set(commands)
    for name, values in filled.items():
        argv = [str(values.get(arg, arg)) for arg in commands[name]]
        assert main([name, *argv]) == 0, f"trrg {name} {' '.join(argv)}"
    assert (work / "init" / "config.json").exists() and (work / "phantom" / "annotation.json").exists()
    assert (work / "prepared" / "dataset_dict.json").exists()
    assert (work / "finetune" / "final" / "model.safetensors").exists()
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    assert "perception_macro_f1_14" in metrics and "clue_drop_rate" in metrics
    assert json.loads((work / "scores.json").read_text())["n"] == metrics["n"]
    assert (work / "export" / "README.md").exists()
