"""Shared by test_space.py and test_space_browser.py: a running demo server and bad upload files."""

from __future__ import annotations

import contextlib
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "space" / "examples"
GOOD_PNG = EXAMPLES / "phantom_effusion_frontal.png"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served_demo(model, processor, is_phantom=True):
    """The Space's demo served on 127.0.0.1 at a free port; yields (URL, demo) and closes it after
    (``demo.trrg_batcher`` is the batcher its requests go through)."""
    from trrg.space.app import build_demo, launch

    demo = build_demo(model, processor, is_phantom)
    port = free_port()
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", demo
    finally:
        demo.close()


@contextlib.contextmanager
def running_demo(model, processor, is_phantom=True):
    """The Space's demo served on 127.0.0.1 at a free port; yields its URL and closes it after."""
    with served_demo(model, processor, is_phantom) as (url, _):
        yield url


def png_header(width: int, height: int) -> bytes:
    """A PNG signature + IHDR claiming a size, no pixel data: tests the size guard without allocating."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def write_dicom(path: Path, pixels: np.ndarray | None = None) -> Path:
    """A DX DICOM file with 12-bit pixels, or a header without any PixelData when pixels is None."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    if pixels is not None:
        dataset.Rows, dataset.Columns = pixels.shape
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
        dataset.PixelData = pixels.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


def bad_inputs(folder: Path) -> dict[Path, str]:
    """Upload files the app must refuse -> a fragment of the error message each must give."""
    folder.mkdir(parents=True, exist_ok=True)
    not_image = folder / "notes.png"
    not_image.write_text("this is a text file, not an image")
    tiny = folder / "tiny.png"
    Image.fromarray(np.zeros((1, 1), dtype=np.uint8)).save(tiny)
    huge = folder / "huge.png"
    huge.write_bytes(png_header(20_000, 20_000))
    no_pixels = write_dicom(folder / "report_only.dcm")
    return {not_image: "not an image", tiny: "1x1 px", huge: "decompression bomb", no_pixels: "no pixel data"}
