"""TRRG: truthful radiology report generation with cross-modal disease clues.

The model, config and processor classes live in ``trrg.modeling`` (the flat folder
``modeling_trrg/`` that is also copied into every hub checkpoint as remote code).
"""

__version__ = "0.1.0"

_LAZY = {
    "TRRGConfig": "trrg.modeling.configuration_trrg",
    "TRRGClueConfig": "trrg.modeling.configuration_trrg",
    "TRRGContrastiveConfig": "trrg.modeling.configuration_trrg",
    "CHEXPERT_OBSERVATIONS": "trrg.modeling.configuration_trrg",
    "TRRGContrastiveModel": "trrg.modeling.modeling_trrg",
    "TRRGForConditionalGeneration": "trrg.modeling.modeling_trrg",
    "TRRGProcessor": "trrg.modeling.processing_trrg",
    "TRRGImageProcessor": "trrg.modeling.image_processing_trrg",
}


def __getattr__(name):
    # Lazy so that `import trrg` (and the CLI's --help) does not pay for importing torch.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trrg' has no attribute {name!r}")
