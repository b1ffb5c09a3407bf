"""Whole-object conversion to Explicit VR Little Endian, for what cannot go frame by frame.

Bit-packed (1-bit) pixel data has no byte-aligned frames, so `storage.dicom.transcode` leaves such
objects to this module, which converts them whole with pydicom (they are small: binary masks).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

from storage.errors import NotAcceptable

if TYPE_CHECKING:
    from pathlib import Path

    from pydicom.dataset import Dataset

__all__ = ["to_explicit_little_endian"]

# What can fail inside the codec plugins on data they cannot decode.
_DECODE_ERRORS = (ValueError, RuntimeError, NotImplementedError, TypeError, KeyError, AttributeError)


def _swap_pixel_bytes(dataset: Dataset) -> None:
    """Big-endian native pixel data of words becomes little endian (PS3.5 §7.3)."""
    bits = int(dataset.get("BitsAllocated", 8))
    if "PixelData" in dataset and bits > 8:
        width = bits // 8
        dataset.PixelData = np.frombuffer(dataset.PixelData, dtype=f">u{width}").astype(f"<u{width}").tobytes()


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
