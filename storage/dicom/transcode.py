"""Transcoding between transfer syntaxes, one frame at a time (PS3.18 §8.7.3, PS3.5 §8 and Annex A).

A frame is decoded with pydicom (pylibjpeg plugins) and encoded again with a well-kept codec library:
imagecodecs (libjpeg-turbo for JPEG baseline and lossless, OpenJPEG for JPEG 2000, OpenJPH for HTJ2K),
or pydicom's own encoders where they exist (pyjpegls for JPEG-LS, pydicom for RLE), which handle
signed pixel data the way PS3.5 asks. Frames are wrapped with `pydicom.encaps`. A Part-10 instance is
produced as a stream of chunks: its header, then each frame as it is encoded, so a large multi-frame
object is never wholly in memory.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

import imagecodecs
import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import itemize_frame
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.pixels.encoders.base import (
    JPEG2000Encoder,
    JPEGLSLosslessEncoder,
    JPEGLSNearLosslessEncoder,
    RLELosslessEncoder,
)
from pydicom.pixels.utils import iter_pixels
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID
from pydicom.uid import UID as PydicomUID

from storage.dicom.media_types import EXPLICIT_VR_LITTLE_ENDIAN, TRANSFER_SYNTAXES
from storage.errors import NotAcceptable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from pathlib import Path

__all__ = [
    "DEFLATED",
    "ENCODABLE",
    "PixelFormat",
    "can_encode",
    "decoded_frames",
    "encode_frame",
    "transcode_frames",
    "transcode_instance",
]

DEFLATED: Final = "1.2.840.10008.1.2.1.99"
_IMPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2"
_BIG_ENDIAN: Final = "1.2.840.10008.1.2.2"
_JPEG_BASELINE: Final = "1.2.840.10008.1.2.4.50"
_JPEG_LOSSLESS_SV1: Final = "1.2.840.10008.1.2.4.70"
_JPEG_LS_LOSSLESS: Final = "1.2.840.10008.1.2.4.80"
_JPEG_LS_NEAR: Final = "1.2.840.10008.1.2.4.81"
_J2K_LOSSLESS: Final = "1.2.840.10008.1.2.4.90"
_J2K: Final = "1.2.840.10008.1.2.4.91"
_HTJ2K_LOSSLESS: Final = "1.2.840.10008.1.2.4.201"
_RLE: Final = "1.2.840.10008.1.2.5"

# Lossy settings: JPEG quality 90, JPEG-LS NEAR=2, JPEG 2000 at 10:1 keep diagnostic detail while
# cutting size several-fold (the ratios viewers commonly use for lossy transfer).
_JPEG_QUALITY: Final = 90
_JLS_NEAR: Final = 2
_J2K_RATE: Final = 10

# What pixel data the archive can produce in each transfer syntax. Native targets need no codec.
_NATIVE_TARGETS: Final = frozenset({EXPLICIT_VR_LITTLE_ENDIAN, DEFLATED})
# PS3.5 §A.4.1: JPEG baseline carries 8-bit samples only.
_EIGHT_BIT_ONLY: Final = frozenset({_JPEG_BASELINE})

# Lossy Image Compression Method (0028,2114) defined terms, PS3.3 §C.7.6.1.1.5.1.
_LOSSY_METHOD: Final[Mapping[str, str]] = MappingProxyType(
    {_JPEG_BASELINE: "ISO_10918_1", _JPEG_LS_NEAR: "ISO_14495_1", _J2K: "ISO_15444_1"}
)
# Elements after the pixel data description that a re-encoded object must drop: they describe the
# stored encoding (PS3.3 §C.7.6.3.1.1 Extended Offset Table, §C.7.6.1.1.5 is kept and updated).
_ENCODING_ELEMENTS: Final = ("ExtendedOffsetTable", "ExtendedOffsetTableLengths", "PixelData")

_ITEM_HEADER_UNDEFINED: Final = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"  # (7FE0,0010) OB, undefined length
_EMPTY_OFFSET_TABLE: Final = b"\xfe\xff\x00\xe0\x00\x00\x00\x00"  # PS3.5 §A.4: an empty Basic Offset Table
_SEQUENCE_DELIMITER: Final = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"

# pydicom decodes these to RGB (its `as_rgb` default) but leaves `ds_out` saying what was stored.
_CONVERTED_TO_RGB: Final = frozenset({"YBR_FULL", "YBR_FULL_422"})

# What can fail inside the codec plugins on data they cannot decode or encode.
_CODEC_ERRORS = (ValueError, RuntimeError, NotImplementedError, TypeError, KeyError, AttributeError, OSError)


@dataclass(frozen=True, slots=True)
class PixelFormat:
    """The Image Pixel Module attributes of decoded frames (PS3.3 §C.7.6.3)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str

    @classmethod
    def of(cls, dataset: Dataset) -> PixelFormat:
        """The format a dataset (or pydicom's `ds_out` of a decode) declares."""
        return cls(
            rows=int(dataset.Rows),
            columns=int(dataset.Columns),
            samples_per_pixel=int(dataset.get("SamplesPerPixel", 1)),
            bits_allocated=int(dataset.BitsAllocated),
            bits_stored=int(dataset.get("BitsStored", dataset.BitsAllocated)),
            pixel_representation=int(dataset.get("PixelRepresentation", 0)),
            photometric_interpretation=str(dataset.get("PhotometricInterpretation", "MONOCHROME2")),
        )

    @property
    def colour(self) -> bool:
        """Three samples per pixel."""
        return self.samples_per_pixel == 3


