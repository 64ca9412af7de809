"""FINDINGS / IMPRESSION extraction from free-text radiology reports, and report tidying.

The approach follows MIMIC-CXR's own public section parser (MIT-LCP ``mimic-cxr``,
``txt/section_parser.py`` and ``txt/create_section_files.py``); the code here is ours:

* A section header is an all-caps phrase at the start of a line followed by a colon
  (upstream: ``\\n ([A-Z ()/,-]+):\\s``; MIMIC report lines start with one space). Text before the
  first header is the ``preamble``; a report without any header is one ``full report`` section.
* After a header the search for the next one resumes only after the next line break, so a header
  followed at once by an all-caps phrase with a colon on the same line is not split (upstream
  "skip past the first newline to avoid some bad parses").
* Header names are normalised: synonyms and typos ("CONCLUSION" -> impression, "FINDNGS" ->
  findings), headers containing a main section name ("FINAL IMPRESSION"), and view descriptions
  ("CHEST, PA AND LATERAL", "PORTABLE AP VIEW") that introduce the findings -> findings.
* Merged sections ("FINDINGS AND IMPRESSION:", "FINDINGS/IMPRESSION:") are an impression upstream;
  here they are marked ``merged`` and serve as the findings too when no separate FINDINGS exists.
* Empty FINDINGS/IMPRESSION sections are removed (reports with two FINDINGS headers, one empty).
* When a report has neither FINDINGS nor IMPRESSION, its last paragraph (after the last blank
  line of the last section) becomes ``last_paragraph``: many short reports are one header plus
  free paragraphs, the last of which is the reading.
* When a name occurs more than once, the *last* section of that name is used.

De-identification: MIMIC replaces protected text by ``___``; ``tidy_report`` removes those marks
and the space left before punctuation (R2Gen's MIMIC cleaning strips the underscores too).
Hospital RIS exports end a report (and each addendum) with a sign-off line naming the radiologist
("Electronically signed by: Dr ... on 2024-03-05 14:02"); ``strip_signatures`` removes such lines
(the DICOM route applies it), so a name never becomes part of a training target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trrg.processing.text import clean_report

SECTION_CHOICES = ("findings", "impression", "both", "full")

# A header: start of a line, optional indentation, all-caps words (and ( ) / , -), a colon, a space.
HEADER = re.compile(r"\n[ \t]*([A-Z][A-Z ()/,-]*):\s")
BLANK_LINE = re.compile(r"\n[ \t]*\n")

# Frequent header spellings -> one name (upstream's table, abridged; counts there are from MIMIC-CXR).
SECTION_SYNONYMS = {
    "comparisons": "comparison", "clinical history": "history", "reason for examination": "indication",
    "reason for exam": "indication", "clinical information": "history", "exam": "examination",
    "clinical indication": "indication", "conclusion": "impression", "chest, two views": "findings",
    "recommendation(s)": "recommendations", "type of examination": "examination",
    "reference exam": "comparison", "patient history": "history", "comparison exam": "comparison",
    "comparison film": "comparison", "pfi": "history", "recommendation": "recommendations",
    "wetread": "wet read", "impresson": "impression", "imprression": "impression", "imoression": "impression",
    "impressoin": "impression", "imprssion": "impression", "impresion": "impression", "imperssion": "impression",
    "mpression": "impression", "impession": "impression", "finding": "findings", "findins": "findings",
    "findindgs": "findings", "findgings": "findings", "findngs": "findings", "findnings": "findings",
    "finidngs": "findings", "reference findings": "findings", "comparision": "comparison",
    "comparsion": "comparison", "comparrison": "comparison", "comparisions": "comparison",
    "concusion": "impression", "coinclusion": "impression",
}  # fmt: skip
MAIN_SECTIONS = ("impression", "findings", "history", "comparison", "addendum")
# Headers describing the whole study ("CHEST, PA AND LATERAL:") introduce the findings.
VIEW_HEADER = re.compile(
    r"chest|portable|pa and lat|lateral and pa|ap and lateral|lateral and ap|frontal and|two views|frontal view"
    r"|pa view|ap view|one view|lateral view|bone window|frontal upright|frontal semi-upright|ribs"
)
DEID_MARK = re.compile(r"_{2,}")
# A sign-off line: starts (after indentation) with one of these phrases. Only unambiguous phrases: a
# line of wrapped prose may start with "reported by", never with "electronically signed".
SIGNATURE_LINE = re.compile(
    r"^[ \t]*(?:electronically (?:signed|verified|approved)|(?:signed|dictated|transcribed|verified|finali[sz]ed)"
    r" by\b|signed:|signature:).*(?:\r?\n|$)",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class Section:
    name: str  # normalised: "findings", "impression", "preamble", "last_paragraph", ...
    text: str
    header: str  # as written ("" for preamble, full report and last paragraph)
    merged: bool = False  # a "FINDINGS AND IMPRESSION" style header


def normalize_section_name(header: str) -> tuple[str, bool]:
    """(normalised name, merged?) of a header as written."""
    name = " ".join(header.lower().split())
    if "finding" in name and "impression" in name:
        return "impression", True
    if name in SECTION_SYNONYMS:
        return SECTION_SYNONYMS[name], False
    for main in MAIN_SECTIONS:
        if main in name:
            return main, False
    if VIEW_HEADER.search(name):
        return "findings", False
    return name, False


def split_sections(text: str) -> list[Section]:
    """The sections of a report, in order (see the module docstring for the rules)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.startswith("\n"):
        text = "\n" + text  # a header on the first line counts too
    match = HEADER.search(text)
    if match is None:
        sections = [Section("full report", text, "")]
    else:
        sections = [Section("preamble", text[: match.start()], "")]
        while match is not None:
            start = match.end()
            skip = text.find("\n", start)
            following = HEADER.search(text, skip if skip != -1 else len(text))
            end = following.start() if following else len(text)
            name, merged = normalize_section_name(match.group(1))
            sections.append(Section(name, text[start:end], match.group(1).strip(), merged))
            match = following
    sections = [s for s in sections if not (s.name in ("findings", "impression") and not s.text.strip())]
    names = {s.name for s in sections}
    if "findings" not in names and "impression" not in names:
        paragraphs = BLANK_LINE.split(sections[-1].text.strip("\n"))
        if len(paragraphs) > 1 and paragraphs[-1].strip():
            last = sections[-1]
            sections[-1] = Section(last.name, "\n\n".join(paragraphs[:-1]), last.header, last.merged)
            sections.append(Section("last_paragraph", paragraphs[-1], ""))
    return sections


