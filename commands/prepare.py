"""``trrg prepare``: a raw data set -> a prepared study folder (``datasets`` ``save_to_disk``, images
inside) that every ``--data`` reads directly (``trrg.processing.prepare``).

    trrg prepare mimic --root /data/mimic-cxr-jpg --reports /data/mimic-cxr --out data/mimic
    trrg prepare openi --reports ecgen-radiology --images NLMCXR_png --out data/iu-xray
    trrg prepare dicom --folder /pacs/export --reports ris.csv --pseudonymize "$SALT" \
        --pseudonym-key-file /secure/trrg_key.csv --out data/hospital

Prints the studies kept per split, the studies found (= kept + dropped), the studies dropped, files
skipped and duplicate report rows resolved per reason (no findings section, no frontal image, ...);
OUT/prepare_audit.jsonl lists each of them. Docs: docs/FINETUNE_ON_YOUR_DATA.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trrg.processing.prepare import (
    PrepareError,
    collect_dicom,
    collect_mimic,
    collect_openi,
    summary_lines,
    write_prepared,
)
from trrg.processing.prepare.dicom_folder import REPORT_KEYS
from trrg.processing.prepare.sections import SECTION_CHOICES
from trrg.processing.prepare.splits import DEFAULT_FRACTIONS, Pseudonyms, check_fractions, check_key_file
from trrg.processing.prepare.writer import check_output_folder


def _common(parser: argparse.ArgumentParser, splits: bool) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (new or empty; read it with --data OUT)")
    parser.add_argument("--section", choices=SECTION_CHOICES, default="findings",
                        help="report target: FINDINGS (default, as R2Gen), IMPRESSION, both, or the full text")
    parser.add_argument("--max-views", type=int, default=2,
                        help="views kept per study, frontal first, then lateral (the model's max_views; default 2)")
    parser.add_argument("--max-side", type=int, default=None,
                        help="downscale images to at most this many pixels a side and store PNG "
                             "(default: store the source files' own bytes; DICOM is always decoded to PNG)")
    parser.add_argument("--bad-files", choices=("error", "skip"), default="error",
                        help="unreadable XML/DICOM/images, DICOM without pixels or PatientID, a study whose images "
                             "name two patients, reports without a study: stop with an error naming the file "
                             "(default) or skip, count them and list them in OUT/prepare_audit.jsonl")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier trrg prepare output at --out")
    if splits:
        parser.add_argument("--seed", type=int, default=0,
                            help="seed of the split by patient: a patient's split depends on its id and the seed "
                                 "alone, so re-exports with more or fewer studies move no study")
        parser.add_argument("--fractions", type=float, nargs=3, default=list(DEFAULT_FRACTIONS),
                            metavar=("TRAIN", "VAL", "TEST"),
                            help="each patient's chances of train, val, test (default 0.7 0.1 0.2)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trrg prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="SOURCE_KIND")

    mimic = kinds.add_parser("mimic", help="MIMIC-CXR-JPG raw layout + MIMIC-CXR reports (official split)")
    mimic.add_argument("--root", required=True, type=Path,
                       help="MIMIC-CXR-JPG folder: files/pNN/pSUBJECT/sSTUDY/*.jpg and the mimic-cxr-2.0.0-*.csv[.gz] tables")
    mimic.add_argument("--reports", type=Path, default=None,
                       help="folder of the reports (files/pNN/pSUBJECT/sSTUDY.txt, from mimic-cxr-reports.zip; default --root)")
    mimic.add_argument("--metadata", type=Path, default=None, help="mimic-cxr-2.0.0-metadata.csv[.gz] (default: in --root)")
    mimic.add_argument("--split-file", type=Path, default=None, help="mimic-cxr-2.0.0-split.csv[.gz] (default: in --root)")
    mimic.add_argument("--chexpert", type=Path, default=None,
                       help="mimic-cxr-2.0.0-chexpert.csv[.gz]: labels from it (default: the project's labeler on the target)")
    _common(mimic, splits=False)

    openi = kinds.add_parser("openi", help="Open-i / IU-Xray: report XML folder + PNG folder (split by patient)")
    openi.add_argument("--reports", required=True, type=Path, help="ecgen-radiology folder of report XML files")
    openi.add_argument("--images", required=True, type=Path, help="NLMCXR_png folder")
    _common(openi, splits=True)

    dicom = kinds.add_parser("dicom", help="a DICOM folder + a CSV/JSONL of reports (split by patient)")
    dicom.add_argument("--folder", required=True, type=Path, help="folder of DICOM files (searched recursively)")
    dicom.add_argument("--reports", required=True, type=Path, help="CSV or JSONL of reports, one row per study")
    dicom.add_argument("--report-key", choices=REPORT_KEYS, default="AccessionNumber",
                       help="DICOM tag that joins reports to images (default AccessionNumber)")
    dicom.add_argument("--key-column", default=None,
                       help="reports column holding that tag's value (default: the column named like --report-key)")
    dicom.add_argument("--report-column", default="report", help="column holding the report text (default report)")
    dicom.add_argument("--date-column", default=None,
                       help="column of the report date (ISO 8601 or DICOM): rows repeating a key (addenda, "
                            "corrections) are taken in its order; default: file order")
    dicom.add_argument("--pseudonymize", metavar="SALT", default=None,
                       help="replace patient, study and file ids by salted SHA-256 pseudonyms, in the data set and "
                            "its audit (keep SALT secret; report texts are not de-identified)")
    dicom.add_argument("--pseudonym-key-file", type=Path, default=None, metavar="PATH",
                       help="write pseudonym -> original id (CSV, owner-readable only) here, outside --out, so the "
                            "site can map pseudonyms back; never written unless asked")
    _common(dicom, splits=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.max_views < 1 or (args.max_side is not None and args.max_side < 8):
        raise PrepareError("--max-views must be at least 1 and --max-side at least 8.")
    check_output_folder(args.out, args.overwrite)  # before minutes of reading, not after
    pseudonyms = None
    if args.kind == "mimic":
        studies, tally = collect_mimic(args.root, args.section, args.reports, args.metadata, args.split_file,
                                       args.chexpert, args.max_views)
        source = str(args.root)
    elif args.kind == "openi":
        studies, tally = collect_openi(args.reports, args.images, args.section, check_fractions(args.fractions),
                                       args.seed, args.max_views, args.bad_files)
        source = str(args.reports)
    else:
        check_key_file(args.pseudonym_key_file, args.out, args.pseudonymize is not None)
        pseudonyms = Pseudonyms(args.pseudonymize)
        studies, tally = collect_dicom(args.folder, args.reports, args.report_key, args.report_column, args.section,
                                       check_fractions(args.fractions), args.seed, max_views=args.max_views,
                                       bad_files=args.bad_files, key_column=args.key_column,
                                       date_column=args.date_column, pseudonyms=pseudonyms)  # fmt: skip
        source = str(args.folder)
    options = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
               if key not in ("pseudonymize", "pseudonym_key_file", "overwrite")}  # the salt and the key never go to disk
    options["pseudonymized"] = bool(getattr(args, "pseudonymize", None))
    result = write_prepared(studies, args.out, tally, f"{args.kind} {source}", options=options,
                            max_side=args.max_side, bad_files=args.bad_files, overwrite=args.overwrite, kind=args.kind)
    lines = summary_lines(result, f"trrg prepare {args.kind}")
    if getattr(args, "pseudonym_key_file", None) is not None:
        count = pseudonyms.write_key_file(args.pseudonym_key_file)
        lines.append(f"pseudonym key: {args.pseudonym_key_file} ({count} pseudonyms -> original ids; keep it with "
                     "your identifiers, never with the data set)")  # fmt: skip
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