def _unsigned(frame: np.ndarray, pixel: PixelFormat) -> np.ndarray:
    """The stored bit pattern of each sample, as JPEG lossless carries signed data (PS3.5 §8.2.1)."""
    if frame.dtype.kind != "i":
        return frame
    unsigned = frame.view(frame.dtype.str.replace("i", "u"))
    mask: int = (1 << pixel.bits_stored) - 1
    masked: np.ndarray = np.bitwise_and(unsigned, np.array(mask, dtype=unsigned.dtype))
    return masked


def _jpeg_baseline(frame: np.ndarray, pixel: PixelFormat) -> bytes:
    # Colour (RGB once decoded) is written as YCbCr 4:2:2 and declared YBR_FULL_422 (PS3.5 §8.2.1).
    if not pixel.colour:
        return bytes(imagecodecs.jpeg8_encode(frame, level=_JPEG_QUALITY))
    return bytes(
        imagecodecs.jpeg8_encode(frame, level=_JPEG_QUALITY, colorspace="RGB", outcolorspace="YCbCr", subsampling="422")
    )


def _jpeg_lossless(frame: np.ndarray, pixel: PixelFormat) -> bytes:
    # Process 14, first-order prediction (Selection Value 1), at the precision of Bits Stored.
    return bytes(
        imagecodecs.jpeg8_encode(
            _unsigned(frame, pixel), lossless=True, predictor=1, bitspersample=max(2, pixel.bits_stored)
        )
    )


def _jpeg_2000_lossless(frame: np.ndarray, pixel: PixelFormat) -> bytes:
    # A bare codestream (J2K, not JP2) as PS3.5 §A.4.4 requires; no colour transform, so the
    # Photometric Interpretation stays RGB.
    return bytes(
        imagecodecs.jpeg2k_encode(
            frame,
            level=0,
            codecformat="J2K",
            colorspace="SRGB" if pixel.colour else "GRAY",
            mct=False,
            bitspersample=pixel.bits_stored,
            reversible=True,
        )
    )


def _htj2k_lossless(frame: np.ndarray, pixel: PixelFormat) -> bytes:
    return bytes(imagecodecs.htj2k_encode(frame))