def last_section(sections: list[Section], name: str) -> Section | None:
    found = [s for s in sections if s.name == name]
    return found[-1] if found else None


def tidy_report(text: str) -> str:
    """One line of prose: de-identification marks removed, whitespace collapsed, no space before
    punctuation, no doubled punctuation left by a removed mark."""
    text = DEID_MARK.sub(" ", text)
    text = " ".join(text.split())
    text = re.sub(r"\s+([.,;:?!)])", r"\1", text)
    text = re.sub(r"\(\s*\)", "", text)
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
    text = re.sub(r"[,;:]\s*\.", ".", text)
    text = re.sub(r"\.(?:\s*\.)+", ".", text)
    text = re.sub(r"^[\s.,;:]+", "", text)
    return " ".join(text.split())


def strip_signatures(text: str) -> str:
    """The report without its sign-off lines ("Electronically signed by ...", "Dictated by ...")."""
    return SIGNATURE_LINE.sub("", text)


def is_empty_report(text: str) -> bool:
    """True when nothing of the report survives R2Gen cleaning (the check ``load_studies`` makes)."""
    return not re.search(r"[a-z0-9]", clean_report(text))


def extract_target(text: str, section: str) -> tuple[str | None, str | None]:
    """(target text, None) or (None, drop reason) for a free-text report.

    ``section``: "findings" (FINDINGS, else a merged FINDINGS AND IMPRESSION, else the last
    paragraph of a report with neither), "impression" (IMPRESSION or merged, else the last
    paragraph of a report with neither), "both" (findings then impression, a merged section once)
    or "full" (the whole report, tidied; no sectioning).
    """
    if section not in SECTION_CHOICES:
        raise ValueError(f"section must be one of {SECTION_CHOICES}; got {section!r}")
    if section == "full":
        target = tidy_report(text)
    else:
        sections = split_sections(text)
        findings, impression = last_section(sections, "findings"), last_section(sections, "impression")
        fallback = last_section(sections, "last_paragraph")
        merged = impression if impression is not None and impression.merged else None
        if section == "findings":
            chosen = [findings or merged or fallback]
        elif section == "impression":
            chosen = [impression or fallback]
        else:
            chosen = [findings, impression] if findings is not None else [impression]
            if findings is None and impression is None:
                chosen = [fallback]
        chosen = [s for s in chosen if s is not None]
        if not chosen:
            return None, {"findings": "no findings section", "impression": "no impression section",
                          "both": "no findings or impression section"}[section]  # fmt: skip
        target = " ".join(tidy_report(s.text) for s in chosen)
    if not target or is_empty_report(target):
        return None, "empty after cleaning"
    return target, None
