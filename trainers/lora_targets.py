"""Which modules of a causal LM get LoRA when ``--lora_target_modules`` is left to fit the LM.

peft knows the attention projections of the architectures it lists (Llama ``q_proj``/``v_proj``,
GPT-2 ``c_attn``, ...); for any other architecture the linear layers inside its attention blocks
are what LoRA adapts (Phi-3's fused ``qkv_proj`` and ``o_proj``).
"""

from __future__ import annotations

from torch import nn


def default_lora_targets(language_model: nn.Module) -> list[str]:
    """Module names for ``peft.LoraConfig(target_modules=...)`` that fit ``language_model``.

    peft's per-architecture default when peft lists the model's ``model_type``, else the names of the
    ``nn.Linear`` / GPT-2 ``Conv1D`` children of the modules whose class name contains "Attention".
    """
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    model_type = getattr(getattr(language_model, "config", None), "model_type", None)
    known = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    if isinstance(known, (list, tuple)):  # a few entries are regexes meant for a multimodal wrapper
        return list(known)
    targets = attention_linear_names(language_model)
    if not targets:
        raise ValueError(f"{type(language_model).__name__} has no linear layers inside an attention module for LoRA: "
                         "name them with --lora_target_modules")
    return targets


def attention_linear_names(module: nn.Module) -> list[str]:
    """Sorted names of the linear children (``nn.Linear``, GPT-2 style ``Conv1D``) of every module whose
    class name contains "Attention"."""
    from transformers.pytorch_utils import Conv1D

    return sorted({name for parent in module.modules() if "Attention" in type(parent).__name__
                   for name, child in parent.named_children() if isinstance(child, (nn.Linear, Conv1D))})
