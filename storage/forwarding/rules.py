"""Forwarding rules: create, list, replace, delete (the `forwarding_rule` table)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col
from sqlmodel import select as select_model

from storage.errors import NotFound
from storage.forwarding.model import (
    TRIGGERS,
    Conditions,
    Destination,
    DuplicateRule,
    InvalidRule,
    RuleFields,
)
from storage.index.database import write_transaction
from storage.index.forwarding import (
    ForwardingJob,
    ForwardingRule,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


__all__ = ["create_rule", "delete_rule", "get_rule", "list_rules", "rule_conditions", "rule_destination", "update_rule"]


def rule_conditions(rule: ForwardingRule) -> Conditions:
    """A stored rule's conditions."""
    return Conditions.from_mapping(json.loads(rule.conditions))


def rule_destination(row: ForwardingRule | ForwardingJob) -> Destination:
    """A stored rule's or job's destination."""
    return Destination(row.ae_title, row.dicomweb_url, row.dicomweb_token, row.transfer_syntax)


def _rule_values(engine: Engine, fields: RuleFields) -> dict[str, Any]:
    name = fields.name.strip()
    if not name or len(name) > 200 or "\x00" in name:
        msg = f"rule name {fields.name!r}: give 1 to 200 characters"
        raise InvalidRule(msg)
    if fields.trigger not in TRIGGERS:
        msg = f"trigger {fields.trigger!r}: use 'stored' (each instance) or 'stable' (a study that went quiet)"
        raise InvalidRule(msg)
    return {
        "name": name,
        "trigger": fields.trigger,
        "enabled": fields.enabled,
        "conditions": json.dumps(fields.conditions.to_mapping(), sort_keys=True),
        **fields.destination.validated(engine).columns(),
    }


def _find_rule(session: Session, rule_id: int) -> ForwardingRule:
    rule = session.get(ForwardingRule, rule_id)
    if rule is None:
        msg = f"there is no forwarding rule {rule_id}"
        raise NotFound(msg)
    return rule


def list_rules(engine: Engine) -> list[ForwardingRule]:
    """Every rule, by id."""
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(select_model(ForwardingRule).order_by(col(ForwardingRule.id))).all())


def get_rule(engine: Engine, rule_id: int) -> ForwardingRule:
    """One rule.

    Raises:
        NotFound: no such rule.
    """
    with Session(engine, expire_on_commit=False) as session:
        return _find_rule(session, rule_id)


def create_rule(engine: Engine, fields: RuleFields) -> ForwardingRule:
    """Add a rule.

    Raises:
        InvalidRule: a field is not acceptable.
        DuplicateRule: the name is taken.
    """
    rule = ForwardingRule(**_rule_values(engine, fields))
    with Session(engine, expire_on_commit=False) as session:
        session.add(rule)
        try:
            session.commit()
        except IntegrityError as exc:
            msg = f"a forwarding rule named {rule.name!r} exists: choose another name or update it"
            raise DuplicateRule(msg) from exc
        session.refresh(rule)
        return rule


def update_rule(engine: Engine, rule_id: int, fields: RuleFields) -> ForwardingRule:
    """Replace a rule's fields; jobs already queued keep the destination they were given.

    Raises:
        InvalidRule: a field is not acceptable.
        DuplicateRule: the new name belongs to another rule.
        NotFound: no such rule.
    """
    values = _rule_values(engine, fields)
    try:
        with write_transaction(engine) as connection, Session(connection, expire_on_commit=False) as session:
            rule = _find_rule(session, rule_id)
            for name, value in values.items():
                setattr(rule, name, value)
            rule.updated_at = _now()
            session.flush()
            session.refresh(rule)
    except IntegrityError as exc:
        msg = f"a forwarding rule named {values['name']!r} exists: choose another name"
        raise DuplicateRule(msg) from exc
    return rule


def delete_rule(engine: Engine, rule_id: int) -> None:
    """Remove a rule; its jobs stay (without a rule) until they finish.

    Raises:
        NotFound: no such rule.
    """
    with write_transaction(engine) as connection, Session(connection) as session:
        session.delete(_find_rule(session, rule_id))
        session.flush()


def _now() -> datetime:
    return datetime.now(UTC)
