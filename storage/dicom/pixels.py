"""Pixel data conversions done on demand, off the event loop: decode one frame, decompress an instance.

Decoding uses pydicom with the pylibjpeg plugins (JPEG, JPEG-LS, JPEG 2000, RLE).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.pixels.utils import pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian

from storage.errors import NotAcceptable

if TYPE_CHECKING:
    from pathlib import Path

    from pydicom.dataset import Dataset

__all__ = ["decode_frame", "to_explicit_little_endian"]

# What can fail inside the codec plugins on data they cannot decode.
_DECODE_ERRORS = (ValueError, RuntimeError, NotImplementedError, TypeError, KeyError, AttributeError)


def decode_frame(path: Path, index: int) -> bytes:
    """Frame `index` (0-based) of the instance at `path` as native little-endian pixel bytes.

    Colour frames come back interleaved (Planar Configuration 0), as PS3.18 §8.7.3.5.1 expects of
    application/octet-stream.

    Raises:
        NotAcceptable: the pixel data cannot be decoded here.
    """
    try:
        header = dcmread(path, stop_before_pixels=True)
        # A deflated data set has no frame offsets: pydicom must inflate the whole of it.
        deflated = header.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
        source: Path | Dataset = dcmread(path) if deflated else path
        frame = pixel_array(source, index=index, raw=True)
        return bytes(frame.astype(_little_endian_dtype(header)).tobytes())
    except _DECODE_ERRORS as exc:
        raise NotAcceptable(f"frame {index + 1} cannot be decoded to uncompressed pixels ({exc})") from exc


def _swap_pixel_bytes(dataset: Dataset) -> None:
    """Big-endian native pixel data of words becomes little endian (PS3.5 §7.3)."""
    bits = int(dataset.get("BitsAllocated", 8))
    if "PixelData" in dataset and bits > 8:
        width = bits // 8
        dataset.PixelData = np.frombuffer(dataset.PixelData, dtype=f">u{width}").astype(f"<u{width}").tobytes()


def _little_endian_dtype(header: Dataset) -> str:
    bits = int(header.get("BitsAllocated", 16))
    signed = int(header.get("PixelRepresentation", 0)) == 1
    return f"<{'i' if signed else 'u'}{max(1, bits // 8)}"


def to_explicit_little_endian(path: Path) -> bytes:
    """The instance re-encoded as Explicit VR Little Endian Part-10 bytes (pixel data decompressed).

    The SOP Instance UID is kept: the pixel values are those of the stored instance.

    Raises:
        NotAcceptable: the pixel data cannot be decompressed here.
    """
    try:
        dataset = dcmread(path)
        if dataset.file_meta.TransferSyntaxUID.is_compressed and "PixelData" in dataset:
            dataset.decompress(generate_instance_uid=False)
        if dataset.file_meta.TransferSyntaxUID == ExplicitVRBigEndian:
            _swap_pixel_bytes(dataset)
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buffer = io.BytesIO()
        dcmwrite(buffer, dataset, implicit_vr=False, little_endian=True, force_encoding=True)
    except _DECODE_ERRORS as exc:
        raise NotAcceptable(
            f"the instance cannot be converted to Explicit VR Little Endian ({exc}); ask for it with transfer-syntax=*"
        ) from exc
    return buffer.getvalue()
