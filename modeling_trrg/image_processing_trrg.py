"""Chest X-ray loading and the TRRG image processor.

This file is part of the hub bundle (remote code): it may import only numpy, PIL, torch,
transformers and its siblings in this folder. ``pydicom`` is optional and imported inside the DICOM
function, because a top-level third-party import becomes a hard requirement of the remote code.

* ``load_xray_image(source)``: any supported X-ray source -> 8-bit grayscale PIL image (mode "L"),
  bone bright, or an ``XRayImageError`` that names the source and the fix.
* ``TRRGImageProcessor``: studies (lists of views) -> ``pixel_values`` (batch, views, 3, H, W) and
  ``view_mask`` (batch, views). A study's DICOM views are put in reading order by their tags
  (``dicom_view``, ``view_order``: frontal first), as ``trrg prepare`` stores them.

Intensity choices (ours, the paper is silent):
* 8-bit inputs keep their values; RGB is reduced to luma (ITU-R 601), as exports of grayscale
  radiographs to RGB carry the same value in every channel.
* Transparent pixels (RGBA, LA, palette with transparency) are composited on black: the background
  of a radiograph (air, collimation) is black, so transparent padding is treated as background.
* 16-bit, integer and float inputs are rescaled by their own min/max to 0-255 (monotonic, no
  clipping). A percentile window would be more robust to hot pixels, but it clips real anatomy
  (dense bone, lung apices) and many 16-bit PNG exports only use 12 bits, so min/max is the safer
  default. DICOM files use their own VOI window instead (see ``_dicom_to_gray``).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, UnidentifiedImageError
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ImagesKwargs


MIN_SIDE = 8  # below this a radiograph carries no usable anatomy: it is almost surely a thumbnail or a bug
MAX_SIDE = 16384  # the largest detector plates are about 4300 px; anything this big is not an X-ray
MAX_MEGAPIXELS = 200  # guards against decompression bombs (a small file claiming a huge image)
DICOM_SUFFIXES = (".dcm", ".dicom")
DICOM_MAGIC_OFFSET = 128  # DICOM Part 10 files carry "DICM" after a 128-byte preamble
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R 601, what PIL's convert("L") uses


class XRayImageError(ValueError):
    """An X-ray image could not be loaded; the message names the source and what to do."""


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def describe_source(source: Any) -> str:
    """A short human-readable name for an image source, for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, dict):
        if source.get("path"):
            return str(source["path"])
        return f"<{len(source.get('bytes') or b'')} image bytes>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} image bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.width}x{source.height} mode {source.mode}>"
    if isinstance(source, np.ndarray):
        return f"<numpy array shape {source.shape} dtype {source.dtype}>"
    if _is_pydicom_dataset(source):
        return str(getattr(source, "filename", None) or "<pydicom dataset>")
    return f"<{type(source).__name__}>"


def check_image_size(width: int, height: int, name: str) -> None:
    """Raise if a (claimed) image size is too small to be a radiograph or absurdly large."""
    if width < MIN_SIDE or height < MIN_SIDE:
        raise XRayImageError(
            f"{name}: image is {width}x{height} px, below the minimum of {MIN_SIDE} px a side. "
            "Pass the full-resolution radiograph, not a thumbnail or an icon."
        )
    if width > MAX_SIDE or height > MAX_SIDE:
        raise XRayImageError(
            f"{name}: image is {width}x{height} px, above the limit of {MAX_SIDE} px a side. "
            "Downscale it first (radiographs are rarely above 4300 px a side)."
        )
    if width * height > MAX_MEGAPIXELS * 1_000_000:
        raise XRayImageError(
            f"{name}: image is {width}x{height} = {width * height / 1e6:.0f} megapixels, above the limit of "
            f"{MAX_MEGAPIXELS} megapixels (decompression-bomb guard). Downscale it first."
        )


