"""Loading and checking the training data up front, before hours of training are spent."""

from __future__ import annotations

from pathlib import Path

import datasets

from trrg.processing.datasets import load_hf, load_r2gen, validate_studies


def load_studies(data_args) -> datasets.DatasetDict:
    """The study ``DatasetDict`` named by ``--data``, validated and optionally truncated."""
    if not data_args.data:
        raise SystemExit("--data is required: an R2Gen annotation.json (e.g. from `trrg phantom`), its folder, "
                         "a JSON/JSONL file or an imagefolder")
    source = Path(data_args.data)
    if source.is_dir() and (source / "annotation.json").exists():
        source = source / "annotation.json"
    if not source.exists():
        raise SystemExit(f"--data {data_args.data}: no such file or folder")
    if source.name == "annotation.json" or (source.suffix == ".json" and _is_r2gen(source)):
        studies = load_r2gen(source, image_root=data_args.image_root)
    else:
        studies = load_hf(str(source))
    problems = validate_studies(studies)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise SystemExit(f"--data {source}: {len(problems)} problem(s); fix or remove these rows:\n  {shown}{more}")
    if data_args.train_split not in studies:
        raise SystemExit(f"--data {source} has no split {data_args.train_split!r} (it has {sorted(studies)}); "
                         "pass --train_split")
    return _truncate(studies, data_args)


def _is_r2gen(path: Path) -> bool:
    import json

    with open(path, encoding="utf-8") as handle:
        head = handle.read(64).lstrip()
    if not head.startswith("{"):
        return False
    return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)


def _truncate(studies: datasets.DatasetDict, data_args) -> datasets.DatasetDict:
    limits = {data_args.train_split: data_args.max_train_studies, data_args.eval_split: data_args.max_eval_studies}
    for split, limit in limits.items():
        if split in studies and limit is not None and limit < len(studies[split]):
            studies[split] = studies[split].select(range(limit))
    return studies
