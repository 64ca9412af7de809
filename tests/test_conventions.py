"""The transformers conventions TRRG's models follow as composite models: device maps that never cut
a block, the attention implementation that reaches the composed LM, the Auto classes, typed outputs,
and bf16 loading with the clue decisions kept in fp32."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModel, AutoModelForImageTextToText, Gemma2Config

from conftest import xray_like
from trrg.assembly.hub_folders import save_hub_folder
from trrg.modeling import register_auto_classes
from trrg.modeling.modeling_trrg import TRRGCluePrediction, TRRGMultimodalFeatures

register_auto_classes()


@pytest.fixture(scope="module")
def finetune_folder(tiny_finetune_model, tmp_path_factory):
    model, processor = tiny_finetune_model
    return save_hub_folder(model, processor, tmp_path_factory.mktemp("conventions") / "finetune")


@pytest.fixture(scope="module")
def pretrain_folder(tiny_pretrain_model, tmp_path_factory):
    model, processor = tiny_pretrain_model
    return save_hub_folder(model, processor, tmp_path_factory.mktemp("conventions") / "pretrain")


# ---------------------------------------------------------------------------------------------
# Device maps
# ---------------------------------------------------------------------------------------------


def split_modules(model, device_map: dict, classes) -> list[str]:
    """Names of the modules of ``classes`` whose parameters and buffers the device map spreads over
    several devices (each tensor goes where its longest prefix in the map goes; one without a prefix in
    the map, as accelerate leaves some buffers, counts nowhere)."""
    def device_of(name: str):
        while name and name not in device_map:
            name = name.rpartition(".")[0]
        return device_map.get(name)

    split = []
    for name, module in model.named_modules():
        if type(module).__name__ in classes:
            tensors = [f"{name}.{t}" for t, _ in [*module.named_parameters(), *module.named_buffers()]]
            if len({device_of(t) for t in tensors} - {None}) > 1:
                split.append(name)
    return split


@pytest.mark.parametrize("stage", ["finetune", "pretrain"])
def test_no_split_modules_keep_every_block_on_one_device(stage, tiny_finetune_model, tiny_pretrain_model):
    """``_no_split_modules`` holds the composed backbones' blocks (their own lists, the vision backbone's
    included although it sits one level down) and TRRG's; ``infer_auto_device_map`` over two small
    devices, as ``from_pretrained(device_map="auto")`` calls it, then cuts none of them, where without
    the list it does cut some."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import compute_module_sizes

    model = (tiny_finetune_model if stage == "finetune" else tiny_pretrain_model)[0]
    backbones = [model.vision_model.backbone, model.language_model if stage == "finetune" else model.text_model]
    expected = set().union(*(b._no_split_modules for b in backbones))
    if stage == "finetune":
        expected |= {"TRRGClueInteractionLayer", "TRRGClueInjector", "TRRGPerception"}
    assert {"ResNetConvLayer", "LlamaDecoderLayer" if stage == "finetune" else "BertLayer"} <= expected
    assert set(model._no_split_modules) == expected

    total = compute_module_sizes(model)[""]
    both_devices = cut_without_the_list = 0
    for share in (0.2, 0.3, 0.4, 0.5, 0.6):  # of the model's bytes, on each of the two devices
        memory = {0: int(share * total), 1: int(share * total), "cpu": 10 * total}
        device_map = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=sorted(model._no_split_modules))
        assert split_modules(model, device_map, model._no_split_modules) == [], share
        both_devices += {0, 1} <= set(device_map.values())
        unlisted = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=[])
        cut_without_the_list += bool(split_modules(model, unlisted, model._no_split_modules))
    assert both_devices and cut_without_the_list, "no budget cut a block without the list: the test would prove nothing"


# ---------------------------------------------------------------------------------------------
# Attention implementation
# ---------------------------------------------------------------------------------------------


def _flex_attention_or_skip():
    from transformers.utils import is_torch_flex_attn_available

    if not is_torch_flex_attn_available():
        pytest.skip(f"torch {torch.__version__} has no flex attention")


@pytest.mark.parametrize("implementation", ["eager", "sdpa", "flex_attention"])
def test_attn_implementation_reaches_the_composed_lm(implementation, finetune_folder, pretrain_folder):
    """Asked of the TRRG model, the implementation reaches the LM (stage 2) and the text encoder
    (stage 1); the tiny ResNet, which has no attention, keeps its own."""
    if implementation == "flex_attention":
        _flex_attention_or_skip()
    stage2 = AutoModel.from_pretrained(finetune_folder, attn_implementation=implementation)
    assert stage2.language_model.config._attn_implementation == implementation
    assert stage2.config.text_config._attn_implementation == implementation
    assert stage2.vision_model.backbone.config._attn_implementation == "eager"
    stage1 = AutoModel.from_pretrained(pretrain_folder, attn_implementation=implementation)
    assert stage1.text_model.config._attn_implementation == implementation


