"""Report metrics: NLG (``nlg``), clinical efficacy (``clinical``), and ``trrg score`` (``score``).

The same numbers are available as `evaluate` modules, loadable offline by path::

    import evaluate, trrg.evaluation
    metric = evaluate.load(trrg.evaluation.metric_path("trrg_nlg"))
"""

from pathlib import Path

_MODULES = Path(__file__).resolve().parent / "modules"


def metric_path(name: str) -> str:
    """Folder of the installed `evaluate` module ``name`` ("trrg_nlg", "trrg_clinical_efficacy")."""
    folder = _MODULES / name
    if not (folder / f"{name}.py").is_file():
        available = sorted(path.parent.name for path in _MODULES.glob("*/*.py") if path.stem == path.parent.name)
        raise ValueError(f"no evaluate module named {name!r}; available: {available}")
    return str(folder)
