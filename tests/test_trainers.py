"""Both stages through their Trainer subclasses on a tiny phantom: losses, logging, LoRA, export, errors."""

import json

import pytest
import torch

from trrg.trainers.arguments import TRRGDataArguments, TRRGFinetuneArguments, TRRGPretrainArguments
from trrg.trainers.finetune_trainer import TRRGFinetuneTrainer
from trrg.trainers.collators import SentenceSampler, disease_targets
from trrg.trainers.distributed import gather_with_local_grad, scale_gradient


def xray_like_image():
    from conftest import xray_like

    return xray_like(5)


def _args(cls, tmp_path, **extra):
    base = dict(output_dir=str(tmp_path / "run"), per_device_train_batch_size=16, per_device_eval_batch_size=8,
                learning_rate=3e-3, num_train_epochs=1, max_steps=6, logging_steps=2, save_strategy="no",
                eval_strategy="no", use_cpu=True, seed=0, disable_tqdm=True, report_to="none")
    return cls(**{**base, **extra})


def finetune_collator(processor, **settings):
    """The collator of TRRGFinetuneArguments' defaults, with ``settings`` changed."""
    from trrg.trainers.arguments import stage_options
    from trrg.trainers.collators import FinetuneCollator

    return FinetuneCollator.from_arguments(processor, stage_options(None, TRRGFinetuneArguments), **settings)


def pretrain_collator(processor, config, **settings):
    from trrg.trainers.arguments import stage_options
    from trrg.trainers.collators import PretrainCollator

    return PretrainCollator.from_arguments(processor, config, stage_options(None, TRRGPretrainArguments), **settings)


def cached_batch(collator, cache, rows):
    """A batch of the cached-feature route, as the trainer hands it to the model."""
    batch = collator(rows)
    batch["vision_features"] = cache.features_for(batch.pop("vision_feature_slots"), batch["view_mask"])
    return batch


def test_sentence_sampler_oversamples_findings_and_is_order_independent():
    report = "Small left pleural effusion. No pneumothorax. Heart size is normal. Lungs are otherwise clear."
    sampler = SentenceSampler(positive_rate=0.8, seed=0)
    picks = [sampler("study-1", report) for _ in range(200)]
    share = sum("effusion" in p for p in picks) / len(picks)
    assert 0.75 < share < 0.95  # uniform sampling would give about 0.25
    again = SentenceSampler(positive_rate=0.8, seed=0)
    again("other-study", "No pneumothorax.")  # another study in between changes nothing for study-1
    assert [again("study-1", report) for _ in range(200)] == picks


def test_disease_targets_follow_the_uncertain_policy():
    rows = [{"labels": {"Cardiomegaly": -1, "Edema": 1, "Pneumothorax": 0}}]
    positive = disease_targets(rows, "positive")[0]
    negative = disease_targets(rows, "negative")[0]
    from trrg.modeling.configuration_trrg import CHEXPERT_OBSERVATIONS as names

    assert positive[names.index("Cardiomegaly")] == 1 and negative[names.index("Cardiomegaly")] == 0
    assert positive[names.index("Edema")] == 1 and positive[names.index("Pneumothorax")] == 0
    with pytest.raises(ValueError, match="uncertain must be one of"):
        disease_targets(rows, "maybe")


def test_gather_keeps_gradient_only_for_the_local_part(monkeypatch):
    import torch.distributed as dist

    other_rank = torch.tensor([[5.0, 6.0]])
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "all_gather", lambda out, t: (out[0].copy_(other_rank), out[1].copy_(t)))
    local = torch.tensor([[1.0, 2.0]], requires_grad=True)
    gathered = gather_with_local_grad(local)
    assert gathered.tolist() == [[5.0, 6.0], [1.0, 2.0]]
    (gathered * torch.tensor([[10.0, 10.0], [3.0, 4.0]])).sum().backward()
    assert local.grad.tolist() == [[3.0, 4.0]]


def test_scale_gradient_keeps_the_value():
    x = torch.tensor(2.0, requires_grad=True)
    loss = scale_gradient(x * x, 3.0)
    loss.backward()
    assert loss.item() == 4.0 and x.grad.item() == 12.0