def test_attention_flags_follow_the_composed_lm(tiny_tokenizer):
    """The instance's ``_supports_*`` flags are its LM's: Gemma 2 has no SDPA, so a TRRG model around it
    says so, and asking for "sdpa" is refused by the LM instead of being silently ignored."""
    from trrg.assembly.build import build_finetune_model
    from trrg.modeling.modeling_trrg import TRRGForConditionalGeneration

    llama_model = build_finetune_model("tiny", tokenizer=tiny_tokenizer)[0]
    assert llama_model._supports_sdpa and llama_model._supports_flex_attn and llama_model._supports_flash_attn
    config = copy.deepcopy(llama_model.config)
    config.text_config = Gemma2Config(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    gemma_model = TRRGForConditionalGeneration(config)
    assert gemma_model.language_model.config._attn_implementation == "eager"
    assert not gemma_model._supports_sdpa and gemma_model._supports_flex_attn
    config.text_config._attn_implementation = "sdpa"
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        TRRGForConditionalGeneration(config)


# ---------------------------------------------------------------------------------------------
# Auto classes and typed outputs
# ---------------------------------------------------------------------------------------------


def test_stage2_is_an_image_text_to_text_model(finetune_folder, pretrain_folder):
    """auto_map names the stage-2 model for AutoModelForImageTextToText as well as AutoModel (the remote-code
    load without the package: tests/test_backbone_families.py), and the package registers both."""
    import json

    auto_map = json.loads((finetune_folder / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == auto_map["AutoModelForImageTextToText"] == "modeling_trrg.TRRGForConditionalGeneration"
    assert "AutoModelForImageTextToText" not in json.loads((pretrain_folder / "config.json").read_text())["auto_map"]
    model = AutoModelForImageTextToText.from_pretrained(finetune_folder, trust_remote_code=True)
    assert type(model).__name__ == "TRRGForConditionalGeneration"


def test_clue_prediction_and_multimodal_features_are_model_outputs(tiny_finetune_model):
    model, processor = tiny_finetune_model
    inputs = processor(images=[[xray_like(1), xray_like(2)]], return_tensors="pt")
    with torch.no_grad():
        clues = model.predict_clues(inputs["pixel_values"], inputs["view_mask"])
        with_maps = model.predict_clues(inputs["pixel_values"], inputs["view_mask"], return_maps=True)
        features = model.get_multimodal_features(inputs["pixel_values"], inputs["view_mask"])
    assert isinstance(clues, TRRGCluePrediction) and isinstance(features, TRRGMultimodalFeatures)
    assert clues["disease_probs"] is clues.disease_probs and clues.evidence_maps is None
    assert clues.get("evidence_maps") is None and with_maps.get("evidence_maps") is not None  # the Space reads it so
    assert torch.equal(with_maps["clue_states"], clues.clue_states)
    assert features["visual_tokens"].shape == (2 * model.config.image_token_grid ** 2, model.config.text_config.hidden_size)
    assert features.clue_tokens.shape == (1, 14, model.config.text_config.hidden_size)


# ---------------------------------------------------------------------------------------------
# bf16 loading
# ---------------------------------------------------------------------------------------------

FP32_MODULES = ("clue_injector.", "prompt_bank", "perception.visual_projection.", "perception.patch_projection.",
                "perception.logit_scale", "perception.disease_pos_weight")


def test_bf16_loading_keeps_the_clue_decisions_in_fp32_and_generates(finetune_folder, tiny_finetune_model):
    """``dtype=torch.bfloat16``: the LM (and the vision backbone) in bf16, the clue tables, prompt bank
    and zero-shot head in fp32 (``_keep_in_fp32_modules_strict``); generation, extra clues and the
    training loss work in that mixed state, and the perception is the fp32 model's to bf16 precision."""
    model = AutoModel.from_pretrained(finetune_folder, dtype=torch.bfloat16).eval()
    tensors = dict([*model.named_parameters(), *model.named_buffers()])
    kept = {name for name in tensors if name.startswith(FP32_MODULES)}
    assert {"clue_injector.token_table", "clue_injector.state_table", "prompt_bank", "perception.logit_scale",
            "perception.visual_projection.weight", "perception.patch_projection.weight"} <= kept
    assert all(tensors[name].dtype == torch.float32 for name in kept)
    assert model.language_model.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert model.multi_modal_projector.weight.dtype == torch.bfloat16

    processor = tiny_finetune_model[1]
    inputs = processor(images=[[xray_like(1), xray_like(2)], [xray_like(3)]], return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4)
        clues = model.predict_clues(inputs["pixel_values"], inputs["view_mask"])
        reference = tiny_finetune_model[0].predict_clues(inputs["pixel_values"], inputs["view_mask"])
        extra = model(**inputs, clue_embeds=torch.randn(2, 3, model.config.projection_dim))
    assert ids.shape[1] == inputs["input_ids"].shape[1] + 4
    assert clues.disease_probs.dtype == torch.float32
    assert torch.allclose(clues.disease_probs, reference.disease_probs, atol=0.05)
    assert extra.logits.dtype == torch.bfloat16 and torch.isfinite(extra.logits.float()).all()

    batch = processor(images=[[xray_like(4)]], reports=["no pleural effusion ."], return_tensors="pt")
    batch["disease_labels"] = torch.zeros(1, 14)
    out = model.train()(**batch)
    assert torch.isfinite(out.loss) and torch.isfinite(out.consistency_loss)
    out.loss.backward()
    assert model.clue_injector.token_table.grad.dtype == torch.float32
