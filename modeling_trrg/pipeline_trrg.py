"""``TRRGReportPipeline``: chest X-ray studies in, one ``TRRGReport`` per study out.

Part of the hub bundle (remote code): imports only torch, transformers and sibling files.

The one way from a study to a report: ``pipeline("image-text-to-text", model=folder_or_hub_id,
trust_remote_code=True)`` builds it from a model folder (its config names it in ``custom_pipelines``),
``model.report_pipeline(processor)`` for a model already loaded; ``trrg generate``, ``trrg evaluate``,
the trainer's evaluation and the Space all call it. Per batch of studies:

1. ``preprocess``: the processor reads the views and writes the prompts;
2. ``_forward``: the zero-shot perception runs once (``predict_clues``), and its probabilities and the
   vision encoder's features go into ``generate`` (``clue_probs``, ``vision_features``), which therefore
   does not encode the images again;
3. with ``verify`` (the default), verified decoding (``verification_trrg``): each sentence is labelled
   and dropped when it contradicts the clue decisions or an earlier sentence; then *clue completion*:
   a report that states none of a present clue is continued from its kept sentences, the writer
   sampling a few candidate next sentences (the first token may not end the report), and the first
   candidate that states a missing clue and passes the same checks is appended (up to
   ``COMPLETION_ROUNDS`` times; a clue no candidate states stays dropped, and the metrics count it);
4. ``postprocess``: each report is split into sentences, each labelled with the observations it states
   (the CheXpert-style labeler), so that a sentence points at the probability, clue and evidence map of
   every observation it names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import Pipeline

from .image_processing_trrg import as_studies
from .labeler_trrg import NEGATIVE, NO_FINDING, POSITIVE, UNCERTAIN, label_sentences
from .verification_trrg import RejectedSentence, missing_clues, statements, verify_sentences, violation

STATE_NAMES = {POSITIVE: "positive", NEGATIVE: "negative", UNCERTAIN: "uncertain"}
DEFAULT_BATCH_SIZE = 16  # studies generated together (trrg evaluate's default)
# Clue completion: candidates sampled per report and round, tokens per candidate (one sentence), rounds
# (one sentence appended per round), and the seed of its sampling (the same reports on every run).
COMPLETION_CANDIDATES = 8
COMPLETION_TOKENS = 32
COMPLETION_ROUNDS = 3
COMPLETION_SEED = 0


@dataclass
class TRRGSentence:
    """One sentence of a report and what it states."""

    text: str
    # Each observation the sentence mentions -> "positive", "negative" or "uncertain". "No Finding" is
    # not listed: the labeler concludes it from a report's other observations, no sentence states it.
    observations: dict[str, str] = field(default_factory=dict)


@dataclass
class TRRGStudyPerception:
    """What the model perceived in one study, and the clues it wrote the report from."""

    disease_probs: dict[str, float]  # observation -> zero-shot probability (or the clue_probs given)
    clues: dict[str, bool]  # observation -> injected as present (probability >= its threshold)
    clue_thresholds: dict[str, float]
    # With return_evidence_maps: (views, diseases, h, w), per patch of each letterboxed view cos(patch,
    # positive prompt) - cos(patch, negated prompt), diseases in the order of the dicts above.
    evidence_maps: torch.Tensor | None = None
    # Whether the study resembles what the model was trained on; None: unknown (this model carries no
    # statistics of its training images to compare with). ``familiarity``: the score it is decided from
    # (TRRGTrainingDistribution; above 1: unlike the training images).
    in_distribution: bool | None = None
    familiarity: float | None = None


@dataclass
class TRRGReport:
    """One study's report, its sentences and the perception it was written from."""

    report: str
    sentences: list[TRRGSentence]
    perception: TRRGStudyPerception
    # With verify: the generated sentences left out, each with why (``verification_trrg``).
    rejected: list[RejectedSentence] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready (``trrg generate --json``): probabilities and thresholds rounded to 4 decimals,
        evidence maps to 2 (``{"grid": [h, w], "views": [{observation: rows}, ...]}``, frontal first)."""
        perception = self.perception
        maps = perception.evidence_maps
        return {
            "report": self.report,
            "sentences": [{"text": sentence.text, "observations": sentence.observations} for sentence in self.sentences],
            "disease_probs": {name: round(p, 4) for name, p in perception.disease_probs.items()},
            "clues_present": [name for name, present in perception.clues.items() if present],
            "clue_thresholds": {name: round(t, 4) for name, t in perception.clue_thresholds.items()},
            "evidence_maps": None if maps is None else {
                "grid": list(maps.shape[-2:]),
                "views": [{name: [[round(v, 2) for v in row] for row in view[index].tolist()]
                           for index, name in enumerate(perception.disease_probs)} for view in maps],
            },
            "in_distribution": perception.in_distribution,
            "familiarity": None if perception.familiarity is None else round(perception.familiarity, 4),
            "rejected_sentences": [{"text": r.text, "reason": r.reason, "observation": r.observation}
                                   for r in self.rejected],
        }


def sentences_of(report: str) -> list[TRRGSentence]:
    """The report's sentences, each with the observations it states (``label_sentences``)."""
    return [TRRGSentence(text, {name: STATE_NAMES[label] for name, label in labels.items()
                                if label is not None and name != NO_FINDING})
            for text, labels in label_sentences(report)]


