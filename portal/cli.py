"""Command line: `flask --app portal access-check USER URL` tests the access rules for a person."""

from __future__ import annotations

from urllib.parse import urlsplit

import click
from flask import current_app
from flask.cli import with_appcontext

from . import accounts, directory, rules
from .directory import DirectoryError


@click.command("access-check")
@click.argument("username")
@click.argument("url")
@click.option("--method", default="GET", show_default=True, help="HTTP method of the request.")
@with_appcontext
def access_check(username: str, url: str, method: str) -> None:
    """Say whether USERNAME may open URL, and which rule decides (exit 0 allowed, 1 denied)."""
    try:
        attrs = directory.lookup(username)
    except DirectoryError as error:
        raise click.ClickException(f"the directory did not answer: {error}") from error
    if attrs is None:
        click.echo(f"{username}: no such person, or the account is not usable: DENIED")
        raise SystemExit(1)
    user = accounts.build_user(attrs)
    if not user.is_active:
        click.echo(f"{user.username}: not allowed to use the portal (groups): DENIED")
        raise SystemExit(1)
    parts = urlsplit(url if "://" in url else f"https://{url}")
    config = current_app.config
    decision = rules.decide(config["ACCESS_RULES"], config["ACCESS_DEFAULT_POLICY"],
                            user.groups, parts.netloc, parts.path or "/", method)  # fmt: skip
    verdict = "ALLOWED" if decision.allowed else "DENIED"
    click.echo(f"{user.username} {method.upper()} {url}: {verdict} by {decision.reason}")
    click.echo(f"groups: {', '.join(user.groups)}")
    raise SystemExit(0 if decision.allowed else 1)
