"""Users, sessions, share links, the rate limiter and the audit log over a real database."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
import sqlalchemy
from joserfc import jwt
from joserfc.jwk import OctKey
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from auth.access import AccessControl
from auth.audit import Action, AuditQuery, AuditRecord, Outcome
from auth.errors import DuplicateUser, InvalidCredentials, InvalidToken, InvalidUser, TooManyAttempts, UnknownRole
from auth.principals import Permission, PrincipalKind, Role
from auth.rate_limit import FailureLimiter
from auth.share_links import Validity
from auth.tokens import TokenService

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

PASSWORD = "correct horse battery"


@pytest.fixture
def access(engine: Engine) -> AccessControl:
    return AccessControl.open(engine)


class TestUsers:
    def test_a_user_logs_in_with_the_right_password_only(self, access: AccessControl) -> None:
        access.users.create("alice", PASSWORD, "radiologist")
        principal = access.users.authenticate("alice", PASSWORD)
        assert (principal.name, principal.role, principal.kind) == ("alice", Role.RADIOLOGIST, PrincipalKind.USER)
        with pytest.raises(InvalidCredentials):
            access.users.authenticate("alice", PASSWORD + "!")
        with pytest.raises(InvalidCredentials):
            access.users.authenticate("nobody", PASSWORD)

    def test_passwords_are_stored_as_argon2_hashes(self, access: AccessControl, engine: Engine) -> None:
        access.users.create("bob", PASSWORD, "viewer")
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT password_hash FROM app_user")).scalar_one()
        assert stored.startswith("$argon2id$")
        assert PASSWORD not in stored

    @pytest.mark.parametrize(
        ("username", "password", "role", "error"),
        [
            ("carol", "short", "viewer", InvalidUser),
            ("bad name!", PASSWORD, "viewer", InvalidUser),
            ("carol", PASSWORD, "overlord", UnknownRole),
        ],
    )
    def test_bad_accounts_are_refused(
        self, access: AccessControl, username: str, password: str, role: str, error: type[Exception]
    ) -> None:
        with pytest.raises(error):
            access.users.create(username, password, role)
        assert access.users.count() == 0

    def test_a_name_is_taken_once(self, access: AccessControl) -> None:
        access.users.create("dave", PASSWORD, "viewer")
        with pytest.raises(DuplicateUser):
            access.users.create("dave", PASSWORD, "admin")

    def test_a_disabled_user_cannot_log_in(self, access: AccessControl) -> None:
        access.users.create("erin", PASSWORD, "viewer")
        access.users.update("erin", disabled=True)
        with pytest.raises(InvalidCredentials):
            access.users.authenticate("erin", PASSWORD)

    def test_an_unknown_filter_key_is_refused(self, access: AccessControl) -> None:
        with pytest.raises(InvalidUser, match="PatientName"):
            access.users.create("frank", PASSWORD, "viewer", {"PatientName": ["X*"]})


class TestSessions:
    def test_a_login_session_authenticates_as_its_user(self, access: AccessControl) -> None:
        user = access.users.create("gina", PASSWORD, "manager", {"InstitutionName": ["St. Mary*"]})
        session = access.sessions.login(user.id)
        principal = access.authenticate(session.access_token)
        assert principal.name == "gina"
        assert principal.may(Permission.DELETE)
        assert principal.study_filter == (("InstitutionName", ("St. Mary*",)),)

    def test_a_refresh_token_works_once(self, access: AccessControl) -> None:
        user = access.users.create("hank", PASSWORD, "viewer")
        first = access.sessions.login(user.id)
        assert first.refresh_token is not None
        user_id, second = access.sessions.refresh(first.refresh_token)
        assert user_id == user.id
        assert access.authenticate(second.access_token).name == "hank"
        with pytest.raises(InvalidCredentials):
            access.sessions.refresh(first.refresh_token)

    def test_tampered_foreign_and_unsigned_tokens_are_refused(self, access: AccessControl) -> None:
        user = access.users.create("ivy", PASSWORD, "admin")
        token = access.sessions.login(user.id).access_token
        header, payload, signature = token.split(".")
        forged = [
            f"{header}.{payload}.{signature[:-4]}AAAA",  # tampered signature
            jwt.encode(
                {"alg": "HS256"},
                {"iss": "webpacs", "aud": "webpacs", "sub": "1", "kind": "user", "exp": int(time.time()) + 60},
                OctKey.generate_key(256),
            ),  # wrong key
            "eyJhbGciOiJub25lIn0." + payload + ".",  # alg=none
        ]
        for candidate in forged:
            with pytest.raises(InvalidToken):
                access.authenticate(candidate)

    def test_an_expired_access_token_is_refused(self, access: AccessControl) -> None:
        user = access.users.create("jack", PASSWORD, "admin")
        token = access.sessions.issue_access("user", user.id, lifetime=timedelta(seconds=-1))
        with pytest.raises(InvalidToken):
            access.authenticate(token)

    def test_a_personal_token_acts_with_its_users_filter(self, access: AccessControl) -> None:
        user = access.users.create("kate", PASSWORD, "referring", {"ReferringPhysicianName": ["KATE^*"]})
        token = access.tokens.create("kate's script", "referring", user_id=user.id)
        principal = access.authenticate(token)
        assert principal.kind is PrincipalKind.TOKEN
        assert principal.study_filter == (("ReferringPhysicianName", ("KATE^*",)),)


class TestAnsweredFromMemory:
    def test_an_api_token_is_answered_from_memory_once_verified(self, access: AccessControl) -> None:
        token = access.tokens.create("script", "viewer")
        assert access.cached(token) is None
        assert access.cached(token) is None  # asking the memory verifies nothing
        principal = access.authenticate(token)
        assert access.cached(token) == principal

    def test_a_revoked_or_expired_entry_is_not_used(self, access: AccessControl, engine: Engine) -> None:
        token = access.tokens.create("script", "viewer")
        principal = access.authenticate(token)
        assert principal.token_id is not None
        access.tokens.revoke(principal.token_id)
        assert access.cached(token) is None
        briefly = replace(access, tokens=TokenService(engine, cache_seconds=0))
        other = briefly.tokens.create("other", "viewer")
        briefly.authenticate(other)
        assert briefly.cached(other) is None

    def test_a_personal_token_carries_its_users_filter_until_the_user_changes(self, access: AccessControl) -> None:
        user = access.users.create("lena", PASSWORD, "referring", {"ReferringPhysicianName": ["LENA^*"]})
        token = access.tokens.create("lena's script", "referring", user_id=user.id)
        principal = access.authenticate(token)
        assert access.cached(token) == principal
        assert principal.kind is PrincipalKind.TOKEN
        assert principal.study_filter == (("ReferringPhysicianName", ("LENA^*",)),)
        access.users.update("lena", disabled=True)
        assert access.cached(token) is None
        with pytest.raises(InvalidToken):
            access.authenticate(token)

    def test_session_tokens_always_take_the_full_check(self, access: AccessControl) -> None:
        user = access.users.create("mike", PASSWORD, "viewer")
        session = access.sessions.login(user.id)
        access.authenticate(session.access_token)
        assert access.cached(session.access_token) is None


class TestShareLinks:
    def test_a_link_opens_its_study_with_its_pin(self, access: AccessControl) -> None:
        token, info = access.share_links.create("1.2.3", "gina", Validity.ONE_DAY, pin="4711")
        assert info.expires_at is not None
        assert info.expires_at - datetime.now(UTC) > timedelta(hours=23)
        with pytest.raises(InvalidCredentials, match="PIN"):
            access.share_links.redeem(token)
        with pytest.raises(InvalidCredentials, match="PIN"):
            access.share_links.redeem(token, pin="0000")
        grant = access.share_links.redeem(token, pin="4711")
        session, _ = access.share_session(grant)
        principal = access.authenticate(session)
        assert (principal.kind, principal.study_uid, principal.role) == (PrincipalKind.SHARE, "1.2.3", Role.VIEWER)
        assert not principal.may(Permission.STORE)
        assert access.share_links.get(info.id).uses == 1

    def test_a_revoked_link_and_its_sessions_stop(self, access: AccessControl) -> None:
        token, info = access.share_links.create("1.2.4", "gina", Validity.NEVER)
        session, _ = access.share_session(access.share_links.redeem(token))
        access.share_links.revoke(info.id)
        with pytest.raises(InvalidCredentials):
            access.share_links.redeem(token)
        with pytest.raises(InvalidToken):
            access.authenticate(session)

    def test_an_expired_link_is_refused(self, access: AccessControl, engine: Engine) -> None:
        token, info = access.share_links.create("1.2.5", "gina", Validity.TWO_DAYS)
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE share_link SET expires_at = :past WHERE id = :id"),
                {"past": datetime.now(UTC) - timedelta(minutes=1), "id": info.id},
            )
        with pytest.raises(InvalidCredentials, match="expired"):
            access.share_links.redeem(token)

    def test_only_the_hash_of_a_link_is_stored(self, access: AccessControl, engine: Engine) -> None:
        token, _ = access.share_links.create("1.2.6", "gina", Validity.THIRTY_DAYS, birth_date="19700101")
        with engine.connect() as connection:
            row = connection.execute(text("SELECT * FROM share_link")).one()
        assert token not in str(tuple(row))
        assert "19700101" not in str(tuple(row))


class TestRateLimit:
    def test_failures_past_the_limit_are_refused_until_the_window_passes(self) -> None:
        limiter = FailureLimiter(max_failures=3, window_seconds=0.5)
        for _ in range(3):
            limiter.check("user:x")
            limiter.fail("user:x")
        with pytest.raises(TooManyAttempts) as refused:
            limiter.check("user:x")
        assert refused.value.retry_after >= 1
        limiter.check("user:y")  # other keys are not affected
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                limiter.check("user:x")
                break
            except TooManyAttempts:
                time.sleep(0.05)
        else:
            pytest.fail("the window never passed")


class TestAuditLog:
    def test_events_are_searchable_and_exportable(self, access: AccessControl) -> None:
        for action in (Action.LOGIN, Action.VIEW, Action.VIEW):
            access.audit.record(
                AuditRecord("user", "gina", action, Outcome.SUCCESS, study_uid="1.2.3", source="10.0.0.1")
            )
        views = access.audit.search(AuditQuery(action=Action.VIEW))
        assert [(event["actor"], event["study_uid"], event["source"]) for event in views] == [
            ("gina", "1.2.3", "10.0.0.1")
        ] * 2
        lines = list(access.audit.export(AuditQuery(actor="gina")))
        assert len(lines) == 3
        assert lines[0].startswith(b"{") and b'"action": "login"' in lines[0]

    def test_events_recorded_one_after_another_share_a_transaction(self, access: AccessControl, engine: Engine) -> None:
        commits: list[object] = []

        def count(connection: object) -> None:
            commits.append(connection)

        sqlalchemy.event.listen(engine, "commit", count)
        try:
            for number in range(5):
                access.audit.record(AuditRecord("user", "gina", Action.VIEW, Outcome.SUCCESS, detail=str(number)))
                time.sleep(0.02)  # a client's next request, after the writer woke for the previous event
            access.audit.flush()
        finally:
            sqlalchemy.event.remove(engine, "commit", count)
        assert len(access.audit.search(AuditQuery(limit=50))) == 5
        # Written as they came, each event would be a transaction of its own.
        assert 1 <= len(commits) < 5

    @pytest.mark.parametrize("statement", ["UPDATE audit_event SET actor = 'mallory'", "DELETE FROM audit_event"])
    def test_the_database_refuses_to_rewrite_history(
        self, access: AccessControl, engine: Engine, statement: str
    ) -> None:
        access.audit.record(AuditRecord("user", "gina", Action.DELETE, Outcome.SUCCESS))
        access.audit.flush()
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement))
        assert access.audit.search(AuditQuery())[0]["actor"] == "gina"
