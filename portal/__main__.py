"""The `portal` command (and `python -m portal`): the operator commands of portal/cli.py.

They are listed and explained even while a setting is refused; a command then ends with one
line naming the key (exit status 2), where `flask --app portal` would show create_app's
traceback.
"""

from __future__ import annotations

from flask.cli import FlaskGroup, NoAppException

from . import create_app
from .cli import commands
from .settings import ConfigError

_HELP = """The portal's operator commands, with the settings the portal itself would read
(PORTAL_SETTINGS, else ./settings.toml, and PORTAL_* variables). `portal check` first."""


def main() -> None:
    """Run the command line's arguments as a `portal` command."""
    group = FlaskGroup(name="portal", create_app=_app_or_refusal, help=_HELP)
    for command in commands:
        group.add_command(command)
    group.main(prog_name="portal")


def _app_or_refusal():
    try:
        return create_app()
    except ConfigError as error:
        # A usage error, not a traceback: the setting to fix is all an operator needs.
        raise NoAppException(
            f"{error} (the settings: PORTAL_SETTINGS, else ./settings.toml, "
            "and PORTAL_* variables; PORTAL_ENV=development for the demo)"
        ) from None


if __name__ == "__main__":
    main()
