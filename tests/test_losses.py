"""The math of TRRG as pure functions, tested without a model."""

import math

import torch
import torch.nn.functional as F

from trrg.modeling.modeling_trrg import (
    disease_logits_from_prompt_bank,
    masked_mean,
    multi_positive_contrastive_loss,
    positive_class_weight,
    same_text_mask,
    soft_clue_embeddings,
    weighted_disease_bce,
)


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_contrastive_loss_equals_clip_loss_when_texts_are_distinct():
    images, texts, scale = _unit(5, 8), _unit(5, 8, seed=1), torch.tensor(10.0)
    logits = scale * images @ texts.t()
    clip = (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.t(), torch.arange(5))) / 2
    ours = multi_positive_contrastive_loss(images, texts, scale, torch.eye(5, dtype=torch.bool))
    assert torch.allclose(ours, clip, atol=1e-6)


def test_duplicate_texts_are_positives_not_negatives():
    ids = torch.tensor([[5, 6, 7], [5, 6, 7], [8, 9, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0]])
    positives = same_text_mask(ids, mask)
    assert positives.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    # Two studies whose sentences are identical ("no pneumothorax ."): a perfect encoder maps both
    # images to that sentence; counted as negatives, the duplicate would still be penalised.
    images = _unit(3, 4)
    images[1] = images[0]
    texts = images.clone()
    with_duplicates = multi_positive_contrastive_loss(images, texts, torch.tensor(20.0), positives)
    as_negatives = multi_positive_contrastive_loss(images, texts, torch.tensor(20.0), torch.eye(3, dtype=torch.bool))
    assert as_negatives > 0.6 * math.log(2)  # two of three rows cannot beat log(2) when duplicates are negatives
    assert with_duplicates < 0.1 * as_negatives


def test_padding_does_not_make_different_texts_equal():
    ids = torch.tensor([[5, 6, 0], [5, 6, 7]])
    assert not same_text_mask(ids, torch.tensor([[1, 1, 0], [1, 1, 1]]))[0, 1]


def test_zero_shot_logit_is_scaled_cosine_difference_and_matches_two_way_softmax():
    image, bank, scale = _unit(2, 6), _unit(3, 2, 6, seed=3), torch.tensor(7.0)
    logits = disease_logits_from_prompt_bank(image, bank, scale)
    cos = torch.einsum("be,dke->bdk", image, bank)
    softmax_positive = torch.softmax(scale * cos, dim=-1)[..., 0]
    assert torch.allclose(torch.sigmoid(logits), softmax_positive, atol=1e-6)


def test_positive_class_weight_counters_rarity():
    weights = positive_class_weight(torch.tensor([0.5, 0.1, 0.01]), power=0.5)
    assert torch.allclose(weights, torch.tensor([1.0, 3.0, math.sqrt(99)]), atol=1e-5)
    assert torch.allclose(positive_class_weight(torch.tensor([0.1]), power=0.0), torch.ones(1))


def test_weighted_bce_ignores_masked_entries():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[1, 0], [1, 1]])
    expected = F.binary_cross_entropy_with_logits(logits[mask.bool()], targets[mask.bool()])
    assert torch.allclose(weighted_disease_bce(logits, targets, mask=mask), expected)


def test_study_weights_drop_a_study_without_raising_the_others_share():
    """A study weighted 0 adds nothing, the mean stays over the whole batch, and so the loss of a batch
    split in two equal halves (two processes) is the mean of the halves' losses, however the weighted
    studies fall between them."""
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    weights = torch.tensor([True, False, False, True])
    per_entry = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    whole = weighted_disease_bce(logits, targets, study_weights=weights)
    assert torch.allclose(whole, per_entry[weights].sum() / per_entry.numel())
    halves = [weighted_disease_bce(logits[part], targets[part], study_weights=weights[part])
              for part in (slice(0, 2), slice(2, 4))]
    assert torch.allclose(whole, (halves[0] + halves[1]) / 2)
    assert weighted_disease_bce(logits, targets, study_weights=torch.zeros(4)) == 0
    assert torch.allclose(weighted_disease_bce(logits, targets, study_weights=torch.ones(4)),
                          weighted_disease_bce(logits, targets))


def test_soft_clue_interpolates_between_prompts():
    bank = _unit(2, 2, 4)
    clues = soft_clue_embeddings(torch.tensor([[1.0, 0.0]]), bank)
    assert torch.allclose(clues[0, 0], bank[0, 0]) and torch.allclose(clues[0, 1], bank[1, 1])


def test_masked_mean_skips_padding():
    values = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(values, torch.tensor([[1, 1, 0]]), dim=1).item() == 2.0


def test_smooth_max_lies_between_mean_and_max_and_ignores_masked_positions():
    from trrg.modeling.modeling_trrg import smooth_max

    values = torch.tensor([[0.0, 1.0, 0.2, 9.0]])
    mask = torch.tensor([[True, True, True, False]])  # the 9.0 is a padded view's patch
    pooled = smooth_max(values, mask, dim=1, sharpness=5.0)
    assert values[0, :3].mean() < pooled < 1.0
    assert torch.isclose(smooth_max(values, mask, dim=1, sharpness=200.0), torch.tensor([1.0]), atol=0.01)
    assert torch.isclose(smooth_max(values, mask, dim=1, sharpness=1e-4), values[0, :3].mean(), atol=1e-3)


def test_local_logits_see_a_finding_in_one_patch_that_the_mean_dilutes():
    from trrg.modeling.modeling_trrg import local_disease_contrast, local_disease_logits, local_sentence_logits

    bank = _unit(3, 2, 8, seed=4)  # 3 diseases, positive / negated prompt
    patches = bank[1, 1].repeat(1, 16, 1).clone()  # every patch looks like "no disease 1"
    patches[0, 5] = bank[1, 0]  # ... except patch 5, which shows disease 1
    mask = torch.ones(1, 16, dtype=torch.bool)
    contrast = local_disease_contrast(patches, bank)
    assert contrast.shape == (1, 16, 3) and contrast[0, :, 1].argmax() == 5
    local = local_disease_logits(patches, mask, bank, torch.tensor(10.0), sharpness=5.0)
    mean_patch = F.normalize(patches.mean(1), dim=-1)
    dilute = disease_logits_from_prompt_bank(mean_patch, bank, torch.tensor(10.0))
    assert local[0, 1] > 0 > dilute[0, 1]
    # A sentence describing only patch 5 matches the image locally better than the mean patch does.
    sentence = bank[1, :1]
    local_sentence = local_sentence_logits(patches, mask, sentence, torch.tensor(10.0), sharpness=5.0)
    assert local_sentence.shape == (1, 1) and local_sentence[0, 0] > 10.0 * (mean_patch @ sentence.t())[0, 0]
