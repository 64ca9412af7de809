"""The offline report tokenizer of config-built presets, and the placeholder tokens every TRRG
tokenizer carries (``<image>``, ``<clue>``)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trrg.modeling.configuration_trrg import DEFAULT_DISEASE_PROMPTS
from trrg.modeling.processing_trrg import DEFAULT_INSTRUCTION, DEFAULT_RESPONSE_PREFIX

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
IMAGE_TOKEN, CLUE_TOKEN = "<image>", "<clue>"


def phantom_report_corpus(num_reports: int = 3000, seed: int = 0) -> list[str]:
    """Report text from the phantom's report writer (no images rendered: fast)."""
    from trrg.processing.phantom_reports import sample_findings, write_report
    from trrg.processing.text import clean_report

    rng = np.random.default_rng(seed)
    return [clean_report(write_report(rng, sample_findings(rng))[0]) for _ in range(num_reports)]


def train_report_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained in-process (offline) on report text.

    Byte-level so that any text is encodable (no <unk> on real reports); trained on reports so the
    common words are single tokens and sequences stay short for a tiny LM.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.decoder = decoders.ByteLevel()
    specials = list(SPECIAL_TOKENS.values()) + [IMAGE_TOKEN, CLUE_TOKEN]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = list(texts) + [p for pair in DEFAULT_DISEASE_PROMPTS.values() for p in pair]
    corpus += [DEFAULT_INSTRUCTION, DEFAULT_RESPONSE_PREFIX]
    backend.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, CLUE_TOKEN]})
    return tokenizer


def add_placeholder_tokens(tokenizer) -> int:
    """Give a pretrained LLM tokenizer the placeholders (and a pad token); returns how many were new."""
    added = tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, CLUE_TOKEN]})
    if tokenizer.pad_token is None:
        added += tokenizer.add_special_tokens({"pad_token": SPECIAL_TOKENS["pad_token"]})
    return added
