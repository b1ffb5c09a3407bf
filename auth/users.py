"""Local user accounts: create, change, authenticate, and turn into principals."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from auth.errors import DuplicateUser, InvalidCredentials, InvalidUser, UnknownRole, UnknownUser
from auth.models import User, aware
from auth.passwords import MIN_PASSWORD_LENGTH, hash_secret, needs_rehash, verify_secret
from auth.principals import Principal, PrincipalKind, Role, StudyFilter

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy import Engine

__all__ = ["FILTER_KEYWORDS", "UserInfo", "UserService", "parse_role", "parse_study_filter"]

# The seeds' per-user restriction: studies whose referring physician, institution, description or
# modality match one of the given values (wildcards * and ? as in QIDO).
FILTER_KEYWORDS: Final = ("ReferringPhysicianName", "InstitutionName", "StudyDescription", "ModalitiesInStudy")
_USERNAME: Final = re.compile(r"[A-Za-z0-9._@-]{1,128}")
_MAX_FILTER_VALUES: Final = 100
_table = User.__table__  # type: ignore[attr-defined]
# A hash to verify against when the user does not exist, so that a wrong user name takes as long
# as a wrong password (no user enumeration by timing).
_DUMMY_HASH: Final = hash_secret("no such user - timing equaliser")


@dataclass(frozen=True)
class UserInfo:
    """A user's public facts (never the password hash)."""

    id: int
    username: str
    role: Role
    study_filter: dict[str, list[str]]
    created_at: datetime
    disabled: bool
    last_login_at: datetime | None


def parse_role(role: str) -> Role:
    """The Role named `role`.

    Raises:
        UnknownRole: not one of the defined roles.
    """
    try:
        return Role(role)
    except ValueError as exc:
        allowed = ", ".join(r.value for r in Role)
        raise UnknownRole(f"role {role!r} is unknown; use one of: {allowed}") from exc


def parse_study_filter(raw: Mapping[str, Sequence[str]]) -> StudyFilter:
    """Check a study filter given as {keyword: [values]} and return it in canonical order.

    Raises:
        InvalidUser: an unknown keyword, an empty or oversized value list, or a non-text value.
    """
    pairs = []
    for keyword, values in raw.items():
        if keyword not in FILTER_KEYWORDS:
            raise InvalidUser(f"study filter on {keyword!r}: use one of {', '.join(FILTER_KEYWORDS)}")
        if isinstance(values, str) or not values or len(values) > _MAX_FILTER_VALUES:
            raise InvalidUser(f"study filter {keyword}: give a list of 1 to {_MAX_FILTER_VALUES} values")
        if not all(isinstance(v, str) and v.strip() and "\x00" not in v for v in values):
            raise InvalidUser(f"study filter {keyword}: every value must be non-empty text")
        pairs.append((keyword, tuple(v.strip() for v in values)))
    return tuple(sorted(pairs))


def _check_username(username: str) -> str:
    if not _USERNAME.fullmatch(username):
        raise InvalidUser(f"user name {username!r}: use 1-128 letters, digits or . _ @ -")
    return username


def _check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidUser(f"the password is too short: use at least {MIN_PASSWORD_LENGTH} characters")
    return password