def load_xray_image(source: Any) -> Image.Image:
    """Load a chest X-ray as an 8-bit grayscale PIL image (mode "L", bone bright).

    Args:
        source: a path (``str``/``Path``) to a PNG (8/16-bit, gray/RGB/RGBA/palette), JPEG or DICOM
            file (``.dcm``/``.dicom`` or detected by its ``DICM`` magic); raw file bytes; a
            ``{"path", "bytes"}`` dict as ``datasets.Image(decode=False)`` gives (bytes win when both
            are set); a PIL image; a numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of uint8,
            other integer, bool or float values; or a ``pydicom`` dataset.

    Raises:
        XRayImageError: naming the source and the fix (missing, empty, not an image, corrupt,
            truncated, DICOM without pixel data, too small or too large).
    """
    if isinstance(source, Image.Image):
        return _pil_to_gray(source, describe_source(source))
    if isinstance(source, np.ndarray):
        return _array_to_gray(source, describe_source(source))
    if _is_pydicom_dataset(source):
        return _dicom_to_gray(source, describe_source(source))
    if isinstance(source, dict):
        return _load_from_dict(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(source), describe_source(source))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return _decode_bytes(_read_file(path), str(path), force_dicom=path.suffix.lower() in DICOM_SUFFIXES)
    raise XRayImageError(
        f"{describe_source(source)}: unsupported image source type {type(source).__name__}. Pass a file path, "
        "bytes, a {'path', 'bytes'} dict, a PIL image, a numpy array or a pydicom dataset."
    )


def _is_pydicom_dataset(source: Any) -> bool:
    # Duck-typed so that pydicom is only imported when a DICOM is actually met.
    return type(source).__module__.startswith("pydicom") and hasattr(source, "dir")


def _load_from_dict(source: dict) -> Image.Image:
    data, path = source.get("bytes"), source.get("path")
    if data:
        force_dicom = bool(path) and Path(str(path)).suffix.lower() in DICOM_SUFFIXES
        return _decode_bytes(bytes(data), describe_source(source), force_dicom=force_dicom)
    if path:
        return load_xray_image(path)
    raise XRayImageError(
        f"{source!r}: image dict has neither 'bytes' nor 'path'. Give at least one of them."
    )


def _read_file(path: Path) -> bytes:
    if not path.exists():
        raise XRayImageError(f"{path}: file not found. Check the path and the image root folder.")
    if not path.is_file():
        raise XRayImageError(f"{path}: is a directory, not an image file. Point to the image file itself.")
    data = path.read_bytes()
    if not data:
        raise XRayImageError(f"{path}: file is empty (0 bytes). Re-download or re-export the image.")
    return data


def _decode_bytes(data: bytes, name: str, force_dicom: bool = False) -> Image.Image:
    if not data:
        raise XRayImageError(f"{name}: image data is empty (0 bytes). Re-download or re-export the image.")
    if force_dicom or data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return _dicom_to_gray(_read_dicom(data, name), name)
    return _pil_to_gray(_open_pil(data, name), name)


def _open_pil(data: bytes, name: str) -> Image.Image:
    """Decode with PIL, checking the size from the header *before* the pixels are decoded."""
    try:
        with warnings.catch_warnings():
            # Sizes between PIL's warning threshold and our limit are judged by check_image_size.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            check_image_size(image.width, image.height, name)
            image.load()
    except XRayImageError:
        raise
    except Image.DecompressionBombError as error:
        raise XRayImageError(
            f"{name}: PIL refused to decode it as a possible decompression bomb ({error}). Radiographs are at "
            f"most {MAX_SIDE} px a side and {MAX_MEGAPIXELS} megapixels here; downscale the image first."
        ) from error
    except UnidentifiedImageError as error:
        raise XRayImageError(
            f"{name}: not an image PIL or pydicom can read ({len(data)} bytes, starts with {data[:8]!r}). "
            "Pass a PNG, JPEG or DICOM file."
        ) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise XRayImageError(
            f"{name}: image is corrupt or truncated ({error}). Re-download or re-export the image."
        ) from error
    return image


def _pil_to_gray(image: Image.Image, name: str) -> Image.Image:
    check_image_size(image.width, image.height, name)
    if image.mode == "L":
        return image.copy()
    if image.mode in ("P", "PA"):
        # Palette images may carry transparency; go through RGBA so it is composited like RGBA.
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    if image.mode in ("1", "RGB", "CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB").convert("L")  # PIL's RGB -> L is ITU-R 601 luma
    # 16-bit, 32-bit, float and alpha modes: numpy keeps the full precision and composites alpha.
    return _array_to_gray(np.asarray(image), name)