def _pydicom_encoder(encoder: object, **options: object) -> Callable[[np.ndarray, PixelFormat], bytes]:
    """One of pydicom's encoders, which know PS3.5's rules for signed data and colour planes."""

    def encode(frame: np.ndarray, pixel: PixelFormat) -> bytes:
        return bytes(
            encoder.encode(  # type: ignore[attr-defined]
                frame,
                rows=pixel.rows,
                columns=pixel.columns,
                samples_per_pixel=pixel.samples_per_pixel,
                bits_allocated=pixel.bits_allocated,
                bits_stored=pixel.bits_stored,
                pixel_representation=pixel.pixel_representation,
                photometric_interpretation=pixel.photometric_interpretation,
                number_of_frames=1,
                planar_configuration=0,
                **options,
            )
        )

    return encode


_ENCODERS: Final[Mapping[str, Callable[[np.ndarray, PixelFormat], bytes]]] = MappingProxyType(
    {
        _JPEG_BASELINE: _jpeg_baseline,
        _JPEG_LOSSLESS_SV1: _jpeg_lossless,
        _JPEG_LS_LOSSLESS: _pydicom_encoder(JPEGLSLosslessEncoder),
        _JPEG_LS_NEAR: _pydicom_encoder(JPEGLSNearLosslessEncoder, jls_error=_JLS_NEAR),
        _J2K_LOSSLESS: _jpeg_2000_lossless,
        # pydicom's encoder takes a compression ratio, which means the same at every bit depth.
        _J2K: _pydicom_encoder(JPEG2000Encoder, compression_ratios=[_J2K_RATE]),
        _HTJ2K_LOSSLESS: _htj2k_lossless,
        _RLE: _pydicom_encoder(RLELosslessEncoder),
    }
)

ENCODABLE: Final = frozenset({*_ENCODERS, *_NATIVE_TARGETS})
"""Every transfer syntax the archive can produce from decoded pixels."""


def can_encode(target: str, bits_allocated: int | None) -> bool:
    """Whether frames of `bits_allocated` bits can be written in transfer syntax `target`.

    Compressed syntaxes take 8- or 16-bit samples (1-bit and 32-bit data are served natively only);
    JPEG baseline takes 8-bit samples only.
    """
    if target in _NATIVE_TARGETS:
        return True
    if target not in _ENCODERS:
        return False
    allowed = (8,) if target in _EIGHT_BIT_ONLY else (8, 16)
    return bits_allocated in allowed


def encode_frame(frame: np.ndarray, pixel: PixelFormat, target: str) -> bytes:
    """One decoded frame as the bitstream of transfer syntax `target` (native: little-endian octets).

    Args:
        frame: rows x columns (x samples, interleaved) as pydicom decodes it.
        pixel: the attributes of the decoded frame.
        target: a Transfer Syntax UID in `ENCODABLE`.

    Raises:
        NotAcceptable: the syntax cannot carry these pixels (bit depth, colour model, value range).
    """
    if target in _NATIVE_TARGETS:
        return _native_octets(frame, pixel)
    if not can_encode(target, pixel.bits_allocated):
        raise NotAcceptable(
            f"{_name(target)} cannot carry {pixel.bits_allocated}-bit pixel data; "
            f"ask for transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN} or a lossless syntax such as {_J2K_LOSSLESS}"
        )
    if pixel.photometric_interpretation == "PALETTE COLOR" and TRANSFER_SYNTAXES[target].lossy:
        raise NotAcceptable(f"palette colour indices cannot be lossy compressed ({_name(target)}); ask a lossless one")
    try:
        return _ENCODERS[target](np.ascontiguousarray(frame), pixel)
    except _CODEC_ERRORS as exc:
        raise NotAcceptable(f"the frame cannot be encoded as {_name(target)} ({exc})") from exc


def _native_octets(frame: np.ndarray, pixel: PixelFormat) -> bytes:
    """PS3.5 §8.1.1: native pixel data, little endian, colour interleaved (Planar Configuration 0)."""
    if pixel.bits_allocated == 1:
        raise NotAcceptable("1-bit pixel data is served as stored or as Explicit VR Little Endian of the instance")
    dtype = f"<{'i' if pixel.pixel_representation else 'u'}{pixel.bits_allocated // 8}"
    return bytes(np.ascontiguousarray(frame, dtype=dtype).tobytes())