def test_pretrainer_lowers_the_loss_logs_parts_and_clamps_the_temperature(tiny_phantom, tmp_path):
    from trrg.trainers.pretrain_trainer import build_pretrainer

    args = _args(TRRGPretrainArguments, tmp_path, max_steps=12, logging_steps=3)
    trainer, _ = build_pretrainer(args, TRRGDataArguments(data=str(tiny_phantom), eval_split=""))
    model = trainer.model
    with torch.no_grad():
        model.logit_scale.fill_(20.0)  # far above log(100): the callback must clamp it after a step
    weights = model.disease_pos_weight.clone()
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert {"sentence_loss", "prompt_loss", "first_view_prompt_loss"} <= set(logs[0])
    assert logs[-1]["loss"] < logs[0]["loss"]
    assert model.logit_scale.item() <= torch.log(torch.tensor(100.0)).item() + 1e-6
    # Positive weights from the training prevalence: the most common label (No Finding) weighs least.
    assert weights.max() > 3 and weights.argmin().item() == 0


def test_finetune_with_lora_trains_adapters_and_clues_and_exports_merged(tiny_phantom, tiny_pretrain_model, tmp_path):
    from trrg.assembly.bridge import bridge
    from trrg.assembly.hub_folders import export_hub_folder
    from trrg.trainers.finetune_trainer import build_finetuner

    model, processor = bridge(None, pretrained=tiny_pretrain_model)
    assert torch.count_nonzero(model.prompt_bank) > 0
    args = _args(TRRGFinetuneArguments, tmp_path, lora_r=4, lora_target_modules="q_proj,v_proj")
    trainer, processor = build_finetuner(args, TRRGDataArguments(data=str(tiny_phantom), eval_split=""), model, processor)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any(n.startswith("clue_injector") for n in trainable)
    assert not any(n.startswith("perception.") for n in trainable)  # frozen stage-1 perception
    assert not any("language_model" in n and "lora" not in n for n in trainable)  # LLM base frozen under LoRA
    vision_before = {k: v.clone() for k, v in trainer.model.vision_model.state_dict().items()}
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert {"lm_loss", "consistency_loss"} <= set(logs[0])
    # Frozen perception: weights and batch-norm running statistics are those of stage 1.
    vision_after = trainer.model.vision_model.state_dict()
    assert all(torch.equal(vision_before[k], vision_after[k]) for k in vision_before)
    folder = export_hub_folder(trainer.model, processor, tmp_path / "export", metrics={"ce_macro_f1_14": 0.5})
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as weights:
        keys = list(weights.keys())
    assert not any("lora" in k or "base_layer" in k for k in keys)
    assert "ce_macro_f1_14" in (folder / "README.md").read_text()
    from trrg.assembly.hub_folders import load_model_folder

    reloaded, _ = load_model_folder(folder, expected="trrg")
    assert type(reloaded.language_model).__name__ == "LlamaForCausalLM"


def test_generation_evaluation_adds_ce_metrics(tiny_phantom, tiny_finetune_model, tmp_path):
    from trrg.trainers.finetune_trainer import build_finetuner

    import copy

    model, processor = copy.deepcopy(tiny_finetune_model[0]), tiny_finetune_model[1]
    args = _args(TRRGFinetuneArguments, tmp_path, max_steps=1, generation_max_new_tokens=8)
    trainer, _ = build_finetuner(args, TRRGDataArguments(data=str(tiny_phantom), eval_split="val"), model, processor)
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics and 0.0 <= metrics["eval_ce_micro_f1_14"] <= 1.0 and "eval_bleu_4" in metrics
    assert trainer.model.config.trrg_training_data == "phantom"  # what it was fine-tuned on, for the Space


