"""Share links for EHRs and patients (`/api/share-links`): create, list, revoke, and redeem.

A link opens one study read-only. An EHR knows the study by its AccessionNumber, so either key may
name it. The second factor (a PIN, or the patient's birth date) is checked on redemption, and
failures are rate-limited per link and per client address. Every step is audited.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Any, Final

import anyio.to_thread
import msgspec
from litestar import Request, delete, get, post
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import KwargDefinition, Parameter

from auth.audit import Action, Outcome
from auth.errors import InvalidCredentials, TooManyAttempts
from auth.policy import visible_studies
from auth.principals import Permission, Principal
from auth.share_links import ShareLinkInfo, Validity
from dicomweb.audit_trail import audit, client_address
from dicomweb.context import app_context
from dicomweb.openapi import PublicOperation, problems
from dicomweb.security import principal_of, require, unrestricted
from storage.index.query import Level, parse_query

__all__ = ["SHARE_LINK_HANDLERS", "SHARE_PAGE_PATH"]

SHARE_PAGE_PATH: Final = "/share"  # the UI's landing page: {base}/share/{token}
_MAX_ID: Final = 2**31 - 1
_UID: Final = r"^[0-9]+(\.[0-9]+)*$"
_BIRTH_DATE_TAG: Final = "00100030"
_STUDY_UID_TAG: Final = "0020000D"
_Token = Annotated[str, msgspec.Meta(min_length=8, max_length=200), KwargDefinition(min_length=8, max_length=200)]
_Short = Annotated[str, msgspec.Meta(min_length=1, max_length=64), KwargDefinition(min_length=1, max_length=64)]


@dataclass(frozen=True)
class ShareLinkIn:
    """A study to share, for how long, and an optional second factor.

    Name the study by StudyInstanceUID, or by AccessionNumber as an EHR knows it. The second factor
    is a PIN, or the patient's birth date as recorded in the study.
    """

    validity: Validity
    study_uid: Annotated[str, msgspec.Meta(pattern=_UID, max_length=64), KwargDefinition(pattern=_UID)] | None = None
    accession_number: _Short | None = None
    pin: Annotated[str, msgspec.Meta(min_length=4, max_length=64), KwargDefinition(min_length=4)] | None = None
    require_birth_date: bool = False


@dataclass(frozen=True)
class ShareLinkOut(ShareLinkInfo):
    """A share link's facts; `url` (with the token) only in the answer that created it."""

    url: str | None = None


@dataclass(frozen=True)
class RedeemRequest:
    """A link's token and, when it asks for one, its second factor."""

    token: _Token
    pin: _Short | None = None
    birth_date: _Short | None = None


@dataclass(frozen=True)
class Challenge:
    """What a live link asks for before it opens."""

    has_pin: bool
    requires_birth_date: bool


@dataclass(frozen=True)
class ShareSession:
    """A bearer token for read-only DICOMweb on one study."""

    access_token: str
    study_uid: str
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 - RFC 6750's token type, not a secret


def _out(info: ShareLinkInfo, url: str | None = None) -> ShareLinkOut:
    return ShareLinkOut(**asdict(info), url=url)


async def _find_study(request: Request[Any, Any, Any], principal: Principal, data: ShareLinkIn) -> tuple[str, str]:
    """(study UID, patient birth date) of the study to share, as the principal may see it."""
    if (data.study_uid is None) == (data.accession_number is None):
        raise ValidationException("name the study by exactly one of study_uid or accession_number")
    key = ("StudyInstanceUID", data.study_uid) if data.study_uid else ("AccessionNumber", data.accession_number or "")
    query = parse_query(Level.STUDY, [key, ("includefield", "PatientBirthDate")])
    query = replace(query, extra_study_filters=visible_studies(principal) or (), limit=2)
    context = app_context(request)
    rows = (await anyio.to_thread.run_sync(lambda: context.archive.index.search(query, max_results=2))).rows
    if not rows:
        raise NotFoundException(f"there is no study with {key[0]} {key[1]!r}")
    if len(rows) > 1:
        raise ValidationException(f"several studies have {key[0]} {key[1]!r}; share by study_uid")
    birth_date = rows[0].get(_BIRTH_DATE_TAG, {}).get("Value", [""])[0]
    return str(rows[0][_STUDY_UID_TAG]["Value"][0]), str(birth_date)


def _page_url(request: Request[Any, Any, Any], token: str) -> str:
    public = app_context(request).settings.public_url
    base = public.rstrip("/") if public else str(request.base_url).rstrip("/")
    return f"{base}{SHARE_PAGE_PATH}/{token}"


_sharing: Final[dict[str, Any]] = {"tags": ["share links"], "guards": [require(Permission.SHARE)]}