def _array_to_gray(array: np.ndarray, name: str) -> Image.Image:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] in (1, 2, 3, 4):
        height, width = array.shape[:2]
    elif array.ndim == 2:
        height, width = array.shape
    else:
        raise XRayImageError(
            f"{name}: array of shape {array.shape} is not an image. Expected (H, W), (H, W, 3) or (H, W, 4); "
            "for channels-first arrays use array.transpose(1, 2, 0)."
        )
    check_image_size(width, height, name)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise XRayImageError(f"{name}: array dtype {array.dtype} is not numeric. Pass integer or float pixels.")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise XRayImageError(f"{name}: array contains NaN or infinite values. Replace them before loading.")
    is_8bit = array.dtype == np.uint8
    gray = _drop_channels(array)
    if is_8bit:
        return Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8), mode="L")
    return Image.fromarray(rescale_to_uint8(gray, float(gray.min()), float(gray.max())), mode="L")


def _drop_channels(array: np.ndarray) -> np.ndarray:
    """(H, W[, C]) -> (H, W) float64: alpha composited on black, colour reduced to luma."""
    values = array.astype(np.float64)
    if values.ndim == 2:
        return values
    channels = values.shape[-1]
    if channels in (2, 4):  # LA or RGBA: composite on black
        alpha = values[..., -1] / _alpha_max(array.dtype)
        values = values[..., :-1] * alpha[..., None]
    if values.shape[-1] == 3:
        return values @ LUMA_WEIGHTS
    return values[..., 0]


