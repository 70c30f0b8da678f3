"""The typer application that every command module registers on.

Command modules (tinyprec/cli/<command>.py) do ``from tinyprec.cli.app import app`` and decorate
their function with ``@app.command()``; they import the heavy stage code inside the function.
Only the CLI prints: use :data:`console` (stdout) and :data:`err_console` (stderr).
"""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="tinyprec",
    help="TinyML quantization pipeline: train, QAT, int8 export for TFLite Micro, validation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _show_version(value: bool) -> None:
    if value:
        from tinyprec import __version__

        console.print(f"tinyprec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True, help="Print the version."),
) -> None:
    """TinyML quantization pipeline: train, QAT, int8 export for TFLite Micro, validation."""
