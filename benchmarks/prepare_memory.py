"""Is `trrg prepare` flat in memory as the data set grows, and is a prepared folder read without
loading it? Peak resident memory at two sizes, 10x apart.

    python benchmarks/prepare_memory.py [--studies 200 2000] [--image-size 256]

Writes a MIMIC-CXR-JPG-like tree per size (files/pNN/pSUBJECT/sSTUDY/*.jpg, a PA and a lateral view
of random noise, JPEG, so the bytes do not compress away; reports with FINDINGS and IMPRESSION;
the metadata and official split tables; one to three studies per patient), then runs in fresh
interpreters, each reporting its own peak resident set (VmHWM, Linux):

    prepare   trrg prepare mimic --root TREE --out PREPARED
    load      trrg.processing.studies.load_studies(PREPARED)  (loads and validates every split)

and prints both sizes' peaks, their ratio, the growth per study, and the image bytes for scale:
had the writer kept every row (or image) before writing, the larger run's peak would exceed the
smaller's by about the image bytes. Takes ~2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from memory_ratio import peak_of  # a sibling script: python benchmarks/prepare_memory.py

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ with cough.

 FINDINGS:

 Study {study}: the heart size is normal. {finding} No pneumothorax.

 IMPRESSION:

 {impression}
"""
FINDINGS = [("There is a small left pleural effusion.", "Small left effusion."),
            ("The lungs are clear.", "No acute cardiopulmonary process."),
            ("Mild pulmonary edema.", "Edema."),
            ("Right lower lobe opacity, possibly pneumonia.", "Pneumonia is possible.")]

PREPARE = """
import sys
from trrg.cli import main
if main(["prepare", "mimic", "--root", sys.argv[1], "--out", sys.argv[2]]) != 0:
    raise SystemExit("trrg prepare failed")
"""
LOAD = """
import sys
from trrg.processing.studies import load_studies
studies = load_studies(sys.argv[1])
print(sum(len(split) for split in studies.values()), "studies loaded")
"""


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def make_mimic_tree(root: Path, studies: int, image_size: int, seed: int = 0) -> int:
    """A MIMIC-CXR-JPG download of ``studies`` studies; returns the bytes of its images."""
    rng = np.random.default_rng(seed)
    metadata, splits, image_bytes, subject = [], [], 0, 10000000
    for index in range(studies):
        if index == 0 or rng.random() < 0.5:  # a new patient; else one more study of the last one
            subject += 1
            split = rng.choice(["train", "train", "train", "train", "train", "train", "train", "validate", "test", "test"])
        study = 50000000 + index
        folder = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}"
        (folder / f"s{study}").mkdir(parents=True, exist_ok=True)
        for view in ("PA", "LATERAL"):
            dicom_id = f"d{index:07d}{view[0]}"
            path = folder / f"s{study}" / f"{dicom_id}.jpg"
            Image.fromarray(rng.integers(0, 256, (image_size, image_size), dtype=np.uint8)).save(path, quality=90)
            image_bytes += path.stat().st_size
            metadata.append([dicom_id, subject, study, view])
            splits.append([dicom_id, study, subject, split])
        finding, impression = FINDINGS[index % len(FINDINGS)]
        (folder / f"s{study}.txt").write_text(REPORT.format(study=study, finding=finding, impression=impression))
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv", ["dicom_id", "subject_id", "study_id", "ViewPosition"], metadata)
    write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"], splits)
    return image_bytes


def measure(work: Path, studies: int, image_size: int, env: dict) -> dict:
    tree, prepared = work / f"mimic-{studies}", work / f"prepared-{studies}"
    image_bytes = make_mimic_tree(tree, studies, image_size)
    prepare = peak_of(PREPARE, tree, prepared, env=env)
    load = peak_of(LOAD, prepared, env=env)
    folder = sum(path.stat().st_size for path in prepared.rglob("*") if path.is_file())
    return {"studies": studies, "image_bytes": image_bytes, "folder_bytes": folder, "prepare": prepare, "load": load}


def table(runs: list[dict]) -> str:
    def mb(value: float) -> str:
        return f"{value / 1e6:,.0f} MB"

    lines = ["| | " + " | ".join(f"{run['studies']:,} studies" for run in runs) +
             f" | ratio last/first | growth per added study, {runs[-2]['studies']:,} -> {runs[-1]['studies']:,} |",
             "|---|" + "---|" * (len(runs) + 2)]
    rows = [("images (bytes on disk)", [run["image_bytes"] for run in runs])]
    for step, what in (("prepare", "`trrg prepare mimic`"), ("load", "`load_studies(folder)`")):
        rows += [(f"{what} peak RSS", [run[step]["peak"] for run in runs]),
                 (f"{what}: anonymous (sampled peak)", [run[step]["anon"] for run in runs]),
                 (f"{what}: mapped files (sampled peak)", [run[step]["file"] for run in runs])]
    added = runs[-1]["studies"] - runs[-2]["studies"]
    for what, values in rows:
        lines.append(f"| {what} | " + " | ".join(map(mb, values)) +
                     f" | {values[-1] / values[0]:.2f}x | {(values[-1] - values[-2]) / added / 1e3:.1f} kB |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, nargs="+", default=[200, 2000, 20000], help="sizes, smallest first")
    parser.add_argument("--image-size", type=int, default=128, help="side of the noise JPEGs (128: ~17 kB each)")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as work:
        env["HF_DATASETS_CACHE"] = str(Path(work) / "hf-datasets")  # nothing left behind in ~/.cache
        runs = [measure(Path(work), n, args.image_size, env) for n in args.studies]
    print(f"MIMIC-CXR-JPG-like trees, 2 views per study, {args.image_size} px noise JPEG")
    print(table(runs))
    print("prepared folders: " + ", ".join(f"{run['folder_bytes'] / 1e6:,.0f} MB" for run in runs) +
          "; trrg prepare took " + ", ".join(f"{run['prepare']['seconds']:.0f} s" for run in runs))


if __name__ == "__main__":
    main()