@post(
    "/api/share-links",
    operation_id="CreateShareLink",
    summary="Share a study",
    responses=problems(400, 401, 403, 404),
    **_sharing,
)
async def create_share_link(request: Request[Any, Any, Any], data: ShareLinkIn) -> ShareLinkOut:
    """Create a link that opens one study read-only; its URL (with the token) is shown only here."""
    principal = principal_of(request)
    study_uid, birth_date = await _find_study(request, principal, data)
    if data.require_birth_date and not birth_date:
        raise ValidationException("the study records no PatientBirthDate: use a PIN as the second factor")
    links = app_context(request).access.share_links
    token, info = await anyio.to_thread.run_sync(
        lambda: links.create(
            study_uid,
            principal.name,
            data.validity,
            pin=data.pin,
            birth_date=birth_date if data.require_birth_date else None,
        )
    )
    audit(request, Action.SHARE, Outcome.SUCCESS, study_uid=study_uid, detail=f"link {info.id}, {data.validity}")
    return _out(info, _page_url(request, token))


@get(
    "/api/share-links",
    operation_id="ListShareLinks",
    summary="List share links",
    responses=problems(400, 401, 403, 404),
    **_sharing,
)
async def list_share_links(
    request: Request[Any, Any, Any],
    study_uid: Annotated[str | None, Parameter(query="study_uid", pattern=_UID, max_length=64)] = None,
) -> list[ShareLinkOut]:
    """The links of one study (any principal who may see it), or of every study (unfiltered principals)."""
    principal = principal_of(request)
    if study_uid is None:
        await unrestricted(request, request.route_handler)
    else:
        await _check_visible(request, principal, study_uid)
    links = app_context(request).access.share_links
    return [_out(info) for info in await anyio.to_thread.run_sync(links.list, study_uid)]


async def _check_visible(request: Request[Any, Any, Any], principal: Principal, study_uid: str) -> None:
    policy = visible_studies(principal)
    if policy is not None and not await app_context(request).visible_studies.allows(policy, study_uid):
        raise NotFoundException(f"there is no study {study_uid}")


@delete(
    "/api/share-links/{link_id:int}",
    operation_id="RevokeShareLink",
    summary="Revoke a share link",
    status_code=200,
    responses=problems(400, 401, 403, 404),
    **_sharing,
)
async def revoke_share_link(
    request: Request[Any, Any, Any], link_id: Annotated[int, Parameter(ge=1, le=_MAX_ID)]
) -> ShareLinkOut:
    """Revoke a link: it stops opening at once, and sessions from it end within seconds."""
    links = app_context(request).access.share_links
    info = await anyio.to_thread.run_sync(links.get, link_id)
    await _check_visible(request, principal_of(request), info.study_uid)
    info = await anyio.to_thread.run_sync(links.revoke, link_id)
    audit(request, Action.SHARE_REVOKE, Outcome.SUCCESS, study_uid=info.study_uid, detail=f"link {link_id}")
    return _out(info)


def _link_key(token: str) -> str:
    return "link:" + hashlib.sha256(token.encode()).hexdigest()[:32]


_public: Final[dict[str, Any]] = {
    "tags": ["share links"],
    "operation_class": PublicOperation,
    "exclude_from_auth": True,
}


@post(
    "/api/share-links/challenge",
    operation_id="ShareLinkChallenge",
    summary="What a share link asks for",
    status_code=200,
    responses=problems(400, 401, 429),
    **_public,
)
async def share_link_challenge(request: Request[Any, Any, Any], data: RedeemRequest) -> Challenge:
    """Whether a live link asks for a PIN or the patient's birth date (public: the token is the key)."""
    access = app_context(request).access
    address = client_address(request.scope)
    info = await anyio.to_thread.run_sync(
        lambda: access.attempt(_link_key(data.token), address, lambda: access.share_links.challenge(data.token))
    )
    return Challenge(info.has_pin, info.requires_birth_date)


@post(
    "/api/share-links/redeem",
    operation_id="RedeemShareLink",
    summary="Open a share link",
    status_code=200,
    responses=problems(400, 401, 429),
    **_public,
)
async def redeem_share_link(request: Request[Any, Any, Any], data: RedeemRequest) -> ShareSession:
    """Trade a link's token (and second factor) for a read-only session on its one study (public)."""
    access = app_context(request).access
    address = client_address(request.scope)
    holder = ("share", "share-link-holder")
    try:
        grant = await anyio.to_thread.run_sync(
            lambda: access.attempt(
                _link_key(data.token),
                address,
                lambda: access.share_links.redeem(data.token, pin=data.pin, birth_date=data.birth_date),
            )
        )
    except TooManyAttempts:
        audit(request, Action.SHARE_USE, Outcome.DENIED, actor=holder, detail="rate limited")
        raise
    except InvalidCredentials as exc:
        audit(request, Action.SHARE_USE, Outcome.FAILURE, actor=holder, detail=str(exc))
        raise
    token, lifetime = access.share_session(grant)
    audit(
        request,
        Action.SHARE_USE,
        Outcome.SUCCESS,
        study_uid=grant.study_uid,
        actor=("share", f"share-link-{grant.link_id}"),
    )
    return ShareSession(access_token=token, study_uid=grant.study_uid, expires_in=lifetime)


SHARE_LINK_HANDLERS: Final = [
    create_share_link,
    list_share_links,
    revoke_share_link,
    share_link_challenge,
    redeem_share_link,
]
