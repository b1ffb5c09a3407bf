"""Share links: read-only access to one study for an EHR or a patient, with an optional second factor.

The link carries a 256-bit random token (only its SHA-256 is stored); redeeming it, with the PIN or
the patient's birth date when the link asks for one, yields a short session limited to that study.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import select, update

from auth.errors import InvalidCredentials, InvalidUser, UnknownShareLink
from auth.models import ShareLink, aware
from auth.passwords import hash_secret, verify_secret

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["ShareLinkGrant", "ShareLinkInfo", "ShareLinkService", "Validity"]

_TOKEN_PREFIX: Final = "wps_"  # noqa: S105 - a recognisable prefix, not a secret
_MIN_PIN_LENGTH: Final = 4
_table = ShareLink.__table__  # type: ignore[attr-defined]


class Validity(StrEnum):
    """How long a share link works."""

    ONE_DAY = "1d"
    TWO_DAYS = "2d"
    THIRTY_DAYS = "30d"
    NEVER = "never"

    @property
    def lifetime(self) -> timedelta | None:
        """The link's lifetime; None for a link that never expires."""
        return None if self is Validity.NEVER else timedelta(days=int(self.value[:-1]))


@dataclass(frozen=True)
class ShareLinkInfo:
    """A link's public facts (never its token or second factor)."""

    id: int
    study_uid: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    has_pin: bool
    requires_birth_date: bool
    last_used_at: datetime | None
    uses: int


@dataclass(frozen=True)
class ShareLinkGrant:
    """A redeemed link: the one study it opens, until when."""

    link_id: int
    study_uid: str
    expires_at: datetime | None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ShareLinkService:
    """Create, list, revoke and redeem share links; `is_active` is cached for `cache_seconds`."""

    def __init__(self, engine: Engine, *, cache_seconds: float = 10.0) -> None:
        """Use the tables in `engine`'s database."""
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._active: dict[int, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def create(
        self,
        study_uid: str,
        created_by: str,
        validity: Validity,
        *,
        pin: str | None = None,
        birth_date: str | None = None,
    ) -> tuple[str, ShareLinkInfo]:
        """A new link for `study_uid`: (the token, shown once; its facts).

        Args:
            study_uid: the study the link opens.
            created_by: who made it, for the audit trail and the study's link list.
            validity: how long it works.
            pin: a second factor the holder must type, or None.
            birth_date: the patient's birth date (YYYYMMDD) the holder must type, or None.

        Raises:
            InvalidUser: the PIN is too short or the birth date malformed.
        """
        if pin is not None and (len(pin) < _MIN_PIN_LENGTH or not pin.isprintable()):
            raise InvalidUser(f"a PIN needs at least {_MIN_PIN_LENGTH} printable characters")
        if birth_date is not None and not (len(birth_date) == 8 and birth_date.isdigit()):
            raise InvalidUser("the patient's birth date must be YYYYMMDD to be used as a second factor")
        token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        lifetime = validity.lifetime
        with self._engine.begin() as connection:
            link_id = connection.execute(
                _table.insert()
                .values(
                    token_hash=_digest(token),
                    study_uid=study_uid,
                    created_by=created_by,
                    created_at=now,
                    expires_at=None if lifetime is None else now + lifetime,
                    pin_hash=None if pin is None else hash_secret(pin),
                    birth_date_hash=None if birth_date is None else hash_secret(birth_date),
                )
                .returning(_table.c.id)
            ).scalar_one()
        return token, self.get(link_id)

    def get(self, link_id: int) -> ShareLinkInfo:
        """One link's facts.

        Raises:
            UnknownShareLink: no such link.
        """
        with self._engine.connect() as connection:
            row = connection.execute(select(_table).where(_table.c.id == link_id)).first()
        if row is None:
            raise UnknownShareLink(f"there is no share link {link_id}")
        return _info(row)

    def list(self, study_uid: str | None = None) -> list[ShareLinkInfo]:
        """The links of one study (or all), newest first."""
        query = select(_table).order_by(_table.c.id.desc())
        if study_uid is not None:
            query = query.where(_table.c.study_uid == study_uid)
        with self._engine.connect() as connection:
            return [_info(row) for row in connection.execute(query)]

    def revoke(self, link_id: int) -> ShareLinkInfo:
        """Stop a link from working, at once for new redemptions and within the cache period for sessions.

        Raises:
            UnknownShareLink: no such link.
        """
        with self._engine.begin() as connection:
            connection.execute(
                update(_table)
                .where(_table.c.id == link_id, _table.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        with self._lock:
            self._active.pop(link_id, None)
        return self.get(link_id)

    def challenge(self, token: str) -> ShareLinkInfo:
        """The facts of a live link (which second factor it asks for), before redeeming it.

        Raises:
            InvalidCredentials: unknown, revoked or expired link.
        """
        return _info(self._live_row(token))

    def redeem(self, token: str, *, pin: str | None = None, birth_date: str | None = None) -> ShareLinkGrant:
        """Check a link and its second factor, count the use, and say which study it opens.

        Raises:
            InvalidCredentials: unknown, revoked or expired link, or a wrong or missing second factor.
        """
        row = self._live_row(token)
        if row.pin_hash is not None and not verify_secret(row.pin_hash, pin or ""):
            raise InvalidCredentials("the PIN is missing or wrong")
        if row.birth_date_hash is not None and not verify_secret(row.birth_date_hash, birth_date or ""):
            raise InvalidCredentials("the patient's birth date is missing or wrong (YYYYMMDD)")
        with self._engine.begin() as connection:
            connection.execute(
                update(_table)
                .where(_table.c.id == row.id)
                .values(uses=_table.c.uses + 1, last_used_at=datetime.now(UTC))
            )
        return ShareLinkGrant(row.id, row.study_uid, None if row.expires_at is None else aware(row.expires_at))

    def _live_row(self, token: str) -> Any:
        with self._engine.connect() as connection:
            row = connection.execute(select(_table).where(_table.c.token_hash == _digest(token))).first()
        if row is None:
            raise InvalidCredentials("this share link does not exist; ask its sender for a new one")
        if not _live(row):
            raise InvalidCredentials("this share link was revoked or has expired; ask its sender for a new one")
        return row

    def is_active(self, link_id: int) -> bool:
        """Whether a link still works (sessions from it stop within the cache period of a revocation)."""
        now = time.monotonic()
        with self._lock:
            cached = self._active.get(link_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        with self._engine.connect() as connection:
            row = connection.execute(select(_table).where(_table.c.id == link_id)).first()
        active = row is not None and _live(row)
        with self._lock:
            self._active[link_id] = (now + self._cache_seconds, active)
        return active


def _live(row: Any) -> bool:
    return row.revoked_at is None and (row.expires_at is None or aware(row.expires_at) > datetime.now(UTC))


def _info(row: Any) -> ShareLinkInfo:
    return ShareLinkInfo(
        id=row.id,
        study_uid=row.study_uid,
        created_by=row.created_by,
        created_at=aware(row.created_at),
        expires_at=None if row.expires_at is None else aware(row.expires_at),
        revoked_at=None if row.revoked_at is None else aware(row.revoked_at),
        has_pin=row.pin_hash is not None,
        requires_birth_date=row.birth_date_hash is not None,
        last_used_at=None if row.last_used_at is None else aware(row.last_used_at),
        uses=row.uses,
    )
