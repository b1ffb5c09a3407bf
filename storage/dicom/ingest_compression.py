"""The compression policy on ingest: which received instances are re-encoded, and into what.

Off unless configured. Rules are tried in order; the first that matches an instance names the transfer
syntax it is stored in. A rule matches on the Modality (0008,0060) or on the sending AE, which
Part-10 files carry as Source Application Entity Title (0002,0016, PS3.10 §7.1), or matches all:

    modality:CT=1.2.840.10008.1.2.4.80, source:US_ROOM_2=1.2.840.10008.1.2.4.201, *=1.2.840.10008.1.2.4.90

Only uncompressed instances are re-encoded (compressed ones are kept as received: re-encoding
gains little and may lose more). A lossless target keeps every pixel value bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from pydicom.filereader import read_file_meta_info

from storage.dicom.media_types import TRANSFER_SYNTAXES
from storage.dicom.transcode import ENCODABLE, can_encode

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["ORIGINALS_PREFIX", "CompressionPolicy", "CompressionRule", "source_ae_title"]

ORIGINALS_PREFIX: Final = "originals/"
"""Blob keys of kept originals: this prefix, then the key of the compressed instance they became."""

_NATIVE_SOURCES: Final = frozenset(uid for uid, row in TRANSFER_SYNTAXES.items() if row.native)
_EXAMPLE: Final = "modality:CT=1.2.840.10008.1.2.4.80,*=1.2.840.10008.1.2.4.90"


@dataclass(frozen=True, slots=True)
class CompressionRule:
    """Instances matching `kind`/`value` are stored in `transfer_syntax`."""

    kind: Literal["modality", "source", "any"]
    value: str
    transfer_syntax: str

    def matches(self, modality: str, source_ae: str) -> bool:
        """Whether an instance of `modality` sent by `source_ae` falls under this rule."""
        if self.kind == "any":
            return True
        return (modality if self.kind == "modality" else source_ae).strip().upper() == self.value


@dataclass(frozen=True, slots=True)
class CompressionPolicy:
    """Ordered rules, and whether the received original is kept beside the compressed instance."""

    rules: tuple[CompressionRule, ...] = ()
    keep_original: bool = False

    @classmethod
    def parse(cls, text: str, *, keep_original: bool = False) -> CompressionPolicy:
        """Rules from `kind:value=uid` items separated by commas (`*=uid` matches all).

        Raises:
            ValueError: a rule is malformed or names a syntax the archive cannot encode; the message
                names it and shows the form.
        """
        rules = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            condition, _, uid = item.partition("=")
            kind, _, value = condition.strip().partition(":")
            uid = uid.strip()
            if uid not in ENCODABLE:
                raise ValueError(
                    f"rule {item!r}: {uid!r} is not a transfer syntax the archive encodes; e.g. {_EXAMPLE}"
                )
            if kind.strip() == "*" and not value:
                rules.append(CompressionRule("any", "", uid))
            elif kind.strip() in ("modality", "source") and value.strip():
                rules.append(CompressionRule(kind.strip(), value.strip().upper(), uid))  # type: ignore[arg-type]
            else:
                raise ValueError(f"rule {item!r}: write modality:CT=<uid>, source:<AE title>=<uid> or *=<uid>")
        return cls(tuple(rules), keep_original)

    def target(
        self, *, transfer_syntax: str, modality: str, source_ae: str, bits_allocated: int | None, has_pixels: bool
    ) -> str | None:
        """The syntax to store a received instance in, or None to store it as received."""
        if not has_pixels or transfer_syntax not in _NATIVE_SOURCES:
            return None
        for rule in self.rules:
            if rule.matches(modality, source_ae):
                if rule.transfer_syntax == transfer_syntax or not can_encode(rule.transfer_syntax, bits_allocated):
                    return None
                return rule.transfer_syntax
        return None


def source_ae_title(path: Path) -> str:
    """The Source Application Entity Title of a Part-10 file's meta information ('' when absent)."""
    return str(read_file_meta_info(path).get("SourceApplicationEntityTitle", "") or "").strip()
