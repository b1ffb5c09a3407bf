"""QIDO-RS: search for studies, series and instances (PS3.18 §10.6)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

import anyio.to_thread
import msgspec
from litestar import Request, Response, get
from litestar.di import Provide
from litestar.params import Parameter

from auth.policy import visible_studies
from auth.principals import Permission
from dicomweb.context import app_context, dicomweb_base, query_pairs
from dicomweb.media import DICOM_JSON, DICOM_XML, negotiate_metadata, xml_multipart
from dicomweb.openapi import MetadataOperation, dicom_json, problems
from dicomweb.security import principal_of, require
from storage.index.query import Level, parse_query

if TYPE_CHECKING:
    from storage.index.search import SearchResult

__all__ = ["QIDO_HANDLERS"]

_STUDY_UID: Final = "0020000D"
_SERIES_UID: Final = "0020000E"
_SOP_UID: Final = "00080018"
_RETRIEVE_URL: Final = "00081190"


def _documented_parameters(
    limit: str | None = Parameter(
        query="limit", required=False, description="Maximum number of results (PS3.18 §8.3.4.4)."
    ),
    offset: str | None = Parameter(query="offset", required=False, description="Results to skip, for paging."),
    includefield: list[str] | None = Parameter(
        query="includefield",
        required=False,
        description="Extra attributes to return: keywords or tags, comma separated, or 'all'. Repeatable.",
    ),
    fuzzymatching: str | None = Parameter(
        query="fuzzymatching", required=False, description="'true': also match a name component's prefix."
    ),
    patient_name: str | None = Parameter(
        query="PatientName", required=False, description="Wildcards * and ?; case and accents ignored."
    ),
    patient_id: str | None = Parameter(query="PatientID", required=False),
    study_date: str | None = Parameter(
        query="StudyDate", required=False, description="YYYYMMDD or a range A-B, -B, A-."
    ),
    accession_number: str | None = Parameter(query="AccessionNumber", required=False),
    modalities_in_study: str | None = Parameter(query="ModalitiesInStudy", required=False),
    study_instance_uid: str | None = Parameter(
        query="StudyInstanceUID", required=False, description="One UID or a comma-separated list."
    ),
) -> None:
    """Document the common query parameters in OpenAPI; values are read raw from the query string.

    Every DICOM attribute of PS3.18 §10.6.1.2 (by keyword or tag) is accepted as a matching key.
    """


_PARAMETERS: Final = {"matching_keys": Provide(_documented_parameters, sync_to_thread=False)}


async def _search(
    request: Request[Any, Any, Any], level: Level, study_uid: str | None = None, series_uid: str | None = None
) -> Response[bytes]:
    media_type = negotiate_metadata(request.headers.getall("accept", []))
    context = app_context(request)
    query = parse_query(level, query_pairs(request), study_uid=study_uid, series_uid=series_uid)
    policy = visible_studies(principal_of(request))
    if policy is not None:
        query = replace(query, extra_study_filters=policy)
    result: SearchResult = await anyio.to_thread.run_sync(
        lambda: context.archive.index.search(query, max_results=context.settings.max_results)
    )
    base = dicomweb_base(request)
    for row in result.rows:
        row[_RETRIEVE_URL] = {"vr": "UR", "Value": [_retrieve_url(base, level, row)]}
    warnings = []
    if query.unsupported_keys:
        names = ", ".join(query.unsupported_keys)
        warnings.append(
            f'299 webpacs "The following attributes are not supported for matching and were ignored: {names}"'
        )
    if result.truncated:
        warnings.append(
            '299 webpacs "The number of results exceeded the maximum supported by the server. '
            'Additional results can be requested."'
        )
    headers = {"Warning": ", ".join(warnings)} if warnings else None
    if media_type == DICOM_XML:
        body, content_type = await anyio.to_thread.run_sync(xml_multipart, result.rows)
        return Response(content=body, media_type=content_type, headers=headers)
    return Response(content=msgspec.json.encode(result.rows), media_type=media_type, headers=headers)


def _retrieve_url(base: str, level: Level, row: dict[str, Any]) -> str:
    study = _first(row, _STUDY_UID)
    if level is Level.STUDY:
        return f"{base}/studies/{study}"
    series = _first(row, _SERIES_UID)
    if level is Level.SERIES:
        return f"{base}/studies/{study}/series/{series}"
    return f"{base}/studies/{study}/series/{series}/instances/{_first(row, _SOP_UID)}"


def _first(row: dict[str, Any], tag: str) -> str:
    return str(row[tag]["Value"][0])


_read = require(Permission.READ)
_common: Final[dict[str, Any]] = {
    "guards": [_read],
    "dependencies": _PARAMETERS,
    "media_type": DICOM_JSON,
    "tags": ["QIDO-RS"],
    "operation_class": MetadataOperation,
    "responses": {
        200: dicom_json(
            "The matches, one DICOM JSON object each. A Warning header (299) says when matching keys "
            "were ignored or results were cut at the server's maximum."
        ),
        **problems(400, 401, 403, 406),
    },
}


@get("/dicomweb/studies", operation_id="SearchForStudies", summary="Search for studies", **_common)
async def search_for_studies(request: Request[Any, Any, Any], matching_keys: None) -> Response[bytes]:
    """QIDO-RS studies (PS3.18 §10.6.1, Table 10.6.1-2), newest first."""
    return await _search(request, Level.STUDY)


@get("/dicomweb/series", operation_id="SearchForAllSeries", summary="Search for series", **_common)
async def search_for_all_series(request: Request[Any, Any, Any], matching_keys: None) -> Response[bytes]:
    """QIDO-RS series across all studies."""
    return await _search(request, Level.SERIES)


@get(
    "/dicomweb/studies/{study:str}/series",
    operation_id="SearchForStudySeries",
    summary="Search for a study's series",
    **_common,
)
async def search_for_series(request: Request[Any, Any, Any], matching_keys: None, study: str) -> Response[bytes]:
    """QIDO-RS series of one study."""
    return await _search(request, Level.SERIES, study_uid=study)


@get("/dicomweb/instances", operation_id="SearchForAllInstances", summary="Search for instances", **_common)
async def search_for_all_instances(request: Request[Any, Any, Any], matching_keys: None) -> Response[bytes]:
    """QIDO-RS instances across all studies."""
    return await _search(request, Level.INSTANCE)


@get(
    "/dicomweb/studies/{study:str}/instances",
    operation_id="SearchForStudyInstances",
    summary="Search for a study's instances",
    **_common,
)
async def search_for_study_instances(
    request: Request[Any, Any, Any], matching_keys: None, study: str
) -> Response[bytes]:
    """QIDO-RS instances of one study."""
    return await _search(request, Level.INSTANCE, study_uid=study)


@get(
    "/dicomweb/studies/{study:str}/series/{series:str}/instances",
    operation_id="SearchForSeriesInstances",
    summary="Search for a series' instances",
    **_common,
)
async def search_for_instances(
    request: Request[Any, Any, Any], matching_keys: None, study: str, series: str
) -> Response[bytes]:
    """QIDO-RS instances of one series."""
    return await _search(request, Level.INSTANCE, study_uid=study, series_uid=series)


QIDO_HANDLERS: Final = [
    search_for_studies,
    search_for_all_series,
    search_for_series,
    search_for_all_instances,
    search_for_study_instances,
    search_for_instances,
]
