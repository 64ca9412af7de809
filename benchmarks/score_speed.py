"""Speed of `trrg score` (score_reports) against pycocoevalcap on the same token strings.

    python benchmarks/score_speed.py [--n 1000] [--no-meteor] [--seed 0]

Synthetic report-like pairs come from a small template grammar (no data needed). Printed:
- score_reports end to end (cleaning + NLG + labeler + CE metrics);
- TRRG's NLG metrics alone vs pycocoevalcap's Bleu(4) + Rouge + Cider (+ Meteor), on identical
  token strings, with the ratio and the largest metric difference.
METEOR is timed warm on both sides (each JVM is started and JIT-warmed by one untimed pass over
the corpus), since both keep one long-lived process.
"""

from __future__ import annotations

import argparse
import random
import time

from trrg.evaluation import nlg
from trrg.evaluation.score import metric_tokens, score_reports

FINDINGS = [
    "the heart is {size}", "heart size is {size}", "there is {degree} {location} pleural effusion",
    "no pleural effusion", "no pneumothorax", "{degree} pulmonary edema", "the lungs are clear",
    "{degree} {location} basilar atelectasis", "no focal consolidation", "{location} lower lobe consolidation",
    "mediastinal contours are normal", "there is a {location} sided chest tube", "no acute osseous abnormality",
    "{degree} cardiomegaly", "possible {location} lower lobe pneumonia", "osseous structures are intact",
]
WORDS = {
    "size": ["normal", "enlarged", "mildly enlarged", "top normal"],
    "degree": ["small", "mild", "moderate", "large", "trace"],
    "location": ["left", "right", "bilateral"],
}


def synthetic_report(rng: random.Random) -> str:
    sentences = rng.sample(FINDINGS, rng.randint(3, 7))
    filled = [s.format(**{key: rng.choice(values) for key, values in WORDS.items()}) for s in sentences]
    return " ".join(f"{sentence[0].upper()}{sentence[1:]}." for sentence in filled)


def synthetic_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    return [synthetic_report(rng) for _ in range(n)], [synthetic_report(rng) for _ in range(n)]


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def pycocoevalcap_scores(predictions: dict, references: dict, meteor) -> dict:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    bleu, _ = Bleu(4).compute_score(references, predictions, verbose=0)
    scores = {f"bleu_{n}": value for n, value in enumerate(bleu, start=1)}
    scores["rouge_l"] = float(Rouge().compute_score(references, predictions)[0])
    scores["cider"] = float(Cider().compute_score(references, predictions)[0])
    if meteor is not None:
        scores["meteor"] = meteor.compute_score(references, predictions)[0]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-meteor", action="store_true")
    args = parser.parse_args()
    use_meteor = not args.no_meteor
    predictions, references = synthetic_pairs(args.n, args.seed)
    token_predictions = {str(i): [metric_tokens(text)] for i, text in enumerate(predictions)}
    token_references = {str(i): [metric_tokens(text)] for i, text in enumerate(references)}

    coco_meteor = None
    if use_meteor:  # start and JIT-warm both JVMs on this corpus so that only scoring is timed
        from pycocoevalcap.meteor.meteor import Meteor

        coco_meteor = Meteor()
        coco_meteor.compute_score(token_references, token_predictions)
        nlg.corpus_meteor(token_predictions, token_references)

    _, end_to_end = timed(score_reports, predictions, references, meteor=use_meteor)
    ours, ours_time = timed(nlg.nlg_scores, token_predictions, token_references, meteor=use_meteor)
    theirs, theirs_time = timed(pycocoevalcap_scores, token_predictions, token_references, coco_meteor)
    difference = max(abs(ours[key] - theirs[key]) for key in theirs)

    metrics = "BLEU+ROUGE-L+CIDEr" + ("+METEOR" if use_meteor else "")
    print(f"{args.n} synthetic report pairs, {metrics}")
    print(f"score_reports (cleaning + NLG + labeler + CE): {end_to_end:.3f} s")
    print(f"trrg.evaluation.nlg.nlg_scores:               {ours_time:.3f} s")
    print(f"pycocoevalcap 1.2 scorers:                    {theirs_time:.3f} s")
    print(f"speed-up (pycocoevalcap / trrg NLG):          {theirs_time / ours_time:.2f}x")
    print(f"largest metric difference:                    {difference:.2e}")


if __name__ == "__main__":
    main()
