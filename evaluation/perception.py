"""Zero-shot disease perception of stage 1: AUROC and F1 per observation (pure numpy)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def auroc(scores: np.ndarray, targets: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None without both classes."""
    targets = targets.astype(bool)
    positives, negatives = int(targets.sum()), int((~targets).sum())
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=float)
    sorted_scores = scores[order]
    # average ranks over ties
    unique, start_index, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = start_index + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[targets].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def f1_at(scores: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> float | None:
    predicted, targets = scores >= threshold, targets.astype(bool)
    true_positive = int((predicted & targets).sum())
    denominator = int(predicted.sum()) + int(targets.sum())
    return None if denominator == 0 else 2 * true_positive / denominator


def perception_scores(probs: np.ndarray, targets: np.ndarray, names: Sequence[str], threshold: float = 0.5) -> dict:
    """Per observation AUROC and F1@threshold, and their macro means over defined observations."""
    per_name = {}
    for index, name in enumerate(names):
        per_name[name] = {"auroc": auroc(probs[:, index], targets[:, index]),
                          "f1": f1_at(probs[:, index], targets[:, index], threshold),
                          "positives": int(targets[:, index].sum())}
    defined = lambda key: [v[key] for v in per_name.values() if v[key] is not None]  # noqa: E731
    return {"per_observation": per_name,
            "auroc_macro": float(np.mean(defined("auroc"))) if defined("auroc") else None,
            "f1_macro": float(np.mean(defined("f1"))) if defined("f1") else None,
            "threshold": threshold}


# ---------------------------------------------------------------------------------------------
# Localisation: the pointing game on evidence maps
# ---------------------------------------------------------------------------------------------
Box = Sequence[float]  # [x0, y0, x1, y1] in image pixels, x1/y1 exclusive


def cell_box(row: int, column: int, grid: tuple[int, int], image_size: tuple[int, int]) -> tuple[float, ...]:
    """The image rectangle [x0, y0, x1, y1] a cell of an (h, w) grid covers, on an image of
    (height, width) pixels that the model saw whole (square images: no letterbox margin)."""
    (rows, columns), (height, width) = grid, image_size
    return (column * width / columns, row * height / rows, (column + 1) * width / columns, (row + 1) * height / rows)


def _overlaps(first: Box, second: Box) -> bool:
    return first[0] < second[2] and second[0] < first[2] and first[1] < second[3] and second[1] < first[3]


def pointing_hit(evidence_map: np.ndarray, boxes: Sequence[Box], image_size: tuple[int, int]) -> bool:
    """The pointing game: does the map's peak cell overlap a drawn region of the finding?

    A map is a coarse grid (4 x 4 for the tiny preset), so "the peak falls inside the region" is read
    at the grid's resolution: a hit when the peak cell's rectangle overlaps one of ``boxes``.
    """
    row, column = np.unravel_index(int(np.argmax(evidence_map)), evidence_map.shape)
    peak = cell_box(int(row), int(column), evidence_map.shape, image_size)
    return any(_overlaps(peak, box) for box in boxes)


def pointing_chance(grid: tuple[int, int], boxes: Sequence[Box], image_size: tuple[int, int]) -> float:
    """The hit rate of a map whose peak is a uniformly random cell: the share of cells that overlap
    a region. A large region (both lungs) is hit by chance; the pointing game means something only
    above this."""
    cells = [cell_box(r, c, grid, image_size) for r in range(grid[0]) for c in range(grid[1])]
    return sum(any(_overlaps(cell, box) for box in boxes) for cell in cells) / len(cells)


def pointing_cases(rows: Sequence[dict], views: Sequence[Sequence], maps: np.ndarray,
                   names: Sequence[str], regions_of: Callable[[str], dict]) -> list[tuple]:
    """The pointing game's cases of a batch of studies: for each positive finding with a drawn region on a
    view the study has, (observation, that view's map of it, the boxes, the view's (height, width)).

    Args:
        rows: the studies (``id``, ``labels``); views: each study's views (PIL images, in map order);
        maps: (studies, views, diseases, h, w), diseases in the order of ``names``;
        regions_of: a study id -> ``{view: {observation: boxes}}`` (the phantom's ``finding_regions``).
    """
    cases = []
    for index, (row, study_views) in enumerate(zip(rows, views)):
        for view, regions in regions_of(row["id"]).items():
            if view >= len(study_views):
                continue
            size = study_views[view].size[::-1]  # (height, width) of the image the boxes are in
            cases += [(name, maps[index, view, names.index(name)], boxes, size) for name, boxes in regions.items()
                      if name in names and row["labels"].get(name) == 1]
    return cases


def pointing_game(cases: Sequence[tuple[str, np.ndarray, Sequence[Box], tuple[int, int]]]) -> dict:
    """Per observation: hit rate, chance rate and count over ``cases`` of (observation, evidence map
    of that observation on one view, the finding's drawn boxes on that view, the view's image size)."""
    per_name: dict[str, dict] = {}
    for name, evidence_map, boxes, image_size in cases:
        entry = per_name.setdefault(name, {"hits": 0, "chance": 0.0, "cases": 0})
        entry["hits"] += pointing_hit(evidence_map, boxes, image_size)
        entry["chance"] += pointing_chance(evidence_map.shape, boxes, image_size)
        entry["cases"] += 1
    return {name: {"hit_rate": entry["hits"] / entry["cases"], "chance_rate": entry["chance"] / entry["cases"],
                   "cases": entry["cases"]} for name, entry in sorted(per_name.items())}
