"""TRRG clinical-efficacy (CE) metrics as an `evaluate` module.

Load it by path, offline: ``evaluate.load(trrg.evaluation.metric_path("trrg_clinical_efficacy"))``.
The numbers are the ``ce_*`` entries of ``trrg.evaluation.score.score_reports``; see docs/METRICS.md.
"""

import datasets
import evaluate

from trrg.evaluation.score import ce_report_scores

_DESCRIPTION = """\
Clinical efficacy of generated radiology reports: both sides are labelled with TRRG's CheXpert-style
labeler (14 observations) on the raw text; precision, recall and F1 micro/macro over the 14 and over
the 5 common observations (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion),
example-based P/R/F1 (PromptMRG), per-observation P/R/F1 and the normal-collapse rate (share of
abnormal studies whose generated report states no disease). Undefined values are None, never NaN.
Given the model's own perception (``clues``, or ``disease_probs`` decided at ``perception_threshold``),
also the truthfulness metrics: ``perception_*`` (the clue decisions scored like a report) and
``clue_drop_rate`` / ``clue_unsupported_rate`` (clues the report leaves out / findings it states
without a clue, over the 13 findings).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): one generated report per study (raw text).
    references (list of str, or list of list of str): the reference report(s); the first one is labelled.
    uncertain (str): "positive" (default), "negative" or "ignore": how uncertain labels count.
    clues (list of list of int, optional): per study, the model's 14 binary clue decisions
        (CheXpert order).
    disease_probs (list of list of float, optional): per study, the 14 zero-shot probabilities;
        used only without ``clues``, decision ``p >= perception_threshold``.
    perception_threshold (float): 0.5 by default.
Returns:
    dict of ce_* metrics (floats, counts, or None where undefined); with clues or disease_probs
    also perception_* and clue_* metrics and perception_source / perception_threshold.
Examples:
    >>> metric = evaluate.load(trrg.evaluation.metric_path("trrg_clinical_efficacy"))
    >>> metric.compute(predictions=["Small left pleural effusion."], references=["Left pleural effusion."])["ce_micro_f1_14"]
"""

_CITATION = """\
@inproceedings{jin2024promptmrg, title={PromptMRG: Diagnosis-Driven Prompts for Medical Report Generation}, author={Jin, Haibo and Che, Haoxuan and Lin, Yi and Chen, Hao}, booktitle={AAAI}, year={2024}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TrrgClinicalEfficacy(evaluate.Metric):
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
        )

    def _compute(self, predictions, references, uncertain="positive", clues=None, disease_probs=None,
                 perception_threshold=0.5):
        return ce_report_scores(predictions, references, uncertain=uncertain, clues=clues,
                                disease_probs=disease_probs, perception_threshold=perception_threshold)
