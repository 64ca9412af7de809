"""Read speed of a prepared (``save_to_disk``, images in Arrow) folder vs PNG paths, same studies.

    python benchmarks/prepared_read_speed.py [--num-studies 400] [--image-size 256] [--batch-size 16]

Writes a phantom (R2Gen layout: PNG files + annotation.json), prepares the same studies into a saved
folder with ``trrg.processing.prepare.write_prepared``, then times what a collator does per batch:
fetch the rows (``dataset[i]``) and decode every view with ``StudyImageReader.read_batch``
(``load_xray_image``: a path is opened and read, in-memory bytes are decoded directly). Prints
studies/s for each source (best of ``--repeats`` passes; the files are in the page cache after
writing, so this is a warm-cache figure) and the folder sizes. Other processes on the machine slow
it down: run it alone.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import datasets

from trrg.processing.phantom import generate_phantom
from trrg.processing.prepare import PlannedImage, PlannedStudy, Tally, write_prepared
from trrg.processing.studies import StudyImageReader, load_studies


def studies_per_second(split: datasets.Dataset, batch_size: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        reader = StudyImageReader(strict=True)
        start = time.perf_counter()
        for first in range(0, len(split), batch_size):
            rows = [split[index] for index in range(first, min(first + batch_size, len(split)))]
            reader.read_batch(rows)
        best = min(best, time.perf_counter() - start)
    return len(split) / best


def folder_megabytes(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-studies", type=int, default=400)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        annotation = generate_phantom(folder / "phantom", num_train=args.num_studies, num_val=1, num_test=1,
                                      image_size=args.image_size, seed=0)  # fmt: skip
        paths = load_studies(annotation, splits=["train"])["train"]
        planned = [PlannedStudy(id=row["id"], patient=row["id"], report=row["report"], split="train",
                                raw_labels=row["labels"], images=[PlannedImage(Path(p), Path(p).name) for p in row["images"]])
                   for row in paths]  # fmt: skip
        write_prepared(planned, folder / "prepared", Tally(), "phantom")
        saved = load_studies(folder / "prepared")["train"]
        views = sum(len(row["images"]) for row in paths)
        print(f"{len(paths)} studies, {views} views of {args.image_size} px PNG, batch {args.batch_size}, "
              f"{os.cpu_count()} CPU cores visible, best of {args.repeats}")
        print(f"PNG paths (R2Gen annotation.json): {studies_per_second(paths, args.batch_size, args.repeats):8.1f} studies/s"
              f"   ({folder_megabytes(folder / 'phantom' / 'images'):.1f} MB of files)")
        print(f"saved Arrow folder (trrg prepare):  {studies_per_second(saved, args.batch_size, args.repeats):8.1f} studies/s"
              f"   ({folder_megabytes(folder / 'prepared'):.1f} MB folder)")


if __name__ == "__main__":
    main()