def decoded_frames(path: Path, indices: Iterable[int] | None, ds_out: Dataset) -> Iterator[np.ndarray]:
    """Decoded frames of the file in native byte order; YBR colour comes back as RGB.

    Colour is converted because JPEG codestreams say RGB or YCbCr by their own markers, which
    decoders (and pydicom) follow over the Photometric Interpretation; RGB is the one model every
    target syntax carries unambiguously. Monochrome and palette samples are kept bit for bit.
    """
    header = dcmread(path, stop_before_pixels=True)
    # A deflated data set has no byte offsets: pydicom has to inflate the whole of it.
    source: Path | Dataset = path
    if header.file_meta.TransferSyntaxUID == DEFLATED:
        source = dcmread(path)
        # pydicom fills `ds_out` only when it reads a file itself; here the format is the data set's.
        ds_out.update(source.group_dataset(0x0028))
    try:
        for frame in iter_pixels(source, indices=indices, ds_out=ds_out):
            # Big-endian sources decode to big-endian arrays, which the codecs would misread.
            yield frame.astype(frame.dtype.newbyteorder("="), copy=False)
    except _CODEC_ERRORS as exc:
        raise NotAcceptable(f"the stored pixel data cannot be decoded ({exc}); ask with transfer-syntax=*") from exc


def transcode_frames(path: Path, indices: Iterable[int], target: str) -> Iterator[bytes]:
    """The frames `indices` (0-based) of the instance at `path`, each encoded in `target`.

    Raises:
        NotAcceptable: a frame cannot be decoded, or encoded in `target`.
    """
    decoded = Dataset()
    for frame in decoded_frames(path, indices, decoded):
        yield encode_frame(frame, _decoded_format(decoded), target)


def transcode_instance(path: Path, target: str) -> Iterator[bytes]:
    """The instance at `path` as Part-10 bytes in transfer syntax `target`, in chunks, frame by frame.

    The SOP Instance UID is kept: the object is the same, only its encoding on the wire differs (as
    with a DIMSE transfer syntax). Lossy targets mark the object as PS3.3 §C.7.6.1.1.5 and §C.7.6.1.1.3
    ask: Lossy Image Compression "01", its ratio and method, and a Derivation Description and Code.

    Raises:
        NotAcceptable: the pixel data cannot be decoded, or encoded in `target` (raised by the first chunk).
    """
    try:
        header = dcmread(path, stop_before_pixels=True)
    except _CODEC_ERRORS as exc:
        raise NotAcceptable(f"the stored instance cannot be read ({exc}); ask with transfer-syntax=*") from exc
    decoded = Dataset()
    frames = decoded_frames(path, None, decoded) if "Rows" in header else iter(())
    first = next(frames, None)
    chunks = _part10_chunks(header, first, frames, decoded, target)
    if target == DEFLATED:
        chunks = _deflated(chunks)
    yield from chunks


def _part10_chunks(
    header: Dataset, first: np.ndarray | None, rest: Iterator[np.ndarray], decoded: Dataset, target: str
) -> Iterator[bytes]:
    """File meta, then the data set (raw, before any deflation), then the frames one by one."""
    pixel = _decoded_format(decoded) if first is not None else None
    encoded_first = encode_frame(first, pixel, target) if first is not None and pixel is not None else None
    dataset = _output_header(header, pixel, target)
    if encoded_first is not None and pixel is not None and TRANSFER_SYNTAXES[target].lossy:
        # The ratio of the first frame stands for the object's (the header precedes the frames).
        _mark_lossy(dataset, target, _raw_size(pixel) / max(1, len(encoded_first)))
    meta = DicomBytesIO()
    meta.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(meta, _file_meta(header, target), enforce_standard=True)
    yield meta.getvalue()
    yield _data_set_bytes(dataset)
    if encoded_first is None or pixel is None:
        return
    if target in _NATIVE_TARGETS:
        count = int(dataset.get("NumberOfFrames", 1) or 1)
        length = len(encoded_first) * count
        vr = b"OW" if pixel.bits_allocated > 8 else b"OB"
        yield b"\xe0\x7f\x10\x00" + vr + b"\x00\x00" + (length + length % 2).to_bytes(4, "little")
        yield encoded_first
        for frame in rest:
            yield encode_frame(frame, pixel, target)
        if length % 2:
            yield b"\x00"
        return
    yield _ITEM_HEADER_UNDEFINED + _EMPTY_OFFSET_TABLE
    yield _item(encoded_first)
    for frame in rest:
        yield _item(encode_frame(frame, pixel, target))
    yield _SEQUENCE_DELIMITER