def _alpha_max(dtype: np.dtype) -> float:
    # Float alpha is taken to be in [0, 1]; integer alpha spans the dtype.
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def rescale_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``[low, high]`` linearly onto 0..255, clipping outside; a constant image becomes black."""
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------


def _import_pydicom():
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as error:
        raise XRayImageError("Reading DICOM files needs pydicom: pip install 'pydicom>=3'.") from error
    return pydicom, apply_modality_lut, apply_voi_lut


def _read_dicom(data: bytes, name: str):
    pydicom, _, _ = _import_pydicom()
    try:
        # force=True also reads files written without the 128-byte preamble (older modalities).
        return pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as error:  # pydicom raises many types for broken files
        raise XRayImageError(f"{name}: not a readable DICOM file ({error}). Re-export it from the PACS.") from error


def _dicom_to_gray(dataset, name: str) -> Image.Image:
    """DICOM -> 8-bit gray: modality LUT (slope/intercept), VOI window or LUT (else min/max),
    then MONOCHROME1 inversion so that bone is always bright."""
    _, apply_modality_lut, apply_voi_lut = _import_pydicom()
    if not any(tag in dataset for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise XRayImageError(
            f"{name}: DICOM has no pixel data (modality {dataset.get('Modality', 'unknown')}, SOP class "
            f"{dataset.get('SOPClassUID', 'unknown')}); it is probably a report or presentation state. "
            "Pass the image instances of the study."
        )
    check_image_size(int(dataset.get("Columns", 0) or 0), int(dataset.get("Rows", 0) or 0), name)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise XRayImageError(
            f"{name}: DICOM has {frames} frames; TRRG expects single-frame radiographs. Export the frame you want."
        )
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # missing decoder plugins, truncated pixel data, ...
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise XRayImageError(
            f"{name}: cannot decode the DICOM pixel data (transfer syntax {syntax}): {error}. For compressed "
            "DICOM install a decoder (pip install pylibjpeg pylibjpeg-libjpeg) or re-export uncompressed."
        ) from error
    if int(dataset.get("SamplesPerPixel", 1) or 1) > 1:
        return _array_to_gray(pixels, name)  # colour DICOM (secondary capture): no windowing applies
    values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    low, high = _voi_output_range(dataset, apply_voi_lut)
    if low is None:
        gray = rescale_to_uint8(values, float(values.min()), float(values.max()))
    else:
        gray = rescale_to_uint8(np.asarray(apply_voi_lut(values, dataset), dtype=np.float64), low, high)
    if str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        gray = 255 - gray  # MONOCHROME1 stores bone dark; models expect bone bright
    return Image.fromarray(gray, mode="L")


def _voi_output_range(dataset, apply_voi_lut) -> tuple[float | None, float | None]:
    """The range the dataset's VOI transform maps onto, or (None, None) without one.

    Mapping that range (not the image's own min/max) onto 0..255 keeps the window's meaning:
    values outside the window clip to black or white.
    """
    has_window = dataset.get("WindowCenter") is not None and dataset.get("WindowWidth") is not None
    lut_sequence = dataset.get("VOILUTSequence")
    if lut_sequence:
        entries, first_input = int(lut_sequence[0].LUTDescriptor[0]) or 2**16, int(lut_sequence[0].LUTDescriptor[1])
        probe = np.arange(first_input, first_input + entries, dtype=np.int64)  # every LUT input
    elif has_window:
        probe = np.array([-1e12, 1e12])  # far outside any window: returns the clipped ends
    else:
        return None, None
    ends = np.asarray(apply_voi_lut(probe, dataset), dtype=np.float64)
    return float(ends.min()), float(ends.max())


# ---------------------------------------------------------------------------------------------
# Views: which one is frontal, from the DICOM tags (``trrg prepare`` orders studies with these too)
# ---------------------------------------------------------------------------------------------

FRONTAL_VIEWS = ("PA", "AP")  # best first: PA is the standard frontal film, AP the portable one
LATERAL_VIEWS = ("LATERAL", "LL", "RL")
# ViewCodeSequence meanings (DICOM CID 4010) and description words -> the ViewPosition they mean
VIEW_CODE_MEANINGS = {"postero-anterior": "PA", "antero-posterior": "AP", "left lateral": "LL", "right lateral": "RL",
                      "lateral": "LATERAL", "latero-medial": "LATERAL", "medio-lateral": "LATERAL"}  # fmt: skip
DESCRIPTION_WORDS = {"PA": "PA", "AP": "AP", "LAT": "LATERAL", "LATERAL": "LATERAL", "LL": "LL", "RL": "RL"}
VIEW_TAGS = "ViewPosition, ViewCodeSequence, SeriesDescription, ProtocolName"


def dicom_view(dataset) -> str:
    """PA, AP, LATERAL, LL, RL, another ViewPosition value, or "" when no tag names the view.

    ``ViewPosition`` first; where a PACS leaves it empty, the view code's meaning
    (``ViewCodeSequence``: "postero-anterior", "left lateral", ...), then one PA/AP/LAT word in
    ``SeriesDescription`` or ``ProtocolName`` ("CHEST PA"; "PA AND LAT", a combined series, names none).
    """
    view = str(dataset.get("ViewPosition", "") or "").strip().upper()
    if view:
        return view
    for item in dataset.get("ViewCodeSequence", None) or []:
        meaning = str(item.get("CodeMeaning", "") or "").strip().lower()
        if meaning in VIEW_CODE_MEANINGS:
            return VIEW_CODE_MEANINGS[meaning]
    for tag in ("SeriesDescription", "ProtocolName"):
        words = re.findall(r"[A-Z]+", str(dataset.get(tag, "") or "").upper())
        named = {DESCRIPTION_WORDS[word] for word in words if word in DESCRIPTION_WORDS}
        if len(named) == 1:
            return named.pop()
    return ""


def view_order(views: Sequence[str]) -> list[int]:
    """The reading order of a study's views (indices into ``views``): the best frontal (PA before
    AP), the best lateral (LATERAL, LL, RL), the other frontals, the other laterals, then the views
    that are neither. Stable: equal views keep their given order. The model reads the first view as
    the frontal one."""
    frontal = sorted((i for i, view in enumerate(views) if view in FRONTAL_VIEWS), key=lambda i: FRONTAL_VIEWS.index(views[i]))
    lateral = sorted((i for i, view in enumerate(views) if view in LATERAL_VIEWS), key=lambda i: LATERAL_VIEWS.index(views[i]))
    rest = [i for i, view in enumerate(views) if view not in FRONTAL_VIEWS and view not in LATERAL_VIEWS]
    return frontal[:1] + lateral[:1] + frontal[1:] + lateral[1:] + rest


def source_view(source: Any) -> str | None:
    """The view a DICOM source's tags name ("" for none), or None for a source that is not a DICOM
    (or whose header cannot be read: loading it says why). Reads the header only, never the pixels."""
    if _is_pydicom_dataset(source):
        return dicom_view(source)
    if isinstance(source, dict):
        data, path = source.get("bytes"), source.get("path")
        if not data:
            return source_view(path) if path else None
        force_dicom = bool(path) and Path(str(path)).suffix.lower() in DICOM_SUFFIXES
        return _header_view(io.BytesIO(bytes(data))) if _is_dicom_start(data, force_dicom) else None
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _header_view(io.BytesIO(bytes(source))) if _is_dicom_start(source, False) else None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            with path.open("rb") as file:
                start = file.read(DICOM_MAGIC_OFFSET + 4)
        except OSError:
            return None
        return _header_view(path) if _is_dicom_start(start, path.suffix.lower() in DICOM_SUFFIXES) else None
    return None


def _is_dicom_start(data, force_dicom: bool) -> bool:
    return force_dicom or bytes(data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4]) == b"DICM"


def _header_view(source) -> str | None:
    try:
        pydicom, _, _ = _import_pydicom()
        return dicom_view(pydicom.dcmread(source, stop_before_pixels=True, force=True))
    except Exception:  # no pydicom, or a broken header: load_xray_image raises the clear error
        return None


def order_study_views(study: list, study_index: int = 0) -> list:
    """The study with its DICOM views in reading order (``view_order``) by their tags, whatever
    order they were given in. Views it cannot place keep their given position: non-DICOM inputs (no
    tags), and DICOM files no tag names frontal or lateral, each with a warning naming the file."""
    if len(study) < 2:
        return list(study)
    views = [source_view(source) for source in study]
    placed = [i for i, view in enumerate(views) if view in FRONTAL_VIEWS or view in LATERAL_VIEWS]
    for i, view in enumerate(views):
        if view is not None and i not in placed:
            named = f"ViewPosition {view!r} is neither frontal nor lateral" if view else f"no tag names its view ({VIEW_TAGS})"
            warnings.warn(f"study {study_index}, view {i} ({describe_source(study[i])}): {named}; it keeps its given "
                          f"position {i} (frontal views go first). Set ViewPosition (PA, AP, LATERAL) to place it.",
                          UserWarning, stacklevel=2)  # fmt: skip
    ordered = list(study)
    for slot, pick in zip(placed, view_order([views[i] for i in placed])):
        ordered[slot] = study[placed[pick]]
    return ordered


# ---------------------------------------------------------------------------------------------
# Geometry and augmentation (PIL only: torchvision is not a dependency)
# ---------------------------------------------------------------------------------------------


def letterbox(image: Image.Image, size: int) -> Image.Image:
    """Resize keeping the aspect ratio, then pad to ``size`` x ``size`` with black, centred.

    X-rays are not square (portrait PA films, landscape portables); stretching them would distort
    the cardiothoracic ratio, the very measurement behind "cardiomegaly".
    """
    scale = size / max(image.width, image.height)
    new_width = max(1, round(image.width * scale))
    new_height = max(1, round(image.height * scale))
    resized = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    canvas = Image.new("L", (size, size), 0)
    canvas.paste(resized, ((size - new_width) // 2, (size - new_height) // 2))
    return canvas


def _as_numpy_generator(generator: np.random.Generator | torch.Generator | None) -> np.random.Generator:
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, torch.Generator):
        # One torch draw seeds numpy, so a seeded torch generator gives reproducible augmentation.
        return np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
    return np.random.default_rng()


def augment_xray(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Light training augmentation: small affine (rotation +-5 deg, scale +-5 %, shift +-3 %) and
    brightness/contrast jitter (+-10 %). No flips: a flipped chest swaps the heart to the right."""
    angle = np.deg2rad(rng.uniform(-5, 5))
    scale = rng.uniform(0.95, 1.05)
    shift_x, shift_y = rng.uniform(-0.03, 0.03, size=2) * (image.width, image.height)
    # PIL's AFFINE maps output -> input coordinates, so we give the inverse transform about the centre.
    center_x, center_y = image.width / 2 + shift_x, image.height / 2 + shift_y
    a, b = np.cos(angle) / scale, np.sin(angle) / scale
    d, e = -np.sin(angle) / scale, np.cos(angle) / scale
    c = image.width / 2 - a * center_x - b * center_y
    f = image.height / 2 - d * center_x - e * center_y
    image = image.transform(
        image.size, Image.Transform.AFFINE, (a, b, c, d, e, f), resample=Image.Resampling.BILINEAR, fillcolor=0
    )
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.9, 1.1))
    return ImageEnhance.Contrast(image).enhance(rng.uniform(0.9, 1.1))


