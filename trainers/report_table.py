"""A short printed table of the headline metrics."""

from __future__ import annotations

HEADLINE = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "ce_micro_f1_14", "ce_macro_f1_14",
            "ce_micro_f1_5", "ce_macro_f1_5", "ce_example_f1", "ce_normal_collapse")


def metrics_table(metrics: dict, keys=HEADLINE, title: str | None = None) -> str:
    lines = [title] if title else []
    width = max(len(k) for k in keys)
    lines.append(f"{'metric'.ljust(width)}  value")
    lines.append(f"{'-' * width}  ------")
    for key in keys:
        value = metrics.get(key)
        shown = "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{key.ljust(width)}  {shown}")
    return "\n".join(lines)