def _item(frame: bytes) -> bytes:
    # PS3.5 §A.4: one fragment per frame, padded to an even length.
    return b"".join(itemize_frame(frame, nr_fragments=1))


def _decoded_format(decoded: Dataset) -> PixelFormat:
    pixel = PixelFormat.of(decoded)
    if pixel.photometric_interpretation in _CONVERTED_TO_RGB:
        return replace(pixel, photometric_interpretation="RGB")
    return pixel


def _raw_size(pixel: PixelFormat) -> int:
    return pixel.rows * pixel.columns * pixel.samples_per_pixel * max(1, pixel.bits_allocated // 8)


def _output_header(header: Dataset, pixel: PixelFormat | None, target: str) -> Dataset:
    dataset = Dataset(header)
    for keyword in _ENCODING_ELEMENTS:
        if keyword in dataset:
            del dataset[keyword]
    if pixel is None:
        return dataset
    photometric = pixel.photometric_interpretation
    if target == _JPEG_BASELINE and pixel.colour:
        photometric = "YBR_FULL_422"
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = pixel.bits_allocated
    dataset.BitsStored = pixel.bits_stored
    dataset.HighBit = pixel.bits_stored - 1
    dataset.PixelRepresentation = pixel.pixel_representation
    dataset.SamplesPerPixel = pixel.samples_per_pixel
    if pixel.colour:
        dataset.PlanarConfiguration = 0
    elif "PlanarConfiguration" in dataset:
        del dataset.PlanarConfiguration
    return dataset


def _mark_lossy(dataset: Dataset, target: str, ratio: float) -> None:
    """PS3.3 §C.7.6.1.1.5: once lossy, always flagged; ratios and methods accumulate in order."""
    flagged = dataset.get("LossyImageCompression") == "01"
    ratios = _values(dataset, "LossyImageCompressionRatio") if flagged else []
    methods = _values(dataset, "LossyImageCompressionMethod") if flagged else []
    dataset.LossyImageCompression = "01"
    dataset.LossyImageCompressionRatio = [*ratios, f"{ratio:.2f}"[:16]]
    dataset.LossyImageCompressionMethod = [*methods, _LOSSY_METHOD[target]]
    description = f"Lossy compression {_LOSSY_METHOD[target]} ratio {ratio:.1f}:1"
    previous = str(dataset.get("DerivationDescription", ""))
    dataset.DerivationDescription = f"{previous}; {description}"[-1024:] if previous else description
    code = Dataset()
    code.CodeValue = "113040"  # CID 7203 "Lossy Compression" (PS3.16)
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Lossy Compression"
    dataset.DerivationCodeSequence = [*dataset.get("DerivationCodeSequence", []), code]


def _values(dataset: Dataset, keyword: str) -> list[object]:
    value = dataset.get(keyword)
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, MultiValue) else [value]


def _file_meta(header: Dataset, target: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = header.SOPClassUID
    meta.MediaStorageSOPInstanceUID = header.SOPInstanceUID
    meta.TransferSyntaxUID = PydicomUID(target)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _data_set_bytes(dataset: Dataset) -> bytes:
    """The data set as Explicit VR Little Endian bytes (deflation, when asked, wraps these)."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, dataset)
    return buffer.getvalue()


def _deflated(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """PS3.5 §A.5: the file meta stays as it is; everything after it is one raw deflate stream."""
    yield next(chunks)
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
    for chunk in chunks:
        if out := compressor.compress(chunk):
            yield out
    yield compressor.flush()


def _name(transfer_syntax_uid: str) -> str:
    return f"{PydicomUID(transfer_syntax_uid).name} ({transfer_syntax_uid})"
