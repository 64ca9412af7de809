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
   and dropped when it contradicts the clue decisions or an earlier sentence; then *clue completion*
   for a report that states none of a present clue: at each sentence boundary the writer's
   ``COMPLETION_ALTERNATIVES`` most likely first tokens other than the one it wrote start another
   sentence, decoded greedily; the most likely alternative that states a missing clue, and leaves
   the report without a sentence the check would drop, is inserted where the writer would have
   written it (a writer keeps an order: heart, lungs, pleura, bones). A clue no alternative states
   stays dropped, and the metrics count it;
4. ``postprocess``: each report is split into sentences, each labelled with the observations it states
   (the CheXpert-style labeler), so that a sentence points at the probability, clue and evidence map of
   every observation it names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import Pipeline, StoppingCriteria, StoppingCriteriaList
from transformers.utils import logging

from .image_processing_trrg import as_studies
from .labeler_trrg import NEGATIVE, NO_FINDING, POSITIVE, UNCERTAIN, label_sentences
from .verification_trrg import RejectedSentence, missing_clues, verify_sentences

logger = logging.get_logger(__name__)
UNTRAINED_PERCEPTION = (
    "this model's perception was never trained (its prompt bank is all zeros: a stage-2 model built without "
    "stage 1, e.g. `trrg init` then `trrg finetune --model`), so its clues say nothing about the image and the "
    "report is not verified against them. Train stage 1 and bridge it: `trrg finetune --pretrain_model`."
)

STATE_NAMES = {POSITIVE: "positive", NEGATIVE: "negative", UNCERTAIN: "uncertain"}
DEFAULT_BATCH_SIZE = 16  # studies generated together (trrg evaluate's default)
# Clue completion: other first tokens tried at each sentence boundary, tokens decoded per alternative
# (one sentence of a report is rarely longer).
COMPLETION_ALTERNATIVES = 3
COMPLETION_TOKENS = 24
# A first token the writer gives less than this probability is not tried: it rarely starts a sentence
# the writer can finish (on the user's-route model, 1 of 35 kept alternatives was below it).
COMPLETION_MIN_PROBABILITY = 0.02
# Reports scored together for their boundaries' first tokens: as many as keep the logits computed under
# this many values (a real LLM's vocabulary is large; a tiny one's is not).
SCORED_LOGITS_PER_PASS = 2**24


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
    # With return_attribution_maps: (views, diseases, h', w') on the backbone's finest grid (32 x 32 for the
    # tiny preset), how much each position adds to each disease's zero-shot logit (gradient x activation,
    # ``attribution_maps`` of the model): a small finding shows as a spot there.
    attribution_maps: torch.Tensor | None = None
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
    # With verify: the sentences clue completion added, each stating a present clue the others left out.
    completed: list[str] = field(default_factory=list)
    # Whether the report was checked against the clues (verify, and a perception that was trained).
    verified: bool = False

    def to_dict(self) -> dict:
        """JSON-ready (``trrg generate --json``): probabilities and thresholds rounded to 4 decimals,
        evidence maps to 2 and attribution maps to 3 (``{"grid": [h, w], "views": [{observation: rows}, ...]}``,
        frontal first)."""
        perception = self.perception
        return {
            "report": self.report,
            "sentences": [{"text": sentence.text, "observations": sentence.observations} for sentence in self.sentences],
            "disease_probs": {name: round(p, 4) for name, p in perception.disease_probs.items()},
            "clues_present": [name for name, present in perception.clues.items() if present],
            "clue_thresholds": {name: round(t, 4) for name, t in perception.clue_thresholds.items()},
            "evidence_maps": _maps_dict(perception.evidence_maps, list(perception.disease_probs), 2),
            "attribution_maps": _maps_dict(perception.attribution_maps, list(perception.disease_probs), 3),
            "in_distribution": perception.in_distribution,
            "familiarity": None if perception.familiarity is None else round(perception.familiarity, 4),
            "rejected_sentences": [{"text": r.text, "reason": r.reason, "observation": r.observation}
                                   for r in self.rejected],
            "completed_sentences": list(self.completed),
            "verified": self.verified,
        }


