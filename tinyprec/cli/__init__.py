"""The ``tinyprec`` command line. Errors print one line and exit 2 (bad input) or 1 (gate failed)."""

from __future__ import annotations

import importlib
import sys

from tinyprec.errors import TinyprecError

# One module per command group; each registers itself on tinyprec.cli.app.app when imported.
COMMAND_MODULES: tuple[str, ...] = (
    "train",
    "inspect",
    "validate",
    "qat",
    "emulate",
    "export",
    "run",
    "mcu",
    "data",
)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tinyprec`` script."""
    from tinyprec._quiet import quiet_third_party

    quiet_third_party()
    from tinyprec.cli.app import app

    for name in COMMAND_MODULES:
        importlib.import_module(f"tinyprec.cli.{name}")
    try:
        app(args=argv, prog_name="tinyprec")
    except TinyprecError as err:
        details = getattr(err, "details", "")
        if details:  # the user's own traceback frames (UserCodeError)
            print(details.rstrip(), file=sys.stderr)
        print(f"tinyprec: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("tinyprec: interrupted; finished stages are kept, re-run to continue", file=sys.stderr)
        sys.exit(130)
