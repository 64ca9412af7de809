"""The rule-based CheXpert labeler (``trrg label``, the training labels, clinical efficacy): its name on
the data side.

The code lives in the hub bundle, ``modeling_trrg/labeler_trrg.py`` (the rules, their sources and how
they aggregate are documented there): the report pipeline labels every sentence it writes with it, and
remote code cannot import ``trrg``. These are the same objects, not a copy.
"""

from trrg.modeling.labeler_trrg import (  # noqa: F401
    CARDIOMEGALY,
    NEGATIVE,
    NO_FINDING,
    POSITIVE,
    SUPPORT_DEVICES,
    UNCERTAIN,
    label_report,
    label_reports,
    label_sentences,
    labels_to_vector,
)