def _maps_dict(maps: torch.Tensor | None, names: list[str], decimals: int) -> dict | None:
    """(views, diseases, h, w) maps as ``{"grid": [h, w], "views": [{observation: rows}, ...]}``, rounded."""
    if maps is None:
        return None
    return {"grid": list(maps.shape[-2:]),
            "views": [{name: [[round(v, decimals) for v in row] for row in view[index].tolist()]
                       for index, name in enumerate(names)} for view in maps]}


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
        return TRRGReport(text, sentences_of(text), perception, verified=True)
    text = report_text(kept)
    return TRRGReport(text, sentences_of(text), perception, rejected, verified=True)


def completed_sentences(sentences: list[str], alternatives: list[tuple[int, str]], clues: dict[str, bool]) -> list[str]:
    """``sentences`` with alternatives inserted, each at its boundary (0: before the first sentence),
    tried in the order given (most likely first): one is kept when it states a clue still missing and
    the report with it breaks no rule of verified decoding (``verify_sentences`` drops nothing)."""
    inserted: dict[int, list[str]] = {}

    def report_with(extra: dict[int, list[str]]) -> list[str]:
        return [text for index in range(len(sentences) + 1)
                for text in extra.get(index, []) + sentences[index : index + 1]]

    for boundary, text in alternatives:
        missing = set(missing_clues(label_sentences(report_text(report_with(inserted))), clues))
        if not missing:
            break
        labelled = label_sentences(f"{text} .")
        if len(labelled) != 1 or not any(labelled[0][1].get(name) in (POSITIVE, UNCERTAIN) for name in missing):
            continue
        trial = {**inserted, boundary: inserted.get(boundary, []) + [labelled[0][0]]}
        if not verify_sentences(label_sentences(report_text(report_with(trial))), clues)[1]:
            inserted = trial
    return report_with(inserted)