def test_a_model_fine_tuned_on_other_data_does_not_claim_the_phantom(tiny_phantom, tiny_finetune_model, tmp_path):
    """Every route records what the model was fine-tuned on, never a path: the phantom by name, a private
    folder by its format and a fingerprint, an in-memory data set by its fingerprint."""
    import copy
    import shutil

    import datasets

    from trrg.processing.studies import load_studies
    from trrg.trainers.training_data import training_data_label

    private = shutil.copytree(tiny_phantom, tmp_path / "hospital-st-elsewhere")
    (private / "phantom_meta.json").unlink()
    in_memory = datasets.Dataset.from_list([dict(row) for row in load_studies(private)["train"]])
    labels = {name: training_data_label(dataset) for name, dataset in (
        ("phantom", load_studies(tiny_phantom)["train"]), ("private", load_studies(private)["train"]),
        ("in memory", in_memory))}
    assert labels["phantom"] == "phantom"
    assert "phantom" not in labels["private"] and "phantom" not in labels["in memory"]
    assert not any("hospital" in label or "/" in label for label in labels.values())
    model = copy.deepcopy(tiny_finetune_model[0])
    model.config.trrg_training_data = "phantom"  # a demo model, continued on a hospital's studies in Python
    TRRGFinetuneTrainer(model=model, args=_args(TRRGFinetuneArguments, tmp_path), train_dataset=in_memory,
                        processing_class=tiny_finetune_model[1])
    assert model.config.trrg_training_data == labels["in memory"]


def test_adapting_the_perception_keeps_the_asked_share_of_the_adapted_weights(tiny_phantom, tiny_finetune_model, tmp_path):
    """--adapted_perception_weight w: after training, the perception is w x adapted + (1 - w) x before."""
    import copy

    from trrg.processing.studies import load_studies

    studies = load_studies(tiny_phantom)
    kept = {}
    for weight in (0.0, 0.5, 1.0):
        model = copy.deepcopy(tiny_finetune_model[0])
        before = {name: value.detach().clone() for name, value in model.perception.state_dict().items()}
        args = _args(TRRGFinetuneArguments, tmp_path / str(weight), adapt_perception=True, adapted_perception_weight=weight,
                     cache_vision_features=False, learning_rate=1e-2, max_steps=3)
        torch.manual_seed(0)
        TRRGFinetuneTrainer(model=model, args=args, train_dataset=studies["train"],
                            processing_class=tiny_finetune_model[1]).train()
        kept[weight] = {name: value.detach().clone() for name, value in model.perception.state_dict().items()
                        if value.is_floating_point() and "training_distribution" not in name}
    changed = [name for name in kept[1.0] if not torch.equal(kept[1.0][name], before[name])]
    assert changed  # training moved the perception
    for name in changed:
        assert torch.equal(kept[0.0][name], before[name])  # weight 0: as before
        assert torch.allclose(kept[0.5][name], (kept[1.0][name] + before[name]) / 2, atol=1e-6)


def test_replay_mixes_the_original_studies_into_the_site_training_split_and_says_so(tiny_phantom, tmp_path):
    """--replay_data: the site's training split plus a seeded draw of the original training studies;
    evaluation stays on the site's data; the model's provenance names both, never a path."""
    import shutil

    from trrg.processing.studies import StudyDataError, load_studies
    from trrg.trainers.training_data import load_training_studies, training_data_label

    site = shutil.copytree(tiny_phantom, tmp_path / "hospital-st-elsewhere")
    (site / "phantom_meta.json").unlink()
    own = load_studies(site)
    original_ids = set(load_studies(tiny_phantom)["train"]["id"])
    args = TRRGDataArguments(data=str(site), replay_data=str(tiny_phantom), replay_studies=3)
    mixed = load_training_studies(args, seed=1)
    train = mixed["train"]
    assert train["id"][: len(own["train"])] == own["train"]["id"] and len(train) == len(own["train"]) + 3
    assert set(train["id"][len(own["train"]):]) <= original_ids
    assert mixed["val"]["id"] == own["val"]["id"]  # evaluation on the site's studies only
    assert load_training_studies(args, seed=1)["train"]["id"] == train["id"]  # the draw follows the seed
    assert load_training_studies(args, seed=2)["train"]["id"] != train["id"]
    label = training_data_label(train)
    assert label == f"{training_data_label(own['train'])} + 3 replayed from phantom" and "hospital" not in label
    default = load_training_studies(TRRGDataArguments(data=str(site), replay_data=str(tiny_phantom)))["train"]
    assert len(default) == 2 * len(own["train"])  # as many replayed as the site's own
    with pytest.raises(StudyDataError, match="--replay_studies 10000"):
        load_training_studies(TRRGDataArguments(data=str(site), replay_data=str(tiny_phantom), replay_studies=10000))


