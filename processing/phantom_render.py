"""Drawing of the synthetic CXR phantom (numpy only, vectorised; no per-pixel Python loops).

Every structure is a soft mask computed on the whole pixel grid at the target size, in *patient
coordinates*: x in about [-1, 1] from the image's left edge to its right edge (the patient's right
lies on the image's left, as on a PA radiograph), y from the top (-1) to the bottom (1). A study's
rotation, shift and body size are applied by transforming the grid, so the anatomy code never
sees them. Shapes add *density* (0 = air, about 1 = bone); exposure, gamma and noise turn density
into 8-bit pixels at the end.

``render_frontal`` and ``render_lateral`` are pure functions of (anatomy, findings, image size):
all randomness (texture and noise seeds included) is drawn beforehand, so the same anatomy with
and without a finding differs only where the finding is drawn.

Both also say where they drew each finding (pass a dict as ``regions``): every finding adds its own
density change, split into parts where it is drawn in several places (each side of a bilateral
effusion, atelectasis or edema; each focus of multifocal airspace disease; each support device),
and a part's box is the bounding box of the pixels whose grey level that change moves by at least
``REGION_MIN_CHANGE`` (exposure, gamma, noise and clipping included, before rounding), so a box
holds what is visible of the drawing and nothing that is not. Global findings get the box of what
they draw: the whole heart for cardiomegaly, the mediastinum for its enlargement.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

Findings = dict[str, dict[str, Any]]
Anatomy = dict[str, Any]

# The image is about 40 cm wide: 1 coordinate unit (half the width) is 200 mm.
MM_PER_UNIT = 200.0
LUNG_CENTER_X, LUNG_CENTER_Y = 0.38, -0.02  # mirrored for the two lungs
LUNG_HALF_WIDTH, LUNG_HALF_HEIGHT = 0.33, 0.66
THORAX_WIDTH = 2 * (LUNG_CENTER_X + LUNG_HALF_WIDTH)
HILUM_X, HILUM_Y = 0.17, -0.05
CARINA_Y = -0.3
SEVERITY_LEVEL = {"small": 0, "moderate": 1, "large": 2}
# A finding's region: the pixels whose grey level (0..255) it changes by at least this much.
REGION_MIN_CHANGE = 2.0


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Patient size, positioning, heart size and exposure of one study (JSON-serialisable)."""

    def uniform(low: float, high: float) -> float:
        return round(float(rng.uniform(low, high)), 4)  # rounded: phantom_meta.json stays readable

    return {
        "scale": uniform(0.85, 1.05),
        "rotation_deg": uniform(-6.0, 6.0),
        "shift": [uniform(-0.05, 0.05), uniform(-0.05, 0.05)],
        "ctr": uniform(0.38, 0.47),
        "mediastinum_half_width": uniform(0.1, 0.13),
        "dome_height": uniform(0.42, 0.5),
        "gain": uniform(0.85, 1.15),
        "offset": uniform(-0.05, 0.05),
        "gamma": uniform(0.8, 1.25),
        "noise": uniform(0.01, 0.03),
        "texture_seed": int(rng.integers(2**31)),
        "noise_seed": int(rng.integers(2**31)),
    }


# --------------------------------------------------------------------------------------------
# Primitives
# --------------------------------------------------------------------------------------------


def _soft(signed_distance: np.ndarray, edge: float) -> np.ndarray:
    """1 inside (distance < 0), 0 outside, with a smooth edge ``edge`` units wide."""
    return 1.0 / (1.0 + np.exp(np.clip(signed_distance / edge, -30, 30)))


def _ellipse(x, y, cx: float, cy: float, ax: float, ay: float, edge: float = 0.02) -> np.ndarray:
    distance = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2) - 1.0
    return _soft(distance * min(ax, ay), edge)


def _segment_distance(x, y, start, end) -> np.ndarray:
    """Distance from every grid point to the segment start-end."""
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
    return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


def _polyline(x, y, points, width: float, edge: float = 0.006) -> np.ndarray:
    distance = np.min([_segment_distance(x, y, a, b) for a, b in zip(points[:-1], points[1:], strict=True)], axis=0)
    return _soft(distance - width / 2, edge)


def _smooth_noise(seed: int, size: int, cells: int) -> np.ndarray:
    """Band-limited noise in about [-1, 1]: a ``cells``-square random grid upsampled bicubically."""
    coarse = np.random.default_rng(seed).standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC)) / 1.5


