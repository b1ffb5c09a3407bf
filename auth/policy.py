"""The access policy: the one place that says which studies a principal may see."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from auth.principals import Principal, StudyFilter

__all__ = ["visible_studies"]


def visible_studies(principal: Principal) -> StudyFilter | None:
    """The study-level constraints every query and retrieval of `principal` is ANDed with.

    None means every study. A user's study filter restricts to studies matching all of its keys
    (one of the values per key); a share-link session to its one study.
    """
    if not principal.restricted:
        return None
    constraints = principal.study_filter
    if principal.study_uid is not None:
        constraints = (*constraints, ("StudyInstanceUID", (principal.study_uid,)))
    return constraints
