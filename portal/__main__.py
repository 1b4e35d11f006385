"""The `portal` command (and `python -m portal`): the operator commands of portal/cli.py.

They are listed and explained even while a setting is refused; a command then ends with one
line naming the key (exit status 2), where `flask --app portal` would show create_app's
traceback. The settings' warnings are left to `portal check`, which lists them (the server logs
them at start-up).
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from flask.cli import FlaskGroup, NoAppException

from . import create_app
from .cli import commands
from .settings import ConfigError, environment_hint

_HELP = """The portal's operator commands, with the settings the portal itself would read
(PORTAL_SETTINGS, else ./settings.toml, and PORTAL_* variables). `portal check` first."""


def main() -> None:
    """Run the command line's arguments as a `portal` command."""
    group = FlaskGroup(name="portal", create_app=_app_or_refusal, help=_HELP,
                       add_version_option=False)  # fmt: skip
    # Flask's own options name another app (-A), a .env file or debug mode: none is the
    # portal's (its settings come from PORTAL_SETTINGS and PORTAL_*), and --version said
    # Flask's version, not the portal's.
    group.params = [param for param in group.params if param.name not in _FLASK_OPTIONS]
    group.params.append(click.Option(["--version"], is_flag=True, expose_value=False,
                                     is_eager=True, callback=_print_version,
                                     help="Show the portal's version."))  # fmt: skip
    for command in commands:
        group.add_command(command)
    group.main(prog_name="portal")


_FLASK_OPTIONS = ("env_file", "app", "debug")


def _print_version(context: click.Context, _param, value: bool) -> None:
    if not value or context.resilient_parsing:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        click.echo(f"portal {version('portal')}")
    except PackageNotFoundError:
        click.echo("portal (version unknown: not installed as a package)")
    context.exit()


class SettingRefused(NoAppException):
    """A refused setting: "Error: ..." in one line, exit status 2, and no usage lines before
    it (which would send the operator looking for a mistake in the command line). A
    NoAppException all the same, so `portal --help` still lists the commands."""

    def show(self, file=None) -> None:
        """Print only the error line."""
        click.ClickException.show(self, file)


def _app_or_refusal():
    try:
        # The settings' warnings are logged by the commands that serve, as a server logs them
        # at start: `run` and `watch`. `check` lists them (logged too, each was said twice),
        # and a one-shot command (whois, revoke...) is about something else.
        command = click.get_current_context(silent=True)
        serving = command is not None and command.info_name in ("run", "watch")
        return create_app(log_warnings=serving)
    except ConfigError as error:
        # Not a traceback: the setting to fix is all an operator needs.
        message = str(error)
        # Said only to a newcomer trying the repository (no PORTAL_ENV, no PORTAL_SETTINGS):
        # not an invitation to turn a production host (which names its file or mode) into a
        # development one, nor a repeat of what is set already.
        newcomer = "PORTAL_ENV" not in os.environ and not os.environ.get("PORTAL_SETTINGS")
        demo = ("; PORTAL_ENV=development for the demo"
                if newcomer and "production" not in message
                and message.startswith("setting ")  # a file, a folder: no setting refused
                else "")  # fmt: skip
        raise SettingRefused(
            f"{message}{environment_hint(message)} ({_where_settings_come_from()}{demo})"
        ) from None


def _where_settings_come_from(environ=os.environ) -> str:
    # Run from another folder, no settings file is read, and the first setting only the file
    # gave (SECRET_KEY, most often) is what the error names: say that no file was read.
    if environ.get("PORTAL_SETTINGS"):
        return (
            f"the settings: {environ['PORTAL_SETTINGS']} (PORTAL_SETTINGS) and PORTAL_* variables"
        )
    if (Path.cwd() / "settings.toml").exists():
        return f"the settings: {Path.cwd() / 'settings.toml'} and PORTAL_* variables"
    return (
        f"no settings file was read: there is no settings.toml in {Path.cwd()} and "
        "PORTAL_SETTINGS is not set, so only the defaults and PORTAL_* variables count"
    )


if __name__ == "__main__":
    main()