def test_reference_clues_replace_the_models_own_on_the_scheduled_share(tiny_phantom, tiny_finetune_model):
    from trrg.processing.studies import load_r2gen
    from trrg.trainers.collators import ReferenceClueSchedule

    rows = list(load_r2gen(tiny_phantom / "annotation.json")["train"])[:8]
    batch = finetune_collator(tiny_finetune_model[1], reference_clue_rate=1.0)(rows)
    assert torch.equal(batch["clue_states"], batch["disease_labels"].long())
    with torch.no_grad():
        out = tiny_finetune_model[0](**batch)
    assert torch.equal(out.clue_states, batch["disease_labels"].long())  # what was injected
    assert "clue_states" not in finetune_collator(tiny_finetune_model[1], reference_clue_rate=0.0)(rows)
    first, second = ReferenceClueSchedule(0.5, seed=3), ReferenceClueSchedule(0.5, seed=3)
    ids = [f"s{i}" for i in range(200)]
    picks = [first(i) for i in ids]
    assert picks == [second(i) for i in reversed(ids)][::-1]  # per (seed, study, visit), not per call order
    assert 0.35 < sum(picks) / len(picks) < 0.65


def test_finding_sentences_weigh_more_in_the_lm_loss(tiny_finetune_model):
    from trrg.trainers.collators import FindingTokenWeights

    processor = tiny_finetune_model[1]
    report = "no pneumothorax . small left pleural effusion . heart size is normal ."
    labels = processor(images=[[xray_like_image()]], reports=[report], return_tensors="pt")["labels"]
    weights = FindingTokenWeights(processor.tokenizer, weight=4.0)(labels)[0]
    report_positions = (labels[0] != -100).nonzero().flatten()
    tokens = processor.tokenizer.convert_ids_to_tokens(labels[0, report_positions].tolist())
    weighted = [t for t, w in zip(tokens, weights[report_positions].tolist()) if w == 4.0]
    assert "".join(weighted).replace("Ġ", " ").strip() == "small left pleural effusion ."
    assert weights[labels[0] == -100].eq(1.0).all()


def test_weighted_lm_loss_is_the_plain_mean_with_unit_weights():
    from trrg.modeling.modeling_trrg import weighted_lm_loss

    torch.manual_seed(0)
    logits, labels = torch.randn(2, 6, 11), torch.randint(0, 11, (2, 6))
    labels[:, :2] = -100
    plain = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    assert torch.allclose(weighted_lm_loss(logits, labels, torch.ones(2, 6)), plain)
    weights = torch.ones(2, 6)
    weights[0, 3] = 5.0  # the token predicted at position 2
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100,
                                           reduction="none").reshape(2, 5)
    expected = (ce.sum() + 4 * ce[0, 2]) / (8 + 4)
    assert torch.allclose(weighted_lm_loss(logits, labels, weights), expected)


def test_cached_frozen_features_give_the_same_loss(tiny_phantom, tiny_finetune_model):
    import copy

    from trrg.processing.studies import load_r2gen
    from trrg.trainers.collators import FrozenVisionCache

    model = copy.deepcopy(tiny_finetune_model[0])
    model.freeze_perception()
    processor = tiny_finetune_model[1]
    rows = list(load_r2gen(tiny_phantom / "annotation.json")["train"])[:6]
    collator = finetune_collator(processor, single_view_rate=0.0)  # every visit shows the same views
    cache = FrozenVisionCache(model)
    assert cache.fill(rows, collator.reader, processor.image_processor)
    assert cache.encoded_studies == 6 and cache.fill(rows, collator.reader, processor.image_processor)
    assert cache.encoded_studies == 6  # filled once: nothing encoded again
    with torch.no_grad():
        direct = model(**collator(rows))
        collator.vision_index = cache.index
        first, again = model(**cached_batch(collator, cache, rows)), model(**cached_batch(collator, cache, rows))
    assert torch.allclose(direct.loss, first.loss, atol=1e-5) and torch.allclose(first.loss, again.loss)
    assert "pixel_values" not in collator(rows)  # the collator never decodes an image once the cache is filled
    bounded = FrozenVisionCache(model, max_bytes=1000)  # too small: nothing kept, the encoder runs each step
    assert not bounded.fill(rows, collator.reader, processor.image_processor) and not bounded.index


