"""X-ray loading and TRRGImageProcessor: every input kind, every error, shapes, masks, round trip."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from trrg.modeling.image_processing_trrg import (
    MAX_SIDE,
    MIN_SIDE,
    TRRGImageProcessor,
    XRayImageError,
    letterbox,
    load_xray_image,
)


def ramp(height: int = 16, width: int = 32, dtype=np.uint8, high: int = 255) -> np.ndarray:
    """Left-to-right ramp 0..high: brightness must increase with the column."""
    row = np.linspace(0, high, width).round().astype(dtype)
    return np.tile(row, (height, 1))


def write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", with_pixels: bool = True, **elements):
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
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelRepresentation = 0
    for name, value in elements.items():
        setattr(dataset, name, value)
    if with_pixels:
        dataset.PixelData = pixels.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


def png_header(width: int, height: int) -> bytes:
    """A PNG signature + IHDR claiming a size, with no pixel data: tests size checks without allocating."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def assert_increasing_left_to_right(image: Image.Image) -> None:
    row = np.asarray(image, dtype=np.int32)[0]
    assert np.all(np.diff(row) >= 0), row
    assert row[-1] > row[0]


# --- load_xray_image: formats --------------------------------------------------------------


def test_png_8bit_keeps_values(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(ramp()).save(path)
    image = load_xray_image(path)
    assert image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), ramp())


def test_png_16bit_full_range_maps_to_0_255_monotonically(tmp_path):
    path = tmp_path / "x16.png"
    pixels = ramp(width=64, dtype=np.uint16, high=65535)
    Image.fromarray(pixels).save(path)
    assert Image.open(path).mode.startswith("I")  # really stored as 16-bit
    values = np.asarray(load_xray_image(str(path)))[0]
    assert values[0] == 0 and values[-1] == 255
    assert np.all(np.diff(values.astype(int)) >= 0)


