"""Rendered images of DICOM frames: JPEG, PNG or GIF for display (PS3.18 §8.3.5, §10.4.1.1.3).

The grayscale pipeline of PS3.3 §C.11 is applied: Modality LUT (rescale or LUT), then the VOI
transform (the window asked for, else the object's VOI LUT or first window, else the frame's range),
then MONOCHROME1 inversion; colour is shown as RGB (YBR is converted when decoding, PALETTE COLOR
through its lookup tables). Viewport cropping and scaling, annotation and encoding use Pillow.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

import numpy as np
from PIL import Image, ImageDraw
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi

from storage.dicom.media_types import RENDERED_MEDIA_TYPES
from storage.dicom.transcode import decoded_frames
from storage.errors import InvalidQuery, NotAcceptable

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from pathlib import Path

__all__ = [
    "RenderOptions",
    "Viewport",
    "Window",
    "render",
]

_PILLOW_FORMAT: Final[Mapping[str, str]] = MappingProxyType(
    dict(zip(RENDERED_MEDIA_TYPES, ("JPEG", "PNG", "GIF"), strict=True))
)
# PS3.18 §8.3.5.1.5: VOI LUT Function values of the window parameter.
_FUNCTIONS: Final = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
_ANNOTATIONS: Final = ("patient", "technique")
_DEFAULT_QUALITY: Final = 90
_MAX_VIEWPORT: Final = 8192
_GIF_FRAME_MS: Final = 100  # when the object gives no Frame Time (0018,1063)


@dataclass(frozen=True, slots=True)
class Window:
    """A VOI window (PS3.3 §C.11.2.1.2): center and width in modality units, and its function."""

    center: float
    width: float
    function: str = "LINEAR"


@dataclass(frozen=True, slots=True)
class Viewport:
    """PS3.18 §8.3.5.1.3: the output size, and the source region shown (negative size: flipped)."""

    width: int
    height: int
    region: tuple[float, float, float, float] | None = None  # sx, sy, sw, sh in source pixels


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """How to render: media type, JPEG quality, window, viewport, burnt-in annotation."""

    media_type: str = "image/jpeg"
    quality: int = _DEFAULT_QUALITY
    window: Window | None = None
    viewport: Viewport | None = None
    annotation: tuple[str, ...] = ()

    @classmethod
    def from_query(cls, media_type: str, params: Mapping[str, str]) -> RenderOptions:
        """Options from the PS3.18 §8.3.5.1 query parameters (`window`, `viewport`, `quality`, `annotation`).

        Raises:
            InvalidQuery: a value is malformed or out of range; the message shows the expected form.
        """
        return cls(
            media_type=media_type,
            quality=parse_quality(params.get("quality")),
            window=parse_window(params["window"]) if params.get("window") else None,
            viewport=parse_viewport(params["viewport"]) if params.get("viewport") else None,
            annotation=parse_annotation(params.get("annotation", "")),
        )

    @property
    def cache_key(self) -> str:
        """A stable text naming every option, for caches."""
        return repr(self)


def parse_quality(text: str | None) -> int:
    """PS3.18 §8.3.5.1.4: an integer 1..100.

    Raises:
        InvalidQuery: not an integer in range.
    """
    if text is None or text == "":
        return _DEFAULT_QUALITY
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 100:
        raise InvalidQuery(f"quality={text!r} must be a whole number from 1 to 100")
    return value


def parse_window(text: str) -> Window:
    """PS3.18 §8.3.5.1.5: `center,width,function` (function LINEAR, LINEAR_EXACT or SIGMOID).

    Raises:
        InvalidQuery: not three comma-separated values, a width below 1, or an unknown function.
    """
    parts = [part.strip() for part in text.split(",")]
    function = parts[2].upper() if len(parts) == 3 else ""
    try:
        center, width = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        center, width = math.nan, math.nan
    if len(parts) != 3 or not (math.isfinite(center) and math.isfinite(width)) or function not in _FUNCTIONS:
        raise InvalidQuery(f"window={text!r} must be center,width,function e.g. window=40,400,linear")
    if width < 1 or (function == "LINEAR_EXACT" and width <= 0):
        raise InvalidQuery(f"window={text!r}: the width must be at least 1 (PS3.3 §C.11.2.1.2)")
    return Window(center, width, function)


def parse_viewport(text: str) -> Viewport:
    """PS3.18 §8.3.5.1.3: `vw,vh` or `vw,vh,sx,sy,sw,sh` (sw, sh may be negative to flip).

    Raises:
        InvalidQuery: not 2 or 6 numbers, or a size out of range.
    """
    example = "viewport=512,512 or viewport=512,512,0,0,256,256"
    parts = [part.strip() for part in text.split(",")]
    try:
        numbers = [float(part) if part else math.nan for part in parts]
    except ValueError as exc:
        raise InvalidQuery(f"viewport={text!r} must be numbers: {example}") from exc
    if len(numbers) not in (2, 6) or not all(map(math.isfinite, numbers[:2])):
        raise InvalidQuery(f"viewport={text!r} must be vw,vh or vw,vh,sx,sy,sw,sh: {example}")
    width, height = int(numbers[0]), int(numbers[1])
    if not (1 <= width <= _MAX_VIEWPORT and 1 <= height <= _MAX_VIEWPORT):
        raise InvalidQuery(f"viewport={text!r}: vw and vh must be 1 to {_MAX_VIEWPORT} pixels")
    if len(numbers) == 2:
        return Viewport(width, height)
    sx, sy, sw, sh = (0.0 if math.isnan(value) else value for value in numbers[2:])
    if sw == 0 or sh == 0 or sx < 0 or sy < 0:
        raise InvalidQuery(f"viewport={text!r}: the region needs sx, sy >= 0 and non-zero sw, sh")
    return Viewport(width, height, (sx, sy, sw, sh))


def parse_annotation(text: str) -> tuple[str, ...]:
    """PS3.18 §8.3.5.1.1: a list of `patient`, `technique`.

    Raises:
        InvalidQuery: another value.
    """
    values = tuple(value.strip().lower() for value in text.split(",") if value.strip())
    unknown = [value for value in values if value not in _ANNOTATIONS]
    if unknown:
        raise InvalidQuery(f"annotation={text!r}: use patient and/or technique, not {', '.join(unknown)}")
    return values


def render(path: Path, indices: Sequence[int], options: RenderOptions) -> bytes:
    """Frames `indices` (0-based) of the instance at `path` as one image of `options.media_type`.

    Several frames make an animated GIF; JPEG and PNG show the first of them.

    Raises:
        NotAcceptable: the media type is not a rendered one, or the pixel data cannot be decoded.
    """
    if options.media_type not in _PILLOW_FORMAT:
        raise NotAcceptable(f"{options.media_type} is not a rendered media type; ask for one of {RENDERED_MEDIA_TYPES}")
    header = dcmread(path, stop_before_pixels=True)
    if "Rows" not in header:
        raise NotAcceptable("the instance has no image to render; retrieve it as application/dicom")
    shown = list(indices) if options.media_type == "image/gif" else list(indices)[:1]
    count = int(header.get("NumberOfFrames", 1) or 1)
    images = [
        _annotated(
            _viewported(Image.fromarray(_display_values(frame, header, options.window)), options.viewport),
            header,
            options,
            n,
            count,
        )
        for n, frame in zip(shown, decoded_frames(path, shown, Dataset()), strict=True)
    ]
    return _encode(images, options, header)


def _display_values(frame: np.ndarray, header: Dataset, asked: Window | None) -> np.ndarray:
    """8-bit display values: greyscale HxW or RGB HxWx3 (PS3.3 §C.11 pipeline).

    A window asked for replaces the object's own VOI transform (PS3.18 §8.3.5.1.5).
    """
    photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        return _to_8_bits(apply_color_lut(frame, header), _lut_bits(header))
    if frame.ndim == 3:
        return _to_8_bits(frame, int(header.get("BitsStored", 8)))
    values = apply_modality_lut(frame, header).astype(np.float64)
    window = asked or _object_window(header)
    if window is None and "VOILUTSequence" in header:
        lut_bits = int(header.VOILUTSequence[0].LUTDescriptor[2])
        display = _to_8_bits(apply_voi(values, header), lut_bits)
    else:
        display = _windowed(values, window or _full_range(values))
    if photometric == "MONOCHROME1":
        display = 255 - display  # PS3.3 §C.7.6.3.1.2: minimum sample is white
    return display


def _object_window(header: Dataset) -> Window | None:
    if "WindowCenter" not in header or "WindowWidth" not in header:
        return None
    center, width = header.WindowCenter, header.WindowWidth
    center = center[0] if not isinstance(center, float | int) else center
    width = width[0] if not isinstance(width, float | int) else width
    function = str(header.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    return Window(float(center), max(1.0, float(width)), function if function in _FUNCTIONS else "LINEAR")


def _full_range(values: np.ndarray) -> Window:
    low, high = float(values.min()), float(values.max())
    return Window((low + high + 1) / 2, max(1.0, high - low + 1), "LINEAR")


def _windowed(values: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 §C.11.2.1.2.1 (LINEAR), §C.11.2.1.3.1 (SIGMOID), §C.11.2.1.3.2 (LINEAR_EXACT) onto 0..255.

    Written out rather than pydicom's apply_windowing, which maps onto the input's bit range and
    would need a second rescale to reach display values.
    """
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        with np.errstate(over="ignore"):  # far below the center exp() overflows to inf: the output is 0
            out = 255.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    elif window.function == "LINEAR_EXACT":
        out = ((values - c) / w + 0.5) * 255.0
    else:
        out = ((values - (c - 0.5)) / (w - 1) + 0.5) * 255.0 if w > 1 else np.where(values > c - 0.5, 255.0, 0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _lut_bits(header: Dataset) -> int:
    descriptor = header.get("RedPaletteColorLookupTableDescriptor")
    return int(descriptor[2]) if descriptor is not None else 8


def _to_8_bits(values: np.ndarray, bits: int) -> np.ndarray:
    if bits <= 8:
        return values.astype(np.uint8)
    return (values.astype(np.uint32) * 255 // ((1 << bits) - 1)).astype(np.uint8)


def _viewported(image: Image.Image, viewport: Viewport | None) -> Image.Image:
    """Crop the region, flip for negative sizes, and fit into the viewport keeping the aspect ratio."""
    if viewport is None:
        return image
    if viewport.region is not None:
        sx, sy, sw, sh = viewport.region
        box = (int(sx), int(sy), int(sx + abs(sw)), int(sy + abs(sh)))
        box = (
            min(box[0], image.width - 1),
            min(box[1], image.height - 1),
            min(max(box[2], box[0] + 1), image.width),
            min(max(box[3], box[1] + 1), image.height),
        )
        image = image.crop(box)
        if sw < 0:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if sh < 0:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    scale = min(viewport.width / image.width, viewport.height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    resample = Image.Resampling.BILINEAR if scale >= 1 else Image.Resampling.BOX
    return image.resize(size, resample)


def _annotated(image: Image.Image, header: Dataset, options: RenderOptions, index: int, count: int) -> Image.Image:
    """PS3.18 §8.3.5.1.1: burn in patient and/or technique text, top left."""
    if not options.annotation:
        return image
    lines: list[str] = []
    if "patient" in options.annotation:
        lines.append(f"{header.get('PatientName', '')} {header.get('PatientID', '')}".strip())
    if "technique" in options.annotation:
        window = options.window or _object_window(header)
        technique = [str(header.get("Modality", "")), f"frame {index + 1}/{count}"]
        if window is not None:
            technique.append(f"C {window.center:g} W {window.width:g}")
        lines.append(" ".join(part for part in technique if part))
    image = image.convert("RGB") if image.mode not in ("L", "RGB") else image
    draw = ImageDraw.Draw(image)
    white = 255 if image.mode == "L" else (255, 255, 255)
    black = 0 if image.mode == "L" else (0, 0, 0)
    draw.multiline_text((4, 4), "\n".join(lines), fill=white, stroke_width=1, stroke_fill=black)
    return image


def _encode(images: Iterable[Image.Image], options: RenderOptions, header: Dataset) -> bytes:
    first, *rest = list(images)
    buffer = io.BytesIO()
    pillow_format = _PILLOW_FORMAT[options.media_type]
    if pillow_format == "JPEG":
        first.save(buffer, "JPEG", quality=options.quality)
    elif pillow_format == "PNG":
        first.save(buffer, "PNG", compress_level=1)  # speed over size: answers are made per request
    else:
        frame_time = float(header.get("FrameTime", _GIF_FRAME_MS) or _GIF_FRAME_MS)
        first.save(buffer, "GIF", save_all=bool(rest), append_images=rest, duration=round(frame_time), loop=0)
    return buffer.getvalue()