def _grid(size: int, anatomy: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Patient coordinates of every pixel centre after rotation, shift and body scale."""
    u = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    u, v = np.meshgrid(u, u)
    u, v = u - anatomy["shift"][0], v - anatomy["shift"][1]
    angle = np.deg2rad(anatomy["rotation_deg"])
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return (cos * u + sin * v) / anatomy["scale"], (-sin * u + cos * v) / anatomy["scale"]


def _exposure(density: np.ndarray, anatomy: Anatomy, noise: np.ndarray) -> np.ndarray:
    """Grey levels (0..255, not yet rounded): exposure (gain, offset, gamma) and quantum noise."""
    image = anatomy["gain"] * np.clip(density, 0.0, 1.0) ** anatomy["gamma"] + anatomy["offset"]
    return np.clip(image + noise, 0.0, 1.0) * 255.0


def _to_uint8(
    density: np.ndarray, anatomy: Anatomy, size: int, seed_offset: int, parts: list | None = None
) -> tuple[np.ndarray, dict[str, list[list[int]]]]:
    """8-bit image, and the boxes of ``parts`` (``(finding, density change)`` pairs) in it."""
    noise = np.random.default_rng(anatomy["noise_seed"] + seed_offset).standard_normal((size, size))
    noise = anatomy["noise"] * noise.astype(np.float32)
    grey = _exposure(density, anatomy, noise)
    regions: dict[str, list[list[int]]] = {}
    for name, change in parts or ():
        visible = np.abs(grey - _exposure(density - change, anatomy, noise)) >= REGION_MIN_CHANGE
        box = _bounding_box(visible)
        if box is not None:
            regions.setdefault(name, []).append(box)
    return (grey + 0.5).astype(np.uint8), regions


def _bounding_box(mask: np.ndarray) -> list[int] | None:
    """``[x0, y0, x1, y1]`` (columns, rows; inclusive-exclusive) of the true pixels, None if none."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return [int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1]


def _side_parts(name: str, change: np.ndarray, x: np.ndarray, side: str) -> list[tuple[str, np.ndarray]]:
    """A finding drawn on both sides is two parts: the patient's right (image left) and left."""
    if side != "bilateral":
        return [(name, change)]
    right = x < 0
    return [(name, change * right), (name, change * ~right)]


def _sign(side: str) -> float:
    """The image-x sign of the patient's side: the patient's right is on the image's left."""
    return -1.0 if side == "right" else 1.0


def _sides(side: str) -> tuple[str, ...]:
    return ("right", "left") if side == "bilateral" else (side,)


# --------------------------------------------------------------------------------------------
# Frontal (PA) view: anatomy
# --------------------------------------------------------------------------------------------


def _dome(x, side: str, anatomy: Anatomy) -> np.ndarray:
    """y of the diaphragm dome under one lung (higher on the right, under the liver)."""
    top = anatomy["dome_height"] + (0.04 if side == "left" else 0.0)
    return top + 0.9 * (x - _sign(side) * LUNG_CENTER_X) ** 2


def _lung_masks(x, y, anatomy: Anatomy) -> dict[str, np.ndarray]:
    masks = {}
    for side in ("right", "left"):
        outline = _ellipse(x, y, _sign(side) * LUNG_CENTER_X, LUNG_CENTER_Y, LUNG_HALF_WIDTH, LUNG_HALF_HEIGHT)
        masks[side] = outline * _soft(y - _dome(x, side, anatomy), 0.015)
    return masks


def _heart(x, y, ctr: float) -> np.ndarray:
    width = ctr * THORAX_WIDTH  # the heart bulges mostly to the patient's left (image right)
    return _ellipse(x, y, 0.15 * width, 0.24, width / 2, 0.27 + 0.3 * (ctr - 0.42))


def _mediastinum(x, y, half_width: float) -> np.ndarray:
    vertical = _soft(np.abs(y + 0.35) - 0.55, 0.03)
    knob = _ellipse(x, y, 0.1 + half_width * 0.3, -0.33, 0.07, 0.06)  # aortic knob
    return np.maximum(_soft(np.abs(x - 0.01) - half_width, 0.015) * vertical, knob)


def _vessels(x, y, seed: int) -> np.ndarray:
    """Vascular markings: bright rays fanning out of each hilum, fading towards the periphery."""
    rng = np.random.default_rng(seed + 1)
    markings = np.zeros_like(x)
    for side in ("right", "left"):
        dx, dy = x - _sign(side) * HILUM_X, y - HILUM_Y
        radius = np.hypot(dx, dy)
        angle = np.arctan2(dy, dx * _sign(side)) + 0.12 * np.sin(9 * radius + rng.uniform(0, 6))
        table = np.zeros(512, np.float32)  # angular profile: a few narrow peaks
        for centre in rng.uniform(-2.6, 2.6, 14):
            table += np.exp(-0.5 * ((np.linspace(-np.pi, np.pi, 512) - centre) / 0.035) ** 2)
        profile = table[((angle + np.pi) / (2 * np.pi) * 511).astype(np.int32) % 512]
        markings += np.minimum(profile, 1.0) * np.exp(-radius / 0.35) * (radius > 0.04)
    return markings


RIB_DENSITY = 0.09
# Since phantom 1.3 a fracture also draws a dense spot at the break, where the fragments' ends overlap:
# a gap and a 1-px step alone look like the space between two ribs at 128 px, and a supervised
# classifier with 20,000 studies could not find them (AUROC 0.51; with the spot 0.998, density 0.12:
# 0.86; docs/decidability).
FRACTURE_SPOT_DENSITY, FRACTURE_SPOT_RADIUS = 0.25, 0.03  # 12 mm across, ~4 px at 128 px
RIB_SPACING, FIRST_RIB_Y = 0.128, -0.78  # posterior rib k leaves the spine at FIRST_RIB_Y + k * RIB_SPACING
POSTERIOR_RIBS, ANTERIOR_RIBS = range(1, 11), range(1, 8)
POSTERIOR_DROP = 0.42


def _cage_half_width(y) -> np.ndarray:
    """Half-width of the rib cage at height ``y``: narrow at the apex, widest above the domes."""
    return 0.8 * np.sqrt(np.clip(1.0 - ((y - 0.3) / 1.2) ** 2, 0.04, 1.0))


def _rib_field(lateral, y, posterior: bool) -> np.ndarray:
    """A continuous rib number whose integer level sets are the rib centrelines. Posterior ribs
    leave the spine almost horizontally, arc over and slope down steeply to the lateral chest wall;
    anterior ribs run from there down and medially towards the (unseen) costal cartilage."""
    width = _cage_half_width(y)
    s = np.clip((lateral - 0.07) / (width - 0.07), 0.0, 1.15)  # 0 at the spine, 1 at the chest wall
    # Rising a little off the spine, then falling about two interspaces to the chest wall.
    offset = POSTERIOR_DROP * s**2.5 - 0.1 * s
    if not posterior:  # continue from the lateral end down and medially, curving gently
        inward = np.clip(width - lateral, 0.0, None)
        offset = POSTERIOR_DROP - 0.1 + 0.62 * inward - 0.25 * inward**2
    return (y - offset - FIRST_RIB_Y) / RIB_SPACING


def _rib_bands(lateral, y, posterior: bool, half_height: float) -> tuple[np.ndarray, np.ndarray]:
    """(0..1 band of every rib, rib number of every pixel). Bands are slightly brighter at their
    cortical margins; one field evaluation draws all ribs at once."""
    field = _rib_field(lateral, y, posterior)
    number = np.rint(field)
    distance = np.abs(field - number) * RIB_SPACING / half_height  # 0 at the centreline, 1 at the margin
    band = np.clip((1.0 - distance) * 4.0, 0.0, 1.0) * (0.8 + 0.2 * np.minimum(distance, 1.0) ** 2)
    numbers = POSTERIOR_RIBS if posterior else ANTERIOR_RIBS
    return band * ((number >= numbers[0]) & (number <= numbers[-1])), number


def _fracture_step(beyond: np.ndarray) -> np.ndarray:
    """How far down the fragment past the break (``beyond`` > 0) is displaced: a step at the break
    that the rib takes back within a few centimetres, so the fracture stays a local finding."""
    return 0.03 * (beyond > 0) * _soft(beyond - 0.06, 0.015)


def _ribs(x, y, fracture: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """(rib density 0..1, the fracture's change of it). Posterior ribs as curved bands sloping down
    laterally, fainter anterior ribs sloping down medially; a fracture is a gap with a small step in
    one posterior rib and a dense spot where the fragments' ends overlap."""
    lateral = np.abs(x)
    width = _cage_half_width(y)
    posterior, number = _rib_bands(lateral, y, True, 0.026)
    posterior = posterior * _soft(0.07 - lateral, 0.015) * _soft(lateral - width, 0.02)
    anterior, _ = _rib_bands(lateral, y, False, 0.032)
    anterior = anterior * _soft(0.26 - lateral, 0.05) * _soft(lateral - width, 0.02)
    bands = posterior + 0.6 * anterior
    change = np.zeros_like(x)
    if fracture is not None:
        # The fractured rib without and with the break: a gap, and the lateral fragment stepped down.
        side_mask = (x * _sign(fracture["side"])) > 0
        rib = posterior * (number == fracture["rib"]) * side_mask
        break_at = fracture["position"] * 0.75
        stepped, stepped_number = _rib_bands(lateral, y - _fracture_step(lateral - break_at), True, 0.026)
        broken = stepped * (stepped_number == fracture["rib"]) * side_mask
        broken = broken * _soft(0.07 - lateral, 0.015) * _soft(lateral - width, 0.02)
        broken = broken * _soft(0.018 - np.abs(lateral - break_at), 0.004)
        change = broken - rib
        change = change + _fracture_spot(x, y, change, RIB_DENSITY)
    return bands + change, change


def _fracture_spot(x, y, change: np.ndarray, rib_density: float) -> np.ndarray:
    """The dense spot where a broken rib's fragment ends overlap, centred on the break (the centroid of the
    fracture's change of the rib), in units of the view's ``rib_density`` so that it adds
    ``FRACTURE_SPOT_DENSITY`` to the image."""
    weight = np.abs(change)
    total = weight.sum()
    if total == 0:
        return np.zeros_like(x)
    cx, cy = float((weight * x).sum() / total), float((weight * y).sum() / total)
    spot = _ellipse(x, y, cx, cy, FRACTURE_SPOT_RADIUS, FRACTURE_SPOT_RADIUS, edge=0.008)
    return FRACTURE_SPOT_DENSITY / rib_density * spot


def _clavicles(x, y) -> np.ndarray:
    return sum(_polyline(x, y, [(s * 0.07, -0.72), (s * 0.35, -0.8), (s * 0.65, -0.86)], 0.05) for s in (-1, 1))


def _spine(x, y) -> np.ndarray:
    vertebrae = 0.75 + 0.25 * np.cos(y * 32.0)  # end plates every ~0.2 units
    return _soft(np.abs(x) - 0.075, 0.012) * vertebrae


def _frontal_anatomy(x, y, anatomy: Anatomy, findings: Findings, size: int) -> tuple[np.ndarray, dict, list]:
    """Density of the normal structures, the lung masks (visible lung, not behind the heart) and the
    region parts of the findings drawn here (fracture, cardiomegaly, enlarged mediastinum)."""
    body = _ellipse(x, y, 0.0, 0.15, 0.95, 1.25, edge=0.03)
    ctr = findings.get("cardiomegaly", {}).get("ctr", anatomy["ctr"])
    half_width = findings.get("enlarged_cardiomediastinum", {}).get("half_width", anatomy["mediastinum_half_width"])
    heart, mediastinum = _heart(x, y, ctr), _mediastinum(x, y, half_width)
    central = np.maximum(heart, mediastinum)
    lungs = {side: mask * (1.0 - central) for side, mask in _lung_masks(x, y, anatomy).items()}
    lung = lungs["right"] + lungs["left"]
    abdomen = _soft(np.minimum(_dome(x, "right", anatomy), _dome(x, "left", anatomy)) - y, 0.02)
    density = 0.42 * body + 0.1 * body * abdomen  # soft tissue; liver and bowel under the domes
    density += 0.18 * central - 0.3 * lung
    density += 0.03 * _smooth_noise(anatomy["texture_seed"], size, 12) * lung  # parenchymal texture
    density -= 0.15 * _soft(np.abs(x) - 0.035, 0.01) * _soft(np.abs(y + 0.65) - 0.35, 0.02)  # trachea
    ribs, fracture = _ribs(x, y, findings.get("fracture"))
    density += 0.22 * _spine(x, y) + RIB_DENSITY * ribs + 0.18 * _clavicles(x, y)
    parts = [("fracture", RIB_DENSITY * fracture)] if "fracture" in findings else []
    if "cardiomegaly" in findings:  # the box of the whole (enlarged) heart
        parts.append(("cardiomegaly", 0.5 * heart))
    if "enlarged_cardiomediastinum" in findings:
        parts.append(("enlarged_cardiomediastinum", 0.5 * mediastinum))
    return density, lungs, parts


# --------------------------------------------------------------------------------------------
# Frontal view: findings
# --------------------------------------------------------------------------------------------


def _effusion(x, y, lungs, anatomy: Anatomy, attrs: dict) -> np.ndarray:
    """Basal opacity with a meniscus: the fluid level rises towards the lateral chest wall."""
    height = (0.1, 0.25, 0.48)[SEVERITY_LEVEL[attrs["size"]]]
    opacity = np.zeros_like(x)
    for side in _sides(attrs["side"]):
        lateral = np.clip(x * _sign(side) - LUNG_CENTER_X, 0.0, None)
        level = anatomy["dome_height"] + 0.1 - height - 0.9 * lateral**2 - 0.3 * lateral
        opacity += _soft(level - y, 0.02) * lungs[side]
    return 0.3 * opacity


def _pneumothorax(x, y, lungs, attrs: dict) -> tuple[np.ndarray, np.ndarray]:
    """Returns (rim without lung markings, visceral pleural line) of a collapsed lung."""
    side = attrs["side"]
    shrink = (0.88, 0.76, 0.6)[SEVERITY_LEVEL[attrs["size"]]]
    # The lung collapses towards its medial base: the air rim is apical and lateral.
    anchor_x, anchor_y = _sign(side) * 0.12, 0.55
    cx = anchor_x + shrink * (_sign(side) * LUNG_CENTER_X - anchor_x)
    cy = anchor_y + shrink * (LUNG_CENTER_Y - anchor_y)
    collapsed = _ellipse(x, y, cx, cy, LUNG_HALF_WIDTH * shrink, LUNG_HALF_HEIGHT * shrink, edge=0.008)
    rim = lungs[side] * (1.0 - collapsed)
    line = lungs[side] * np.exp(-(((collapsed - 0.5) / 0.25) ** 2))
    return rim, line


# Airspace disease comes in three kinds that look different (``phantom_reports`` words each kind
# its own way, so the label is decidable from the pixels):
#   ground_glass   faint, hazy, ill-defined, smooth; vessels stay visible through it.
#   consolidation  dense, homogeneous, sharply marginated, one lobe up to its fissure; vessels are
#                  effaced, optionally with air bronchograms (thin dark branching lines inside).
#   multifocal     2-3 patchy, dense, moderately defined foci in different zones (maybe bilateral).
AIRSPACE_ZONE_Y = {"upper": -0.4, "middle": 0.0, "lower": 0.3}
MINOR_FISSURE_Y = -0.13  # the horizontal fissure on the frontal view (the left lung: its analogue)
AIRSPACE_DENSITY = {"ground_glass": 0.22, "consolidation": 0.34, "multifocal": 0.3}


def _airspace_jitter(attrs: dict) -> np.ndarray:
    """12 numbers in [0, 1) fixed by the finding's seed: [0, 1] position or size, [2, 3] bronchogram
    angles, [4] depth on the lateral view, [6 + 2i, 7 + 2i] position of multifocal focus i."""
    return np.random.default_rng(attrs["seed"] + 11).random(12)


def _lobe_region(x, y, lung: np.ndarray, side: str, zone: str, jitter: np.ndarray) -> np.ndarray:
    """A lobe (or most of it) of one lung, sharply bounded by its fissure: the upper lobe below by
    the horizontal fissure, the middle lobe / lingula (a wedge) above by it and medially by the heart
    (whose border it effaces), the lower lobe from the mid zone down to the dome (which it effaces)."""
    lateral = x * _sign(side)  # distance from the midline towards this side
    fissure = MINOR_FISSURE_Y + 0.04 * (jitter[0] - 0.5) + 0.05 * (lateral - LUNG_CENTER_X)
    if zone == "upper":
        region = _soft(y - fissure, 0.01) * _ellipse(lateral, y, 0.4, -0.42, 0.3 + 0.08 * jitter[1], 0.4, edge=0.012)
    elif zone == "middle":
        # A wedge under the fissure, deepest along the heart border (which it effaces).
        lower = fissure + (0.75 + 0.2 * jitter[1]) * (0.72 - lateral)
        region = _soft(fissure - y, 0.01) * _soft(y - lower, 0.015)
    else:
        top = 0.06 + 0.08 * jitter[1] - 0.1 * (lateral - LUNG_CENTER_X)
        region = _soft(top - y, 0.012) * _soft(0.12 - lateral, 0.012)
    return region * lung


def _air_bronchograms(x, y, side: str, zone: str, jitter: np.ndarray) -> np.ndarray:
    """Thin branching tubes (0..1) fanning out from the hilum through the lobe."""
    target_y = AIRSPACE_ZONE_Y[zone] + (0.1 if zone == "lower" else 0.0)
    start = (_sign(side) * (HILUM_X + 0.05), HILUM_Y + 0.35 * (target_y - HILUM_Y))
    tubes = np.zeros_like(x)
    for branch in range(2):
        angle = np.arctan2(target_y - start[1], 0.25) + (branch - 0.5) * 0.7 + 0.3 * (jitter[2 + branch] - 0.5)
        mid = (start[0] + _sign(side) * 0.14 * np.cos(angle), start[1] + 0.14 * np.sin(angle))
        ends = [
            (mid[0] + _sign(side) * 0.13 * np.cos(angle + turn), mid[1] + 0.13 * np.sin(angle + turn))
            for turn in (-0.35, 0.35)
        ]
        tubes = np.maximum(tubes, _polyline(x, y, [start, mid, ends[0]], 0.016, edge=0.004))
        tubes = np.maximum(tubes, _polyline(x, y, [mid, ends[1]], 0.013, edge=0.004))
    return tubes


def _patch(x, y, cx: float, cy: float, ax: float, ay: float, outline: np.ndarray) -> np.ndarray:
    """An irregular, lumpy patch: an ellipse whose border is pushed in and out by ``outline`` noise."""
    radius = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return _soft((radius * (1.0 + 0.3 * outline) - 1.0) * min(ax, ay), 0.015)


def _airspace(x, y, lungs, attrs: dict, size: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(added density, share of the vascular markings it hides, the mask of each multifocal focus
    (empty for the other kinds)) of one airspace finding."""
    kind = attrs["kind"]
    jitter = _airspace_jitter(attrs)
    if kind == "ground_glass":
        cx = _sign(attrs["side"]) * (0.44 + 0.06 * jitter[0])
        cy = AIRSPACE_ZONE_Y[attrs["zone"]] + 0.06 * (jitter[1] - 0.5)
        haze = _ellipse(x, y, cx, cy, 0.22, 0.2, edge=0.06)
        haze = haze * (0.85 + 0.15 * _smooth_noise(attrs["seed"], size, 5))
        return AIRSPACE_DENSITY[kind] * haze * lungs[attrs["side"]], np.zeros_like(x), []
    if kind == "consolidation":
        side, zone = attrs["side"], attrs["zone"]
        region = _lobe_region(x, y, lungs[side], side, zone, jitter)
        solid = region * (0.96 + 0.04 * _smooth_noise(attrs["seed"], size, 8))
        if attrs.get("air_bronchograms"):
            solid = solid * (1.0 - 0.65 * _air_bronchograms(x, y, side, zone, jitter))
        return AIRSPACE_DENSITY[kind] * solid, region, []
    if kind == "multifocal":
        outline = _smooth_noise(attrs["seed"] + 2, size, 14)
        blobs = []
        for index, focus in enumerate(attrs["foci"]):
            cx = _sign(focus["side"]) * (0.34 + 0.12 * jitter[6 + 2 * index])
            cy = AIRSPACE_ZONE_Y[focus["zone"]] + 0.1 * (jitter[7 + 2 * index] - 0.5)
            blobs.append(_patch(x, y, cx, cy, 0.18, 0.15, outline) * lungs[focus["side"]])
        foci = np.maximum.reduce(blobs)
        patches = np.clip(0.7 + 0.5 * _smooth_noise(attrs["seed"], size, 14), 0.4, 1.0)
        return AIRSPACE_DENSITY[kind] * foci * patches, foci * patches, blobs
    raise ValueError(f"unknown airspace kind {kind!r}: expected ground_glass, consolidation or multifocal")


def _edema(x, y, attrs: dict) -> np.ndarray:
    """Bilateral perihilar haze (bat-wing), stronger when moderate."""
    strength = 0.11 if attrs["severity"] == "mild" else 0.2
    haze = sum(np.exp(-((x - s * 0.22) ** 2 / 0.06 + (y + 0.02) ** 2 / 0.12)) for s in (-1, 1))
    return strength * haze


def _atelectasis(x, y, anatomy: Anatomy, attrs: dict) -> np.ndarray:
    """A thin, slightly oblique linear band just above the dome (subtle on purpose)."""
    bands = np.zeros_like(x)
    for side in _sides(attrs["side"]):
        lateral = x * _sign(side) - LUNG_CENTER_X
        centre = anatomy["dome_height"] - 0.1 + 0.12 * lateral
        along = _soft(np.abs(lateral + 0.02) - 0.17, 0.02)
        bands += _soft(np.abs(y - centre) - 0.018, 0.008) * along
    return 0.2 * bands


def _lesion(x, y, attrs: dict) -> np.ndarray:
    radius = attrs["size_mm"] / 2.0 / MM_PER_UNIT
    zone_y = {"upper": -0.42, "middle": -0.05, "lower": 0.22}[attrs["zone"]]
    cx = _sign(attrs["side"]) * (0.3 + 0.25 * attrs["position"])
    strength = 0.28 if attrs["kind"] == "nodule" else 0.34
    return strength * _ellipse(x, y, cx, zone_y, radius, radius, edge=min(0.008, radius / 3))


def _pleural_thickening(x, y, lungs, attrs: dict) -> np.ndarray:
    """A band along the lateral and apical pleura of one lung."""
    side = attrs["side"]
    inner = _ellipse(
        x,
        y,
        _sign(side) * (LUNG_CENTER_X - 0.035),
        LUNG_CENTER_Y + 0.05,
        LUNG_HALF_WIDTH - 0.06,
        LUNG_HALF_HEIGHT - 0.07,
    )
    upper = _soft(y - 0.2, 0.05)
    return 0.25 * lungs[side] * (1.0 - inner) * upper


def _devices(x, y, attrs: dict) -> list[np.ndarray]:
    """Radio-opaque support devices, one density each: ET tube, right IJ line, left pacemaker with leads."""
    drawn = []
    if "et_tube" in attrs["devices"]:
        drawn.append(0.6 * _polyline(x, y, [(0.0, -1.1), (0.0, CARINA_Y - 0.12)], 0.028))
    if "central_line" in attrs["devices"]:
        drawn.append(0.55 * _polyline(x, y, [(-0.2, -1.1), (-0.13, -0.7), (-0.06, -0.45), (-0.05, -0.2)], 0.014))
    if "pacemaker" in attrs["devices"]:
        generator = 0.8 * _ellipse(x, y, 0.45, -0.58, 0.08, 0.06, edge=0.01)
        drawn.append(generator + 0.55 * _polyline(x, y, [(0.4, -0.56), (0.1, -0.5), (-0.05, -0.1), (0.05, 0.3)], 0.012))
    return drawn


def render_frontal(
    anatomy: Anatomy, findings: Findings, image_size: int, regions: dict[str, list[list[int]]] | None = None
) -> np.ndarray:
    """The PA view as a ``(image_size, image_size)`` uint8 array. Pass a dict as ``regions`` to have
    it filled with ``{finding name: [[x0, y0, x1, y1], ...]}``, one box per place it is drawn."""
    x, y = _grid(image_size, anatomy)
    density, lungs, parts = _frontal_anatomy(x, y, anatomy, findings, image_size)
    vessels = 0.09 * _vessels(x, y, anatomy["texture_seed"]) * (lungs["right"] + lungs["left"])
    if "pneumothorax" in findings:  # no lung markings beyond the visceral pleural line
        rim, line = _pneumothorax(x, y, lungs, findings["pneumothorax"])
        drawn = 0.12 * line - 0.1 * rim
        parts.append(("pneumothorax", drawn - vessels * rim))
        vessels = vessels * (1.0 - rim)
        density += drawn
    if "edema" in findings:  # engorged, indistinct vessels on top of the haze
        engorged = vessels * (1.6 if findings["edema"]["severity"] == "moderate" else 1.3)
        drawn = _edema(x, y, findings["edema"]) * (lungs["right"] + lungs["left"] + 0.3)
        parts += _side_parts("edema", drawn + engorged - vessels, x, "bilateral")
        vessels = engorged
        density += drawn
    if "airspace" in findings:  # consolidation effaces the vessels it surrounds; ground glass does not
        airspace, hidden, foci = _airspace(x, y, lungs, findings["airspace"], image_size)
        parts += _focus_parts("airspace", airspace - vessels * hidden, foci)
        vessels = vessels * (1.0 - hidden)
        density += airspace
    density += vessels
    opacity, finding_parts = _finding_opacities(x, y, lungs, anatomy, findings)
    density += opacity
    image, boxes = _to_uint8(density, anatomy, image_size, 0, parts + finding_parts if regions is not None else None)
    if regions is not None:
        regions.update(boxes)
    return image


def _focus_parts(name: str, change: np.ndarray, foci: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """One part per focus (each pixel goes to the focus that covers it most), or the whole change."""
    if len(foci) < 2:
        return [(name, change)]
    nearest = np.argmax(np.stack(foci), axis=0)
    return [(name, change * (nearest == index)) for index in range(len(foci))]


def _finding_opacities(x, y, lungs, anatomy: Anatomy, findings: Findings) -> tuple[np.ndarray, list]:
    """Summed density of the additive findings, and their region parts."""
    lung = lungs["right"] + lungs["left"]
    parts = []
    if "pleural_effusion" in findings:
        attrs = findings["pleural_effusion"]
        parts += _side_parts("pleural_effusion", _effusion(x, y, lungs, anatomy, attrs), x, attrs["side"])
    if "atelectasis" in findings:
        attrs = findings["atelectasis"]
        parts += _side_parts("atelectasis", _atelectasis(x, y, anatomy, attrs) * lung, x, attrs["side"])
    if "lung_lesion" in findings:
        parts.append(("lung_lesion", _lesion(x, y, findings["lung_lesion"])))
    if "pleural_thickening" in findings:
        parts.append(("pleural_thickening", _pleural_thickening(x, y, lungs, findings["pleural_thickening"])))
    if "support_devices" in findings:
        parts += [("support_devices", device) for device in _devices(x, y, findings["support_devices"])]
    return sum((change for _, change in parts), np.zeros_like(x)), parts


# --------------------------------------------------------------------------------------------
# Lateral view (simpler; x runs anterior (left of the image) to posterior (right))
# --------------------------------------------------------------------------------------------


def render_lateral(
    anatomy: Anatomy, findings: Findings, image_size: int, regions: dict[str, list[list[int]]] | None = None
) -> np.ndarray:
    """The lateral view as a ``(image_size, image_size)`` uint8 array; ``regions`` as for
    ``render_frontal``."""
    x, y = _grid(image_size, anatomy | {"rotation_deg": anatomy["rotation_deg"] / 2})
    body = _ellipse(x, y, 0.0, 0.1, 0.8, 1.25, edge=0.03)
    lung = _ellipse(x, y, 0.05, -0.05, 0.62, 0.68) * _soft(y - (anatomy["dome_height"] + 0.25 * x), 0.015)
    ctr = findings.get("cardiomegaly", {}).get("ctr", anatomy["ctr"])
    heart = _ellipse(x, y, -0.22 + 0.3 * (ctr - 0.42), 0.28, 0.2 + 0.8 * (ctr - 0.42), 0.26)
    half_width = findings.get("enlarged_cardiomediastinum", {}).get("half_width", anatomy["mediastinum_half_width"])
    mediastinum = _ellipse(x, y, -0.05, -0.45, 0.8 * half_width + 0.02, 0.3, edge=0.05)
    lung = lung * (1.0 - np.maximum(heart, mediastinum))
    abdomen = _soft(anatomy["dome_height"] + 0.25 * x - y, 0.02)
    density = 0.42 * body + 0.1 * body * abdomen - 0.28 * lung + 0.15 * np.maximum(heart, 0.6 * mediastinum)
    texture = 0.03 * _smooth_noise(anatomy["texture_seed"] + 7, image_size, 12) * lung
    parts = []
    if "cardiomegaly" in findings:
        parts.append(("cardiomegaly", 0.5 * heart))
    if "enlarged_cardiomediastinum" in findings:
        parts.append(("enlarged_cardiomediastinum", 0.5 * mediastinum))
    if "pneumothorax" in findings:  # an air rim without lung texture, and the visceral pleural line
        rim, line = _lateral_pneumothorax(x, y, lung, findings["pneumothorax"])
        drawn = 0.1 * line - 0.07 * rim
        parts.append(("pneumothorax", drawn - texture * rim))
        texture = texture * (1.0 - rim)
        density += drawn
    density += texture
    spine = _soft(np.abs(x - LATERAL_SPINE_X - 0.1 * y) - 0.1, 0.015) * (0.75 + 0.25 * np.cos(y * 30.0))
    density += 0.22 * spine - 0.12 * _polyline(x, y, [(0.1, -1.1), (0.0, CARINA_Y)], 0.06)  # spine, trachea
    ribs, fracture = _lateral_ribs(x, y, findings.get("fracture"))
    density += LATERAL_RIB_DENSITY * ribs
    if "fracture" in findings:
        parts.append(("fracture", LATERAL_RIB_DENSITY * fracture))
    opacity, finding_parts = _lateral_findings(x, y, lung, anatomy, findings, image_size)
    density += opacity
    image, boxes = _to_uint8(density, anatomy, image_size, 1, parts + finding_parts if regions is not None else None)
    if regions is not None:
        regions.update(boxes)
    return image


LATERAL_SPINE_X, LATERAL_RIB_DENSITY = 0.62, 0.05


def _lateral_ribs(x, y, fracture: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """(rib density 0..1, the fracture's change of it). The ribs of both sides, superimposed, run
    from just behind the spine forwards and down, fading anteriorly; a fracture is a gap with a step
    in one rib, where its lateral (axillary) segment projects, halfway to the anterior chest wall, and
    the dense spot of the overlapping fragment ends."""
    depth = LATERAL_SPINE_X + 0.1 * y - x  # in front of the vertebral bodies' centre

    def bands(shift: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        field = (y - shift - 0.42 * depth + 0.1 * depth**2 - FIRST_RIB_Y) / RIB_SPACING
        number = np.rint(field)
        distance = np.abs(field - number) * RIB_SPACING / 0.024
        band = np.clip((1.0 - distance) * 4.0, 0.0, 1.0) * (0.8 + 0.2 * np.minimum(distance, 1.0) ** 2)
        visible = (number >= POSTERIOR_RIBS[0]) & (number <= POSTERIOR_RIBS[-1])
        return band * visible * _soft(-0.12 - depth, 0.02) * _soft(depth - 0.75, 0.12), number

    ribs, number = bands(0.0)
    change = np.zeros_like(x)
    if fracture is not None:
        break_at = 0.2 + 0.7 * fracture["position"]
        stepped, stepped_number = bands(_fracture_step(depth - break_at))
        broken = stepped * (stepped_number == fracture["rib"]) * _soft(0.018 - np.abs(depth - break_at), 0.004)
        change = broken - ribs * (number == fracture["rib"])
        change = change + _fracture_spot(x, y, change, LATERAL_RIB_DENSITY)
    return ribs + change, change


def _lateral_pneumothorax(x, y, lung, attrs: dict) -> tuple[np.ndarray, np.ndarray]:
    """(air rim, visceral pleural line): the lung collapses towards the hilum and base, leaving air
    at the apex and along the anterior and posterior chest wall."""
    shrink = (0.9, 0.8, 0.66)[SEVERITY_LEVEL[attrs["size"]]]
    anchor_x, anchor_y = 0.1, 0.45
    cx, cy = anchor_x + shrink * (0.05 - anchor_x), anchor_y + shrink * (-0.05 - anchor_y)
    collapsed = _ellipse(x, y, cx, cy, 0.62 * shrink, 0.68 * shrink, edge=0.008)
    return lung * (1.0 - collapsed), lung * np.exp(-(((collapsed - 0.5) / 0.25) ** 2))


def _lateral_devices(x, y, attrs: dict) -> list[np.ndarray]:
    """The support devices seen from the side, one density each (same order as ``_devices``)."""
    drawn = []
    if "et_tube" in attrs["devices"]:
        drawn.append(0.55 * _polyline(x, y, [(0.1, -1.1), (0.03, CARINA_Y - 0.1)], 0.025))
    if "central_line" in attrs["devices"]:  # down the neck veins into the SVC, in front of the trachea
        drawn.append(0.5 * _polyline(x, y, [(0.04, -1.1), (-0.06, -0.7), (-0.12, -0.42), (-0.14, -0.2)], 0.014))
    if "pacemaker" in attrs["devices"]:  # generator on the anterior chest wall, leads into the heart
        generator = 0.8 * _ellipse(x, y, -0.5, -0.58, 0.04, 0.07, edge=0.01)
        leads = [(-0.5, -0.55), (-0.35, -0.42), (-0.2, -0.1), (-0.3, 0.32)]
        drawn.append(generator + 0.5 * _polyline(x, y, leads, 0.012))
    return drawn


def _lateral_findings(x, y, lung, anatomy: Anatomy, findings: Findings, size: int) -> tuple[np.ndarray, list]:
    """Summed density of the findings drawn on top of the lateral anatomy, and their region parts.
    Both lungs overlap here, so a bilateral finding is one part."""
    parts = []
    if "pleural_effusion" in findings:  # fluid fills the posterior costophrenic sulcus first
        height = (0.08, 0.22, 0.42)[SEVERITY_LEVEL[findings["pleural_effusion"]["size"]]]
        level = anatomy["dome_height"] + 0.15 - height - 0.4 * np.clip(x, 0, None)
        above_dome = _soft(y - anatomy["dome_height"] - 0.25 * x - 0.04, 0.02)
        fluid = 0.22 * _soft(level - y, 0.02) * _ellipse(x, y, 0.05, -0.05, 0.64, 0.75) * above_dome
        parts.append(("pleural_effusion", fluid))
    if "airspace" in findings:
        airspace, foci = _lateral_airspace(x, y, lung, findings["airspace"], size)
        parts += _focus_parts("airspace", airspace, foci)
    if "edema" in findings:
        parts.append(("edema", 0.6 * _edema(x * 0.8, y, findings["edema"]) * lung))
    if "atelectasis" in findings:
        band = 0.14 * _soft(np.abs(y - anatomy["dome_height"] + 0.1 - 0.1 * x) - 0.015, 0.008) * lung
        parts.append(("atelectasis", band))
    if "lung_lesion" in findings:
        # Both lungs overlap on the lateral view: only the depth (anterior-posterior) is drawn.
        lesion = findings["lung_lesion"]
        drawn = _lesion(x + 0.4 - 0.5 * lesion["position"], y, lesion | {"side": "left", "position": 0.0})
        parts.append(("lung_lesion", drawn))
    if "pleural_thickening" in findings:  # an apical cap
        inner = _ellipse(x, y, 0.05, 0.0, 0.56, 0.6)
        parts.append(("pleural_thickening", 0.16 * lung * (1.0 - inner) * _soft(y + 0.3, 0.05)))
    if "support_devices" in findings:
        parts += [("support_devices", device) for device in _lateral_devices(x, y, findings["support_devices"])]
    return sum((change for _, change in parts), np.zeros_like(x)), parts


def _lateral_lobe(x, y, zone: str) -> np.ndarray:
    """A lobe on the lateral view, bounded by the fissures seen there: the oblique (major) fissure
    runs from posterior-superior down to the anterior diaphragm, the horizontal (minor) one from
    the hilum forwards. Lower lobe behind the oblique fissure; upper and middle lobe in front of
    it, above and below the horizontal fissure."""
    behind_oblique = ((x - 0.3) * 0.9 + (y + 0.5) * 0.65) / 1.11  # > 0: posterior-inferior
    below_horizontal = y + 0.08
    if zone == "lower":
        return _soft(-behind_oblique, 0.01)
    front = _soft(behind_oblique, 0.01)
    return front * _soft(below_horizontal if zone == "upper" else -below_horizontal, 0.01)


def _lateral_airspace(x, y, lung: np.ndarray, attrs: dict, size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(density, the mask of each multifocal focus) of the same kind as on the frontal view; both
    lungs overlap, so only height and depth show."""
    kind, jitter = attrs["kind"], _airspace_jitter(attrs)
    # Unilateral disease is seen through the other lung's air, so it is fainter than on the PA view.
    strength = (0.6 if kind == "consolidation" else 0.8) * AIRSPACE_DENSITY[kind]
    if kind == "ground_glass":
        cx, cy = -0.15 + 0.35 * jitter[4], AIRSPACE_ZONE_Y[attrs["zone"]] + 0.06 * (jitter[1] - 0.5)
        haze = _ellipse(x, y, cx, cy, 0.24, 0.18, edge=0.07)
        return strength * haze * (0.85 + 0.15 * _smooth_noise(attrs["seed"] + 1, size, 5)) * lung, []
    if kind == "consolidation":
        region = _lateral_lobe(x, y, attrs["zone"]) * lung
        return strength * region * (0.96 + 0.04 * _smooth_noise(attrs["seed"] + 1, size, 8)), []
    if kind == "multifocal":
        outline = _smooth_noise(attrs["seed"] + 3, size, 14)
        blobs = []
        for index, focus in enumerate(attrs["foci"]):
            cx = -0.3 + 0.6 * jitter[6 + 2 * index]  # depth follows the frontal view's lateral offset
            cy = AIRSPACE_ZONE_Y[focus["zone"]] + 0.1 * (jitter[7 + 2 * index] - 0.5)
            blobs.append(_patch(x, y, cx, cy, 0.17, 0.13, outline))
        patches = np.clip(0.7 + 0.5 * _smooth_noise(attrs["seed"] + 1, size, 14), 0.4, 1.0)
        return strength * np.maximum.reduce(blobs) * patches * lung, blobs
    raise ValueError(f"unknown airspace kind {kind!r}: expected ground_glass, consolidation or multifocal")
