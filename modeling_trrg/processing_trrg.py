"""``TRRGProcessor``: X-ray images + prompt building + report tokenisation, in one object.

Part of the hub bundle (remote code): imports only torch, transformers and sibling files.

The prompt of one study is

    <s> {instruction} <image>*(tokens per view) ... (one block per view) <clue>*(clues) {response prefix}

and, for training, the report and </s> follow; ``labels`` are -100 everywhere but on the report.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from transformers import BatchFeature, ProcessorMixin

from .image_processing_trrg import TRRGImageProcessor  # noqa: F401  (copied into hub folders with this file)

DEFAULT_INSTRUCTION = "write the findings of this chest x-ray study ."
DEFAULT_RESPONSE_PREFIX = "findings :"
IGNORE_INDEX = -100


class TRRGProcessor(ProcessorMixin):
    """Wraps a ``TRRGImageProcessor`` and a tokenizer.

    Args:
        image_processor: X-ray loading, letterboxing and normalisation (``TRRGImageProcessor``).
        tokenizer: the LLM's tokenizer (stage 2) or the text encoder's (stage 1); must know the
            ``image_token`` and ``clue_token`` as special tokens for stage 2.
        num_image_tokens_per_view: visual tokens the model produces per view (its image_token_grid ** 2).
        num_clue_tokens: clue tokens the model injects per study (its config.num_clue_tokens).
        instruction / response_prefix: the fixed prompt text around the placeholders.
        max_report_tokens: reports are truncated to this many tokens in training.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        num_image_tokens_per_view: int = 16,
        num_clue_tokens: int = 14,
        image_token: str = "<image>",
        clue_token: str = "<clue>",
        instruction: str = DEFAULT_INSTRUCTION,
        response_prefix: str = DEFAULT_RESPONSE_PREFIX,
        max_report_tokens: int = 96,
        chat_template=None,
        **kwargs,
    ):
        self.num_image_tokens_per_view = num_image_tokens_per_view
        self.num_clue_tokens = num_clue_tokens
        self.image_token = image_token
        self.clue_token = clue_token
        self.instruction = instruction
        self.response_prefix = response_prefix
        self.max_report_tokens = max_report_tokens
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    # -- ids -------------------------------------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.image_token)

    @property
    def clue_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.clue_token)

    # -- prompts ---------------------------------------------------------------------------------
    def build_prompt(self, num_views: int, text: str | None = None) -> str:
        """The prompt string of one study, placeholders expanded.

        ``text`` may replace the default prompt; it must hold one ``<image>`` per view and, when the
        model injects clues, one ``<clue>`` marker; each marker is expanded to the model's count.
        """
        if text is None:
            text = f"{self.instruction} {' '.join([self.image_token] * num_views)} {self.clue_token if self.num_clue_tokens else ''} {self.response_prefix}"
        images_found = text.count(self.image_token)
        if images_found != num_views:
            raise ValueError(
                f"the prompt has {images_found} {self.image_token} markers but the study has {num_views} views: "
                f"write one {self.image_token} per view (the processor expands each to "
                f"{self.num_image_tokens_per_view} tokens), or pass text=None for the default prompt"
            )
        clues_found = text.count(self.clue_token)
        if clues_found != (1 if self.num_clue_tokens else 0):
            raise ValueError(
                f"the prompt has {clues_found} {self.clue_token} markers; this model needs "
                f"{'exactly one' if self.num_clue_tokens else 'none'} (expanded to {self.num_clue_tokens} clue tokens)"
            )
        text = text.replace(self.image_token, self.image_token * self.num_image_tokens_per_view)
        return text.replace(self.clue_token, self.clue_token * self.num_clue_tokens)

    # -- main entry ------------------------------------------------------------------------------
    def __call__(
        self,
        images=None,
        text: str | Sequence[str] | None = None,
        reports: str | Sequence[str] | None = None,
        return_tensors: str | None = "pt",
        padding_side: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Images (+ optional prompts, + reports for training) -> model inputs.

        Args:
            images: one study (a list of views), a single image, or a list of studies.
            text: optional prompt per study replacing the default (see ``build_prompt``).
            reports: target reports; when given, ``labels`` are returned (training).
            padding_side: "left" for generation (default without reports), "right" for training.
        Returns:
            ``input_ids``, ``attention_mask``, ``pixel_values`` (batch, views, 3, H, W),
            ``view_mask`` (batch, views) and, with reports, ``labels``.
        """
        if images is None:
            raise ValueError("TRRGProcessor needs images: pass images=[frontal, lateral] or a list of studies")
        image_inputs = self.image_processor(images, return_tensors="pt")
        views_per_study = [int(v) for v in image_inputs["view_mask"].sum(dim=1).tolist()]
        text_inputs = self.encode_prompts(views_per_study, text, reports, padding_side)
        return BatchFeature(data={**text_inputs, **image_inputs}, tensor_type=return_tensors)

    def encode_prompts(
        self,
        views_per_study: Sequence[int],
        text: str | Sequence[str] | None = None,
        reports: str | Sequence[str] | None = None,
        padding_side: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """The text half of ``__call__``: prompts (placeholders expanded) for studies with the given
        numbers of views, + reports and ``labels`` for training. Used directly when the visual
        features are already computed (a frozen encoder's cache)."""
        texts = self._per_study(text, len(views_per_study), "text")
        reports = self._per_study(reports, len(views_per_study), "reports")
        prompts = [self.build_prompt(int(v), t) for v, t in zip(views_per_study, texts)]
        side = padding_side or ("left" if reports[0] is None else "right")
        return self._tokenize(prompts, reports, side)

    @staticmethod
    def _per_study(values, num_studies: int, name: str) -> list:
        if values is None:
            return [None] * num_studies
        if isinstance(values, str):
            values = [values]
        values = list(values)
        if len(values) != num_studies:
            raise ValueError(f"got {len(values)} {name} for {num_studies} studies: pass one per study")
        return values

    def _tokenize(self, prompts: list[str], reports: list[str | None], padding_side: str) -> dict:
        tokenizer = self.tokenizer
        rows, label_rows = [], []
        for prompt, report in zip(prompts, reports):
            prompt_ids = [tokenizer.bos_token_id] + tokenizer.encode(prompt, add_special_tokens=False)
            if report is None:
                rows.append(prompt_ids)
                continue
            report_ids = tokenizer.encode(" " + report, add_special_tokens=False)[: self.max_report_tokens]
            report_ids = report_ids + [tokenizer.eos_token_id]
            rows.append(prompt_ids + report_ids)
            label_rows.append([IGNORE_INDEX] * len(prompt_ids) + report_ids)
        out = {
            "input_ids": _pad(rows, tokenizer.pad_token_id, padding_side),
            "attention_mask": _pad([[1] * len(r) for r in rows], 0, padding_side),
        }
        if label_rows:
            out["labels"] = _pad(label_rows, IGNORE_INDEX, padding_side)
        return out

    # -- stage-1 text ----------------------------------------------------------------------------
    def encode_sentences(self, sentences: Sequence[str], max_length: int = 48) -> dict[str, torch.Tensor]:
        """Tokenise report sentences (or prompts) for the stage-1 text encoder."""
        return dict(
            self.tokenizer(
                list(sentences), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
        )

    def encode_disease_prompts(self, disease_prompts: dict[str, Sequence[str]], names: Sequence[str]) -> dict:
        """(2 * diseases, length) tokens ordered [d0 positive, d0 negated, d1 positive, ...]."""
        flat = [prompt for name in names for prompt in disease_prompts[name][:2]]
        encoded = self.encode_sentences(flat)
        return {"prompt_input_ids": encoded["input_ids"], "prompt_attention_mask": encoded["attention_mask"]}

    # -- decoding --------------------------------------------------------------------------------
    def batch_decode(self, sequences, prompt_length: int | None = None, **kwargs) -> list[str]:
        """Decode generated reports; with ``prompt_length`` the prompt part is dropped first.

        A sentence the model already wrote is dropped when it comes again: a report never states
        the same sentence twice, and a small LM's greedy decoding sometimes loops.
        """
        if prompt_length is not None:
            sequences = sequences[:, prompt_length:]
        kwargs.setdefault("skip_special_tokens", True)
        return [drop_repeated_sentences(text) for text in self.tokenizer.batch_decode(sequences, **kwargs)]

    def decode(self, sequence, **kwargs) -> str:
        kwargs.setdefault("skip_special_tokens", True)
        return self.tokenizer.decode(sequence, **kwargs).strip()

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "view_mask"]


def drop_repeated_sentences(text: str) -> str:
    """Keep the first occurrence of each sentence (compared case- and space-insensitively)."""
    kept, seen = [], set()
    for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
        key = " ".join(sentence.lower().split())
        if key and key not in seen:
            seen.add(key)
            kept.append(sentence)
    return " ".join(kept)


def _pad(rows: list[list[int]], value: int, side: str) -> torch.Tensor:
    length = max(len(r) for r in rows)
    padded = [([value] * (length - len(r)) + r) if side == "left" else (r + [value] * (length - len(r))) for r in rows]
    return torch.tensor(padded, dtype=torch.long)


__all__ = ["TRRGProcessor", "drop_repeated_sentences"]

TRRGProcessor.register_for_auto_class("AutoProcessor")
TRRGImageProcessor.register_for_auto_class("AutoImageProcessor")
