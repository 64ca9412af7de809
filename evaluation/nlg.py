"""Caption metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D, as pycocoevalcap 1.2 computes them.

Report-generation papers (R2Gen, PromptMRG, TRRG) quote the numbers of the COCO caption toolkit,
quirks included, so this module reproduces its arithmetic on the same token strings (parity is
tested against pycocoevalcap itself) while being written for speed: n-gram counts are computed
once per sentence, references are vectorised once for CIDEr, and ROUGE-L uses a bit-parallel LCS.
METEOR is the one metric we do not re-implement: it runs the METEOR 1.5 jar, like pycocoevalcap.

Inputs follow pycocoevalcap: ``predictions`` maps an id to a one-element list with the generated
token string, ``references`` maps the same ids to one or more reference token strings. Token
strings are already tokenized (tokens separated by single spaces); see ``trrg.evaluation.score``
for the cleaning that produces them from raw reports.
"""

from __future__ import annotations

import atexit
import importlib.util
import math
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import typing
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

Ngram = tuple[str, ...]
Corpus = Mapping[str, Sequence[str]]

BLEU_MAX_N = 4
CIDER_MAX_N = 4
CIDER_SIGMA = 6.0
ROUGE_BETA = 1.2
METEOR_JAR_ENV = "TRRG_METEOR_JAR"
METEOR_JAR_NAME = "meteor-1.5.jar"


def check_corpus(predictions: Corpus, references: Corpus) -> list[str]:
    """Validate a pycocoevalcap-style corpus and return its ids (in the predictions' order)."""
    missing_refs = [key for key in predictions if key not in references]
    missing_preds = [key for key in references if key not in predictions]
    if missing_refs or missing_preds:
        raise ValueError(
            f"predictions and references must have the same ids: {len(missing_refs)} id(s) without a "
            f"reference (e.g. {missing_refs[:5]}), {len(missing_preds)} id(s) without a prediction "
            f"(e.g. {missing_preds[:5]})"
        )
    if not predictions:
        raise ValueError("nothing to score: predictions and references are empty")
    for key, prediction in predictions.items():
        if isinstance(prediction, str) or len(prediction) != 1 or not isinstance(prediction[0], str):
            raise ValueError(f"prediction {key!r} must be a list with exactly one string, got {prediction!r}")
    for key, refs in references.items():
        if isinstance(refs, str) or not refs or not all(isinstance(ref, str) for ref in refs):
            raise ValueError(f"references {key!r} must be a non-empty list of strings, got {refs!r}")
    return list(predictions)


