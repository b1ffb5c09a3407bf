"""`webpacs user ...`: manage local users from the shell, and the first admin at first start."""

from __future__ import annotations

import getpass
import logging
import sys
from typing import TYPE_CHECKING

from auth.errors import AuthError
from auth.principals import Role

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from auth.users import UserService
    from dicomweb.settings import Settings

__all__ = ["add_user_command", "create_initial_admin"]

log = logging.getLogger(__name__)


def add_user_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `webpacs user create|list|set-password|delete`."""
    from dicomweb.cli import storage_flags

    user = commands.add_parser("user", help="manage local users").add_subparsers(required=True, metavar="ACTION")
    create = user.add_parser("create", help="add a user", description=_create.__doc__)
    create.add_argument("username")
    roles = create.add_mutually_exclusive_group(required=True)
    roles.add_argument("--role", choices=[r.value for r in Role], help="what the user may do")
    roles.add_argument(
        "--admin", action="store_const", const=Role.ADMIN.value, dest="role", help="same as --role admin"
    )
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input (for scripts)"
    )
    create.set_defaults(run=_create)

    listing = user.add_parser("list", help="list users", description=_list.__doc__)
    listing.set_defaults(run=_list)

    password = user.add_parser("set-password", help="change a user's password", description=_set_password.__doc__)
    password.add_argument("username")
    password.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    password.set_defaults(run=_set_password)

    remove = user.add_parser("delete", help="remove a user", description=_delete.__doc__)
    remove.add_argument("username")
    remove.set_defaults(run=_delete)

    for parser in (create, listing, password, remove):
        storage_flags(parser)


def create_initial_admin(settings: Settings, users: UserService) -> None:
    """Create the admin named by WEBPACS_INITIAL_ADMIN_USER/_PASSWORD when no user exists yet."""
    if not settings.initial_admin_user or users.count():
        return
    users.create(settings.initial_admin_user, settings.initial_admin_password, Role.ADMIN.value)
    log.warning("created the first admin %r from WEBPACS_INITIAL_ADMIN_USER", settings.initial_admin_user)


def _users(args: argparse.Namespace) -> UserService:
    from dicomweb.app import build_context
    from dicomweb.cli import prepared_settings

    return build_context(prepared_settings(args)).access.users


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("webpacs: the two passwords differ; nothing changed")
    return first


def _run(action: str, step: Callable[[], object]) -> int:
    try:
        step()
    except AuthError as exc:
        sys.stderr.write(f"webpacs: cannot {action}: {exc}\n")
        return 1
    return 0


def _create(args: argparse.Namespace) -> int:
    """Add a local user with a role; the password is asked twice (or read with --password-stdin)."""
    users = _users(args)
    password = _password(args)
    status = _run("create the user", lambda: users.create(args.username, password, args.role))
    if not status:
        print(f"created {args.role} {args.username}")  # noqa: T201
    return status


def _list(args: argparse.Namespace) -> int:
    """List users: name, role, study filter, state."""
    for user in _users(args).list():
        state = "disabled" if user.disabled else "active"
        print(f"{user.username}\t{user.role.value}\t{state}\t{user.study_filter or '-'}")  # noqa: T201
    return 0


def _set_password(args: argparse.Namespace) -> int:
    """Change a user's password (sessions already open stay until they expire)."""
    users = _users(args)
    password = _password(args)
    return _run("change the password", lambda: users.update(args.username, password=password))


def _delete(args: argparse.Namespace) -> int:
    """Remove a user with their sessions and personal tokens."""
    users = _users(args)
    return _run("delete the user", lambda: users.delete(args.username))
