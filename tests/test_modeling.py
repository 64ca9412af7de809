"""Stage-1 and stage-2 models on tiny configs: shapes, losses, gradients, masking, save/load, generate."""

import copy

import pytest
import torch

from conftest import xray_like

REPORTS = [
    "the heart is enlarged . small left pleural effusion . no pneumothorax .",
    "lungs are clear . no pleural effusion or pneumothorax . heart size is normal .",
]


def _training_batch(processor, views=(2, 1)):
    studies = [[xray_like(10 * i + v) for v in range(n)] for i, n in enumerate(views)]
    batch = processor(images=studies, reports=REPORTS[: len(views)], return_tensors="pt")
    batch["disease_labels"] = torch.zeros(len(views), 14)
    batch["disease_labels"][0, [2, 10]] = 1.0
    return batch


def test_finetune_forward_shapes_and_separate_losses(tiny_finetune_model):
    model, processor = tiny_finetune_model
    batch = _training_batch(processor)
    assert batch["pixel_values"].shape == (2, 2, 3, 128, 128)
    assert batch["view_mask"].tolist() == [[1, 1], [1, 0]]
    out = model(**batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape
    assert out.disease_probs.shape == (2, 14) and out.clue_logits.shape == (2, 14)
    assert torch.isfinite(out.lm_loss) and torch.isfinite(out.consistency_loss)
    weight = model.config.clue_config.consistency_loss_weight
    assert torch.allclose(out.loss, out.lm_loss + weight * out.consistency_loss)


def test_gradients_reach_the_clue_modules_and_the_llm(tiny_finetune_model):
    model = copy.deepcopy(tiny_finetune_model[0]).train()
    batch = _training_batch(tiny_finetune_model[1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):  # the zero-initialised gates open one level per step (clue output gate, then
        model(**batch).loss.backward()  # the interaction's own gates) ...
        optimizer.step()
        optimizer.zero_grad()
    model(**batch).loss.backward()  # ... after which every clue module learns
    for name in ("clue_injector.token_table", "clue_injector.state_table", "clue_injector.perception_proj.weight",
                 "clue_interaction.layers.0.clue_to_patch.attention.in_proj_weight",
                 "clue_interaction.layers.0.patch_to_clue.attention.in_proj_weight", "clue_projector.weight",
                 "clue_output_gate.gate", "consistency_weight", "multi_modal_projector.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_consistency_loss_sends_its_gradient_into_the_llm(tiny_finetune_model):
    model = copy.deepcopy(tiny_finetune_model[0]).train()
    out = model(**_training_batch(tiny_finetune_model[1]))
    out.consistency_loss.backward()
    grad = model.language_model.model.layers[-1].mlp.down_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_a_few_steps_on_one_batch_lower_the_loss(tiny_finetune_model):
    torch.manual_seed(0)
    model = copy.deepcopy(tiny_finetune_model[0]).train()
    batch = _training_batch(tiny_finetune_model[1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        out = model(**batch)
        losses.append((out.lm_loss.item(), out.consistency_loss.item()))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1][0] < 0.7 * losses[0][0]
    assert losses[-1][1] < losses[0][1]


def _with_open_gates(model):
    """A copy whose zero-initialised gates are open, as after some training."""
    from trrg.modeling.modeling_trrg import TRRGGate

    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, TRRGGate):
            torch.nn.init.constant_(module.gate, 0.5)
    return model


def test_an_example_does_not_change_when_another_example_has_more_clues(tiny_finetune_model):
    model, processor = _with_open_gates(tiny_finetune_model[0]), tiny_finetune_model[1]
    batch = processor(images=[[xray_like(1), xray_like(2)], [xray_like(3)]], return_tensors="pt")
    clue_embeds = torch.nn.functional.normalize(torch.randn(2, 64, model.config.projection_dim), dim=-1)
    few = torch.zeros(2, 64, dtype=torch.bool)
    few[:, :3] = True
    many = few.clone()
    many[1] = True  # example 1 gets 64 extra clues; example 0 keeps 3
    with torch.no_grad():
        out_few = model(**batch, clue_embeds=clue_embeds, clue_embeds_mask=few)
        out_many = model(**batch, clue_embeds=clue_embeds, clue_embeds_mask=many)
    assert torch.allclose(out_few.logits[0], out_many.logits[0], atol=1e-5)
    assert not torch.allclose(out_few.logits[1], out_many.logits[1], atol=1e-5)


def test_per_disease_thresholds_decide_the_clues_and_forced_states_win(tiny_finetune_model):
    model = copy.deepcopy(tiny_finetune_model[0])
    batch = tiny_finetune_model[1](images=[[xray_like(1)]], return_tensors="pt")
    probs = torch.full((1, 14), 0.3)
    model.config.clue_config.clue_thresholds = [0.5] * 14
    model.config.clue_config.clue_thresholds[9] = 0.2  # a rare finding, tuned low
    forced = torch.full((1, 14), -1)
    forced[0, 2] = 1
    with torch.no_grad():
        own = model(**batch, clue_probs=probs)
        mixed = model(**batch, clue_probs=probs, clue_states=forced)
    assert own.clue_states.tolist()[0] == [int(i == 9) for i in range(14)]
    assert mixed.clue_states.tolist()[0] == [int(i in (2, 9)) for i in range(14)]
    assert not torch.allclose(own.logits, mixed.logits)
    with pytest.raises(ValueError, match="clue_thresholds has 3 values for 14 diseases"):
        model.config.clue_config.clue_thresholds = [0.5] * 3
        model.clue_thresholds


def test_finetune_save_load_equality(tiny_finetune_model, tmp_path):
    from trrg.modeling.modeling_trrg import TRRGForConditionalGeneration

    model, processor = tiny_finetune_model
    model.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.bin")) and (tmp_path / "model.safetensors").exists()
    loaded = TRRGForConditionalGeneration.from_pretrained(tmp_path).eval()
    batch = _training_batch(processor)
    with torch.no_grad():
        a, b = model(**batch), loaded(**batch)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert torch.allclose(a.disease_probs, b.disease_probs, atol=1e-5)
    assert torch.equal(loaded.prompt_bank, model.prompt_bank)


def test_generate_greedy_beam_and_sampling(tiny_finetune_model):
    model, processor = tiny_finetune_model
    inputs = processor(images=[[xray_like(1), xray_like(2)], [xray_like(3)]], return_tensors="pt")
    prompt_length = inputs["input_ids"].shape[1]
    greedy = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    beams = model.generate(**inputs, max_new_tokens=6, num_beams=3, num_return_sequences=2)
    torch.manual_seed(0)
    sampled = model.generate(**inputs, max_new_tokens=6, do_sample=True, top_k=20)
    assert greedy.shape[0] == 2 and beams.shape[0] == 4 and sampled.shape[0] == 2
    assert torch.equal(greedy[:, :prompt_length], inputs["input_ids"])
    # Greedy generation with the cache equals step-by-step argmax over full forwards.
    ids = inputs["input_ids"][:1]
    mask = inputs["attention_mask"][:1]
    for _ in range(3):
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, pixel_values=inputs["pixel_values"][:1],
                           view_mask=inputs["view_mask"][:1]).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    single = model.generate(**{k: v[:1] for k, v in inputs.items()}, max_new_tokens=3, do_sample=False)
    assert torch.equal(single, ids)


def test_streaming_yields_the_greedy_text(tiny_finetune_model):
    from transformers import TextIteratorStreamer
    import threading

    model, processor = tiny_finetune_model
    inputs = processor(images=[xray_like(4)], return_tensors="pt")
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    thread = threading.Thread(target=model.generate, kwargs={**inputs, "max_new_tokens": 6, "streamer": streamer})
    thread.start()
    streamed = "".join(streamer)
    thread.join()
    greedy = model.generate(**inputs, max_new_tokens=6)
    assert streamed.strip() == processor.batch_decode(greedy, prompt_length=inputs["input_ids"].shape[1])[0]


def test_mismatched_placeholders_give_a_clear_error(tiny_finetune_model):
    model, processor = tiny_finetune_model
    inputs = processor(images=[[xray_like(1), xray_like(2)]], return_tensors="pt")
    one_view = {**inputs, "pixel_values": inputs["pixel_values"][:, :1], "view_mask": inputs["view_mask"][:, :1]}
    with pytest.raises(ValueError, match=r"32 <image> tokens but the images give 16 visual tokens"):
        model(**one_view)
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])


