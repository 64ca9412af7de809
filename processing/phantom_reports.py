"""Findings, reports and labels of the synthetic CXR phantom.

A study's findings are drawn first (``sample_findings``); the report is then written from them
(``write_report``) and the 14 CheXpert labels are read off the sentences that were written: every
sentence template carries the labels it states, so the report is the source of truth. An
observation that no sentence mentions is ``None``; "No Finding" is derived as CheXpert does (1 when
nothing but support devices is positive or uncertain, else ``None``).

Each observation is mentioned by at most one sentence per report, so the labels never depend on how
a labeler aggregates conflicting mentions.

All sampling uses the ``numpy.random.Generator`` passed in, so a study is a pure function of its
seed. Findings are plain JSON-serialisable dicts (they are written to ``phantom_meta.json``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trrg.modeling.constants_trrg import CHEXPERT_OBSERVATIONS

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
Findings = dict[str, dict[str, Any]]
Sentence = tuple[str, dict[str, int]]

# Probability of each finding in an *abnormal* study (about half the studies are abnormal, so the
# overall prevalence is roughly half of these). Edema is drawn afterwards, linked to the heart.
ABNORMAL_FRACTION = 0.5
FINDING_PROBABILITY = {
    "cardiomegaly": 0.23,
    "pleural_effusion": 0.26,
    "atelectasis": 0.17,
    "airspace": 0.15,
    "lung_lesion": 0.08,
    "pneumothorax": 0.06,
    "fracture": 0.06,
    "enlarged_cardiomediastinum": 0.06,
    "pleural_thickening": 0.05,
}
EDEMA_PROBABILITY = {"with_heart_or_effusion": 0.30, "otherwise": 0.04}
DEVICE_PROBABILITY = {"abnormal": 0.19, "normal": 0.05}
# Share of drawn findings that the radiologist reports with a hedge (label -1).
UNCERTAIN_PROBABILITY = 0.12
FINDING_NAMES = (*FINDING_PROBABILITY, "edema", "support_devices")
# Airspace disease: the kind is drawn (see ``phantom_render``) and fixes the labels written.
#   ground_glass   faint hazy ill-defined opacity      -> "opacity"                  Lung Opacity
#   consolidation  dense sharply marginated lobar one  -> "consolidation"            Consolidation
#   multifocal     patchy dense foci in 2-3 lobes      -> "multifocal consolidation, Consolidation +
#                                                          consistent with pneumonia" Pneumonia
AIRSPACE_KINDS = ("ground_glass", "consolidation", "multifocal")
AIRSPACE_KIND_PROBABILITY = (0.35, 0.35, 0.3)
AIRSPACE_LABELS = {
    "ground_glass": {"Lung Opacity": 1},
    "consolidation": {"Consolidation": 1},
    "multifocal": {"Consolidation": 1, "Pneumonia": 1},
}
AIRSPACE_OBSERVATIONS = ("Lung Opacity", "Consolidation", "Pneumonia")
HEDGEABLE = ("pleural_effusion", "pneumothorax", "edema", "atelectasis", "lung_lesion", "fracture")

SIDES = ("right", "left")
LOBES = {
    ("right", "upper"): "right upper lobe",
    ("right", "middle"): "right middle lobe",
    ("right", "lower"): "right lower lobe",
    ("left", "upper"): "left upper lobe",
    ("left", "middle"): "lingula",
    ("left", "lower"): "left lower lobe",
}
ORDINALS = {4: "4th", 5: "5th", 6: "6th", 7: "7th", 8: "8th", 9: "9th"}
ADVERBS = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}


# --------------------------------------------------------------------------------------------
# Sampling findings
# --------------------------------------------------------------------------------------------


def _choice(rng: np.random.Generator, options, p=None):
    """``rng.choice`` that returns a plain Python object (JSON-friendly, not a numpy scalar)."""
    return options[int(rng.choice(len(options), p=p))]


def _certainty(rng: np.random.Generator, name: str) -> str:
    hedged = name in HEDGEABLE and rng.random() < UNCERTAIN_PROBABILITY
    return "uncertain" if hedged else "positive"


def _sample_one(rng: np.random.Generator, name: str) -> dict[str, Any]:
    """The attributes of one finding (laterality, size, severity, zone, ...)."""
    side = _choice(rng, SIDES)
    if name == "cardiomegaly":
        ctr = round(float(rng.uniform(0.53, 0.66)), 3)
        severity = "mild" if ctr < 0.57 else "moderate" if ctr < 0.62 else "severe"
        return {"ctr": ctr, "severity": severity}
    if name == "enlarged_cardiomediastinum":
        return {"half_width": round(float(rng.uniform(0.18, 0.24)), 3)}
    if name == "pleural_effusion":
        side = _choice(rng, ("right", "left", "bilateral"), p=(0.4, 0.3, 0.3))
        return {"side": side, "size": _choice(rng, ("small", "moderate", "large"), p=(0.5, 0.35, 0.15))}
    if name == "pneumothorax":
        return {"side": side, "size": _choice(rng, ("small", "moderate", "large"), p=(0.5, 0.35, 0.15))}
    if name == "airspace":
        return _sample_airspace(rng, side)
    if name == "edema":
        return {"severity": _choice(rng, ("mild", "moderate"), p=(0.6, 0.4))}
    if name == "atelectasis":
        return {"side": _choice(rng, ("right", "left", "bilateral"), p=(0.35, 0.35, 0.3))}
    if name == "lung_lesion":
        kind = _choice(rng, ("nodule", "mass"), p=(0.75, 0.25))
        size_mm = int(rng.integers(6, 16)) if kind == "nodule" else int(rng.integers(3, 7)) * 10
        zone = _choice(rng, ("upper", "middle", "lower"))
        return {"kind": kind, "size_mm": size_mm, "side": side, "zone": zone, "position": round(float(rng.random()), 3)}
    if name == "fracture":
        return {"side": side, "rib": int(rng.integers(4, 10)), "position": round(float(rng.uniform(0.45, 0.8)), 3)}
    if name == "pleural_thickening":
        return {"side": side}
    raise ValueError(f"unknown phantom finding {name!r}")


def _sample_airspace(rng: np.random.Generator, side: str) -> dict[str, Any]:
    """One of the ``AIRSPACE_KINDS``; the report words it from the kind alone (``AIRSPACE_LABELS``)."""
    kind = _choice(rng, AIRSPACE_KINDS, p=AIRSPACE_KIND_PROBABILITY)
    if kind == "multifocal":  # 2-3 distinct lobes, either or both lungs
        count = _choice(rng, (2, 3), p=(0.6, 0.4))
        picked = sorted(int(i) for i in rng.choice(len(LOBES), size=count, replace=False))
        foci = [{"side": lobe_side, "zone": zone} for lobe_side, zone in (list(LOBES)[i] for i in picked)]
        sides = {focus["side"] for focus in foci}
        attrs = {"kind": kind, "side": sides.pop() if len(sides) == 1 else "bilateral", "foci": foci}
    else:
        zone = _choice(rng, ("upper", "middle", "lower"), p=(0.25, 0.3, 0.45))
        attrs = {"kind": kind, "side": side, "zone": zone}
        if kind == "consolidation":
            attrs["air_bronchograms"] = bool(rng.random() < 0.5)
    return attrs | {"seed": int(rng.integers(2**31))}


def _with_certainty(attrs: dict[str, Any], certainty: str) -> dict[str, Any]:
    """A hedged finding is a subtle one: draw it at the smallest size / mildest severity."""
    if certainty == "uncertain":
        attrs = attrs | {key: value for key, value in (("size", "small"), ("severity", "mild")) if key in attrs}
    return attrs | {"certainty": certainty}


def _sample_devices(rng: np.random.Generator) -> dict[str, Any]:
    devices = [name for name, p in (("et_tube", 0.5), ("central_line", 0.55), ("pacemaker", 0.3)) if rng.random() < p]
    return {"devices": devices or [_choice(rng, ("et_tube", "central_line", "pacemaker"))]}


def sample_findings(rng: np.random.Generator) -> Findings:
    """Draw the findings of one study: about half normal, imbalanced prevalence, co-occurrence."""
    abnormal = rng.random() < ABNORMAL_FRACTION
    names = [name for name, p in FINDING_PROBABILITY.items() if abnormal and rng.random() < p]
    if abnormal:
        heart_or_fluid = "cardiomegaly" in names or "pleural_effusion" in names
        edema_p = EDEMA_PROBABILITY["with_heart_or_effusion" if heart_or_fluid else "otherwise"]
        if rng.random() < edema_p:
            names.append("edema")
        if not names:  # an abnormal study has at least one finding: pick one by prevalence
            weights = np.array(list(FINDING_PROBABILITY.values()))
            names.append(_choice(rng, list(FINDING_PROBABILITY), p=weights / weights.sum()))
    findings = {name: _with_certainty(_sample_one(rng, name), _certainty(rng, name)) for name in names}
    if rng.random() < DEVICE_PROBABILITY["abnormal" if abnormal else "normal"]:
        findings["support_devices"] = _sample_devices(rng) | {"certainty": "positive"}
    return findings


# --------------------------------------------------------------------------------------------
# Sentences: each template returns (text, the labels it states)
# --------------------------------------------------------------------------------------------


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _lobe_adjective(lobe: str) -> str:
    """ "lingula" as a modifier reads "lingular" ("lingular consolidation")."""
    return "lingular" if lobe == "lingula" else lobe


def _devices(rng: np.random.Generator, attrs: dict) -> list[Sentence]:
    templates = {
        "et_tube": (
            lambda: f"Endotracheal tube terminates {int(rng.integers(3, 7))} cm above the carina.",
            lambda: "The endotracheal tube is in standard position.",
            lambda: "An endotracheal tube is in place.",
        ),
        "central_line": (
            lambda: "Right internal jugular central venous catheter terminates in the SVC.",
            lambda: "A right IJ central line is in place with the tip in the superior vena cava.",
            lambda: "Right internal jugular catheter tip projects over the SVC.",
        ),
        "pacemaker": (
            lambda: "Left chest wall pacemaker with leads in the right atrium and right ventricle.",
            lambda: "A left-sided pacemaker is in place.",
        ),
    }
    # Several device sentences may state the same positive; the labels agree, so order is irrelevant.
    return [(_choice(rng, templates[device])(), {"Support Devices": POSITIVE}) for device in attrs["devices"]]


def _cardiomegaly(rng: np.random.Generator, attrs: dict) -> Sentence:
    severity = attrs["severity"]
    text = _choice(
        rng,
        (
            f"{_cap(severity)} cardiomegaly.",
            f"The heart is {ADVERBS[severity]} enlarged.",
            f"There is {severity} enlargement of the cardiac silhouette.",
            "The heart is enlarged." if severity != "mild" else "Mild cardiomegaly.",
        ),
    )
    return text, {"Cardiomegaly": POSITIVE}


def _enlarged_cardiomediastinum(rng: np.random.Generator, attrs: dict) -> Sentence:
    text = _choice(
        rng, ("The mediastinum is widened.", "The superior mediastinum is widened.", "Mediastinal widening.")
    )
    return text, {"Enlarged Cardiomediastinum": POSITIVE}


def _effusion(rng: np.random.Generator, attrs: dict) -> Sentence:
    side, size = attrs["side"], attrs["size"]
    if attrs["certainty"] == "uncertain":
        where = "bilateral" if side == "bilateral" else side
        plural = "effusions" if side == "bilateral" else "effusion"
        text = _choice(
            rng,
            (
                f"Small {where} pleural {plural} cannot be excluded."
                if side == "bilateral"
                else f"A small {where} pleural effusion cannot be excluded.",
                f"Possible small {where} pleural {plural}.",
            ),
        )
        return text, {"Pleural Effusion": UNCERTAIN}
    if side == "bilateral":
        options = [f"{_cap(size)} bilateral pleural effusions.", f"There are {size} bilateral pleural effusions."]
        if size == "small":
            options.append("Blunting of both costophrenic angles consistent with small bilateral pleural effusions.")
    else:
        options = [f"{_cap(size)} {side} pleural effusion.", f"There is a {size} {side} pleural effusion."]
        if size == "small":
            options.append(f"Blunting of the {side} costophrenic angle consistent with a small pleural effusion.")
    return _choice(rng, options), {"Pleural Effusion": POSITIVE}


def _pneumothorax(rng: np.random.Generator, attrs: dict) -> Sentence:
    side, size = attrs["side"], attrs["size"]
    if attrs["certainty"] == "uncertain":
        text = _choice(
            rng,
            (f"A tiny {side} apical pneumothorax cannot be excluded.", f"Possible small {side} apical pneumothorax."),
        )
        return text, {"Pneumothorax": UNCERTAIN}
    options = [f"{_cap(size)} {side} pneumothorax.", f"A {size} {side} pneumothorax is present."]
    if size == "small":
        options.append(f"There is a small {side} apical pneumothorax.")
    return _choice(rng, options), {"Pneumothorax": POSITIVE}


def _lobe_list(foci: list[dict]) -> str:
    """ "the right upper lobe and lingula", "the right middle lobe, right lower lobe and left lower lobe"."""
    lobes = [LOBES[(focus["side"], focus["zone"])] for focus in foci]
    return "the " + (", ".join(lobes[:-1]) + " and " + lobes[-1] if len(lobes) > 1 else lobes[0])


def _airspace(rng: np.random.Generator, attrs: dict) -> list[Sentence]:
    """One sentence; its wording varies, its labels are ``AIRSPACE_LABELS[kind]`` and nothing else."""
    kind = attrs["kind"]
    labels = dict(AIRSPACE_LABELS[kind])
    if kind == "multifocal":
        where = _lobe_list(attrs["foci"])
        spread = "Bilateral" if attrs["side"] == "bilateral" else "Multifocal"
        text = _choice(
            rng,
            (
                f"Multifocal consolidation in {where}, consistent with pneumonia.",
                f"Patchy consolidation in {where} consistent with multifocal pneumonia.",
                f"{spread} pneumonia with patchy consolidation in {where}.",
            ),
        )
        return [(text, labels)]
    lobe = LOBES[(attrs["side"], attrs["zone"])]
    if kind == "ground_glass":
        text = _choice(
            rng,
            (
                f"Hazy opacity in the {lobe}.",
                f"Faint ground-glass opacity in the {lobe}.",
                f"There is an ill-defined hazy opacity in the {lobe}.",
            ),
        )
        return [(text, labels)]
    if kind != "consolidation":
        raise ValueError(f"unknown airspace kind {kind!r}: expected one of {AIRSPACE_KINDS}")
    adjective = _lobe_adjective(lobe)
    bronchograms = " with air bronchograms" if attrs.get("air_bronchograms") else ""
    text = _choice(
        rng,
        (
            f"Dense consolidation in the {lobe}{bronchograms}.",
            f"{_cap(adjective)} consolidation{bronchograms}.",
            f"There is lobar consolidation in the {lobe}{bronchograms}.",
        ),
    )
    return [(text, labels)]


def _edema(rng: np.random.Generator, attrs: dict) -> Sentence:
    severity = attrs["severity"]
    if attrs["certainty"] == "uncertain":
        text = _choice(
            rng, ("Possible mild pulmonary edema.", "Perihilar haziness may represent mild pulmonary edema.")
        )
        return text, {"Edema": UNCERTAIN}
    options = [f"{_cap(severity)} pulmonary edema.", f"{_cap(severity)} interstitial pulmonary edema."]
    if severity == "moderate":
        options.append("Moderate pulmonary edema with perihilar predominance.")
    return _choice(rng, options), {"Edema": POSITIVE}


def _atelectasis(rng: np.random.Generator, attrs: dict) -> Sentence:
    side = attrs["side"]
    basilar = "Bibasilar" if side == "bilateral" else f"{_cap(side)} basilar"
    base = "both lung bases" if side == "bilateral" else f"the {side} lung base"
    if attrs["certainty"] == "uncertain":
        text = _choice(
            rng,
            (
                f"Possible {basilar.lower()} atelectasis.",
                f"Streaky {basilar.lower()} changes may represent atelectasis.",
            ),
        )
        return text, {"Atelectasis": UNCERTAIN}
    text = _choice(
        rng, (f"{basilar} atelectasis.", f"Mild {basilar.lower()} atelectasis.", f"Subsegmental atelectasis at {base}.")
    )
    return text, {"Atelectasis": POSITIVE}


def _lesion(rng: np.random.Generator, attrs: dict) -> Sentence:
    lobe = LOBES[(attrs["side"], attrs["zone"])]
    if attrs["kind"] == "mass":
        cm = attrs["size_mm"] // 10
        options = (f"A {cm} cm mass in the {lobe}.", f"There is a {cm} cm {_lobe_adjective(lobe)} mass.")
    else:
        mm = attrs["size_mm"]
        options = (
            f"A {mm} mm nodule in the {lobe}.",
            f"There is a {mm} mm nodule in the {lobe}.",
            f"{_cap(_lobe_adjective(lobe))} nodule measuring {mm} mm.",
        )
    if attrs["certainty"] == "uncertain":
        noun = "mass" if attrs["kind"] == "mass" else "nodule"
        size = f"{attrs['size_mm'] // 10} cm" if noun == "mass" else f"{attrs['size_mm']} mm"
        options = (f"Possible {size} {noun} in the {lobe}.", f"Questionable {size} {noun} in the {lobe}.")
        return _choice(rng, options), {"Lung Lesion": UNCERTAIN}
    return _choice(rng, options), {"Lung Lesion": POSITIVE}


def _fracture(rng: np.random.Generator, attrs: dict) -> Sentence:
    side, rib = attrs["side"], ORDINALS[attrs["rib"]]
    if attrs["certainty"] == "uncertain":
        return f"Possible nondisplaced fracture of the {side} {rib} rib.", {"Fracture": UNCERTAIN}
    text = _choice(
        rng,
        (
            f"Acute fracture of the {side} {rib} rib.",
            f"There is a minimally displaced fracture of the {side} {rib} rib.",
            f"{_cap(side)} {rib} rib fracture.",
        ),
    )
    return text, {"Fracture": POSITIVE}


def _pleural_thickening(rng: np.random.Generator, attrs: dict) -> Sentence:
    side = attrs["side"]
    text = _choice(
        rng,
        (
            f"{_cap(side)} apical pleural thickening.",
            f"Mild {side} pleural thickening.",
            f"Pleural thickening along the {side} lateral chest wall.",
        ),
    )
    return text, {"Pleural Other": POSITIVE}


# Negated / normal statements: (text, labels). Picked only when none of their observations is
# mentioned elsewhere in the report; "Lungs are clear." only when no parenchymal finding is drawn.
HEART_NEGATIVES: tuple[Sentence, ...] = (
    ("Heart size is normal.", {"Cardiomegaly": NEGATIVE}),
    ("The heart is normal in size.", {"Cardiomegaly": NEGATIVE}),
    ("Normal heart size.", {"Cardiomegaly": NEGATIVE}),
)
MEDIASTINUM_NEGATIVES: tuple[Sentence, ...] = (
    ("The mediastinal contours are normal.", {"Enlarged Cardiomediastinum": NEGATIVE}),
    ("Mediastinal contours are within normal limits.", {"Enlarged Cardiomediastinum": NEGATIVE}),
    ("The mediastinum is not widened.", {"Enlarged Cardiomediastinum": NEGATIVE}),
)
HEART_AND_MEDIASTINUM_NEGATIVES: tuple[Sentence, ...] = (
    (
        "Heart size and mediastinal contours are normal.",
        {"Cardiomegaly": NEGATIVE, "Enlarged Cardiomediastinum": NEGATIVE},
    ),
    ("Normal heart size and mediastinal contours.", {"Cardiomegaly": NEGATIVE, "Enlarged Cardiomediastinum": NEGATIVE}),
    (
        "The heart and mediastinum are within normal limits.",
        {"Cardiomegaly": NEGATIVE, "Enlarged Cardiomediastinum": NEGATIVE},
    ),
)
CLEAR_LUNG_STATEMENTS: tuple[Sentence, ...] = (
    ("Lungs are clear.", {}),
    ("The lungs are clear.", {}),
    ("The lungs are clear without focal consolidation.", {"Consolidation": NEGATIVE}),
)
LUNG_NEGATIVES: tuple[Sentence, ...] = (
    ("No focal consolidation.", {"Consolidation": NEGATIVE}),
    ("No focal consolidation to suggest pneumonia.", {"Consolidation": NEGATIVE, "Pneumonia": NEGATIVE}),
    ("There is no focal consolidation or pulmonary edema.", {"Consolidation": NEGATIVE, "Edema": NEGATIVE}),
    ("No focal airspace opacity.", {"Lung Opacity": NEGATIVE}),
    ("No pulmonary edema.", {"Edema": NEGATIVE}),
    ("There is no pulmonary edema.", {"Edema": NEGATIVE}),
    ("No evidence of pneumonia.", {"Pneumonia": NEGATIVE}),
    ("No suspicious pulmonary nodules or masses.", {"Lung Lesion": NEGATIVE}),
    ("No pulmonary nodules.", {"Lung Lesion": NEGATIVE}),
)
PLEURA_NEGATIVES: tuple[Sentence, ...] = (
    ("No pleural effusion or pneumothorax.", {"Pleural Effusion": NEGATIVE, "Pneumothorax": NEGATIVE}),
    ("There is no pleural effusion or pneumothorax.", {"Pleural Effusion": NEGATIVE, "Pneumothorax": NEGATIVE}),
    ("No pneumothorax or pleural effusion.", {"Pleural Effusion": NEGATIVE, "Pneumothorax": NEGATIVE}),
    (
        "No focal consolidation, pleural effusion, or pneumothorax.",
        {"Consolidation": NEGATIVE, "Pleural Effusion": NEGATIVE, "Pneumothorax": NEGATIVE},
    ),
    ("No pleural effusion.", {"Pleural Effusion": NEGATIVE}),
    ("No pleural effusions.", {"Pleural Effusion": NEGATIVE}),
    ("No pneumothorax.", {"Pneumothorax": NEGATIVE}),
    ("There is no pneumothorax.", {"Pneumothorax": NEGATIVE}),
)
BONE_STATEMENTS: tuple[Sentence, ...] = (
    ("No acute osseous abnormality.", {"Fracture": NEGATIVE}),  # rules a fracture out, as CheXbert reads it
    ("The osseous structures are intact.", {}),
    ("No displaced rib fractures.", {"Fracture": NEGATIVE}),
    ("No acute rib fracture.", {"Fracture": NEGATIVE}),
)
IMPRESSION_NORMAL: tuple[Sentence, ...] = (
    ("No acute cardiopulmonary process.", {}),
    ("No acute cardiopulmonary abnormality.", {}),
    ("No acute cardiopulmonary disease.", {}),
)
PARENCHYMAL = ("airspace", "edema", "atelectasis", "lung_lesion")
MAX_SENTENCES = 8


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _free(statement: Sentence, mentioned: set[str]) -> bool:
    return not (set(statement[1]) & mentioned)


def _pick_negatives(
    rng: np.random.Generator, pool: tuple[Sentence, ...], mentioned: set[str], count: int
) -> list[Sentence]:
    """Up to ``count`` statements from ``pool`` that mention nothing already mentioned."""
    picked: list[Sentence] = []
    for index in rng.permutation(len(pool)):
        if len(picked) == count:
            break
        statement = pool[int(index)]
        if _free(statement, mentioned):
            picked.append(statement)
            mentioned |= set(statement[1])
    return picked


def _positive_sections(rng: np.random.Generator, findings: Findings) -> dict[str, list[Sentence]]:
    """Sentences stating the drawn findings, grouped by report section."""
    writers = {
        "cardiomegaly": ("heart", _cardiomegaly),
        "enlarged_cardiomediastinum": ("heart", _enlarged_cardiomediastinum),
        "airspace": ("lungs", _airspace),
        "edema": ("lungs", _edema),
        "atelectasis": ("lungs", _atelectasis),
        "lung_lesion": ("lungs", _lesion),
        "pleural_effusion": ("pleura", _effusion),
        "pneumothorax": ("pleura", _pneumothorax),
        "pleural_thickening": ("pleura", _pleural_thickening),
        "fracture": ("bones", _fracture),
        "support_devices": ("devices", _devices),
    }
    sections: dict[str, list[Sentence]] = {name: [] for name in ("devices", "heart", "lungs", "pleura", "bones")}
    for name in writers:  # fixed order: the report reads devices, heart, lungs, pleura, bones
        if name in findings:
            section, writer = writers[name]
            written = writer(rng, findings[name])
            sections[section] += written if isinstance(written, list) else [written]
    return sections


def _negative_sections(
    rng: np.random.Generator, findings: Findings, mentioned: set[str], wanted: int
) -> dict[str, list[Sentence]]:
    """Normal statements for what was not found, about ``wanted`` of them in all."""
    sections: dict[str, list[Sentence]] = {"heart": [], "lungs": [], "pleura": [], "bones": []}
    if rng.random() < 0.9:
        pool = HEART_AND_MEDIASTINUM_NEGATIVES if rng.random() < 0.4 else HEART_NEGATIVES
        sections["heart"] += _pick_negatives(rng, pool, mentioned, 1)
    if rng.random() < 0.5:
        sections["heart"] += _pick_negatives(rng, MEDIASTINUM_NEGATIVES, mentioned, 1)
    if not any(name in findings for name in PARENCHYMAL) and rng.random() < 0.75:
        sections["lungs"] += _pick_negatives(rng, CLEAR_LUNG_STATEMENTS, mentioned, 1)
    sections["pleura"] += _pick_negatives(rng, PLEURA_NEGATIVES, mentioned, 1)
    if rng.random() < 0.6:
        sections["bones"] += _pick_negatives(rng, BONE_STATEMENTS, mentioned, 1)
    missing = wanted - sum(map(len, sections.values()))
    sections["lungs"] += _pick_negatives(rng, LUNG_NEGATIVES, mentioned, max(missing, 0))
    return sections


def _trim_negatives(sections: dict[str, list[Sentence]], room: int) -> dict[str, list[Sentence]]:
    """Drop normal statements (bones first, heart last) until at most ``room`` remain."""
    sections = {name: list(sentences) for name, sentences in sections.items()}
    for name in ("bones", "lungs", "pleura", "heart"):
        while sum(map(len, sections.values())) > max(room, 0) and sections[name]:
            sections[name].pop()
    return sections


def labels_from_sentences(sentences: list[Sentence]) -> dict[str, int | None]:
    """CheXpert labels stated by ``sentences``; "No Finding" derived as CheXpert does."""
    labels: dict[str, int | None] = dict.fromkeys(CHEXPERT_OBSERVATIONS)
    for _, stated in sentences:
        labels.update(stated)
    pathology = [name for name in CHEXPERT_OBSERVATIONS if name not in ("No Finding", "Support Devices")]
    if all(labels[name] not in (POSITIVE, UNCERTAIN) for name in pathology):
        labels["No Finding"] = POSITIVE
    return labels


def write_report(rng: np.random.Generator, findings: Findings) -> tuple[str, dict[str, int | None]]:
    """A radiology report for ``findings`` (about 4-8 sentences) and the labels it states."""
    positives = _positive_sections(rng, findings)
    mentioned = {name for sentences in positives.values() for _, stated in sentences for name in stated}
    if "airspace" in findings:
        # Its kind alone decides the airspace labels: no "No focal airspace opacity." next to a
        # consolidation, no "No evidence of pneumonia." next to a ground-glass opacity.
        mentioned |= set(AIRSPACE_OBSERVATIONS)
    wanted = int(rng.integers(4, 8)) - sum(map(len, positives.values()))
    negatives = _negative_sections(rng, findings, mentioned, wanted)
    negatives = _trim_negatives(negatives, room=MAX_SENTENCES - sum(map(len, positives.values())))
    order = ("devices", "heart", "lungs", "pleura", "bones")
    sentences = [s for section in order for s in positives[section] + negatives.get(section, [])]
    pathology = set(findings) - {"support_devices"}
    if not pathology and len(sentences) < MAX_SENTENCES and rng.random() < 0.6:
        sentences.append(_choice(rng, IMPRESSION_NORMAL))
    return " ".join(text for text, _ in sentences), labels_from_sentences(sentences)
