"""TRRG NLG metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) as an `evaluate` module.

Load it by path, offline: ``evaluate.load(trrg.evaluation.metric_path("trrg_nlg"))``.
The numbers are those of ``trrg.evaluation.score.score_reports`` (pycocoevalcap 1.2 arithmetic on
R2Gen-cleaned tokens); see docs/METRICS.md.
"""

import datasets
import evaluate

from trrg.evaluation.score import nlg_report_scores

_DESCRIPTION = """\
Corpus BLEU-1..4, METEOR 1.5, ROUGE-L and CIDEr-D of generated radiology reports, computed exactly as
pycocoevalcap 1.2 does on the same token strings. Reports are cleaned with R2Gen's `clean_report`
(text_cleaning="r2gen", default) or only split on whitespace (text_cleaning="none"). METEOR needs java
and the METEOR 1.5 jar (bundled with pycocoevalcap, or $TRRG_METEOR_JAR); without them `meteor` is None
and `meteor_unavailable` says why.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): one generated report per study (raw text).
    references (list of str, or list of list of str): the reference report(s) of each study.
    text_cleaning (str): "r2gen" (default) or "none".
    meteor (bool): False skips METEOR (no Java start-up).
Returns:
    dict with bleu_1, bleu_2, bleu_3, bleu_4, meteor, rouge_l, cider (floats; meteor may be None).
Examples:
    >>> metric = evaluate.load(trrg.evaluation.metric_path("trrg_nlg"))
    >>> metric.compute(predictions=["no effusion ."], references=[["no pleural effusion ."]], meteor=False)["bleu_1"]
"""

_CITATION = """\
@inproceedings{papineni2002bleu, title={BLEU: a method for automatic evaluation of machine translation}, author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing}, booktitle={ACL}, year={2002}}
@inproceedings{vedantam2015cider, title={CIDEr: Consensus-based image description evaluation}, author={Vedantam, Ramakrishna and Zitnick, C Lawrence and Parikh, Devi}, booktitle={CVPR}, year={2015}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TrrgNlg(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # Several references per study, or a single one given as a plain string.
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://github.com/salaniz/pycocoevalcap"],
        )

    def _compute(self, predictions, references, text_cleaning="r2gen", meteor=True):
        return nlg_report_scores(predictions, references, text_cleaning=text_cleaning, meteor=meteor)