# ---------------------------------------------------------------------------------------------
# Image processor
# ---------------------------------------------------------------------------------------------


class TRRGImageProcessorKwargs(ImagesKwargs, total=False):
    """Keyword arguments of ``TRRGImageProcessor`` (a ``ProcessorMixin`` routes them to it).

    image_size: side of the square output, in pixels.
    max_views: most views a study may have.
    augment: apply the light training augmentation.
    generator: ``torch.Generator`` or ``numpy.random.Generator`` seeding the augmentation.
    """

    image_size: int
    max_views: int
    augment: bool
    generator: Any


# Arguments preprocess() understands; other ImagesKwargs (do_resize, size, ...) do not apply here.
_SETTINGS = ("image_size", "image_mean", "image_std", "max_views")
_PREPROCESS_ARGUMENTS = (*_SETTINGS, "augment", "generator", "return_tensors")


class TRRGImageProcessor(BaseImageProcessor):
    r"""Turns chest X-ray studies into ``pixel_values`` (batch, views, 3, H, W) and ``view_mask``.

    A study's DICOM views are first put in reading order by their tags (frontal first:
    ``order_study_views``), so a study sent lateral-first reads as one sent frontal-first; other
    inputs keep the order given (the first view is taken as the frontal one). Every view goes
    through ``load_xray_image`` (paths, bytes, DICOM, PIL, numpy...), is letterboxed
    to ``image_size`` (aspect kept, black padding: stretching would distort the cardiothoracic ratio),
    scaled to [0, 1], normalised with one grayscale mean/std and replicated to 3 channels so that
    RGB-pretrained vision backbones can be used unchanged.

    Args:
        image_size (`int`, defaults to 128): side of the square output.
        image_mean (`float`, defaults to 0.5): grayscale mean; replicated to the 3 channels.
        image_std (`float`, defaults to 0.5): grayscale std; with mean 0.5 the pixels span [-1, 1], a
            neutral choice that does not pretend X-rays follow ImageNet colour statistics. Set the
            backbone's own values when it was pretrained with others.
        max_views (`int`, defaults to 2): most views per study (frontal + lateral).
    """

    model_input_names = ["pixel_values", "view_mask"]
    valid_kwargs = TRRGImageProcessorKwargs

    def __init__(
        self,
        image_size: int = 128,
        image_mean: float | Sequence[float] = 0.5,
        image_std: float | Sequence[float] = 0.5,
        max_views: int = 2,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.image_mean = _single_gray_value(image_mean, "image_mean")
        self.image_std = _single_gray_value(image_std, "image_std")
        self.max_views = int(max_views)
        _check_settings(self.image_size, self.image_std, self.max_views)

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def preprocess(
        self,
        images,
        return_tensors: str | None = "pt",
        augment: bool = False,
        generator: np.random.Generator | torch.Generator | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Preprocess one image, one study (list of views) or a batch of studies (list of lists).

        Args:
            images: a single image source, a list of views, or a list of such lists. DICOM views are
                put in reading order by their tags (frontal first); other views keep their order.
            return_tensors: "pt" (default), "np" or None.
            augment: apply ``augment_xray`` to each view (training only).
            generator: seeds the augmentation for reproducibility.
            **kwargs: per-call overrides of ``image_size``, ``image_mean``, ``image_std``, ``max_views``.

        Returns:
            ``BatchFeature`` with ``pixel_values`` float (batch, views, 3, H, W) and ``view_mask`` long
            (batch, views); views = most views in the batch; padded views are zeros with mask 0.
        """
        settings = self._call_settings(kwargs)
        studies = as_studies(images)
        for study_index, study in enumerate(studies):  # structure errors before any decoding
            _check_study(study, study_index, settings["max_views"])
        studies = [order_study_views(study, study_index) for study_index, study in enumerate(studies)]
        rng = _as_numpy_generator(generator) if augment else None
        batch_views = max(len(study) for study in studies)
        pixel_values = np.zeros((len(studies), batch_views, 3, settings["image_size"], settings["image_size"]), np.float32)
        view_mask = np.zeros((len(studies), batch_views), dtype=np.int64)
        for study_index, study in enumerate(studies):
            for view_index, source in enumerate(study):
                pixel_values[study_index, view_index] = self._view_to_array(source, study_index, view_index, settings, rng)
                view_mask[study_index, view_index] = 1
        return BatchFeature({"pixel_values": pixel_values, "view_mask": view_mask}, tensor_type=return_tensors)

    def _call_settings(self, overrides: dict) -> dict:
        unknown = {key for key, value in overrides.items() if key not in _PREPROCESS_ARGUMENTS and value is not None}
        if unknown:
            raise ValueError(
                f"TRRGImageProcessor does not support {sorted(unknown)}; it takes {list(_PREPROCESS_ARGUMENTS)}."
            )
        # A ProcessorMixin may pass None for arguments the caller did not set: fall back to ours.
        settings = {name: getattr(self, name) if overrides.get(name) is None else overrides[name] for name in _SETTINGS}
        settings = {
            "image_size": int(settings["image_size"]),
            "image_mean": _single_gray_value(settings["image_mean"], "image_mean"),
            "image_std": _single_gray_value(settings["image_std"], "image_std"),
            "max_views": int(settings["max_views"]),
        }
        _check_settings(settings["image_size"], settings["image_std"], settings["max_views"])
        return settings

    def _view_to_array(self, source, study_index: int, view_index: int, settings: dict, rng) -> np.ndarray:
        try:
            image = load_xray_image(source)
        except XRayImageError as error:
            raise XRayImageError(f"study {study_index}, view {view_index}: {error}") from error
        if rng is not None:
            image = augment_xray(image, rng)
        image = letterbox(image, settings["image_size"])
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        pixels = (pixels - settings["image_mean"]) / settings["image_std"]
        return np.broadcast_to(pixels, (3, *pixels.shape))  # (3, H, W): gray replicated for RGB backbones


def as_studies(images) -> list[list]:
    """Normalise the input nesting: single image -> [[image]], list of views -> [views], list of
    studies stays. Lists and tuples are structure; anything else is an image source."""
    if not isinstance(images, (list, tuple)):
        return [[images]]
    if len(images) == 0:
        raise XRayImageError("study 0: no images were given. Pass at least one view per study.")
    nested = [isinstance(item, (list, tuple)) for item in images]
    if all(nested):
        return [list(study) for study in images]
    if not any(nested):
        return [list(images)]
    raise XRayImageError(
        "images mixes single views and lists of views. Pass one study (a list of views) or a list of studies "
        "(a list of lists of views)."
    )


def _check_study(study: list, study_index: int, max_views: int) -> None:
    if not study:
        raise XRayImageError(f"study {study_index}: has no views. Pass at least one image per study.")
    if len(study) > max_views:
        raise XRayImageError(
            f"study {study_index}: has {len(study)} views but max_views is {max_views}. Drop extra views or raise "
            "max_views (the model's view embeddings must cover it)."
        )


def _single_gray_value(value: float | Sequence[float], argument: str) -> float:
    """Accept a float, or 3 equal values (as other processors' configs store them)."""
    values = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)]
    if len(set(values)) != 1:
        raise ValueError(f"{argument} must be one grayscale value (or 3 equal values); got {value}.")
    return values[0]


def _check_settings(image_size: int, image_std: float, max_views: int) -> None:
    if image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels; got {image_size}.")
    if image_std <= 0:
        raise ValueError(f"image_std must be positive; got {image_std}.")
    if max_views < 1:
        raise ValueError(f"max_views must be at least 1; got {max_views}.")


__all__ = [
    "FRONTAL_VIEWS",
    "LATERAL_VIEWS",
    "MAX_MEGAPIXELS",
    "MAX_SIDE",
    "MIN_SIDE",
    "TRRGImageProcessor",
    "XRayImageError",
    "augment_xray",
    "check_image_size",
    "dicom_view",
    "letterbox",
    "load_xray_image",
    "order_study_views",
    "source_view",
    "view_order",
]
