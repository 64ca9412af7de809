"""A fast, rule-based labeler for the 14 CheXpert observations (``trrg label``).

It follows the CheXpert labeler's three stages with regular expressions instead of a dependency
parser, so it needs no models and labels thousands of reports per second:

1. **Mention extraction**: phrase lists per observation (our own lists; the CheXpert phrase files
   served as a checklist). "Descriptor" mentions such as "heart size" or "mediastinal contours"
   name an organ rather than a finding: unqualified they count as positive (as in CheXpert);
   "stable", "unchanged" or "borderline" make them uncertain unless they are affirmed ("enlarged").
2. **Classification of each mention** from the cues around it in its sentence, in CheXpert's order:
   double negations ("cannot be excluded", "not ruled out", "no new") are uncertain; then
   negations ("no", "without", "free of", "... is normal", "... has resolved") are negative; then
   hedges ("may represent", "possible", "versus", "X or Y", "concerning for") are uncertain; else
   positive. A cue reaches a mention only within a few words and not across a scope break ("but",
   "however", "although", "with", ";"); a negation before a mention also stops at a new clause
   ("is", "there"), so "no effusion, pneumothorax or consolidation" negates all three while
   "no effusion. mild atelectasis" does not. "Normal" and "unremarkable" negate the structure they
   describe and a list of structures, not a finding after a comma ("normal heart size, mild
   atelectasis"). Pseudo-negations ("no change", "not only") negate nothing.
3. **Aggregation per report** as CheXpert does: any positive mention wins, otherwise any uncertain
   one, otherwise negative; a positive or uncertain heart-failure mention makes Cardiomegaly
   uncertain unless it is positive; "No Finding" is 1 when nothing but Support Devices is positive
   or uncertain (other abnormalities such as emphysema or granulomas count too), else ``None``.

Sources: the semantics are those of the CheXpert labeler (Irvin et al., "CheXpert: A Large Chest
Radiograph Dataset with Uncertainty Labels and Expert Comparison", AAAI 2019) and its public phrase
and pattern files (github.com/stanfordmlgroup/chexpert-labeler: phrases/mention, phrases/unmention,
patterns/negation.txt, pre_/post_negation_uncertainty.txt), used as a checklist; the regular
expressions are our own. Comments name the CheXpert phrase or pattern a rule implements.

IU-Xray's "XXXX" de-identification masks are treated as one unknown word, and may sit inside a
multi-word phrase ("pleural XXXX effusion"). All regular expressions are compiled at import;
labelled sentences are kept in a bounded LRU cache, since reports repeat template sentences.

Part of the hub bundle (remote code; imports only the standard library and sibling files): the report
pipeline labels each sentence it writes with ``label_sentences``. The project's own code imports it as
``trrg.processing.labeler``; the sentence splitter as ``trrg.processing.text.split_sentences``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator

from .constants_trrg import CHEXPERT_OBSERVATIONS

# ---------------------------------------------------------------------------------------------
# Sentences: the labeler reads a report sentence by sentence, and so do the training collators, the
# metrics and the report pipeline (one splitter for all).
# ---------------------------------------------------------------------------------------------
# A sentence ends at ".", "!" or "?" unless the "." sits inside a number ("1.5 cm"), or at a blank
# line. Single newlines are not boundaries: MIMIC-style reports wrap lines mid-sentence.
_SENTENCE_END = re.compile(r"(?:\.(?!\d)|[!?])+|\n\s*\n")
# Leftovers that are not sentences: list numbers ("2", "(3)") and punctuation.
_NOT_A_SENTENCE = re.compile(r"^[\s\W\d]*$")
_LIST_NUMBER = re.compile(r"^\s*\(?\d{1,2}\)\s+")


def split_sentences(text: str) -> list[str]:
    """Split a raw or cleaned report into sentences, without their final punctuation.

    Periods inside numbers ("1.5 cm") do not end a sentence; list numbers ("1.", "2)") are dropped;
    case and inner punctuation are kept.

    >>> split_sentences("a b . c d .")
    ['a b', 'c d']
    >>> split_sentences("1. Nodule of 1.5 cm. 2. No effusion!")
    ['Nodule of 1.5 cm', 'No effusion']
    """
    sentences = []
    for piece in _SENTENCE_END.split(text):
        piece = _LIST_NUMBER.sub("", piece).strip()
        if piece and not _NOT_A_SENTENCE.match(piece):
            sentences.append(" ".join(piece.split()))
    return sentences


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------
POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
CARDIOMEGALY = "Cardiomegaly"
# Reports repeat template sentences ("No pneumothorax."): a bounded cache of labelled sentences
# skips the regular expressions for most of them.
SENTENCE_CACHE_SIZE = 16384
# Abnormalities outside the 14 observations: they only rule out "No Finding".
OTHER_FINDING = "other finding"

# Mention kinds.
FINDING = "finding"  # names an abnormality ("cardiomegaly")
# Names a structure ("heart size", "mediastinum"): positive unless a cue says otherwise, as in
# CheXpert; "stable" or "borderline" make it uncertain unless it is affirmed ("enlarged").
DESCRIPTOR = "descriptor"
HEDGED = "hedged"  # uncertain unless negated ("vascular congestion"), as in CheXpert
HEART_FAILURE = "heart failure"  # an Edema mention that also makes Cardiomegaly uncertain
NOT_A_MENTION = "not a mention"  # looks like a mention but is not ("pericardial effusion")
# Counts only when negated: "no acute bony abnormality" rules a fracture out, while an affirmed
# "bony abnormality" need not be one.
NEGATED_ONLY = "negated only"


# ---------------------------------------------------------------------------------------------
# Phrase lists: (regular expression, observation or observations, kind). Order matters where
# phrases overlap: at one position the first listed alternative wins, so longer and excluding
# phrases come first.
# A space in a phrase also accepts an "XXXX" mask between the words.
# ---------------------------------------------------------------------------------------------
_MENTION_PHRASES: tuple[tuple[str, str | tuple[str, ...] | None, str], ...] = (
    # Look-alikes that must not count.
    (r"pericardial effusions?|(?:pleural|septal|kerley(?: b)?) lines?", None, NOT_A_MENTION),
    # The heart as a landmark ("projected over the heart") says nothing about its size.
    (r"(?:over|overlying|overlies|overlie|behind|to|near|beneath|obscur\w*|abut\w*) (?:the )?(?:left |right )?heart"
     r"|heart (?:border|borders|apex)", None, NOT_A_MENTION),
    # So is the mediastinum as a place something projects over (CheXpert's positional unmentions
    # "over the (superior, left, right) mediastinum"; its "in the mediastinum" is left out: what is
    # in the mediastinum can change its contour).
    (r"(?:over|overlying|overlies|overlie) (?:the )?(?:superior |anterior |posterior |middle |upper "
     r"|left |right )?mediastinum", None, NOT_A_MENTION),
    (r"calcified (?:nodule|nodules|nodular \w+)", OTHER_FINDING, FINDING),
    # Pleural Other before Lung Opacity, so "pleural scarring" is not a lung "scar".
    (r"pleural(?:-| - | and | )(?:parenchymal |peripheral )?scar\w*|pleural scar\w*", "Pleural Other", FINDING),
    (r"pleuro-?(?:parenchymal|pericardial) scar\w*", "Pleural Other", FINDING),
    (r"(?:pleural|fissural) thicken\w*|fibrothorax|fibros[ie]s|fibrotic", "Pleural Other", FINDING),
    # Edema and heart failure before the heart itself.
    (r"(?:congestive )?heart failure|chf", "Edema", HEART_FAILURE),
    (r"(?:vascular|pulmonary|venous) congestion|indistinctness|vascular prominence", "Edema", HEDGED),
    (r"edema\w*|oedema", "Edema", FINDING),
    # Cardiomegaly.
    (r"cardiomegaly|cardiac enlargement|enlarged (?:heart|cardiac silhouette)", CARDIOMEGALY, FINDING),
    (r"enlargement of the (?:heart|cardiac silhouette)", CARDIOMEGALY, FINDING),
    (r"cardio\s?mediastinal (?:silhouette|contour|shadow)s?|cardiomediastinum",
     "Enlarged Cardiomediastinum", DESCRIPTOR),
    # CheXpert lists "cardiac contour" under Cardiomegaly and "contour" and "cardiac silhouette and
    # vascularity" under Enlarged Cardiomediastinum: these mention both.
    (r"cardiac contours?|cardiac silhouette and (?:pulmonary )?vascularity",
     (CARDIOMEGALY, "Enlarged Cardiomediastinum"), DESCRIPTOR),
    (r"heart size|cardiac (?:size|silhouette|shadow|contour|border)s?|heart(?! failure)|cardiac(?= and mediastin)",
     CARDIOMEGALY, DESCRIPTOR),
    # Enlarged Cardiomediastinum.
    (r"(?:widened|widening of the|enlarged) mediastinum|mediastinal (?:widening|enlargement)",
     "Enlarged Cardiomediastinum", FINDING),
    (r"(?:hilar and )?mediastinal (?:and hilar )?(?:contour|silhouette|configuration|width|shadow|structure|border)s?"
     r"|mediastinum|pericardial silhouette", "Enlarged Cardiomediastinum", DESCRIPTOR),
    # A bare "contour" is the cardiomediastinal contour in CheXpert's list ("heart size and contour
    # are normal", "hilar contours"), unless it is named as another structure's.
    (r"(?:diaphragm\w*|hemidiaphragm\w*|rib|bony|osseous|spinal|vertebral|stomach|gastric|bowel|breast|soft tissue)"
     r" contours?"
     r"|contour (?:deformit|abnormalit|irregularit)\w*", None, NOT_A_MENTION),
    (r"contours?", "Enlarged Cardiomediastinum", DESCRIPTOR),
    # Lung Lesion.
    (r"nodular (?:opacit|densit|opacification|lesion)\w*|mass-?like (?:opacit|densit|opacification|lesion)\w*",
     "Lung Lesion", FINDING),
    (r"mass(?:es)?|nodul\w*|lump|cavitary lesions?|cavit(?:y|ies)|carcinoma|neoplasm\w*|tumou?rs?|malignan\w*",
     "Lung Lesion", FINDING),
    # Lung Opacity.
    (r"opaci\w*|decreased translucency|increased densit(?:y|ies)|air(?:space| space|-space) (?:disease|process)"
     r"|infiltrat\w*|interstitial (?:marking|pattern|opacit|lung disease|prominence)\w*"
     r"|reticula\w*|peribronchial (?:thickening|cuffing)|(?:bronchial )?wall thickening|scar\w*",
     "Lung Opacity", FINDING),
    (r"consolidat\w*", "Consolidation", FINDING),
    (r"pneumonia\w*|infectio\w*|bronchopneumonia", "Pneumonia", FINDING),
    (r"atelecta\w*|collapse\w*", "Atelectasis", FINDING),
    (r"pneumothora\w*", "Pneumothorax", FINDING),
    (r"pleural fluid|effusions?|hydropneumothorax", "Pleural Effusion", FINDING),
    (r"fracture\w*", "Fracture", FINDING),
    (r"(?:acute )?(?:bony|osseous|skeletal) (?:abnormalit\w*|injur\w*|process\w*)", "Fracture", NEGATED_ONLY),
    # CheXpert's Support Devices list includes "marker" and "equipment"; a "tracheostomy" alone is
    # an other finding there (its tube is the device).
    (r"pace(?:makers?| makers?)|pacers?|picc|lines?|tubes?|valves?|catheters?|hardware|arthroplast\w*|icd"
     r"|defibrillators?|devices?|drains?|plates?|screws?|cannula\w*|apparatus|coils?|mediport|port-?a-?cath"
     r"|markers?|equipment"
     r"|(?:pacer|pacemaker|pacing|icd) leads|support equipment"
     # A tip that ends somewhere is a line or tube's, even when the device's name is masked.
     r"|tip (?:in|at|overlying|overlies|projecting|projects|terminat\w*|near|approximat\w*|extends|located|is)",
     SUPPORT_DEVICES, FINDING),
    # Other abnormalities (rule out No Finding only).
    (r"emphysema\w*|blunt\w*|densit(?:y|ies)|elevat\w*|eventration|degenera\w*|calcifi\w*"
     r"|hyperinfla\w*|hyperexpan\w*|hyperlucen\w*|bronchospasm|asthma|hernia\w*|copd|osteophyt\w*"
     r"|aortic disease|bronchiolitis|airways? disease|thickening|cephalization|aspiration"
     r"|bullae|bullous|contusion|atherosclero\w*|osteopeni\w*|arthriti\w*|\w*scolio\w*|metasta\w*|granulom\w*"
     r"|pneumomediastinum"
     r"|pneumoperitoneum|cuffing|lucenc\w*|inflam\w*|hypertension|prominen\w*|kyphos\w*|kyphotic"
     r"|bullet|thoracentesis|bronchitis|bronchiectasis|volume loss|deformit\w*|hemorrhage|hematoma"
     r"|radiopaque|arthropathy|tortuo\w*|ectasia|ectatic|unfold\w*|adenopathy"
     r"|lymphadenopathy|chronic obstructive|cyst\w*|curvature|spurs?|spurring|syndesmophyt\w*|dextrocardia"
     # Postoperative states: not a normal study either.
     r"|sternotom\w*|cabg|post-?(?:operative|surgical)|status post|prosthe\w*|implants?|foreign bod\w*"
     r"|amputation|thoracotomy|lobectomy|pneumonectomy|mastectomy|piercing"
     # The rest of CheXpert's "no finding" (other finding) list.
     r"|tracheostomy|plaques?|osteodystroph\w*|aerophagia|fissur\w*",
     OTHER_FINDING, FINDING),
)

# ---------------------------------------------------------------------------------------------
# Cues: (regular expression, kind, words it reaches before a mention, words after a mention).
# "before 6" means the cue precedes the mention by at most 6 words ("no [6 words] effusion").
# ---------------------------------------------------------------------------------------------
NEGATED_UNCERTAIN = "double negation"  # uncertain, checked before negation
NEGATION = "negation"
# "normal", "unremarkable", "within normal limits": a negation of the structure they describe
# (CheXpert's normal/unremarkable patterns bind to the noun they modify or their subject). Across a
# comma it still reaches a list of structures ("normal heart size, mediastinum and hila") but not a
# finding: in "normal heart size, mild atelectasis" the atelectasis is not normal.
NORMALITY = "normality"
STRUCTURE_LIST_REACH = 6  # words a normality cue reaches forward over a list of structures
UNCERTAINTY = "uncertainty"
STABILITY = "stability"  # "stable", "borderline": uncertain for descriptor mentions only
BREAK = "break"  # ends every cue's scope
CLAUSE = "clause"  # a new clause: ends the scope of cues *before* a mention
COMMA = "comma"  # ends the scope of hedges *after* a mention ("opacity, may reflect ...")
AFFIRMATION = "affirmation"  # "enlarged": makes a descriptor positive; ends the scope after a mention

_CUES: tuple[tuple[str, str, int, int], ...] = (
    # Double negations.
    (r"(?:cannot|can not|could not|can't|not) (?:be )?(?:entirely |completely |definitely )?"
     r"(?:excluded|exclude|ruled out|rule out)", NEGATED_UNCERTAIN, 8, 6),
    # CheXpert pre-negation uncertainty "no evidence to rule out XXX".
    (r"(?:difficult|unable|impossible|no evidence|nothing) to (?:exclude|rule out)", NEGATED_UNCERTAIN, 8, 6),
    (r"no new", NEGATED_UNCERTAIN, 6, 0),
    # Pseudo-negations: they change nothing, except that "no change" keeps a descriptor stable.
    (r"(?:no|without|not) (?:significant(?:ly)? |interval |appreciable |substantial |definite |other )?"
     r"(?:change|changed|increase|increased|decrease|decreased|worsening|improvement|difference)\w*",
     STABILITY, 3, 6),
    (r"not only|no doubt", BREAK, 0, 0),
    # Hedges made of negation words, before the plain negations.
    (r"not (?:well |clearly |optimally |fully )(?:seen|visualized|visualised|evaluated|assessed|demonstrated)"
     r"|(?:poorly|incompletely) (?:seen|visualized|evaluated|assessed)|not appreciated|obscured|obscuration",
     UNCERTAINTY, 3, 4),
    # CheXpert: "obscuring the XXX" makes the obscured XXX uncertain, not what obscures it.
    (r"obscur(?:es|ing)", UNCERTAINTY, 3, 0),
    # Negations.
    (r"(?:no|without) (?:\w+ )?(?:evidence|signs?|findings?|features?|suggestion) (?:of|for|to suggest)",
     NEGATION, 10, 0),
    # CheXpert negations "history|free|disappearance|resolution|drainage|removal of XXX", "clearing of
    # XXX" and "rather than XXX" (conj:negcc).
    (r"to suggest|negative for|free of|clear of|clearing of|absence of|lack of|resolution of|removal of"
     r"|history of|disappearance of|drainage of|rule out|ruled out", NEGATION, 10, 0),
    (r"rather than|instead of", NEGATION, 4, 0),
    # CheXpert negations "XXX with interval resolution" (before "with" ends a scope) and "XXX is
    # previously demonstrated/visualized" (it was there before, not now).
    (r"with (?:(?:interval|complete|near complete|near-complete) )?(?:resolution|clearing)", NEGATION, 0, 4),
    (r"(?:is|are|was|were|has been|have been) previously (?:demonstrated|visualized|visualised)", NEGATION, 0, 1),
    # Before "no": "XXX is no longer seen" (CheXpert negation) must not be read as a bare "no".
    (r"(?:not|no longer) (?:\w+ )?(?:seen|identified|demonstrated|visualized|visible|present|evident|noted|detected"
     r"|enlarged|widened|dilated|shown|apparent|included)", NEGATION, 0, 5),
    (r"no|without|neither|nor|never|exclude[sd]?", NEGATION, 10, 0),
    (r"(?:at |near |to )?(?:the )?(?:upper limits? of|high|top|upper) normal", NORMALITY, 3, 6),
    (r"no longer|not", NEGATION, 10, 0),
    # A mention inside one of these ("normal in size and contour") is negated by it.
    (r"(?:within normal limits|normal) (?:in|for|of) (?:size|caliber|appearance|contour)"
     r"(?:,? (?:and )?(?:configuration|contour|shape|size|appearance))?|within normal limits", NORMALITY, 0, 9),
    (r"normal (?:size|appearance|caliber|contour)(?: and (?:configuration|contour|shape|size))? of", NORMALITY, 3, 0),
    (r"normal(?:ly)?|unremarkable", NORMALITY, 3, 9),
    (r"absent|resolved|resolving|cleared|removed|negative", NEGATION, 3, 5),
    # Hedges (CheXpert's post-negation uncertainty patterns as the checklist).
    # "may/could be consistent/compatible with XXX": the hedge reaches across "with", which
    # otherwise ends a scope; "XXX could appear", "XXX may have this appearance".
    (r"(?:may|might|could|can|would|possibly|probably|likely) (?:also )?(?:be )?(?:consistent|compatible) with",
     UNCERTAINTY, 6, 0),
    (r"(?:may|might|could|can) (?:also )?(?:appear|have (?:this|a similar) appearance)", UNCERTAINTY, 6, 3),
    (r"possibl[ey]|probabl[ey]|likely|questionabl[ey]|suspect(?:ed)?|presum(?:ed|ably|ptive)|favou?r(?:s|ed)?"
     r"|maybe|equivocal|indeterminate|may be|might be|could be|can be|cannot|uncertain",
     UNCERTAINTY, 6, 4),
    # "suspicious XXX", "question XXX", "consider XXX", "(maybe) secondary to XXX", "correlate
    # clinically for XXX".
    (r"may|might|could|would|suggestive of|suggestion of|concerning for|concern for|suspicious(?: for| of)?"
     r"|suspicion (?:of|for)|worrisome for|question(?:ed| of)?|consider(?:ed)?"
     r"|differential (?:diagnosis )?(?:includes?|considerations?)"
     r"|(?:clinical(?:ly)? )?correlat(?:ion|e)(?: clinically)?", UNCERTAINTY, 6, 0),
    (r"secondary to", UNCERTAINTY, 4, 0),
    (r"versus|vs|and/or", UNCERTAINTY, 3, 3),
    (r"or", UNCERTAINTY, 3, 2),
    # Stability (for descriptors).
    (r"stable|unchanged|similar|grossly unchanged|not changed|borderline", STABILITY, 3, 6),
    # Scope ends.
    (r"but|however|although|though|whereas|while|except|apart from|aside from|which|yet|with", BREAK, 0, 0),
    (r"[;:]", BREAK, 0, 0),
    # Enlargement affirms a descriptor ("the heart is enlarged") and closes its clause, so that in
    # "heart size is enlarged, vascularity normal" the "normal" does not reach the heart.
    (r"enlarged|enlargement|increased?|widened|widening|large|prominen\w*", AFFIRMATION, 2, 6),
    (r"is|are|was|were|has|have|there|that|remains?|appears?|consistent", CLAUSE, 0, 0),
    (r",", COMMA, 0, 0),
)


def _phrase_regex(pattern: str) -> str:
    # Let an IU-Xray "xxxx" mask sit between the words of a phrase.
    return pattern.replace(" ", r"\s+(?:xxxx\s+)?")


def _word_alternatives(patterns: Iterable[str]) -> str:
    # One capturing group per entry, so `match.lastindex` tells which entry matched. The word
    # boundary is checked once for all entries, which keeps the scan fast.
    groups = "|".join(f"({_phrase_regex(pattern)})" for pattern in patterns)
    return rf"(?<![\w-])(?:{groups})(?![\w-])"


_MENTION_REGEX = re.compile(_word_alternatives(pattern for pattern, _, _ in _MENTION_PHRASES))
# Punctuation cues go after the word cues; `_CUE_TABLE[match.lastindex - 1]` is the matched entry.
_WORD_CUES = [cue for cue in _CUES if re.search("[a-z]", cue[0])]
_PUNCTUATION_CUES = [cue for cue in _CUES if not re.search("[a-z]", cue[0])]
_CUE_TABLE = [cue[1:] for cue in _WORD_CUES + _PUNCTUATION_CUES]
_CUE_REGEX = re.compile(
    _word_alternatives(cue[0] for cue in _WORD_CUES) + "|" + "|".join(f"({cue[0]})" for cue in _PUNCTUATION_CUES)
)
_MASK = re.compile(r"\bx{2,}(?:[\s-]+x{2,})*\b")


def _cues_in(sentence: str) -> list[tuple[int, int, str, int, int]]:
    return [(m.start(), m.end(), *_CUE_TABLE[m.lastindex - 1]) for m in _CUE_REGEX.finditer(sentence)]


def _words_between(sentence: str, start: int, end: int) -> int:
    gap = sentence[start:end].strip(" ,")
    return gap.count(" ") + 1 if gap else 0


def _kinds_before(sentence: str, start: int, cues: list[tuple[int, int, str, int, int]], finding: bool) -> set[str]:
    """Kinds of the cues before ``sentence[start:]`` that reach it, scanning back to a clause start."""
    kinds = set()
    after_comma = affirmed = stable = False
    for _, cue_end, kind, reach_before, _ in reversed([cue for cue in cues if cue[1] <= start]):
        if kind in (BREAK, CLAUSE):
            break
        after_comma |= kind == COMMA
        if kind == AFFIRMATION and after_comma:
            continue  # "heart enlarged, stable mediastinum": the enlargement is the heart's
        if kind == NORMALITY and reach_before:
            # "normal heart size, mild atelectasis", "normal heart, enlarged (or stable) mediastinum"
            if finding and after_comma or affirmed or stable and after_comma:
                continue
            if not finding:  # a list of structures: "normal heart size, mediastinal and hilar contours"
                reach_before = max(reach_before, STRUCTURE_LIST_REACH)
        if reach_before and _words_between(sentence, cue_end, start) <= reach_before:
            kinds.add(kind)
            affirmed |= kind == AFFIRMATION
            stable |= kind == STABILITY
    return kinds


def _kinds_after(sentence: str, end: int, cues: list[tuple[int, int, str, int, int]], finding: bool) -> set[str]:
    """Kinds of the cues after ``sentence[:end]`` that reach back to it, up to a scope break."""
    kinds = set()
    # A comma closes hedges ("opacity, may reflect atelectasis") and, for a finding, normality
    # ("small effusion, heart size normal").
    comma_seen = False
    for cue_start, _, kind, _, reach_after in (cue for cue in cues if cue[0] >= end):
        if kind == BREAK:
            break
        if kind == COMMA:
            comma_seen = True
            continue
        if reach_after and _words_between(sentence, end, cue_start) <= reach_after:
            if not comma_seen or (kind != UNCERTAINTY and not (kind == NORMALITY and finding)):
                kinds.add(kind)
        if kind == AFFIRMATION:
            break  # the mention's predicate: what follows belongs to another clause
    return kinds


def _mention_label(kind: str, cue_kinds: set[str]) -> int:
    if NEGATED_UNCERTAIN in cue_kinds:
        return UNCERTAIN
    if NEGATION in cue_kinds or NORMALITY in cue_kinds:
        return NEGATIVE
    if UNCERTAINTY in cue_kinds or kind == HEDGED:
        return UNCERTAIN
    if kind == DESCRIPTOR and STABILITY in cue_kinds and AFFIRMATION not in cue_kinds:
        return UNCERTAIN
    return POSITIVE


@functools.lru_cache(maxsize=SENTENCE_CACHE_SIZE)
def _sentence_mentions(sentence: str) -> tuple[tuple[str, str, int], ...]:
    """(observation, mention kind, label) for every mention in one lower-cased sentence."""
    mentions = []
    cues = None  # found lazily: many sentences hold no mention
    for match in _MENTION_REGEX.finditer(sentence):
        _, observations, kind = _MENTION_PHRASES[match.lastindex - 1]
        if observations is None:
            continue
        if cues is None:
            cues = _cues_in(sentence)
        start, end = match.span()
        finding = kind != DESCRIPTOR
        cue_kinds = _kinds_before(sentence, start, cues, finding) | _kinds_after(sentence, end, cues, finding)
        # A cue that encloses the mention applies to it ("normal in size and contour").
        cue_kinds.update(cue[2] for cue in cues if cue[0] <= start and cue[1] >= end)
        label = _mention_label(kind, cue_kinds)
        if kind != NEGATED_ONLY or label == NEGATIVE:
            for observation in (observations,) if isinstance(observations, str) else observations:
                mentions.append((observation, kind, label))
    return tuple(mentions)


def _mentions(text: str) -> Iterator[tuple[str, str, int]]:
    """(observation, mention kind, label) for every mention in ``text``."""
    for sentence in split_sentences(_MASK.sub("xxxx", text.lower())):
        yield from _sentence_mentions(sentence)


def _combine(previous: int | None, new: int) -> int:
    # CheXpert: positive beats uncertain beats negative.
    if previous is None:
        return new
    if POSITIVE in (previous, new):
        return POSITIVE
    return UNCERTAIN if UNCERTAIN in (previous, new) else NEGATIVE


def label_report(text: str) -> dict[str, int | None]:
    """Label one report: ``{observation: 1 positive | 0 negative | -1 uncertain | None not mentioned}``.

    >>> labels = label_report("Mild cardiomegaly. No pleural effusion, pneumothorax or consolidation.")
    >>> labels["Cardiomegaly"], labels["Pleural Effusion"], labels["Pneumothorax"], labels["Edema"]
    (1, 0, 0, None)
    """
    if not isinstance(text, str):
        raise TypeError(f"label_report expects the report as a str, got {type(text).__name__}")
    labels: dict[str, int | None] = dict.fromkeys(CHEXPERT_OBSERVATIONS)
    other_finding = heart_failure = False
    for observation, kind, label in _mentions(text):
        if observation == OTHER_FINDING:
            other_finding |= label != NEGATIVE
            continue
        labels[observation] = _combine(labels[observation], label)
        heart_failure |= kind == HEART_FAILURE and label != NEGATIVE
    if heart_failure and labels[CARDIOMEGALY] != POSITIVE:
        labels[CARDIOMEGALY] = UNCERTAIN
    finding = other_finding or any(
        labels[name] in (POSITIVE, UNCERTAIN) for name in CHEXPERT_OBSERVATIONS if name != SUPPORT_DEVICES
    )
    labels[NO_FINDING] = None if finding else POSITIVE
    return labels


def label_reports(texts: Iterable[str]) -> list[dict[str, int | None]]:
    """Label many reports (see :func:`label_report`)."""
    return [label_report(text) for text in texts]


def label_sentences(text: str) -> list[tuple[str, dict[str, int | None]]]:
    """Each sentence of a report (as ``split_sentences`` gives it) with its own labels, ``label_report``
    of the sentence alone: what each sentence states, whatever the others say.

    >>> [(sentence, labels["Pleural Effusion"], labels["Edema"]) for sentence, labels in label_sentences("No effusion. Mild edema.")]
    [('No effusion', 0, None), ('Mild edema', None, 1)]
    """
    return [(sentence, label_report(sentence)) for sentence in split_sentences(text)]


def labels_to_vector(
    labels: dict[str, int | None], uncertain_as: float = 1.0, missing_as: float = 0.0
) -> list[float]:
    """Labels as floats in ``CHEXPERT_OBSERVATIONS`` order (the models' ``disease_labels``).

    Positive is 1.0, negative 0.0; uncertain and unmentioned observations take ``uncertain_as``
    and ``missing_as`` (CheXpert's "U-Ones" policy by default).
    """
    unknown = set(labels) - set(CHEXPERT_OBSERVATIONS)
    if unknown:
        raise ValueError(f"unknown observations {sorted(unknown)}: expected names from {list(CHEXPERT_OBSERVATIONS)}")
    values = {POSITIVE: 1.0, NEGATIVE: 0.0, UNCERTAIN: float(uncertain_as), None: float(missing_as)}
    vector = []
    for name in CHEXPERT_OBSERVATIONS:
        label = labels.get(name)
        if label not in values:
            raise ValueError(f"label of {name!r} is {label!r}: expected 1, 0, -1 or None")
        vector.append(values[label])
    return vector