def report_text(sentences: list[str]) -> str:
    """Sentences joined as the writer writes them ("a b . c d .")."""
    return " ".join(f"{sentence} ." for sentence in sentences)


def verified_report(text: str, perception: TRRGStudyPerception) -> TRRGReport:
    """The report without its sentences that contradict the clues or an earlier sentence (``verify_sentences``)."""
    kept, rejected = verify_sentences(label_sentences(text), perception.clues)
    if not rejected:
        return TRRGReport(text, sentences_of(text), perception)
    text = report_text(kept)
    return TRRGReport(text, sentences_of(text), perception, rejected)


def completing_sentence(candidates: list[str], report: str, clues: dict[str, bool]) -> str | None:
    """The first candidate continuation's first sentence that states a clue the report leaves out and
    breaks no rule of verified decoding given the report's sentences; None if no candidate does."""
    labelled = label_sentences(report)
    missing = set(missing_clues(labelled, clues))
    stated = statements(labelled)
    for candidate in candidates:
        sentences = label_sentences(candidate)
        if not sentences:
            continue
        sentence, labels = sentences[0]
        states_missing = any(labels.get(name) in (POSITIVE, UNCERTAIN) for name in missing)
        if states_missing and violation(sentence, labels, clues, stated) is None:
            return sentence
    return None


