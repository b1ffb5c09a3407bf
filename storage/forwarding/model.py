"""What forwarding is made of: conditions, destinations, job states, errors, back-off; no database writes."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from storage.dicom.media_types import TRANSFER_SYNTAXES
from storage.errors import ArchiveError, NotFound
from storage.index.forwarding import MAX_URL
from storage.index.models import normalize_person_name
from storage.index.nodes import get_node

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


__all__ = [
    "CONDITION_KEYS",
    "TRIGGERS",
    "Conditions",
    "Destination",
    "DuplicateRule",
    "ForwardingError",
    "InvalidRule",
    "JobConflict",
    "JobState",
    "RuleFields",
    "Subject",
    "Trigger",
    "parse_backoff",
]

Trigger = Literal["stored", "stable"]
TRIGGERS: Final = ("stored", "stable")
_MAX_PATTERNS: Final = 64


class ForwardingError(ArchiveError):
    """Base of the forwarding errors."""


class InvalidRule(ForwardingError):
    """A rule, destination or send request is not acceptable; the message names the field."""


class DuplicateRule(InvalidRule):
    """A rule of that name exists (names are unique)."""


class JobConflict(ForwardingError):
    """The job is not in a state that allows this (e.g. the caller's lease ran out, or it is running)."""


class JobState(StrEnum):
    """Where a job is in its life."""

    PENDING = "pending"  # waiting for its next attempt time
    RUNNING = "running"  # claimed by a bridge, under a lease
    DONE = "done"
    FAILED = "failed"  # every attempt failed
    CANCELLED = "cancelled"


# What a rule may match on: condition key -> what it is matched against.
CONDITION_KEYS: Final = {
    "calling_ae": "the AE title that sent the instance by C-STORE (Source AE Title, 0002,0016)",
    "modality": "Modality (0008,0060); for a stable study, any of ModalitiesInStudy",
    "referring_physician": "ReferringPhysicianName (0008,0090), case and accent insensitive",
    "institution": "InstitutionName (0008,0080)",
    "study_description": "StudyDescription (0008,1030)",
    "transfer_syntax": "the stored transfer syntax UID; for a stable study, any instance's",
}


def _pattern_matches(patterns: tuple[str, ...], value: str) -> bool:
    # DICOM wildcards (PS3.4 §C.2.2.2.4): * any run, ? one character; nothing else is special.
    folded = normalize_person_name(value)
    return any(fnmatch.fnmatchcase(folded, normalize_person_name(p).replace("[", "[[]")) for p in patterns)


def _parse_clock(text: str, where: str) -> time:
    try:
        return time.fromisoformat(text.strip())
    except ValueError as exc:
        msg = f"time_window {where!r}: write HH:MM-HH:MM, e.g. 20:00-06:00"
        raise InvalidRule(msg) from exc


@dataclass(frozen=True, slots=True)
class Subject:
    """What a rule is matched against: an instance just stored, or a study that became stable."""

    modalities: tuple[str, ...]
    referring_physician: str
    institution: str
    study_description: str
    transfer_syntaxes: tuple[str, ...]
    calling_ae: Callable[[], str]


@dataclass(frozen=True, slots=True)
class Conditions:
    """A rule's conditions: every given key must match (each a list of alternatives, wildcards allowed).

    `time_window` "HH:MM-HH:MM" (may wrap past midnight) in `time_zone` (IANA name, default UTC):
    the change must have happened inside it.
    """

    patterns: tuple[tuple[str, tuple[str, ...]], ...] = ()
    time_window: str = ""
    time_zone: str = "UTC"

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Conditions:
        """Validate conditions given as JSON.

        Raises:
            InvalidRule: an unknown key, a value that is not a list of strings, a bad window or zone.
        """
        patterns: list[tuple[str, tuple[str, ...]]] = []
        for key, value in data.items():
            if key in ("time_window", "time_zone"):
                continue
            if key not in CONDITION_KEYS:
                msg = f"condition {key!r} is unknown: use {', '.join(CONDITION_KEYS)}, time_window, time_zone"
                raise InvalidRule(msg)
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) and v and "\x00" not in v for v in value):
                msg = f"condition {key!r}: give a list of non-empty strings (wildcards * and ? allowed)"
                raise InvalidRule(msg)
            if len(value) > _MAX_PATTERNS:
                msg = f"condition {key!r} has {len(value)} values: at most {_MAX_PATTERNS}"
                raise InvalidRule(msg)
            if value:
                patterns.append((key, tuple(value)))
        window = data.get("time_window") or ""
        zone = data.get("time_zone") or "UTC"
        if not isinstance(window, str) or not isinstance(zone, str):
            msg = "time_window and time_zone are strings, e.g. '20:00-06:00' and 'Europe/Paris'"
            raise InvalidRule(msg)
        conditions = cls(tuple(sorted(patterns)), window.strip(), zone)
        conditions.window()
        conditions.zone()
        return conditions

    def to_mapping(self) -> dict[str, Any]:
        """The conditions as JSON (what `from_mapping` reads back)."""
        data: dict[str, Any] = {key: list(values) for key, values in self.patterns}
        if self.time_window:
            data["time_window"] = self.time_window
            data["time_zone"] = self.time_zone
        return data

    def window(self) -> tuple[time, time] | None:
        """The (start, end) of the time window, or None when there is none.

        Raises:
            InvalidRule: not HH:MM-HH:MM.
        """
        if not self.time_window:
            return None
        start, sep, end = self.time_window.partition("-")
        if not sep:
            msg = f"time_window {self.time_window!r}: write HH:MM-HH:MM, e.g. 20:00-06:00"
            raise InvalidRule(msg)
        return _parse_clock(start, self.time_window), _parse_clock(end, self.time_window)

    def zone(self) -> ZoneInfo:
        """The time zone of the window.

        Raises:
            InvalidRule: not an IANA time zone name.
        """
        try:
            return ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            msg = f"time_zone {self.time_zone!r} is unknown: use an IANA name such as UTC or Europe/Paris"
            raise InvalidRule(msg) from exc

    @property
    def needs_calling_ae(self) -> bool:
        """Whether matching reads the instance's Source AE Title (a read of the stored file)."""
        return any(key == "calling_ae" for key, _ in self.patterns)

    def matches(self, subject: Subject, at: datetime) -> bool:
        """Whether `subject`, changed at `at`, meets every condition."""
        window = self.window()
        if window is not None:
            clock = at.astimezone(self.zone()).time()
            start, end = window
            inside = start <= clock < end if start <= end else (clock >= start or clock < end)
            if not inside:
                return False
        return all(self._key_matches(key, values, subject) for key, values in self.patterns)

    @staticmethod
    def _key_matches(key: str, values: tuple[str, ...], subject: Subject) -> bool:
        if key == "modality":
            return any(_pattern_matches(values, m) for m in subject.modalities)
        if key == "transfer_syntax":
            return any(_pattern_matches(values, ts) for ts in subject.transfer_syntaxes)
        if key == "calling_ae":
            return _pattern_matches(values, subject.calling_ae())
        text = {
            "referring_physician": subject.referring_physician,
            "institution": subject.institution,
            "study_description": subject.study_description,
        }[key]
        return _pattern_matches(values, text)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a job goes: a registered AE title (C-STORE) or a STOW-RS endpoint, optionally transcoded.

    `dicomweb_url` is the DICOMweb service root (STOW-RS posts to `<url>/studies`); `dicomweb_token`
    is sent as a bearer token and never shown by the API.
    """

    ae_title: str | None = None
    dicomweb_url: str | None = None
    dicomweb_token: str | None = field(default=None, repr=False)
    transfer_syntax: str | None = None

    def validated(self, engine: Engine) -> Destination:
        """This destination with its AE title normalized.

        Raises:
            InvalidRule: neither or both of ae_title and dicomweb_url, an AE title not registered,
                a URL that is not http(s), a transfer syntax the archive does not know.
        """
        if (self.ae_title is None) == (self.dicomweb_url is None):
            msg = "give exactly one destination: ae_title (a registered DICOM node) or dicomweb_url"
            raise InvalidRule(msg)
        if self.transfer_syntax is not None and self.transfer_syntax not in TRANSFER_SYNTAXES:
            msg = f"transfer_syntax {self.transfer_syntax!r} is not one the archive can produce: see the README"
            raise InvalidRule(msg)
        if self.dicomweb_url is not None:
            parts = urlsplit(self.dicomweb_url)
            if parts.scheme not in ("http", "https") or not parts.netloc or len(self.dicomweb_url) > MAX_URL:
                msg = f"dicomweb_url {self.dicomweb_url!r}: give the http(s) URL of a DICOMweb service root"
                raise InvalidRule(msg)
            return Destination(None, self.dicomweb_url.rstrip("/"), self.dicomweb_token or None, self.transfer_syntax)
        try:
            node = get_node(engine, str(self.ae_title))
        except NotFound as exc:
            msg = f"ae_title {self.ae_title!r} is not a registered DICOM node: register it at /api/dicom-nodes"
            raise InvalidRule(msg) from exc
        return Destination(node.ae_title, None, None, self.transfer_syntax)

    def columns(self) -> dict[str, str | None]:
        """The destination columns of a rule or job row."""
        return {
            "ae_title": self.ae_title,
            "dicomweb_url": self.dicomweb_url,
            "dicomweb_token": self.dicomweb_token,
            "transfer_syntax": self.transfer_syntax,
        }


@dataclass(frozen=True, slots=True)
class RuleFields:
    """The writable fields of a rule (create, or replace with PUT)."""

    name: str
    trigger: str
    conditions: Conditions
    destination: Destination
    enabled: bool = True


def parse_backoff(text: str) -> tuple[timedelta, ...]:
    """Back-off delays from "3600,86400,172800,604800" (seconds, growing or equal).

    Raises:
        ValueError: not a comma-separated list of positive whole numbers.
    """
    try:
        delays = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        msg = f"{text!r}: give seconds separated by commas, e.g. 3600,86400,172800,604800"
        raise ValueError(msg) from exc
    if any(delay < 1 for delay in delays):
        msg = f"{text!r}: every delay must be at least 1 second"
        raise ValueError(msg)
    return tuple(timedelta(seconds=delay) for delay in delays)
