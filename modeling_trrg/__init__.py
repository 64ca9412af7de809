"""The hub bundle: flat remote-code files copied into every saved TRRG model folder.

Importing this package is cheap (the labeler only needs ``configuration_trrg``); call
``register_auto_classes()`` to let the transformers Auto classes load TRRG folders with the
package's own code and without ``trust_remote_code`` (``trrg``'s loaders do).
"""


def register_auto_classes() -> None:
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageTextToText, AutoProcessor

    from .configuration_trrg import TRRGClueConfig, TRRGConfig, TRRGContrastiveConfig
    from .image_processing_trrg import TRRGImageProcessor
    from .modeling_trrg import TRRGContrastiveModel, TRRGForConditionalGeneration
    from .processing_trrg import TRRGProcessor

    for config in (TRRGConfig, TRRGContrastiveConfig, TRRGClueConfig):
        AutoConfig.register(config.model_type, config, exist_ok=True)
    AutoModel.register(TRRGConfig, TRRGForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(TRRGConfig, TRRGForConditionalGeneration, exist_ok=True)
    AutoModel.register(TRRGContrastiveConfig, TRRGContrastiveModel, exist_ok=True)
    for config in (TRRGConfig, TRRGContrastiveConfig):
        AutoImageProcessor.register(config, slow_image_processor_class=TRRGImageProcessor, exist_ok=True)
        AutoProcessor.register(config, TRRGProcessor, exist_ok=True)