class SentenceEnd(StoppingCriteria):
    """Stops each row once its continuation (from position ``start`` on) holds a token with a full stop:
    one sentence is all clue completion reads."""

    def __init__(self, start: int, stop_ids: torch.Tensor):
        self.start, self.stop_ids = start, stop_ids

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.isin(input_ids[:, self.start :], self.stop_ids.to(input_ids.device)).any(dim=1)


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
            return_evidence_maps: also give each study's per-view evidence maps (the patch grid).
            return_attribution_maps: also give each study's per-view attribution maps (the backbone's finest
                grid; one backward pass per disease, so only on request).
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

    def _sanitize_parameters(self, return_evidence_maps: bool | None = None, return_attribution_maps: bool | None = None,
                             perception_callback: Callable[[list[TRRGStudyPerception]], None] | None = None,
                             verify: bool | None = None, **generate_kwargs):
        if generate_kwargs.get("num_return_sequences", 1) != 1:
            raise ValueError("TRRGReportPipeline writes one report per study: num_return_sequences must be 1")
        forward_params = {"generate_kwargs": generate_kwargs} if generate_kwargs else {}
        if return_evidence_maps is not None:
            forward_params["return_evidence_maps"] = return_evidence_maps
        if return_attribution_maps is not None:
            forward_params["return_attribution_maps"] = return_attribution_maps
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

    def _forward(self, model_inputs: dict, return_evidence_maps: bool = False, return_attribution_maps: bool = False,
                 perception_callback: Callable[[list[TRRGStudyPerception]], None] | None = None,
                 generate_kwargs: dict | None = None, verify: bool = True) -> dict:
        view_mask = model_inputs["view_mask"]
        clues = self.model.predict_clues(model_inputs["pixel_values"], view_mask, return_maps=return_evidence_maps,
                                         clue_probs=model_inputs.get("clue_probs"))
        attributions = self.model.attribution_maps(model_inputs["pixel_values"], view_mask) if return_attribution_maps else None
        perceptions = self._perceptions(clues, view_mask, attributions)
        if perception_callback is not None:
            perception_callback(perceptions)
        prompts = model_inputs["input_ids"]
        sequences = self.model.generate(
            input_ids=prompts, attention_mask=model_inputs["attention_mask"], view_mask=view_mask,
            vision_features=clues.vision_features, clue_probs=clues.disease_probs,  # the perception, not again
            **self._prepare_generate_kwargs(self._without_placeholders(generate_kwargs or {})),
        )
        texts = self.processor.batch_decode(sequences[:, prompts.shape[1]:])
        if verify and model_inputs.get("clue_probs") is None and not self.model.perception_is_trained:
            # Completing and checking a report with clues that carry no information would only make it
            # state them (measured: a captioner's CE micro-F1 0.48 -> 0.21 with such clues verified).
            logger.warning_once(UNTRAINED_PERCEPTION)
            verify = False
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
        """Clue completion: a report that states none of a present clue gets the writer's alternative
        sentence about it, where one passes the checks (``completed_sentences``). The sentences are started
        by the first tokens the clue drives most (``_clue_driven_tokens``): ``COMPLETION_ALTERNATIVES``
        per missing clue, then as many again for the reports still missing one."""
        missing = {row: missing_clues(label_sentences(report.report), report.perception.clues)
                   for row, report in enumerate(reports)}
        open_rows = [row for row in missing if missing[row]]
        if not open_rows:
            return reports
        tokenizer = self.processor.tokenizer
        sentences = {row: [text for text, _ in label_sentences(reports[row].report)] for row in open_rows}
        prompts = {row: ids[mask.bool()].tolist() for row, ids, mask in
                   zip(open_rows, model_inputs["input_ids"][open_rows], model_inputs["attention_mask"][open_rows])}
        # The report token by token, sentence by sentence, so that every boundary is a token position.
        pieces = {row: [tokenizer.encode(f" {text} .", add_special_tokens=False) for text in sentences[row]]
                  for row in open_rows}
        driven = self._clue_driven_tokens(open_rows, missing, prompts, pieces, model_inputs, clues)
        tried = {row: [] for row in open_rows}  # alternatives so far, in the order they are tried
        for first in (0, COMPLETION_ALTERNATIVES):
            starts = {row: [start for per_clue in driven[row] for start in per_clue[first : first + COMPLETION_ALTERNATIVES]]
                      for row in open_rows}
            alternatives = self._alternative_sentences(open_rows, prompts, pieces, starts, model_inputs, clues)
            still_open = []
            for row in open_rows:
                clues_of = reports[row].perception.clues
                tried[row] += alternatives[row]
                completed = completed_sentences(sentences[row], tried[row], clues_of)
                if completed != sentences[row]:
                    text = report_text(completed)
                    added = [sentence for sentence in completed if sentence not in sentences[row]]
                    reports[row] = TRRGReport(text, sentences_of(text), reports[row].perception, reports[row].rejected,
                                              added, verified=True)
                if missing_clues(label_sentences(reports[row].report), clues_of):
                    still_open.append(row)
            open_rows = still_open
            if not open_rows:
                break
        return reports

    def _clue_driven_tokens(self, rows, missing, prompts, pieces, model_inputs, clues) -> dict[int, list[list[tuple]]]:
        """Per row, per missing clue, ``(effect, boundary, token)`` most driven first: at each sentence
        boundary, how much more likely the writer makes a first token when the clue is injected as
        present than when the same clue is injected as absent (log-probability difference). Left out: the
        token the writer wrote there, </s>, pad, the placeholders, and tokens it gives less than
        ``COMPLETION_MIN_PROBABILITY`` with the clue present. ``2 * COMPLETION_ALTERNATIVES`` per clue."""
        tokenizer, names = self.processor.tokenizer, list(self.model.config.disease_names)
        banned = [tokenizer.eos_token_id, tokenizer.pad_token_id, *self._placeholder_ids()]
        present = self._first_token_scores(rows, prompts, pieces, model_inputs, clues, clues.disease_probs[rows])
        pairs = [(row, name) for row in rows for name in missing[row]]
        probs = clues.disease_probs[[row for row, _ in pairs]].clone()
        for k, (_, name) in enumerate(pairs):
            probs[k, names.index(name)] = 0.0  # below any threshold: the clue injected as absent
        absent = self._first_token_scores([row for row, _ in pairs], prompts, pieces, model_inputs, clues, probs)
        with_clue = dict(zip(rows, present))
        floor, driven = math.log(COMPLETION_MIN_PROBABILITY), {row: [] for row in rows}
        for (row, _), boundaries in zip(pairs, absent):
            written = [piece[0] for piece in pieces[row]] + [tokenizer.eos_token_id]
            found = []
            for boundary, (scores, without) in enumerate(zip(with_clue[row], boundaries)):
                effect = (scores - without).masked_fill(scores < floor, -math.inf)
                effect[banned + [written[boundary]]] = -math.inf
                values, tokens = effect.topk(min(len(effect), 2 * COMPLETION_ALTERNATIVES))
                found += [(float(value), boundary, int(token)) for value, token in zip(values, tokens) if value > -math.inf]
            driven[row].append(sorted(found, key=lambda item: -item[0])[: 2 * COMPLETION_ALTERNATIVES])
        return driven

    def _alternative_sentences(self, rows, prompts, pieces, starts, model_inputs: dict,
                               clues) -> dict[int, list[tuple[int, str]]]:
        """Per row, (boundary, sentence) alternatives, most clue-driven first: each ``(effect, boundary,
        token)`` start continued greedily from the sentences before its boundary for one sentence."""
        sequences, owners = [], []
        for row in rows:
            for effect, boundary, token in starts[row]:
                sequences.append(prompts[row] + [t for piece in pieces[row][:boundary] for t in piece] + [token])
                owners.append((row, boundary, effect))
        texts = self._greedy_sentences(sequences, model_inputs, clues, [row for row, _, _ in owners])
        alternatives: dict[int, list[tuple[float, int, str]]] = {row: [] for row in rows}
        for (row, boundary, effect), text in zip(owners, texts):
            labelled = label_sentences(text)
            if labelled and "." in text:  # a whole sentence, not one cut off at COMPLETION_TOKENS
                alternatives[row].append((effect, boundary, labelled[0][0]))
        return {row: [(boundary, text) for _, boundary, text in sorted(found, key=lambda item: -item[0])]
                for row, found in alternatives.items()}

    def _first_token_scores(self, rows, prompts, pieces, model_inputs, clues, probs) -> list[list[torch.Tensor]]:
        """For each of ``rows`` (a row may come more than once), per boundary (before each sentence, and at
        the end), the log-probabilities of the next token given the prompt, the sentences before it and
        the clue probabilities ``probs`` (one line per entry of ``rows``): teacher-forced passes, a few
        at a time (only the boundary positions' logits are computed: a real LLM's vocabulary is large)."""
        scored = []
        # rows x (rows x boundaries) positions at most (left padding shifts each row's) x the vocabulary
        boundaries = max(len(pieces[row]) + 1 for row in rows)
        vocabulary = self.model.get_output_embeddings().weight.shape[0]
        per_pass = max(1, math.isqrt(SCORED_LOGITS_PER_PASS // (boundaries * vocabulary)))
        for start in range(0, len(rows), per_pass):
            chunk = list(range(start, min(start + per_pass, len(rows))))
            sequences = [prompts[rows[k]] + [token for piece in pieces[rows[k]] for token in piece] for k in chunk]
            input_ids, attention_mask = self._left_padded(sequences)
            width = input_ids.shape[1]
            # The position of the token before each boundary (the prompt's last, each sentence's last).
            positions = [(torch.tensor([len(prompts[rows[k]])] + [len(piece) for piece in pieces[rows[k]]]).cumsum(0) - 1
                          + width - len(sequence)) for k, sequence in zip(chunk, sequences)]
            kept = torch.unique(torch.cat(positions))
            index = torch.tensor([rows[k] for k in chunk], device=clues.disease_probs.device)
            device = self.model.device
            logits = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                view_mask=model_inputs["view_mask"][index], vision_features=self._features_of(clues, index),
                                clue_probs=probs[chunk[0] : chunk[-1] + 1], logits_to_keep=kept.to(device)).logits
            column = {int(position): column for column, position in enumerate(kept.tolist())}
            for offset, row_positions in enumerate(positions):
                columns = [column[int(position)] for position in row_positions]
                scored.append(list(torch.log_softmax(logits[offset, columns].float(), dim=-1).cpu()))
        return scored

    def _greedy_sentences(self, starts: list[list[int]], model_inputs: dict, clues, rows: list[int]) -> list[str]:
        """Each start (prompt + sentences + a first token) continued greedily for ``COMPLETION_TOKENS``;
        the decoded text from that first token on."""
        if not starts:
            return []
        input_ids, attention_mask = self._left_padded(starts)
        index = torch.tensor(rows, device=clues.disease_probs.device)
        device = self.model.device
        generated = self.model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
            view_mask=model_inputs["view_mask"][index], vision_features=self._features_of(clues, index),
            clue_probs=clues.disease_probs[index], do_sample=False, num_beams=1, max_new_tokens=COMPLETION_TOKENS,
            pad_token_id=self.processor.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([SentenceEnd(input_ids.shape[1], self._full_stop_ids())]),
        )
        width = input_ids.shape[1]
        return self.processor.batch_decode(torch.cat([input_ids[:, -1:].to(generated.device), generated[:, width:]], dim=1))

    def _left_padded(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left padding: every continuation starts at the same position."""
        width, pad = max(map(len, sequences)), self.processor.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in sequences])
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in sequences])
        return input_ids, attention_mask

    def _full_stop_ids(self) -> torch.Tensor:
        """The vocabulary's tokens that hold a full stop (once per pipeline)."""
        if getattr(self, "_stop_ids", None) is None:
            vocabulary = self.processor.tokenizer.get_vocab()
            self._stop_ids = torch.tensor(sorted(index for token, index in vocabulary.items() if "." in token))
        return self._stop_ids

    @staticmethod
    def _features_of(clues, index: torch.Tensor):
        """The rows ``index`` of the perception's vision features (no second encoding)."""
        features = clues.vision_features
        return type(features)(**{name: value[index] if torch.is_tensor(value) else tuple(part[index] for part in value)
                                 for name, value in features.items() if value is not None})

    def _perceptions(self, clues, view_mask: torch.Tensor,
                     attributions: torch.Tensor | None = None) -> list[TRRGStudyPerception]:
        """One ``TRRGStudyPerception`` per study of a ``predict_clues`` output and its ``attribution_maps``
        (padded views dropped)."""
        names = list(self.model.config.disease_names)
        thresholds = dict(zip(names, self.model.clue_thresholds.tolist()))
        maps, views = clues.evidence_maps, view_mask.sum(dim=1).tolist()
        familiarity = [None] * len(views) if clues.familiarity is None else clues.familiarity.float().tolist()
        return [TRRGStudyPerception(disease_probs=dict(zip(names, probs)), clues=dict(zip(names, map(bool, states))),
                                    clue_thresholds=thresholds,
                                    evidence_maps=None if maps is None else maps[row, : views[row]].float().cpu(),
                                    attribution_maps=None if attributions is None
                                    else attributions[row, : views[row]].float().cpu(),
                                    in_distribution=None if familiarity[row] is None else familiarity[row] <= 1.0,
                                    familiarity=familiarity[row])
                for row, (probs, states) in enumerate(zip(clues.disease_probs.tolist(), clues.clue_states.tolist()))]


__all__ = ["TRRGReport", "TRRGReportPipeline", "TRRGSentence", "TRRGStudyPerception", "sentences_of"]
