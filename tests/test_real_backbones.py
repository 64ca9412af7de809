"""Real backbones are loaded by path: tested with tiny stand-ins saved as ordinary HF folders
(a ViT image encoder, a BERT text encoder, a Llama LM with its own tokenizer)."""

import torch
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, ViTConfig, ViTModel

from conftest import xray_like


def _save_backbones(tmp_path, tokenizer):
    vit = ViTModel(ViTConfig(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64), add_pooling_layer=False)
    vit.save_pretrained(tmp_path / "vit")
    bert = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    bert.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    llm_tokenizer = tokenizer.__class__.from_pretrained(tmp_path / "bert")  # a copy for the LLM folder
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer) - 2, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=256))
    llama.save_pretrained(tmp_path / "llama")
    llm_tokenizer.save_pretrained(tmp_path / "llama")
    return vit, llama


def test_finetune_from_local_vit_and_llama_folders_generates(tiny_tokenizer, tmp_path):
    from trrg.assembly.build import build_finetune_model

    vit, llama = _save_backbones(tmp_path, tiny_tokenizer)
    model, processor = build_finetune_model("tiny", vision=str(tmp_path / "vit"), llm=str(tmp_path / "llama"))
    # pretrained weights were loaded, not re-initialised
    assert torch.equal(model.vision_model.backbone.embeddings.patch_embeddings.projection.weight,
                       vit.embeddings.patch_embeddings.projection.weight)
    assert torch.equal(model.language_model.model.layers[0].mlp.up_proj.weight, llama.model.layers[0].mlp.up_proj.weight)
    assert model.get_input_embeddings().num_embeddings >= len(processor.tokenizer)  # resized for <image>/<clue>
    model.eval()
    inputs = processor(images=[[xray_like(1), xray_like(2)]], return_tensors="pt")
    ids = model.generate(**inputs, max_new_tokens=4)
    assert ids.shape[1] == inputs["input_ids"].shape[1] + 4 or ids[0, -1] == processor.tokenizer.eos_token_id


def test_pretrain_from_local_vit_and_bert_folders(tiny_tokenizer, tmp_path):
    from trrg.assembly.build import build_pretrain_model

    _save_backbones(tmp_path, tiny_tokenizer)
    model, processor = build_pretrain_model("tiny", vision=str(tmp_path / "vit"), text=str(tmp_path / "bert"))
    pixels = processor.image_processor([[xray_like(3)]], return_tensors="pt")
    sentences = processor.encode_sentences(["no pneumothorax ."])
    out = model(**pixels, **sentences)
    assert out.image_embeds.shape == (1, model.config.projection_dim) and torch.isfinite(out.sentence_loss)


def test_evidence_maps_from_every_backbone_family(tiny_tokenizer, tmp_path):
    """ViT (a CLS token before the patches), Swin (tokens without CLS), ConvNeXt and ResNet (feature
    maps): every family gives per-view evidence maps on its own patch grid, and attribution maps on its
    stem's grid."""
    from transformers import ConvNextConfig, ConvNextModel, ResNetConfig, ResNetModel, SwinConfig, SwinModel

    from trrg.assembly.bridge import encode_prompt_bank
    from trrg.assembly.build import build_pretrain_model

    stand_ins = {
        "vit": ViTModel(ViTConfig(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=64), add_pooling_layer=False),
        "swin": SwinModel(SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                                     window_size=4)),
        "convnext": ConvNextModel(ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2)),
        "resnet": ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])),
    }
    for name, backbone in stand_ins.items():
        backbone.save_pretrained(tmp_path / name)
        model, processor = build_pretrain_model("tiny", vision=str(tmp_path / name))
        pixels = processor.image_processor([[xray_like(3), xray_like(4)]], return_tensors="pt")
        perception = model.eval().predict_diseases(pixels["pixel_values"], pixels["view_mask"],
                                                   encode_prompt_bank(model, processor), return_maps=True)
        maps = perception.evidence_maps
        assert maps.shape[:3] == (1, 2, 14) and maps.shape[-1] == maps.shape[-2] > 1, name
        assert torch.isfinite(maps).all() and maps.abs().sum() > 0, name
        attribution = model.attribution_maps(pixels["pixel_values"], pixels["view_mask"],
                                             encode_prompt_bank(model, processor))
        assert attribution.shape[:3] == (1, 2, 14) and attribution.shape[-1] == attribution.shape[-2] >= maps.shape[-1], name
        assert torch.isfinite(attribution).all() and attribution.sum() > 0, name