def ngram_counts(tokens: Sequence[str], max_n: int) -> Counter[Ngram]:
    """All n-grams of orders 1..max_n with their counts."""
    counts: Counter[Ngram] = Counter()
    for n in range(1, max_n + 1):
        counts.update(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return counts


# ----------------------------------------------------------------------------------------- BLEU


def _bleu_sentence_stats(prediction: str, refs: Sequence[str], max_n: int) -> tuple[int, int, list[int], list[int]]:
    """(prediction length, closest reference length, guessed n-grams, clipped matches) per order."""
    tokens = prediction.split()
    counts = ngram_counts(tokens, max_n)
    ref_lengths, max_ref_counts = [], Counter()
    for ref in refs:
        ref_tokens = ref.split()
        ref_lengths.append(len(ref_tokens))
        max_ref_counts |= ngram_counts(ref_tokens, max_n)  # element-wise max over references
    # "closest" effective reference length; a tie goes to the shorter reference.
    closest = min((abs(length - len(tokens)), length) for length in ref_lengths)[1]
    guess = [max(0, len(tokens) - k + 1) for k in range(1, max_n + 1)]
    correct = [0] * max_n
    for ngram, count in counts.items():
        correct[len(ngram) - 1] += min(max_ref_counts[ngram], count)
    return len(tokens), closest, guess, correct


def corpus_bleu(predictions: Corpus, references: Corpus, max_n: int = BLEU_MAX_N) -> list[float]:
    """Corpus BLEU-1..max_n of pycocoevalcap's ``Bleu(4)`` (option "closest")."""
    ids = check_corpus(predictions, references)
    test_len = ref_len = 0
    guess, correct = [0] * max_n, [0] * max_n
    for key in ids:
        length, closest, item_guess, item_correct = _bleu_sentence_stats(predictions[key][0], references[key], max_n)
        test_len, ref_len = test_len + length, ref_len + closest
        guess = [total + g for total, g in zip(guess, item_guess)]
        correct = [total + c for total, c in zip(correct, item_correct)]
    # pycocoevalcap's smoothing constants: `tiny` keeps a zero match count at (almost) 0 instead of
    # log(0), `small` avoids dividing by zero guesses. Same operation order, same floats.
    tiny, small = 1e-15, 1e-9
    scores, product = [], 1.0
    for k in range(max_n):
        product *= float(correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + tiny) / (ref_len + small)
    if ratio < 1:  # brevity penalty
        scores = [score * math.exp(1 - 1 / ratio) for score in scores]
    return scores


# -------------------------------------------------------------------------------------- ROUGE-L


def lcs_length(first: Sequence[str], second: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison-Dix / Hyyro).

    Python integers serve as bit vectors over ``first``, so each token of ``second`` costs a few
    big-integer operations instead of a row of the quadratic DP table: the same result as the
    textbook DP in pycocoevalcap's ``my_lcs``, many times faster on report-length inputs.
    """
    position_masks: dict[str, int] = {}
    for i, token in enumerate(first):
        position_masks[token] = position_masks.get(token, 0) | (1 << i)
    all_ones = (1 << len(first)) - 1
    v = all_ones
    for token in second:
        u = v & position_masks.get(token, 0)
        v = ((v + u) | (v - u)) & all_ones
    return len(first) - v.bit_count()


def _rouge_l_sentence(prediction: str, refs: Sequence[str], beta: float) -> float:
    # pycocoevalcap splits on single spaces (not any whitespace) for ROUGE-L only; kept for parity.
    candidate = prediction.split(" ")
    precisions, recalls = [], []
    for ref in refs:
        reference = ref.split(" ")
        lcs = lcs_length(reference, candidate)
        precisions.append(lcs / float(len(candidate)))
        recalls.append(lcs / float(len(reference)))
    # Best precision and best recall are taken independently (possibly from different references).
    precision, recall = max(precisions), max(recalls)
    if precision == 0 or recall == 0:
        return 0.0
    return ((1 + beta**2) * precision * recall) / float(recall + beta**2 * precision)


def corpus_rouge_l(predictions: Corpus, references: Corpus, beta: float = ROUGE_BETA) -> float:
    """Mean over items of sentence ROUGE-L (F-measure with beta=1.2), as pycocoevalcap's ``Rouge``."""
    ids = check_corpus(predictions, references)
    return sum(_rouge_l_sentence(predictions[key][0], references[key], beta) for key in ids) / len(ids)


# ---------------------------------------------------------------------------------------- CIDEr


def _tfidf(counts: Counter[Ngram], doc_freq: Counter[Ngram], log_num_docs: float, max_n: int):
    """Per-order tf-idf vectors, their L2 norms, and pycocoevalcap's "length"."""
    vectors: list[dict[Ngram, float]] = [{} for _ in range(max_n)]
    squared_norms = [0.0] * max_n
    length = 0
    for ngram, term_freq in counts.items():
        order = len(ngram) - 1
        weight = float(term_freq) * (log_num_docs - math.log(max(1.0, doc_freq.get(ngram, 0.0))))
        vectors[order][ngram] = weight
        squared_norms[order] += weight**2
        # pycocoevalcap counts *bigrams* here (`if n == 1` on a 0-based order), so its Gaussian
        # length penalty compares bigram counts. Kept for parity; it equals the token-length
        # difference except when one side has a single token or none.
        if order == 1:
            length += term_freq
    return vectors, [math.sqrt(value) for value in squared_norms], length


def _cider_similarity(hyp, ref, sigma: float) -> float:
    """Mean over n-gram orders of the clipped, length-penalised cosine similarity."""
    (hyp_vectors, hyp_norms, hyp_length), (ref_vectors, ref_norms, ref_length) = hyp, ref
    penalty = math.exp(-(float(hyp_length - ref_length) ** 2) / (2 * sigma**2))
    total = 0.0
    for hyp_vec, ref_vec, hyp_norm, ref_norm in zip(hyp_vectors, ref_vectors, hyp_norms, ref_norms):
        value = 0.0
        for ngram, weight in hyp_vec.items():
            ref_weight = ref_vec.get(ngram, 0.0)
            value += min(weight, ref_weight) * ref_weight  # CIDEr-D clipping
        if hyp_norm != 0 and ref_norm != 0:
            value /= hyp_norm * ref_norm
        total += value * penalty
    return total / len(hyp_vectors)


def corpus_cider(
    predictions: Corpus, references: Corpus, max_n: int = CIDER_MAX_N, sigma: float = CIDER_SIGMA
) -> float:
    """CIDEr-D of pycocoevalcap's ``Cider``: idf from this corpus' references, x10, mean over items.

    The idf is estimated from the references being scored, so a score depends on the whole corpus
    (a single-item corpus always scores 0).
    """
    ids = check_corpus(predictions, references)
    ref_counts = [[ngram_counts(ref.split(), max_n) for ref in references[key]] for key in ids]
    doc_freq: Counter[Ngram] = Counter()
    for counts_of_item in ref_counts:
        doc_freq.update(set().union(*counts_of_item))  # an n-gram counts once per item
    log_num_docs = math.log(float(len(ids)))
    scores = []
    for key, counts_of_item in zip(ids, ref_counts):
        hyp = _tfidf(ngram_counts(predictions[key][0].split(), max_n), doc_freq, log_num_docs, max_n)
        refs = [_tfidf(counts, doc_freq, log_num_docs, max_n) for counts in counts_of_item]
        scores.append(10.0 * sum(_cider_similarity(hyp, ref, sigma) for ref in refs) / len(refs))
    return sum(scores) / len(scores)


# --------------------------------------------------------------------------------------- METEOR


class MeteorUnavailable(RuntimeError):
    """Java or the METEOR 1.5 jar is missing, or the jar failed; the message says which and the fix."""


def find_meteor_jar() -> Path:
    """The METEOR 1.5 jar: ``$TRRG_METEOR_JAR`` if set, else the one bundled with pycocoevalcap."""
    override = os.environ.get(METEOR_JAR_ENV)
    if override:
        if not Path(override).is_file():
            raise MeteorUnavailable(f"{METEOR_JAR_ENV}={override} is not a file: point it at {METEOR_JAR_NAME}")
        return Path(override)
    # find_spec on the namespace package only locates it; no pycocoevalcap code runs.
    spec = importlib.util.find_spec("pycocoevalcap")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        jar = Path(folder) / "meteor" / METEOR_JAR_NAME
        if jar.is_file():
            return jar
    raise MeteorUnavailable(
        f"{METEOR_JAR_NAME} not found: `pip install pycocoevalcap==1.2` (it bundles the jar) "
        f"or set {METEOR_JAR_ENV} to the jar's path"
    )


class MeteorScorer:
    """One long-lived ``java -jar meteor-1.5.jar`` process speaking pycocoevalcap's stdio protocol.

    The JVM costs seconds to start, so the process is reused across calls (see ``get_meteor``).
    Every way the process can fail (it exited before a request, the pipe to it broke, it closed its
    output, it answered something that is not a score) raises ``MeteorUnavailable`` with its exit
    code and the end of its stderr, and stops the process: a failed scorer stays failed
    (``alive`` is False) and ``get_meteor`` starts a new one.
    """

    # After a failure, how long a dying JVM gets to exit (and finish its stderr) before it is killed.
    exit_grace_s = 2.0
    # How long one answer may take. A live JVM answers in milliseconds; the first answer waits for the
    # paraphrase table to load (seconds). Past this the JVM is taken as hung, so scoring never blocks forever.
    answer_timeout_s = 120.0

    def __init__(self, jar: Path | None = None):
        java = shutil.which("java")
        if java is None:
            raise MeteorUnavailable("`java` not found on PATH: install a Java runtime (e.g. OpenJDK 17) for METEOR")
        jar = jar or find_meteor_jar()
        self._lock = threading.Lock()
        self._failure: str | None = None
        # stderr goes to a file, not a pipe: a chatty JVM could fill a pipe nobody reads and hang.
        self._stderr = tempfile.TemporaryFile()
        try:
            self._process = subprocess.Popen(
                [java, "-jar", "-Xmx2G", jar.name, "-", "-", "-stdio", "-l", "en", "-norm"],
                cwd=jar.parent,  # the jar finds its paraphrase table (data/) relative to this folder
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
        except OSError as error:  # java not executable, jar folder gone, out of file descriptors, ...
            self._stderr.close()
            raise MeteorUnavailable(f"could not start the METEOR jar ({java} -jar {jar}): {error}") from error
        # A thread reads the answers, so a read can time out (a blocking readline cannot).
        self._answers: queue.Queue = queue.Queue()
        threading.Thread(target=_pump_lines, args=(self._process.stdout, self._answers), daemon=True,
                         name="meteor-answers").start()

    @property
    def alive(self) -> bool:
        """False once the process has exited or a request failed."""
        return self._failure is None and self._process.poll() is None

    def _fail(self, what: str, cause: BaseException | None = None) -> typing.NoReturn:
        """Stop the process and raise ``MeteorUnavailable`` saying what failed, the exit code and stderr."""
        _close_quietly(self._process.stdin)  # a JVM still reading sees EOF and exits by itself
        try:
            code = self._process.wait(timeout=self.exit_grace_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = f"{self._process.wait()}, killed"
        _close_quietly(self._process.stdout)
        detail = ""
        if not self._stderr.closed:
            self._stderr.seek(0)
            detail = self._stderr.read().decode(errors="replace").strip()[-500:]
            self._stderr.close()
        self._failure = f"the METEOR jar stopped answering ({what}; exit code {code}): {detail or 'no stderr'}"
        raise MeteorUnavailable(self._failure) from cause

    def _send(self, line: str) -> None:
        if self._failure is not None:
            raise MeteorUnavailable(self._failure)
        if self._process.poll() is not None:
            self._fail("the process had exited before the request")
        try:
            self._process.stdin.write(f"{line}\n".encode())
            self._process.stdin.flush()
        except (OSError, ValueError) as error:  # BrokenPipeError: the JVM closed its stdin (died)
            self._fail(f"writing the request failed: {error!r}", error)

    def _read_line(self) -> str:
        try:
            raw = self._answers.get(timeout=self.answer_timeout_s)
        except queue.Empty:
            self._fail(f"no answer within {self.answer_timeout_s:g} s")
        if isinstance(raw, BaseException):
            self._fail(f"reading the answer failed: {raw!r}", raw)
        if not raw:  # EOF: the JVM died (out of memory, bad jar, ...); its stderr says why
            self._fail("end of its output")
        answer = raw.decode(errors="replace").strip()
        if not answer:
            self._fail("an empty answer")
        return answer

    def score(self, predictions: Corpus, references: Corpus) -> float:
        """Corpus METEOR (the jar's aggregate over all items, not a mean of sentence scores)."""
        ids = check_corpus(predictions, references)
        with self._lock:
            stats = []
            for key in ids:
                self._send(self._score_line(predictions[key][0], references[key]))
                stats.append(self._read_line())
            self._send("EVAL ||| " + " ||| ".join(stats))
            for _ in ids:  # per-item scores come first; the aggregate is the last line
                self._read_line()
            aggregate = self._read_line()
            try:
                return float(aggregate)
            except ValueError as error:
                self._fail(f"{aggregate[:200]!r} instead of a score", error)

    @staticmethod
    def _score_line(prediction: str, refs: Sequence[str]) -> str:
        # "|||" separates fields and a newline ends a request, so neither may appear inside one.
        # pycocoevalcap sanitises only the hypothesis; references with "|||" would corrupt its request.
        hypothesis = prediction.replace("|||", "").replace("  ", " ").replace("\n", " ")
        refs = [ref.replace("|||", "").replace("\n", " ") for ref in refs]
        return " ||| ".join(("SCORE", " ||| ".join(refs), hypothesis))

    def close(self) -> None:
        """Stop the process (idempotent; safe after a failure)."""
        with self._lock:
            _close_quietly(self._process.stdin)
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            _close_quietly(self._process.stdout)
            self._stderr.close()
            if self._failure is None:
                self._failure = "the METEOR scorer was closed"


def _pump_lines(stream, answers: queue.Queue) -> None:
    """Each line the JVM writes into ``answers``; then ``b""`` at EOF, or the error that stopped the read."""
    try:
        for raw in iter(stream.readline, b""):
            answers.put(raw)
    except (OSError, ValueError) as error:  # the pipe was closed under the read
        answers.put(error)
        return
    answers.put(b"")


def _close_quietly(stream) -> None:
    """Close a pipe whose other end may be gone (flushing into a dead process raises BrokenPipeError)."""
    try:
        stream.close()
    except (OSError, ValueError):
        pass


_meteor: MeteorScorer | None = None
_meteor_lock = threading.Lock()


def get_meteor() -> MeteorScorer:
    """The process-wide METEOR scorer, started on first use (and again after a failure), closed at exit."""
    global _meteor
    with _meteor_lock:
        if _meteor is None or not _meteor.alive:
            if _meteor is not None:
                atexit.unregister(_meteor.close)
                _meteor.close()
            _meteor = None
            _meteor = MeteorScorer()
            atexit.register(_meteor.close)
        return _meteor


def corpus_meteor(predictions: Corpus, references: Corpus) -> float:
    """Corpus METEOR 1.5 (``-l en -norm``), as pycocoevalcap's ``Meteor``; raises ``MeteorUnavailable``."""
    return get_meteor().score(predictions, references)


# ------------------------------------------------------------------------------------ all of them


def nlg_scores(predictions: Corpus, references: Corpus, meteor: bool = True) -> dict[str, float | str | None]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr in one flat dict.

    When METEOR cannot run (no java, no jar, a JVM that dies or answers nonsense) its value is
    ``None`` and ``meteor_unavailable`` says why; the other metrics are still computed.
    ``meteor=False`` skips it on purpose.
    """
    check_corpus(predictions, references)
    scores: dict[str, float | str | None] = {
        f"bleu_{n}": value for n, value in enumerate(corpus_bleu(predictions, references), start=1)
    }
    scores["meteor"] = None
    if not meteor:
        scores["meteor_unavailable"] = "skipped (meteor=False)"
    else:
        try:
            scores["meteor"] = corpus_meteor(predictions, references)
        except MeteorUnavailable as error:
            scores["meteor_unavailable"] = str(error)
    scores["rouge_l"] = corpus_rouge_l(predictions, references)
    scores["cider"] = corpus_cider(predictions, references)
    return scores