def test_single_view_visits_show_the_frontal_view_alone_in_both_stages(tiny_phantom, tiny_finetune_model,
                                                                         tiny_pretrain_model):
    import copy

    from trrg.processing.studies import load_r2gen
    from trrg.trainers.collators import FrozenVisionCache, SingleViewSchedule

    rows = [row for row in load_r2gen(tiny_phantom / "annotation.json")["train"] if len(row["images"]) == 2][:6]
    assert len(rows) == 6
    config, processor = tiny_pretrain_model[0].config, tiny_pretrain_model[1]
    for rate, views in ((0.0, 2), (1.0, 1)):
        batch = pretrain_collator(processor, config, single_view_rate=rate)(rows)
        assert batch["view_mask"].sum(1).tolist() == [views] * 6
    model = copy.deepcopy(tiny_finetune_model[0])
    model.freeze_perception()
    both = finetune_collator(tiny_finetune_model[1], single_view_rate=0.0)(rows)
    frontal = finetune_collator(tiny_finetune_model[1], single_view_rate=1.0)(rows)
    collator, cache = finetune_collator(tiny_finetune_model[1], single_view_rate=1.0), FrozenVisionCache(model)
    cache.fill(rows, collator.reader, tiny_finetune_model[1].image_processor)
    collator.vision_index = cache.index
    cached = cached_batch(collator, cache, rows)
    image_token = tiny_finetune_model[1].tokenizer.convert_tokens_to_ids("<image>")
    for batch in (frontal, cached):
        assert batch["view_mask"].sum(1).tolist() == [1] * 6
        # one view's image tokens in the prompt, not two
        assert batch["input_ids"].eq(image_token).sum().item() * 2 == both["input_ids"].eq(image_token).sum().item()
    assert torch.equal(frontal["pixel_values"][:, 0], both["pixel_values"][:, 0])  # the first (frontal) view is kept
    with torch.no_grad():  # the cached route shows the model the same one view as the decoding route
        assert torch.allclose(model(**frontal).loss, model(**cached).loss, atol=1e-5)
    schedule, again = SingleViewSchedule(0.3, seed=5), SingleViewSchedule(0.3, seed=5)
    ids = [f"s{i}" for i in range(300)]
    picks = [schedule(i, 2) for i in ids]
    assert picks == [again(i, 2) for i in reversed(ids)][::-1] and 0.2 < sum(picks) / 300 < 0.4
    assert not SingleViewSchedule(1.0)("one-view study", 1)  # a one-view study is never emptied


def test_augmentation_is_drawn_afresh_each_epoch_in_every_dataloader_worker(tiny_phantom, tiny_pretrain_model):
    """A dataloader worker holds a copy of the collator made when its epoch starts: the augmentation must
    differ between epochs and between the batches of one epoch, and repeat for the same batch and epoch."""
    import copy

    from trrg.processing.studies import load_r2gen

    rows = list(load_r2gen(tiny_phantom / "annotation.json")["train"])[:8]
    config, processor = tiny_pretrain_model[0].config, tiny_pretrain_model[1]
    collator = pretrain_collator(processor, config, augment=True, single_view_rate=0.0)  # only the augmentation varies

    def worker_batch(epoch, batch_rows):
        collator.set_epoch(epoch)
        return copy.deepcopy(collator)(batch_rows)["pixel_values"]  # the copy a worker of that epoch holds

    first, again, later = worker_batch(0, rows[:4]), worker_batch(0, rows[:4]), worker_batch(1, rows[:4])
    assert torch.equal(first, again)  # the same batch of the same epoch: the same draws
    assert not torch.equal(first, later)  # the next epoch: new draws
    plain = pretrain_collator(processor, config, augment=False, single_view_rate=0.0)(rows[:4])["pixel_values"]
    assert not torch.equal(first, plain) and (first - plain).abs().mean() < 0.5  # augmented, lightly