class TRRGReportPipeline(Pipeline):
    """Writes a report for each chest X-ray study, with the perception it was written from::

        reporter = pipeline("image-text-to-text", model="org/trrg-model", trust_remote_code=True)
        result = reporter(["frontal.png", "lateral.dcm"], return_evidence_maps=True)
        result.report, result.sentences[0].observations, result.perception.disease_probs["Edema"]
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _pipeline_calls_generate = True

    def __call__(self, images, batch_size: int | None = None, clue_probs: torch.Tensor | None = None,
                 **kwargs) -> TRRGReport | list[TRRGReport]:
        """
        Args:
            images: one study (an image, or its views: ``[frontal, lateral]``) or a list of studies. A view
                is a path (PNG, JPEG, DICOM), a PIL image, a numpy array, bytes or a pydicom dataset.
            batch_size: studies generated together (default 16).
            clue_probs: (studies, diseases) probabilities to decide the clues from instead of the model's
                own perception (another classifier's; reference labels for an upper bound).
            return_evidence_maps: also give each study's per-view evidence maps.
            perception_callback: called with each batch's list of ``TRRGStudyPerception`` as soon as the
                perception is done, before the reports are written (a page shows it while a report streams).
            streamer: a ``transformers.TextStreamer`` (one study, greedy or sampling).
            verify: keep only the sentences that agree with the clue decisions and with the sentences before
                them (default True; ``verification_trrg``); the others are listed in ``TRRGReport.rejected``.
            **generate_kwargs: ``generate()`` settings (``max_new_tokens``, ``num_beams``, ``do_sample``,
                ...); the rest come from the model's generation config.

        Returns:
            A ``TRRGReport`` for one study, a list of them (in order) for a list of studies.
        """
        studies = as_studies(images)
        if clue_probs is not None and len(clue_probs) != len(studies):
            raise ValueError(f"clue_probs has {len(clue_probs)} rows for {len(studies)} studies: give one per study")
        _, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        forward_params = {**self._forward_params, **forward_params}
        postprocess_params = {**self._postprocess_params, **postprocess_params}
        size = batch_size or self._batch_size or DEFAULT_BATCH_SIZE
        reports = []
        for start in range(0, len(studies), size):
            batch_probs = None if clue_probs is None else clue_probs[start : start + size]
            reports += self.run_single(studies[start : start + size], {"clue_probs": batch_probs}, forward_params,
                                       postprocess_params)
        one_study = not isinstance(images, (list, tuple)) or not any(isinstance(view, (list, tuple)) for view in images)
        return reports[0] if one_study else reports

    def _sanitize_parameters(self, return_evidence_maps: bool | None = None,
                             perception_callback: Callable[[list[TRRGStudyPerception]], None] | None = None,
                             verify: bool | None = None, **generate_kwargs):
        if generate_kwargs.get("num_return_sequences", 1) != 1:
            raise ValueError("TRRGReportPipeline writes one report per study: num_return_sequences must be 1")
        forward_params = {"generate_kwargs": generate_kwargs} if generate_kwargs else {}
        if return_evidence_maps is not None:
            forward_params["return_evidence_maps"] = return_evidence_maps
        if perception_callback is not None:
            forward_params["perception_callback"] = perception_callback
        if verify is not None:
            forward_params["verify"] = verify
        return {}, forward_params, {}

    def preprocess(self, studies: list[list], clue_probs: torch.Tensor | None = None) -> dict:
        inputs = dict(self.processor(images=studies, return_tensors="pt"))
        if clue_probs is not None:
            inputs["clue_probs"] = torch.as_tensor(clue_probs, dtype=torch.float32)
        return inputs

    def _forward(self, model_inputs: dict, return_evidence_maps: bool = False,
                 perception_callback: Callable[[list[TRRGStudyPerception]], None] | None = None,
                 generate_kwargs: dict | None = None, verify: bool = True) -> dict:
        view_mask = model_inputs["view_mask"]
        clues = self.model.predict_clues(model_inputs["pixel_values"], view_mask, return_maps=return_evidence_maps,
                                         clue_probs=model_inputs.get("clue_probs"))
        perceptions = self._perceptions(clues, view_mask)
        if perception_callback is not None:
            perception_callback(perceptions)
        prompts = model_inputs["input_ids"]
        sequences = self.model.generate(
            input_ids=prompts, attention_mask=model_inputs["attention_mask"], view_mask=view_mask,
            vision_features=clues.vision_features, clue_probs=clues.disease_probs,  # the perception, not again
            **self._prepare_generate_kwargs(self._without_placeholders(generate_kwargs or {})),
        )
        texts = self.processor.batch_decode(sequences[:, prompts.shape[1]:])
        if not verify:
            return {"reports": [TRRGReport(text, sentences_of(text), perception)
                                for text, perception in zip(texts, perceptions)]}
        reports = [verified_report(text, perception) for text, perception in zip(texts, perceptions)]
        return {"reports": self._complete_clues(reports, model_inputs, clues)}

    def postprocess(self, model_outputs: dict) -> list[TRRGReport]:
        return model_outputs["reports"]

    def _placeholder_ids(self) -> list[int]:
        return [self.model.config.image_token_id, self.model.config.clue_token_id]

    def _without_placeholders(self, generate_kwargs: dict) -> dict:
        """When sampling, the <image>/<clue> placeholders may not be drawn as report tokens (greedy never
        picks them; a sampled one would be read as a placeholder on the next step)."""
        sampling = generate_kwargs.get("do_sample", self.model.generation_config.do_sample)
        if not sampling or "generation_config" in generate_kwargs:
            return generate_kwargs
        suppressed = list(generate_kwargs.get("suppress_tokens") or self.model.generation_config.suppress_tokens or [])
        return {**generate_kwargs, "suppress_tokens": suppressed + self._placeholder_ids()}

    def _complete_clues(self, reports: list[TRRGReport], model_inputs: dict, clues) -> list[TRRGReport]:
        """Clue completion: each report that states none of a present clue gets one more sentence about
        it, sampled from the writer given the report so far, when a candidate passes the checks."""
        open_rows = [row for row, report in enumerate(reports)
                     if missing_clues(label_sentences(report.report), report.perception.clues)]
        for round_index in range(COMPLETION_ROUNDS):
            if not open_rows:
                break
            written = {row: reports[row].report for row in open_rows}
            candidates = self._sample_next_sentences(open_rows, written, model_inputs, clues, round_index)
            still_open = []
            for row in open_rows:
                sentence = completing_sentence(candidates[row], written[row], reports[row].perception.clues)
                if sentence is None:
                    continue  # no candidate states it: the clue stays dropped
                text = f"{written[row].strip()} {sentence} .".strip()
                reports[row] = TRRGReport(text, sentences_of(text), reports[row].perception, reports[row].rejected)
                if missing_clues(label_sentences(text), reports[row].perception.clues):
                    still_open.append(row)
            open_rows = still_open
        return reports

    def _sample_next_sentences(self, rows: list[int], written: dict[int, str], model_inputs: dict, clues,
                               round_index: int) -> dict[int, list[str]]:
        """``COMPLETION_CANDIDATES`` sampled continuations of each row's prompt + the report written so far."""
        tokenizer = self.processor.tokenizer
        prompts = [ids[mask.bool()].tolist() for ids, mask in
                   zip(model_inputs["input_ids"][rows], model_inputs["attention_mask"][rows])]
        sequences = [prompt + tokenizer.encode(" " + written[row].strip(), add_special_tokens=False)
                     if written[row].strip() else prompt for prompt, row in zip(prompts, rows)]
        width = max(map(len, sequences))
        # Left padding: every continuation starts at the same position.
        input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(ids)) + ids for ids in sequences])
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in sequences])
        index = torch.tensor(rows, device=clues.disease_probs.device)
        features = type(clues.vision_features)(**{
            name: value[index] if torch.is_tensor(value) else tuple(part[index] for part in value)
            for name, value in clues.vision_features.items() if value is not None})
        device = self.model.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(COMPLETION_SEED + round_index)
            generated = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                view_mask=model_inputs["view_mask"][index], vision_features=features,
                clue_probs=clues.disease_probs[index], do_sample=True, num_beams=1,
                num_return_sequences=COMPLETION_CANDIDATES, max_new_tokens=COMPLETION_TOKENS,
                begin_suppress_tokens=[tokenizer.eos_token_id], suppress_tokens=self._placeholder_ids(),
                pad_token_id=tokenizer.pad_token_id,
            )
        texts = self.processor.batch_decode(generated[:, width:])
        return {row: texts[k * COMPLETION_CANDIDATES : (k + 1) * COMPLETION_CANDIDATES] for k, row in enumerate(rows)}

    def _perceptions(self, clues, view_mask: torch.Tensor) -> list[TRRGStudyPerception]:
        """One ``TRRGStudyPerception`` per study of a ``predict_clues`` output (padded views dropped)."""
        names = list(self.model.config.disease_names)
        thresholds = dict(zip(names, self.model.clue_thresholds.tolist()))
        maps, views = clues.evidence_maps, view_mask.sum(dim=1).tolist()
        familiarity = [None] * len(views) if clues.familiarity is None else clues.familiarity.float().tolist()
        return [TRRGStudyPerception(disease_probs=dict(zip(names, probs)), clues=dict(zip(names, map(bool, states))),
                                    clue_thresholds=thresholds,
                                    evidence_maps=None if maps is None else maps[row, : views[row]].float().cpu(),
                                    in_distribution=None if familiarity[row] is None else familiarity[row] <= 1.0,
                                    familiarity=familiarity[row])
                for row, (probs, states) in enumerate(zip(clues.disease_probs.tolist(), clues.clue_states.tolist()))]


__all__ = ["TRRGReport", "TRRGReportPipeline", "TRRGSentence", "TRRGStudyPerception", "sentences_of"]
