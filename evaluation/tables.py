"""The one printed table of metrics: the headline keys (``trrg evaluate``, ``trrg demo``) or every
scalar (``trrg score``)."""

from collections.abc import Sequence

HEADLINE = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "ce_micro_f1_14", "ce_macro_f1_14",
            "perception_macro_f1_14", "ce_micro_f1_5", "ce_macro_f1_5", "ce_example_f1", "ce_normal_collapse",
            "clue_drop_rate", "clue_unsupported_rate")
# Truthfulness metrics exist only when the predictions carried the model's perception: rows left out if absent.
OPTIONAL = ("perception_macro_f1_14", "clue_drop_rate", "clue_unsupported_rate")
# A rate shown with its counts, "0.2500 (3/12)", so it can be checked.
COUNTS = {"clue_drop_rate": ("clue_drop_count", "clue_present_count"),
          "clue_unsupported_rate": ("clue_unsupported_count", "clue_report_positive_count")}


def metrics_table(metrics: dict, keys: Sequence[str] | None = HEADLINE, title: str | None = None) -> str:
    """``keys`` of ``metrics`` one per line (``None``: every scalar value, in the dict's order)."""
    if keys is None:
        keys = [key for key, value in metrics.items() if value is None or isinstance(value, (int, float, str))]
    else:
        keys = [key for key in keys if key in metrics or key not in OPTIONAL]
    lines = [title] if title else []
    width = max(len(k) for k in keys)
    lines.append(f"{'metric'.ljust(width)}  value")
    lines.append(f"{'-' * width}  ------")
    for key in keys:
        lines.append(f"{key.ljust(width)}  {_shown(metrics, key)}")
    return "\n".join(lines)


def _shown(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    shown = "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
    if key in COUNTS and all(count in metrics for count in COUNTS[key]):
        shown += " ({}/{})".format(*(metrics[count] for count in COUNTS[key]))
    return shown