class UserService:
    """Local users; principals are cached for `cache_seconds` (a change shows within that time)."""

    def __init__(self, engine: Engine, *, cache_seconds: float = 10.0) -> None:
        """Use the tables in `engine`'s database."""
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._cache: dict[int, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def create(
        self, username: str, password: str | None, role: str, study_filter: Mapping[str, Sequence[str]] | None = None
    ) -> UserInfo:
        """Add a user; `password` None makes an account that logs in only through OIDC.

        Raises:
            InvalidUser: a bad user name, password or filter, or the name is taken.
            UnknownRole: `role` is not defined.
        """
        row: dict[str, Any] = {
            "username": _check_username(username),
            "password_hash": None if password is None else hash_secret(_check_password(password)),
            "role": parse_role(role).value,
            "study_filter": _filter_json(parse_study_filter(study_filter or {})),
            "created_at": datetime.now(UTC),
        }
        try:
            with self._engine.begin() as connection:
                connection.execute(_table.insert().values(**row))
        except IntegrityError as exc:
            raise DuplicateUser(f"user {username!r} exists already; choose another name") from exc
        return self.get(username)

    def get(self, username: str) -> UserInfo:
        """One user's public facts.

        Raises:
            UnknownUser: no such user.
        """
        with self._engine.connect() as connection:
            row = connection.execute(select(_table).where(_table.c.username == username)).first()
        if row is None:
            raise UnknownUser(f"there is no user {username!r}")
        return _info(row)

    def list(self) -> list[UserInfo]:
        """Every user, by name."""
        with self._engine.connect() as connection:
            return [_info(row) for row in connection.execute(select(_table).order_by(_table.c.username))]

    def count(self) -> int:
        """How many users exist (the first admin is created when there are none)."""
        with self._engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(_table)).scalar_one())

    def update(
        self,
        username: str,
        *,
        password: str | None = None,
        role: str | None = None,
        study_filter: Mapping[str, Sequence[str]] | None = None,
        disabled: bool | None = None,
    ) -> UserInfo:
        """Change what is given; a disabled user can neither log in nor use a session or token.

        Raises:
            UnknownUser: no such user.
            InvalidUser: a bad password or filter.
            UnknownRole: `role` is not defined.
        """
        values: dict[str, Any] = {}
        if password is not None:
            values["password_hash"] = hash_secret(_check_password(password))
        if role is not None:
            values["role"] = parse_role(role).value
        if study_filter is not None:
            values["study_filter"] = _filter_json(parse_study_filter(study_filter))
        if disabled is not None:
            values["disabled_at"] = datetime.now(UTC) if disabled else None
        if values:
            with self._engine.begin() as connection:
                result = connection.execute(update(_table).where(_table.c.username == username).values(**values))
            if not result.rowcount:
                raise UnknownUser(f"there is no user {username!r}")
            self._forget()
        return self.get(username)

    def delete(self, username: str) -> None:
        """Remove a user with their sessions and personal tokens.

        Raises:
            UnknownUser: no such user.
        """
        with self._engine.begin() as connection:
            result = connection.execute(delete(_table).where(_table.c.username == username))
        if not result.rowcount:
            raise UnknownUser(f"there is no user {username!r}")
        self._forget()

    def authenticate(self, username: str, password: str) -> Principal:
        """The principal of a user who gave the right password.

        Raises:
            InvalidCredentials: unknown user, wrong password, disabled account or OIDC-only account
                (one message for all, so that the answer does not reveal which).
        """
        with self._engine.connect() as connection:
            row = connection.execute(select(_table).where(_table.c.username == username)).first()
        stored = row.password_hash if row is not None and row.password_hash else _DUMMY_HASH
        if not verify_secret(stored, password) or row is None or row.disabled_at is not None:
            raise InvalidCredentials("the user name or password is wrong, or the account is disabled")
        values: dict[str, Any] = {"last_login_at": datetime.now(UTC)}
        if needs_rehash(stored):
            values["password_hash"] = hash_secret(password)
        with self._engine.begin() as connection:
            connection.execute(update(_table).where(_table.c.id == row.id).values(**values))
        return _principal(row)

    def principal(self, user_id: int, kind: PrincipalKind = PrincipalKind.USER) -> Principal:
        """The current principal of a user (role and filter as they are now, cached briefly).

        Raises:
            InvalidCredentials: the user was deleted or disabled.
        """
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(user_id)
        if cached is None or cached[0] <= now:
            with self._engine.connect() as connection:
                row = connection.execute(select(_table).where(_table.c.id == user_id)).first()
            found = _principal(row) if row is not None and row.disabled_at is None else None
            cached = (now + self._cache_seconds, found)
            with self._lock:
                self._cache[user_id] = cached
        if cached[1] is None:
            raise InvalidCredentials("the account was deleted or disabled; ask an admin")
        return replace(cached[1], kind=kind)

    def cached(self, user_id: int, kind: PrincipalKind = PrincipalKind.USER) -> Principal | None:
        """What `principal` would return, when it is in memory and fresh; None otherwise (a gone user too).

        Memory only (no database), so it may run on an event loop.
        """
        with self._lock:
            cached = self._cache.get(user_id)
        if cached is None or cached[0] <= time.monotonic() or cached[1] is None:
            return None
        return replace(cached[1], kind=kind)

    def principal_by_name(self, username: str, role: Role, kind: PrincipalKind) -> Principal:
        """A principal for an identity-provider account: the local user of that name lends its filter."""
        try:
            user = self.get(username)
        except UnknownUser:
            return Principal(name=username, role=role, kind=kind)
        if user.disabled:
            raise InvalidCredentials(f"the account {username!r} is disabled here; ask an admin")
        return Principal(
            name=username, role=role, kind=kind, user_id=user.id, study_filter=parse_study_filter(user.study_filter)
        )

    def _forget(self) -> None:
        with self._lock:
            self._cache.clear()


def _filter_json(study_filter: StudyFilter) -> str:
    return json.dumps({keyword: list(values) for keyword, values in study_filter}, sort_keys=True)


def _info(row: Any) -> UserInfo:
    return UserInfo(
        id=row.id,
        username=row.username,
        role=Role(row.role),
        study_filter=json.loads(row.study_filter),
        created_at=aware(row.created_at),
        disabled=row.disabled_at is not None,
        last_login_at=None if row.last_login_at is None else aware(row.last_login_at),
    )


def _principal(row: Any) -> Principal:
    return Principal(
        name=row.username,
        role=Role(row.role),
        kind=PrincipalKind.USER,
        user_id=row.id,
        study_filter=parse_study_filter(json.loads(row.study_filter)),
    )