def test_lora_vision_adapts_a_vit_and_refuses_a_convolutional_encoder(tiny_tokenizer, tiny_finetune_model, tmp_path):
    import copy

    import pytest

    from trrg.assembly.build import build_finetune_model
    from trrg.trainers.arguments import TRRGFinetuneArguments
    from trrg.trainers.finetune_trainer import prepare_for_training

    args = TRRGFinetuneArguments(output_dir=str(tmp_path / "out"), lora_vision=True, lora_r=4, use_cpu=True)
    _save_backbones(tmp_path, tiny_tokenizer)
    model, _ = build_finetune_model("tiny", vision=str(tmp_path / "vit"), llm=str(tmp_path / "llama"))
    prepare_for_training(model, args)
    trainable = [name for name, parameter in model.vision_model.named_parameters() if parameter.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)  # adapters train, the frozen ViT does not
    resnet_model = copy.deepcopy(tiny_finetune_model[0])  # the tiny preset's ResNet: convolutions only
    with pytest.raises(ValueError, match="--lora_vision: the vision encoder .* has no linear layers"):
        prepare_for_training(resnet_model, args)


def test_folders_reload_whether_the_vocabulary_grew_or_was_padded(tiny_tokenizer, tmp_path):
    """config.json says what the weights hold, so what `trrg init`/`trrg bridge` write reloads. A text
    encoder or LM smaller than its tokenizer grows to hold it; RoBERTa's vocabulary padded with 2 spare
    rows (real checkpoints pad theirs) is kept. Resizing it down to the tokenizer once left config.json
    at the padded size: "size mismatch ... ckpt: [834, 64] vs model: [836, 64]" on reload."""
    from transformers import RobertaConfig, RobertaModel

    from trrg.assembly.build import build_finetune_model, build_pretrain_model
    from trrg.assembly.hub_folders import load_model_folder, save_hub_folder

    _save_backbones(tmp_path, tiny_tokenizer)  # a BERT of the tokenizer's size, a Llama 2 rows short of it
    RobertaModel(RobertaConfig(vocab_size=len(tiny_tokenizer) + 2, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64, max_position_embeddings=96,
                               pad_token_id=tiny_tokenizer.pad_token_id)).save_pretrained(tmp_path / "roberta")
    tiny_tokenizer.save_pretrained(tmp_path / "roberta")
    built = {"roberta": build_pretrain_model("tiny", text=str(tmp_path / "roberta")),
             "llama": build_finetune_model("tiny", llm=str(tmp_path / "llama"))}
    for name, (model, processor) in built.items():
        backbone = model.text_model if name == "roberta" else model.language_model
        rows = backbone.get_input_embeddings().num_embeddings
        assert rows == len(tiny_tokenizer) + 2 if name == "roberta" else rows == len(tiny_tokenizer)
        assert model.config.text_config is backbone.config and backbone.config.vocab_size == rows
        loaded, _ = load_model_folder(save_hub_folder(model, processor, tmp_path / f"folder-{name}"),
                                      expected="trrg_contrastive" if name == "roberta" else "trrg")
        reloaded = loaded.text_model if name == "roberta" else loaded.language_model
        assert torch.equal(reloaded.get_input_embeddings().weight, backbone.get_input_embeddings().weight), name


def test_clue_tokens_start_at_the_scale_gemma3_reads_words_at(tiny_tokenizer, tmp_path):
    """Gemma 3 scales its embedding table by sqrt(width) inside the embedding module: the clue tokens,
    written after the lookup, start at the norm of what the LM reads, not of the table."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from trrg.assembly.build import build_finetune_model

    Gemma3ForCausalLM(Gemma3TextConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=64,
                                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                                       pad_token_id=tiny_tokenizer.pad_token_id)).save_pretrained(tmp_path / "gemma3")
    tiny_tokenizer.save_pretrained(tmp_path / "gemma3")
    model, _ = build_finetune_model("tiny", llm=str(tmp_path / "gemma3"))
    table = model.get_input_embeddings().weight.norm(dim=-1).mean()
    clue_tokens = model.clue_injector.token_table.norm(dim=-1).mean()
    assert torch.allclose(clue_tokens, 64 ** 0.5 * table, rtol=0.05)


def test_a_pretrained_llm_is_never_built_at_random_first(tiny_tokenizer, tmp_path, monkeypatch):
    """build_finetune_model with an LLM folder builds around a weightless stand-in: no random LLM of the
    real size is allocated before the real one loads (it set the peak memory of trrg init/bridge --llm)."""
    from transformers import AutoModelForCausalLM

    from trrg.assembly.build import build_finetune_model

    _save_backbones(tmp_path, tiny_tokenizer)
    built, from_config = [], AutoModelForCausalLM.from_config.__func__
    monkeypatch.setattr(AutoModelForCausalLM, "from_config",
                        classmethod(lambda cls, config, **kwargs: built.append(config.num_hidden_layers) or
                                    from_config(cls, config, **kwargs)))
    model, _ = build_finetune_model("tiny", llm=str(tmp_path / "llama"))
    assert built == [0] and model.config.text_config.num_hidden_layers == 1
    assert model.language_model.config is model.config.text_config