def test_rgb_png_becomes_luma(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(np.stack([ramp()] * 3, axis=-1)).save(path)
    np.testing.assert_array_equal(np.asarray(load_xray_image(path)), ramp())


def test_rgba_is_composited_on_black(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, :8, 3] = 255  # left half opaque, right half fully transparent
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    values = np.asarray(load_xray_image(path))
    assert (values[:, :8] == 200).all() and (values[:, 8:] == 0).all()


def test_palette_png(tmp_path):
    path = tmp_path / "palette.png"
    Image.fromarray(ramp()).convert("P").save(path)
    assert Image.open(path).mode == "P"
    assert_increasing_left_to_right(load_xray_image(path))


def test_jpeg_from_path_bytes_and_dict(tmp_path):
    path = tmp_path / "x.jpg"
    Image.fromarray(ramp(32, 64)).save(path, quality=95)
    data = path.read_bytes()
    for source in (path, data, {"path": None, "bytes": data}, {"path": str(path), "bytes": None}):
        image = load_xray_image(source)
        assert image.size == (64, 32) and image.mode == "L"
        assert_increasing_left_to_right(image)


def test_numpy_inputs():
    assert load_xray_image(ramp()).mode == "L"
    np.testing.assert_array_equal(np.asarray(load_xray_image(np.stack([ramp()] * 3, -1))), ramp())
    float_image = load_xray_image(ramp().astype(np.float32) / 1000.0)  # rescaled by its own min/max
    assert np.asarray(float_image).max() == 255 and np.asarray(float_image).min() == 0
    with pytest.raises(XRayImageError, match="channels-first"):
        load_xray_image(np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(XRayImageError, match="NaN"):
        load_xray_image(np.full((16, 16), np.nan))


# --- DICOM ---------------------------------------------------------------------------------


def test_dicom_monochrome1_is_inverted(tmp_path):
    pixels = ramp(dtype=np.uint16, high=4095)
    mono2 = load_xray_image(write_dicom(tmp_path / "m2.dcm", pixels, "MONOCHROME2"))
    mono1 = load_xray_image(write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1"))
    assert_increasing_left_to_right(mono2)
    np.testing.assert_array_equal(np.asarray(mono1), 255 - np.asarray(mono2))


def test_dicom_detected_by_magic_without_suffix_and_as_dataset(tmp_path):
    import pydicom

    path = write_dicom(tmp_path / "no_suffix", ramp(dtype=np.uint16, high=4095))
    assert_increasing_left_to_right(load_xray_image(path))
    assert_increasing_left_to_right(load_xray_image(pydicom.dcmread(path)))


def test_dicom_window_clips_outside_values(tmp_path):
    pixels = ramp(width=64, dtype=np.uint16, high=4095)
    path = write_dicom(tmp_path / "w.dcm", pixels, WindowCenter=2048, WindowWidth=1024)
    values = np.asarray(load_xray_image(path))[0]
    assert (values[pixels[0] < 1536] == 0).all()
    assert (values[pixels[0] > 2560] == 255).all()
    inside = values[(pixels[0] > 1600) & (pixels[0] < 2500)]
    assert inside.min() > 0 and inside.max() < 255


def test_dicom_rescale_slope_is_applied_before_window(tmp_path):
    pixels = ramp(width=64, dtype=np.uint16, high=4095)
    # Stored values are halved by the slope: the window 1024 +- 512 then covers stored 1024..3072.
    path = write_dicom(tmp_path / "s.dcm", pixels, RescaleSlope=0.5, RescaleIntercept=0, WindowCenter=1024, WindowWidth=1024)
    values = np.asarray(load_xray_image(path))[0]
    assert (values[pixels[0] < 1000] == 0).all() and (values[pixels[0] > 3100] == 255).all()


def test_dicom_without_pixel_data(tmp_path):
    path = write_dicom(tmp_path / "sr.dcm", np.zeros((16, 16)), with_pixels=False)
    with pytest.raises(XRayImageError, match="no pixel data") as error:
        load_xray_image(path)
    assert "sr.dcm" in str(error.value)


# --- errors --------------------------------------------------------------------------------


def test_missing_empty_and_non_image_files(tmp_path):
    with pytest.raises(XRayImageError, match="not found"):
        load_xray_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(XRayImageError, match="empty") as error:
        load_xray_image(tmp_path / "empty.png")
    assert "empty.png" in str(error.value)
    (tmp_path / "notes.png").write_text("not an image at all")
    with pytest.raises(XRayImageError, match="not an image"):
        load_xray_image(tmp_path / "notes.png")
    with pytest.raises(XRayImageError, match="unsupported"):
        load_xray_image(12345)


def test_truncated_png(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(XRayImageError, match="corrupt or truncated") as error:
        load_xray_image(path)
    assert "cut.png" in str(error.value)


def test_too_small_image_names_the_minimum(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("L", (1, 1)).save(path)
    with pytest.raises(XRayImageError, match=f"minimum of {MIN_SIDE} px"):
        load_xray_image(path)


def test_too_large_images_are_refused_before_decoding():
    with pytest.raises(XRayImageError, match=f"limit of {MAX_SIDE} px"):
        load_xray_image(png_header(MAX_SIDE + 1, 8))
    with pytest.raises(XRayImageError, match="megapixels"):
        load_xray_image(png_header(16000, 16000))  # 256 MP: above our limit and PIL's bomb guard


# --- processor -----------------------------------------------------------------------------


def test_processor_shapes_and_view_mask():
    processor = TRRGImageProcessor(image_size=32)
    batch = processor([[ramp()], [ramp(), ramp(40, 20)]], return_tensors="pt")
    assert batch["pixel_values"].shape == (2, 2, 3, 32, 32)
    assert batch["pixel_values"].dtype == torch.float32
    assert batch["view_mask"].tolist() == [[1, 0], [1, 1]]
    assert batch["view_mask"].dtype == torch.long
    assert (batch["pixel_values"][0, 1] == 0).all()  # padded view is zeros
    single = processor(ramp())  # one image -> one study of one view
    assert single["pixel_values"].shape == (1, 1, 3, 32, 32)
    one_study = processor([ramp(), ramp()])  # a flat list is one study
    assert one_study["view_mask"].tolist() == [[1, 1]]


def _view_code(meaning: str):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.CodeMeaning = meaning
    return Sequence([item])


def test_processor_orders_dicom_views_by_their_tags(tmp_path, recwarn):
    import pydicom

    frontal = write_dicom(tmp_path / "IM0001", ramp(40, 30, np.uint16, 4095), ViewCodeSequence=_view_code("postero-anterior"))
    lateral = write_dicom(tmp_path / "IM0002.dcm", ramp(30, 40, np.uint16, 4095)[:, ::-1], SeriesDescription="CHEST LAT")
    processor = TRRGImageProcessor(image_size=24)
    expected = processor([[frontal, lateral]])["pixel_values"]
    for study in ([lateral, frontal], [lateral.read_bytes(), frontal.read_bytes()], [pydicom.dcmread(lateral), str(frontal)],
                  [{"path": "b.dcm", "bytes": lateral.read_bytes()}, {"path": None, "bytes": frontal.read_bytes()}]):
        assert torch.equal(processor([study])["pixel_values"], expected)  # read frontal-first whatever the order given
    assert not recwarn.list
    png_a, png_b = ramp(), ramp()[:, ::-1].copy()  # non-DICOM inputs keep the order given
    assert not torch.equal(processor([[png_a, png_b]])["pixel_values"], processor([[png_b, png_a]])["pixel_values"])


def test_processor_keeps_and_names_a_dicom_view_no_tag_names(tmp_path):
    unnamed = write_dicom(tmp_path / "unnamed.dcm", ramp(40, 30, np.uint16, 4095), SeriesDescription="CHEST")
    lateral = write_dicom(tmp_path / "lat.dcm", ramp(30, 40, np.uint16, 4095), ViewPosition="LL")
    frontal = write_dicom(tmp_path / "pa.dcm", ramp(36, 30, np.uint16, 4095), ViewPosition="PA")
    processor = TRRGImageProcessor(image_size=24, max_views=3)
    with pytest.warns(UserWarning, match=r"study 0, view 0 \(.*unnamed\.dcm\): no tag names its view .*keeps its given position 0"):
        batch = processor([[unnamed, lateral, frontal]])["pixel_values"]
        assert torch.equal(batch, processor([[unnamed, frontal, lateral]])["pixel_values"])  # the others still ordered


def test_processor_normalises_and_replicates_channels():
    batch = TRRGImageProcessor(image_size=16)(np.full((16, 16), 255, np.uint8))
    pixels = batch["pixel_values"][0, 0]
    assert torch.allclose(pixels, torch.ones_like(pixels))  # (1 - 0.5) / 0.5
    assert torch.equal(pixels[0], pixels[2])


def test_letterbox_keeps_aspect_ratio():
    tall = Image.fromarray(np.full((64, 32), 255, np.uint8))
    boxed = np.asarray(letterbox(tall, 32))
    assert boxed.shape == (32, 32)
    columns_with_content = np.flatnonzero(boxed.max(axis=0) > 0)
    assert len(columns_with_content) == 16  # width halved like the height, not stretched
    assert columns_with_content[0] == 8  # centred, black padding both sides
    assert (boxed[:, :8] == 0).all() and (boxed[:, 24:] == 0).all()


def test_too_many_views_and_empty_study_name_the_study():
    processor = TRRGImageProcessor(image_size=16, max_views=2)
    with pytest.raises(XRayImageError, match="study 1: has 3 views but max_views is 2"):
        processor([[ramp()], [ramp(), ramp(), ramp()]])
    with pytest.raises(XRayImageError, match="study 1: has no views"):
        processor([[ramp()], []])
    with pytest.raises(XRayImageError, match="no images"):
        processor([])


def test_view_errors_name_study_and_view(tmp_path):
    with pytest.raises(XRayImageError, match=r"study 0, view 1: .*missing\.png: file not found"):
        TRRGImageProcessor(image_size=16)([ramp(), tmp_path / "missing.png"])


def test_unsupported_argument_is_refused():
    with pytest.raises(ValueError, match="do_center_crop"):
        TRRGImageProcessor()(ramp(), do_center_crop=True)


def test_augmentation_is_seeded_and_small():
    processor = TRRGImageProcessor(image_size=32)
    image = ramp(32, 32)
    first = processor(image, augment=True, generator=torch.Generator().manual_seed(0))["pixel_values"]
    again = processor(image, augment=True, generator=torch.Generator().manual_seed(0))["pixel_values"]
    other = processor(image, augment=True, generator=np.random.default_rng(1))["pixel_values"]
    plain = processor(image)["pixel_values"]
    assert torch.equal(first, again)
    assert not torch.equal(first, other) and not torch.equal(first, plain)
    assert (first - plain).abs().mean() < 0.3  # light: the image is still the same image


def test_save_and_load_round_trip(tmp_path):
    processor = TRRGImageProcessor(image_size=48, image_mean=0.4, image_std=0.3, max_views=3)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").exists()
    loaded = TRRGImageProcessor.from_pretrained(tmp_path)
    assert (loaded.image_size, loaded.image_mean, loaded.image_std, loaded.max_views) == (48, 0.4, 0.3, 3)
    assert TRRGImageProcessor.from_pretrained(tmp_path, image_size=64).image_size == 64
    image = ramp()
    assert torch.equal(processor(image)["pixel_values"], loaded(image)["pixel_values"])


def test_auto_image_processor_with_remote_code(tmp_path, monkeypatch):
    import sys

    import transformers.dynamic_module_utils as dynamic_modules
    from transformers import AutoImageProcessor

    # Keep the copied remote code out of the user's cache (the constant is read at import time).
    monkeypatch.setattr(dynamic_modules, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(TRRGImageProcessor, "_auto_class", "AutoImageProcessor")  # register_for_auto_class
    TRRGImageProcessor(image_size=24).save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "image_processing_trrg.py").exists()  # remote code copied next to the config
    loaded = AutoImageProcessor.from_pretrained(tmp_path / "model", trust_remote_code=True)
    assert type(loaded).__name__ == "TRRGImageProcessor" and loaded.image_size == 24
    # Which copy of the class is used depends on whether trrg registered its classes with the Auto
    # classes earlier in this process; that the folder alone suffices is tested in a fresh process
    # without trrg (tests/test_hub_roundtrip.py).
