"""Retention policies: what expires by StudyDate or reception, per modality; "keep" spares; dry run == real run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from storage.errors import NotFound
from storage.retention import (
    DuplicatePolicy,
    InvalidPolicy,
    PolicyFields,
    apply_retention,
    create_policy,
    delete_policy,
    expired_studies,
    is_kept,
    list_policies,
    set_keep,
)

if TYPE_CHECKING:
    from operations_archive import OperationsArchive


def expired_uids(ops: OperationsArchive, as_of: datetime | None = None) -> list[str]:
    return [study.study_uid for study in expired_studies(ops.engine, as_of=as_of or datetime.now(UTC))]


class TestPolicies:
    def test_a_created_policy_is_listed(self, ops: OperationsArchive) -> None:
        created = create_policy(ops.engine, PolicyFields("ct-10y", 3653, "study_date", "ct"))
        assert created.modality == "CT"
        assert list_policies(ops.engine) == [created]

    def test_a_name_is_used_once(self, ops: OperationsArchive) -> None:
        create_policy(ops.engine, PolicyFields("all", 365))
        with pytest.raises(DuplicatePolicy, match="'all'"):
            create_policy(ops.engine, PolicyFields("all", 30))

    @pytest.mark.parametrize(
        ("fields", "named"),
        [
            (PolicyFields("zero", 0), "max_age_days=0"),
            (PolicyFields("basis", 1, "yesterday"), "age_basis='yesterday'"),  # type: ignore[arg-type]
            (PolicyFields("modality", 1, "study_date", "C T"), "modality='C T'"),
        ],
    )
    def test_bad_fields_are_refused_by_name(self, ops: OperationsArchive, fields: PolicyFields, named: str) -> None:
        with pytest.raises(InvalidPolicy, match=named):
            create_policy(ops.engine, fields)

    def test_a_deleted_policy_is_gone(self, ops: OperationsArchive) -> None:
        policy = create_policy(ops.engine, PolicyFields("all", 365))
        delete_policy(ops.engine, policy.id)
        assert list_policies(ops.engine) == []
        with pytest.raises(NotFound):
            delete_policy(ops.engine, policy.id)


class TestWhatExpires:
    def test_studies_older_than_the_age_by_study_date_expire(self, ops: OperationsArchive) -> None:
        old, _ = ops.store_study(study_date="20000101")
        ops.store_study(study_date=datetime.now(UTC).strftime("%Y%m%d"))
        create_policy(ops.engine, PolicyFields("5y", 1826))
        assert expired_uids(ops) == [old]

    def test_a_modality_policy_spares_other_modalities(self, ops: OperationsArchive) -> None:
        ct, _ = ops.store_study(modality="CT", study_date="20000101")
        ops.store_study(modality="MR", study_date="20000101")
        create_policy(ops.engine, PolicyFields("ct", 365, "study_date", "CT"))
        assert expired_uids(ops) == [ct]

    def test_by_reception_the_study_date_does_not_matter(self, ops: OperationsArchive) -> None:
        study, _ = ops.store_study(study_date="20000101")
        create_policy(ops.engine, PolicyFields("received-30d", 30, "received"))
        assert expired_uids(ops) == []
        assert expired_uids(ops, datetime.now(UTC) + timedelta(days=31)) == [study]

    def test_a_study_flagged_keep_never_expires(self, ops: OperationsArchive) -> None:
        kept, _ = ops.store_study(study_date="20000101")
        other, _ = ops.store_study(study_date="20000101")
        set_keep(ops.engine, kept, keep=True, by="tests", reason="litigation")
        create_policy(ops.engine, PolicyFields("1y", 365))
        assert is_kept(ops.engine, kept)
        assert expired_uids(ops) == [other]
        set_keep(ops.engine, kept, keep=False)
        assert expired_uids(ops) == [kept, other]

    def test_a_disabled_policy_deletes_nothing(self, ops: OperationsArchive) -> None:
        ops.store_study(study_date="20000101")
        create_policy(ops.engine, PolicyFields("off", 365, enabled=False))
        assert expired_uids(ops) == []

    def test_keep_on_an_unknown_study_is_not_found(self, ops: OperationsArchive) -> None:
        with pytest.raises(NotFound, match=r"1\.2\.3\.4"):
            set_keep(ops.engine, "1.2.3.4", keep=True)


class TestRun:
    def test_the_dry_run_lists_exactly_what_the_real_run_deletes(self, ops: OperationsArchive) -> None:
        old_ct, _ = ops.store_study(modality="CT", study_date="19990101", instances=2)
        old_mr, _ = ops.store_study(modality="MR", study_date="20010101")
        kept, _ = ops.store_study(modality="CT", study_date="19990101")
        recent, _ = ops.store_study(modality="CT", study_date=datetime.now(UTC).strftime("%Y%m%d"))
        set_keep(ops.engine, kept, keep=True)
        create_policy(ops.engine, PolicyFields("ct-10y", 3653, "study_date", "CT"))
        create_policy(ops.engine, PolicyFields("all-20y", 7305))
        as_of = datetime.now(UTC)
        planned = apply_retention(ops.engine, ops.archive, dry_run=True, as_of=as_of)
        assert ops.archive.index.counts().studies == 4  # a dry run deletes nothing
        done = apply_retention(ops.engine, ops.archive, dry_run=False, as_of=as_of)
        assert done.studies == planned.studies
        assert [s.study_uid for s in done.studies] == [old_ct, old_mr]
        assert done.deleted_instances == 3
        for gone in (old_ct, old_mr):
            with pytest.raises(NotFound):
                ops.archive.instances(gone)
        assert {s.study_uid for s in planned.studies}.isdisjoint({kept, recent})
        assert ops.archive.index.counts().studies == 2

    def test_deleted_bytes_leave_the_store(self, ops: OperationsArchive) -> None:
        study, _ = ops.store_study(study_date="19990101")
        path = ops.blob_path(study)
        create_policy(ops.engine, PolicyFields("1y", 365))
        apply_retention(ops.engine, ops.archive, dry_run=False)
        assert not path.exists()
