"""TRRGProcessor: prompts with placeholders, label masking, clear errors, and generate()-ready inputs."""

import io

import numpy as np
import pytest
from PIL import Image

from conftest import xray_like
from trrg.modeling.image_processing_trrg import XRayImageError


def test_prompt_has_one_image_block_per_view_and_the_clue_slots(tiny_finetune_model):
    model, processor = tiny_finetune_model
    inputs = processor(images=[[xray_like(1), xray_like(2)], [xray_like(3)]], return_tensors="pt")
    ids = inputs["input_ids"]
    per_view = model.config.image_token_grid ** 2
    assert (ids[0] == processor.image_token_id).sum() == 2 * per_view
    assert (ids[1] == processor.image_token_id).sum() == per_view
    assert ((ids == processor.clue_token_id).sum(1) == model.config.num_clue_tokens).all()
    # Left padding for generation: the last prompt token is real for every study.
    assert inputs["attention_mask"][:, -1].tolist() == [1, 1]
    assert inputs["attention_mask"][1, 0] == 0


def test_training_labels_mask_the_prompt_and_keep_the_report(tiny_finetune_model):
    _, processor = tiny_finetune_model
    report = "no pleural effusion or pneumothorax ."
    batch = processor(images=[[xray_like(1)], [xray_like(2), xray_like(3)]], reports=[report, "lungs are clear ."])
    labels, ids = batch["labels"], batch["input_ids"]
    assert batch["attention_mask"][:, 0].tolist() == [1, 1]  # right padding for training
    first = labels[0][labels[0] != -100]
    assert processor.decode(first) == report
    assert first[-1] == processor.tokenizer.eos_token_id
    prompt_part = ids[0][labels[0] == -100]
    assert (prompt_part == processor.image_token_id).any() and (prompt_part == processor.clue_token_id).any()
    assert (labels[batch["attention_mask"] == 0] == -100).all()


def test_inputs_from_files_of_several_kinds_go_straight_to_generate(tiny_finetune_model, tmp_path):
    model, processor = tiny_finetune_model
    png16 = tmp_path / "frontal.png"
    Image.fromarray((np.arange(60 * 50).reshape(60, 50) * 20).astype(np.uint16)).save(png16)
    jpeg = io.BytesIO()
    Image.fromarray(xray_like(5)).convert("RGB").save(jpeg, format="JPEG")
    inputs = processor(images=[[str(png16), jpeg.getvalue()]], return_tensors="pt")
    ids = model.generate(**inputs, max_new_tokens=4)
    assert ids.shape[1] > inputs["input_ids"].shape[1]


def test_custom_prompt_must_match_the_views(tiny_finetune_model):
    _, processor = tiny_finetune_model
    prompt = "indication : cough . <image> <clue> findings :"
    inputs = processor(images=[[xray_like(1)]], text=[prompt])
    assert (inputs["input_ids"] == processor.image_token_id).sum() == processor.num_image_tokens_per_view
    with pytest.raises(ValueError, match="1 <image> markers but the study has 2 views"):
        processor(images=[[xray_like(1), xray_like(2)]], text=[prompt])
    with pytest.raises(ValueError, match="0 <clue> markers"):
        processor(images=[[xray_like(1)]], text=["<image> findings :"])
    with pytest.raises(ValueError, match="got 2 text for 1 studies"):
        processor(images=[[xray_like(1)]], text=[prompt, prompt])


def test_bad_images_give_errors_that_name_the_problem(tiny_finetune_model, tmp_path):
    _, processor = tiny_finetune_model
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image")
    with pytest.raises(XRayImageError, match="empty.png"):
        processor(images=[[str(empty)]])
    with pytest.raises(XRayImageError, match="notes.png"):
        processor(images=[[str(not_image)]])
    with pytest.raises((XRayImageError, ValueError), match="(?i)empty|no images|no views"):
        processor(images=[])
    with pytest.raises(ValueError, match="needs images"):
        processor(images=None)


def test_decoded_reports_never_repeat_a_sentence():
    from trrg.modeling.processing_trrg import drop_repeated_sentences

    assert drop_repeated_sentences("no pneumothorax . heart size is normal . no  pneumothorax .") == \
        "no pneumothorax . heart size is normal ."
    assert drop_repeated_sentences("No effusion. The heart is big. no effusion.") == "No effusion. The heart is big."
    assert drop_repeated_sentences("small left effusion . small right effusion .") == \
        "small left effusion . small right effusion ."
