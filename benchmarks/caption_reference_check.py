"""Dev check: trrg.evaluation.nlg against published caption-metric values.

    python benchmarks/caption_reference_check.py [--reference-dir /work/shared/reference/caption-metrics]

- coco_fakecap: 1,000 COCO val2014 images x 5 references and the coco-caption "fakecap" results.
  Its gts.json / res.json are already PTB-tokenized (see its expected.json), so they are scored
  as given, without PTBTokenizer. Expected values: coco-caption's demo notebook / CaptionMetrics.
- nlgeval_example: Maluuba/nlg-eval's two-sentence example, whitespace tokens, two references.

Prints each metric, the published value and the difference, and exits non-zero past tolerance
(1e-6 for BLEU/ROUGE-L/CIDEr against full-precision values, 1e-3 for METEOR; nlg-eval publishes
6 decimals, so 1e-6 there).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trrg.evaluation import nlg

KEYS = {"Bleu_1": "bleu_1", "Bleu_2": "bleu_2", "Bleu_3": "bleu_3", "Bleu_4": "bleu_4",
        "METEOR": "meteor", "ROUGE_L": "rouge_l", "CIDEr": "cider"}


def load_coco_fakecap(folder: Path) -> tuple[dict, dict, dict]:
    references = json.loads((folder / "gts.json").read_text())
    predictions = json.loads((folder / "res.json").read_text())
    return predictions, references, json.loads((folder / "expected.json").read_text())["expected"]


def load_nlgeval(folder: Path) -> tuple[dict, dict, dict]:
    def lines(name: str) -> list[str]:
        return [line.strip() for line in (folder / name).read_text().splitlines()]

    predictions = {str(i): [hyp] for i, hyp in enumerate(lines("hyp.txt"))}
    references = {str(i): list(refs) for i, refs in enumerate(zip(lines("ref1.txt"), lines("ref2.txt")))}
    return predictions, references, json.loads((folder / "expected.json").read_text())["expected_corpus"]


def compare(name: str, scores: dict, expected: dict, tolerance: float) -> bool:
    ok = True
    print(f"\n{name}")
    for published_key, key in KEYS.items():
        value = scores[key]
        if value is None:
            print(f"  {key:8s} unavailable: {scores.get('meteor_unavailable')}")
            continue
        difference = abs(value - expected[published_key])
        limit = 1e-3 if key == "meteor" else tolerance
        ok &= difference <= limit
        print(f"  {key:8s} {value:.10f}  published {expected[published_key]:.10f}  diff {difference:.1e}"
              f"{'' if difference <= limit else '  FAIL'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-dir", type=Path, default=Path("/work/shared/reference/caption-metrics"))
    args = parser.parse_args()
    ok = True
    for name, loader, tolerance in (("coco_fakecap", load_coco_fakecap, 1e-6), ("nlgeval_example", load_nlgeval, 1e-6)):
        predictions, references, expected = loader(args.reference_dir / name)
        ok &= compare(name, nlg.nlg_scores(predictions, references), expected, tolerance)
    print("\nall within tolerance" if ok else "\nSOME VALUES OUT OF TOLERANCE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