def test_evaluation_batches_show_every_view_while_training_batches_drop_the_lateral(tiny_phantom, tiny_finetune_model,
                                                                                     tiny_pretrain_model, tmp_path):
    import copy

    from trrg.processing.studies import load_r2gen
    from trrg.trainers.arguments import TRRGFinetuneArguments, TRRGPretrainArguments
    from trrg.trainers.finetune_trainer import TRRGFinetuneTrainer
    from trrg.trainers.pretrain_trainer import TRRGPretrainer

    studies = load_r2gen(tiny_phantom / "annotation.json")
    two_views = studies["train"].filter(lambda row: len(row["images"]) == 2).select(range(4))
    common = {"output_dir": str(tmp_path), "single_view_rate": 1.0, "per_device_train_batch_size": 4,
              "per_device_eval_batch_size": 4, "use_cpu": True, "report_to": "none"}
    for trainer_class, arguments, (model, processor) in (
            (TRRGFinetuneTrainer, TRRGFinetuneArguments, tiny_finetune_model),
            (TRRGPretrainer, TRRGPretrainArguments, tiny_pretrain_model)):
        trainer = trainer_class(model=copy.deepcopy(model), args=arguments(**common), train_dataset=two_views,
                                eval_dataset=two_views, processing_class=processor)
        assert next(iter(trainer.get_train_dataloader()))["view_mask"].sum(1).tolist() == [1] * 4
        assert next(iter(trainer.get_eval_dataloader()))["view_mask"].sum(1).tolist() == [2] * 4
        assert next(iter(trainer.get_train_dataloader()))["view_mask"].sum(1).tolist() == [1] * 4  # still training's


def test_draws_are_keyed_by_epoch_under_a_trainer_so_a_resumed_run_repeats_them():
    from trrg.trainers.collators import SingleViewSchedule

    def epoch_draws(schedule, epoch, calls_before=0):
        for _ in range(calls_before):  # visits made before a resume, in another process or not at all
            schedule("s1", 2)
        schedule.set_epoch(epoch)
        return [schedule(f"s{i}", 2) for i in range(200)]

    uninterrupted, resumed = SingleViewSchedule(0.5, seed=1), SingleViewSchedule(0.5, seed=1)
    epoch_draws(uninterrupted, 0)
    assert epoch_draws(uninterrupted, 1) == epoch_draws(resumed, 1, calls_before=3)
    assert epoch_draws(resumed, 1) != epoch_draws(resumed, 2)  # a new epoch, new draws


def test_clue_thresholds_are_tuned_for_f1():
    import numpy as np

    from trrg.trainers.clue_calibration import best_f1_threshold, fit_clue_thresholds

    probs = np.array([0.05, 0.1, 0.12, 0.2, 0.22, 0.3, 0.9])
    targets = np.array([0, 0, 0, 1, 1, 0, 1])
    threshold = best_f1_threshold(probs, targets)  # best: the top 3 or the top 4 -> the top 4 has F1 0.857
    assert 0.12 < threshold < 0.2 and ((probs >= threshold) == np.array([0, 0, 0, 1, 1, 1, 1])).all()
    assert best_f1_threshold(probs, np.zeros(7)) == 0.5  # nothing to tune
    # A weak classifier: F1 is best calling 6 studies for 3 positives (0.67); the cap allows 1.5x as
    # many calls as positives, so it calls 4 (F1 0.57).
    weak, truth = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]), np.array([0, 1, 0, 1, 0, 1, 0])
    assert (weak >= best_f1_threshold(weak, truth, max_positive_ratio=100)).sum() == 6
    assert (weak >= best_f1_threshold(weak, truth)).sum() == 4
    assert fit_clue_thresholds(np.stack([probs, probs], 1), np.stack([targets, np.zeros(7)], 1))[1] == 0.5


def test_bad_inputs_are_named_before_training(tiny_phantom, tiny_pretrain_model, tiny_finetune_model, tmp_path):
    from trrg.assembly.bridge import bridge
    from trrg.assembly.hub_folders import load_model_folder
    from trrg.assembly.hub_folders import save_hub_folder
    from trrg.trainers.training_data import load_training_studies

    finetune_dir = save_hub_folder(*tiny_finetune_model, tmp_path / "finetune")
    with pytest.raises(ValueError, match=r"finetune-stage \(stage 2.* but a pretrain-stage \(stage 1.* is needed"):
        load_model_folder(finetune_dir, expected="trrg_contrastive")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model_folder(tmp_path / "nowhere", expected="trrg")
    pretrain_dir = save_hub_folder(*tiny_pretrain_model, tmp_path / "pretrain")
    with pytest.raises(FileNotFoundError, match="--llm"):
        bridge(pretrain_dir, llm=str(tmp_path / "missing-llm"))

    annotation = json.loads((tiny_phantom / "annotation.json").read_text())
    annotation["train"][3]["image_path"] = []
    annotation["train"][5]["report"] = " ... "
    bad = tmp_path / "bad" / "annotation.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps(annotation))
    data_args = TRRGDataArguments(data=str(bad), image_root=str(tiny_phantom / "images"), eval_split="")
    with pytest.raises(ValueError) as error:
        load_training_studies(data_args)
    message = str(error.value)
    assert annotation["train"][3]["id"] in message and annotation["train"][5]["id"] in message


