"""``edge-agent dashboard …``: the store accounts, set at install time."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..config import load_config
from .auth import ROLES, AccountError, read_accounts, remove_account, set_password, users_file

_CONFIG = click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                       help="The agent's configuration (says where the accounts file is).")


@click.group("dashboard")
def dashboard() -> None:
    """Dashboard accounts: an admin (may change lines and zones) and read-only viewers."""


@dashboard.command("set-password")
@click.option("--role", type=click.Choice(ROLES), required=True, help="admin: may change the setup; viewer: read-only.")
@click.option("--user", "username", default=None, help="User name (default: the role's name).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (for scripts, Ansible).")
@_CONFIG
def set_password_command(role: str, username: str | None, password_stdin: bool, config_path: Path | None) -> None:
    """Create an account or change its password (sessions opened with the old one end)."""
    config = load_config(config_path)
    path = users_file(config)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        set_password(path, username or role, role, password)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{username or role} ({role}) saved in {path}")


@dashboard.command("users")
@_CONFIG
def users_command(config_path: Path | None) -> None:
    """List the accounts (names and roles; never hashes)."""
    path = users_file(load_config(config_path))
    try:
        accounts = read_accounts(path)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    if not accounts:
        click.echo(f"no accounts in {path}: run edge-agent dashboard set-password --role admin")
    for account in accounts.values():
        click.echo(f"{account.username}\t{account.role}")


@dashboard.command("remove-user")
@click.argument("username")
@_CONFIG
def remove_user_command(username: str, config_path: Path | None) -> None:
    """Delete an account (its sessions end at once)."""
    path = users_file(load_config(config_path))
    if not remove_account(path, username):
        raise click.ClickException(f"no account {username!r} in {path}")
    click.echo(f"removed {username}")


def ensure_demo_account(config) -> str | None:
    """The demo needs a login too: make an admin with a random password if there is
    no account yet, and return that password (None: accounts exist already)."""
    import secrets

    path = users_file(config)
    if read_accounts(path):
        return None
    password = secrets.token_urlsafe(9)
    set_password(path, "admin", "admin", password)
    return password