def test_ablation_switches_remove_clue_tokens(tiny_tokenizer):
    from trrg.assembly.build import build_finetune_model

    model, processor = build_finetune_model(
        "tiny", tokenizer=tiny_tokenizer, clue={"use_clue_injection": False, "use_clue_interaction": False}
    )
    assert model.config.num_clue_tokens == 0 and processor.num_clue_tokens == 0
    assert model.clue_interaction is None
    batch = _training_batch(processor)
    out = model(**batch)
    assert (batch["input_ids"] == model.config.clue_token_id).sum() == 0
    assert out.consistency_loss is None and torch.equal(out.loss, out.lm_loss)


def test_ablation_arms_start_from_the_same_llm_and_visual_path(tiny_tokenizer):
    from trrg.assembly.build import build_finetune_model

    plain, _ = build_finetune_model("tiny", tokenizer=tiny_tokenizer, seed=3,
                               clue={"use_clue_injection": False, "use_clue_interaction": False})
    full, _ = build_finetune_model("tiny", tokenizer=tiny_tokenizer, seed=3)
    for name in ("language_model", "vision_model", "visual_adapter", "multi_modal_projector"):
        a, b = getattr(plain, name).state_dict(), getattr(full, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_pretrain_losses_gradients_and_zero_shot(tiny_pretrain_model):
    model, processor = tiny_pretrain_model
    model = copy.deepcopy(model).train()
    studies = processor.image_processor([[xray_like(1), xray_like(2)], [xray_like(3)], [xray_like(4)]], return_tensors="pt")
    sentences = processor.encode_sentences(["no pneumothorax .", "no pneumothorax .", "the heart is enlarged ."])
    prompts = processor.encode_disease_prompts(model.config.disease_prompts, model.config.disease_names)
    assert prompts["prompt_input_ids"].shape[0] == 28
    labels = torch.zeros(3, 14)
    labels[2, 2] = 1
    out = model(**studies, **sentences, **prompts, disease_labels=labels)
    assert out.logits_per_image.shape == (3, 3) and out.disease_logits.shape == (3, 14)
    assert torch.isfinite(out.sentence_loss) and torch.isfinite(out.prompt_loss)
    out.loss.backward()
    assert model.logit_scale.grad is not None and model.perception.visual_projection.weight.grad.abs().sum() > 0
    bank = model.encode_prompt_bank(**prompts)
    probs = model.predict_diseases(studies["pixel_values"], studies["view_mask"], bank)
    assert probs.shape == (3, 14) and ((probs > 0) & (probs < 1)).all()
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    model.clamp_logit_scale()
    assert model.logit_scale.exp().item() == pytest.approx(model.config.logit_scale_max, rel=1e-4)


def test_first_view_prompt_loss_reads_each_multi_view_study_from_its_first_view_alone(tiny_pretrain_model):
    """The part is the prompt loss of the two-view studies given their first view only, averaged over
    the whole batch (a one-view study counts zero: the prompt loss already reads it so), and joins the
    total with its weight; at weight 0 it is not computed; a batch of one-view studies trains as without it."""
    model, processor = tiny_pretrain_model
    model = copy.deepcopy(model).eval()  # batch norm from its running statistics: the passes compare
    both = processor.image_processor([[xray_like(1), xray_like(2)], [xray_like(3), xray_like(4)], [xray_like(5)]],
                                     return_tensors="pt")
    first = processor.image_processor([[xray_like(1)], [xray_like(3)]], return_tensors="pt")
    single = processor.image_processor([[xray_like(5)], [xray_like(6)]], return_tensors="pt")
    prompts = processor.encode_disease_prompts(model.config.disease_prompts, model.config.disease_names)
    labels = torch.zeros(3, 14)
    labels[0, 2], labels[1, 4], labels[2, 7] = 1, 1, 1
    with torch.no_grad():
        model.config.first_view_prompt_loss_weight = 0.0
        off = model(**both, **prompts, disease_labels=labels)
        off_single = model(**single, **prompts, disease_labels=labels[1:])
        model.config.first_view_prompt_loss_weight = 0.5
        on = model(**both, **prompts, disease_labels=labels)
        alone = model(**first, **prompts, disease_labels=labels[:2])
        on_single = model(**single, **prompts, disease_labels=labels[1:])
    assert off.first_view_prompt_loss is None
    # 2 of the 3 studies have two views: their first-view terms over all 3 studies' entries
    assert on.first_view_prompt_loss.item() == pytest.approx(alone.prompt_loss.item() * 2 / 3, rel=1e-5)
    assert on.first_view_prompt_loss.item() != pytest.approx(on.prompt_loss.item(), rel=1e-3)  # both views read otherwise
    assert on.loss.item() == pytest.approx(off.loss.item() + 0.5 * on.first_view_prompt_loss.item(), rel=1e-5)
    assert on_single.first_view_prompt_loss.item() == 0.0
    assert on_single.loss.item() == pytest.approx(off_single.loss.item(), rel=1e-6)


def test_pretrain_save_load_equality(tiny_pretrain_model, tmp_path):
    from trrg.modeling.modeling_trrg import TRRGContrastiveModel

    model, processor = tiny_pretrain_model
    model.save_pretrained(tmp_path)
    loaded = TRRGContrastiveModel.from_pretrained(tmp_path).eval()
    studies = processor.image_processor([[xray_like(1)], [xray_like(2)]], return_tensors="pt")
    sentences = processor.encode_sentences(["a b .", "c ."])
    with torch.no_grad():
        a, b = model(**studies, **sentences), loaded(**studies, **sentences)
    assert torch.allclose(a.logits_per_image, b.logits_per_image, atol=1e-5)


def test_finetune_starts_from_exact_clue_tokens_and_the_pretrained_visual_tokens(tiny_finetune_model):
    model, processor = tiny_finetune_model
    inputs = processor(images=[[xray_like(1), xray_like(2)]], return_tensors="pt")
    states = torch.randint(0, 2, (1, 14))
    with torch.no_grad():
        features = model.get_multimodal_features(inputs["pixel_values"], inputs["view_mask"], clue_states=states)
        plain = model.vision_model(inputs["pixel_values"], inputs["view_mask"])
        expected = model.multi_modal_projector(model.visual_adapter(plain.patch_tokens.flatten(1, 2)))
    # Every interaction update and the clue feedback are gated by tanh(0) = 0 at the start.
    assert torch.allclose(features["visual_tokens"], expected[0], atol=1e-6)
    table = model.clue_injector.token_table
    assert torch.equal(features["clue_tokens"][0], table[torch.arange(14), 1 - states[0]])


def test_clue_tokens_are_distinct_per_disease_and_state_at_word_embedding_scale(tiny_finetune_model):
    model = tiny_finetune_model[0]
    table = model.clue_injector.token_table.detach()  # (diseases, 2, width)
    words = model.get_input_embeddings().weight.detach()
    present, absent = table[:, 0], table[:, 1]
    word_norm = words.norm(dim=-1).mean()
    # Switching a clue moves its token by about a word embedding (the first design moved it by ~3%).
    assert (present - absent).norm(dim=-1).min() > 0.5 * word_norm
    assert 0.5 * word_norm < table.norm(dim=-1).mean() < 2 * word_norm
    cosines = torch.nn.functional.normalize(present, dim=-1) @ torch.nn.functional.normalize(present, dim=-1).T
    assert cosines[~torch.eye(14, dtype=torch.bool)].abs().mean() < 0.3  # not one shared "abnormal" direction


def test_clue_tokens_match_the_scale_the_llm_reads_words_at():
    from transformers.models.gemma3.modeling_gemma3 import Gemma3TextScaledWordEmbedding

    from trrg.modeling.configuration_trrg import TRRGClueConfig
    from trrg.modeling.modeling_trrg import TRRGClueInjector

    injector = TRRGClueInjector(TRRGClueConfig(), num_diseases=14, projection_dim=8, llm_width=32)
    torch.nn.init.normal_(injector.token_table, std=0.02)
    words = torch.nn.Embedding(100, 32)
    torch.nn.init.normal_(words.weight, std=3.0)  # a pretrained LLM's embeddings, far from init scale
    injector.match_word_embedding_scale(words)
    assert torch.allclose(injector.token_table.norm(dim=-1).mean(), words.weight.norm(dim=-1).mean(), rtol=1e-4)
    # Gemma 3 multiplies its table by sqrt(width) inside the embedding module: the clue tokens, placed
    # after the lookup, must match what the module outputs, not the table.
    scaled = Gemma3TextScaledWordEmbedding(100, 32, padding_idx=0, embed_scale=32 ** 0.5)
    scaled.weight.data.copy_(words.weight.data)
    injector.match_word_embedding_scale(scaled)
    assert torch.allclose(injector.token_table.norm(dim=-1).mean(), 32 ** 0.5 * words.weight.norm(dim=-1).mean(), rtol=1e-4)


def test_image_token_grid_must_be_a_fixed_count():
    from trrg.modeling.configuration_trrg import TRRGConfig

    # The processor expands <image> before the model runs, so the count per view must be known.
    for bad in (None, 0, 2.5):
        with pytest.raises(ValueError, match="image_token_grid"):
            TRRGConfig(image_token_grid=bad)
    assert TRRGConfig(image_token_grid=3).image_token_grid == 3


def test_evidence_maps_per_view_and_the_bridge_keeps_the_perception(tiny_pretrain_model):
    from trrg.assembly.bridge import bridge, encode_prompt_bank

    model, processor = tiny_pretrain_model
    studies = processor.image_processor([[xray_like(1), xray_like(2)], [xray_like(3)]], return_tensors="pt")
    bank = encode_prompt_bank(model, processor)
    perception = model.predict_diseases(studies["pixel_values"], studies["view_mask"], bank, return_maps=True)
    maps = perception.evidence_maps
    grid = model.vision_model._feature_map(studies["pixel_values"][:1, 0]).shape[-1]
    assert maps.shape == (2, 2, 14, grid, grid)
    assert torch.count_nonzero(maps[1, 1]) == 0 and torch.count_nonzero(maps[0, 1]) > 0  # study 2 has one view
    assert torch.equal(perception.disease_probs, model.predict_diseases(studies["pixel_values"], studies["view_mask"], bank))
    # Stage 2 perceives as stage 1 did: same probabilities, same maps.
    stage2, _ = bridge(None, pretrained=tiny_pretrain_model)
    clues = stage2.eval().predict_clues(studies["pixel_values"], studies["view_mask"], return_maps=True)
    assert torch.allclose(clues["disease_probs"], perception.disease_probs, atol=1e-5)
    assert torch.allclose(clues["evidence_maps"], maps, atol=1e-5)


def test_attribution_maps_say_what_each_position_adds_to_the_disease_logit(tiny_pretrain_model):
    """Gradient x activation, to first order: scaling the stem's output at one position by (1 - eps) lowers
    that disease's logit by eps times the map's value there. Fails for the wrong disease, view, layer or
    sign; the maps are per study and zero on a padded view, and finer than the patch grid."""
    from trrg.assembly.bridge import encode_prompt_bank

    model, processor = tiny_pretrain_model
    model.eval()
    studies = processor.image_processor([[xray_like(1), xray_like(2)], [xray_like(3)]], return_tensors="pt")
    pixels, view_mask = studies["pixel_values"], studies["view_mask"]
    bank = encode_prompt_bank(model, processor)
    maps = model.attribution_maps(pixels, view_mask, bank)
    patch_grid = model.vision_model._feature_map(pixels[:1, 0]).shape[-1]
    assert maps.shape[:3] == (2, 2, 14) and maps.shape[-1] > patch_grid
    assert torch.count_nonzero(maps[1, 1]) == 0 and (maps >= 0).all()
    assert torch.allclose(model.attribution_maps(pixels[1:], view_mask[1:], bank)[0], maps[1], atol=1e-6)

    def logit(scale_at=None):
        def scale(module, args, output):
            output = output.clone()
            output[(0, slice(None), *scale_at)] *= 1 - 1e-3  # the first real view: study 0's frontal
            return output

        hook = model.vision_model.backbone.embedder.register_forward_hook(scale) if scale_at else None
        try:
            with torch.no_grad():
                return model.predict_diseases(pixels, view_mask, bank).logit()
        finally:
            if hook:
                hook.remove()

    base = logit()
    for disease in (0, 7):
        peak = divmod(int(maps[0, 0, disease].argmax()), maps.shape[-1])
        change = base[0, disease] - logit(peak)[0, disease]
        assert maps[0, 0, disease][peak] > 0
        assert torch.isclose(change, 1e-3 * maps[0, 0, disease][peak], rtol=0.1), (disease, change)


def test_gradient_checkpointing_reaches_the_llm_and_keeps_the_gradients(tiny_finetune_model):
    """`--gradient_checkpointing` (activation checkpointing, transformers 5.24) is delegated to the
    composed backbones that support it, and recomputing activations changes no gradient."""
    model, processor = tiny_finetune_model
    inputs = processor(images=[[xray_like(1)], [xray_like(2)]], reports=["no effusion .", "small left effusion ."],
                       return_tensors="pt")
    grads = []
    for checkpointing in (False, True):
        trained = copy.deepcopy(model).train()
        if checkpointing:
            trained.activation_checkpointing_enable()
            assert trained.language_model.model.gradient_checkpointing
        trained(**inputs).loss.backward()
        grads.append(trained.clue_injector.token_table.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