def test_unreadable_image_is_skipped_and_counted(tiny_phantom, tiny_finetune_model, tmp_path):
    from trrg.processing.studies import load_r2gen
    rows = list(load_r2gen(tiny_phantom / "annotation.json")["train"])[:3]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows[1] = {**rows[1], "images": [str(broken)]}
    collator = finetune_collator(tiny_finetune_model[1])
    batch = collator(rows)
    assert batch["pixel_values"].shape[0] == 2
    assert collator.reader.skipped_images == 1 and collator.reader.dropped_studies == 1


def test_rare_findings_are_drawn_more_often():
    from trrg.trainers.collators import rare_finding_weights

    labels = [{"Pneumothorax": 1}] * 2 + [{"Pleural Effusion": 1}] * 30 + [{"No Finding": 1}] * 68
    weights = rare_finding_weights(labels)
    assert torch.allclose(weights[:2], torch.tensor(5.0))  # 2% prevalence -> 0.1 / 0.02
    assert torch.equal(weights[2:], torch.ones(98))  # 30% and normal studies: as before


def test_the_standard_trainer_call_works_without_a_collator(tiny_phantom, tiny_pretrain_model, tiny_finetune_model,
                                                             tmp_path):
    """TRRGPretrainer / TRRGFinetuneTrainer(model=, args=, train_dataset=, processing_class=), as any
    Hugging Face Trainer is called, with plain TrainingArguments: the study collator is supplied and
    the study columns are kept."""
    import copy

    from transformers import TrainingArguments

    from trrg.processing.studies import load_studies
    from trrg.trainers.finetune_trainer import TRRGFinetuneTrainer
    from trrg.trainers.pretrain_trainer import TRRGPretrainer

    train = load_studies(tiny_phantom)["train"]
    for trainer_class, (model, processor) in ((TRRGPretrainer, tiny_pretrain_model),
                                              (TRRGFinetuneTrainer, tiny_finetune_model)):
        args = TrainingArguments(output_dir=str(tmp_path / trainer_class.__name__), max_steps=2, use_cpu=True,
                                 per_device_train_batch_size=4, report_to="none", save_strategy="no",
                                 dataloader_pin_memory=False, disable_tqdm=True)
        trainer = trainer_class(model=copy.deepcopy(model).train(), args=args, train_dataset=train,
                                processing_class=processor)
        assert not trainer.args.remove_unused_columns
        result = trainer.train()
        assert torch.isfinite(torch.tensor(result.training_loss))


def test_evaluating_without_the_evaluation_split_names_eval_split(tiny_phantom, tiny_finetune_model, tmp_path):
    import copy

    from trrg.trainers.finetune_trainer import build_finetuner

    args = _args(TRRGFinetuneArguments, tmp_path, max_steps=1, eval_strategy="epoch")
    with pytest.raises(ValueError, match=r"--eval_split.*it has \['test', 'train', 'val'\]"):
        build_finetuner(args, TRRGDataArguments(data=str(tiny_phantom), eval_split="validation"),
                        copy.deepcopy(tiny_finetune_model[0]), tiny_finetune_model[1])


def test_frozen_features_are_computed_once_in_the_trainer_process_with_dataloader_workers(tiny_phantom,
                                                                                          tiny_finetune_model, tmp_path,
                                                                                          monkeypatch):
    """With DataLoader workers (what GPU users set) the encoder runs in the trainer's process only, once per
    study: the collator the workers receive holds no model and no features, only the id -> slot index."""
    import copy
    import pickle

    from trrg.processing.studies import load_studies

    studies = load_studies(tiny_phantom)
    args = _args(TRRGFinetuneArguments, tmp_path, max_steps=-1, num_train_epochs=2, dataloader_num_workers=2,
                 per_device_train_batch_size=16, calibrate_clue_thresholds=False)
    trainer = TRRGFinetuneTrainer(model=copy.deepcopy(tiny_finetune_model[0]), args=args, train_dataset=studies["train"],
                                  eval_dataset=studies["val"], processing_class=tiny_finetune_model[1])
    import trrg.trainers.finetune_trainer as finetune_trainer

    monkeypatch.setattr(finetune_trainer, "record_training_distribution", lambda trainer: None)  # its own pass
    calls = []
    trainer.model.perception.vision_model.register_forward_hook(lambda *_: calls.append(1))
    trainer.train()
    cache = trainer.vision_cache
    assert cache.encoded_studies == len(studies["train"]) + len(studies["val"]) == len(cache.index)
    assert sum(calls) == -(-len(studies["train"]) // 64) + 1  # fill's batches of 64: train, then val
    shipped = pickle.dumps(trainer.data_collator)  # what a worker gets (spawn) or shares (fork)
    assert not any(isinstance(value, torch.nn.Module) for value in vars(trainer.data_collator).values())
    assert len(shipped) < 200_000 and trainer.state.global_step == 6  # 2 epochs of 48 studies, batch 16


def test_thresholds_after_adapting_with_replay_are_tuned_on_original_studies_it_did_not_train_on(
        tiny_phantom, tiny_finetune_model, tmp_path, caplog):
    """--adapt_perception with --replay_data: the clue thresholds are re-tuned on the site's training studies
    and as many original training studies as were replayed, none of them replayed (replay_calibration_studies),
    not on the training split the perception was just fitted to."""
    import copy
    import shutil

    from trrg.trainers.clue_calibration import calibrate_clue_thresholds
    from trrg.trainers.training_data import load_training_studies, replay_calibration_studies

    site = shutil.copytree(tiny_phantom, tmp_path / "site")
    (site / "phantom_meta.json").unlink()
    data_args = TRRGDataArguments(data=str(site), replay_data=str(tiny_phantom), replay_studies=16)
    mixed = load_training_studies(data_args, seed=3)["train"]
    calibration = replay_calibration_studies(mixed, data_args, seed=3)
    site_count = len(mixed) - 16
    assert len(calibration) == len(mixed) and calibration["id"][:site_count] == mixed["id"][:site_count]
    assert not set(calibration["id"][site_count:]) & set(mixed["id"][site_count:])  # none was replayed
    # Not with_replay's output for this seed, or too few original studies left: the training split itself.
    assert replay_calibration_studies(mixed, data_args, seed=4)["id"] == mixed["id"]
    too_many = TRRGDataArguments(data=str(site), replay_data=str(tiny_phantom), replay_studies=30)
    crowded = load_training_studies(too_many, seed=3)["train"]
    assert replay_calibration_studies(crowded, too_many, seed=3)["id"] == crowded["id"]

    model = copy.deepcopy(tiny_finetune_model[0])
    args = _args(TRRGFinetuneArguments, tmp_path / "out", adapt_perception=True, cache_vision_features=False,
                 learning_rate=1e-2, max_steps=3, seed=3)
    torch.manual_seed(0)
    TRRGFinetuneTrainer(model=model, args=args, train_dataset=mixed, processing_class=tiny_finetune_model[1],
                        data_args=data_args).train()
    tuned = list(model.config.clue_config.clue_thresholds)
    on_training_split = calibrate_clue_thresholds(copy.deepcopy(model), tiny_finetune_model[1], mixed)
    assert calibrate_clue_thresholds(copy.deepcopy(model), tiny_finetune_model[1], calibration) == tuned
    assert on_training_split != tuned  # the two sets of studies give other thresholds: the test tells them apart
    assert "replayed studies included" not in caplog.text
    # A mix drawn with another seed than the trainer's: the training split, and a warning that says why.
    args = _args(TRRGFinetuneArguments, tmp_path / "other", adapt_perception=True, cache_vision_features=False,
                 learning_rate=1e-2, max_steps=1, seed=4)
    with caplog.at_level("WARNING", logger="trrg.trainers.finetune_trainer"):
        TRRGFinetuneTrainer(model=copy.deepcopy(tiny_finetune_model[0]), args=args, train_dataset=mixed,
                            processing_class=tiny_finetune_model[1], data_args=data_args).train()
    assert "re-tuned on the training split, replayed studies included" in caplog.text
