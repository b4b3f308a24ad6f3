"""How the command-line front ends print: one JSON document with ``--json``, rich tables without.

Shared by ``exchange.cli`` and ``exchange.integrations.cli`` (``exchange hook``, ``exchange
issues``); it sits beside them so that neither package imports the other's internals.

Owns: ``Output`` (stdout for results, stderr for problems) and the rendering of result objects,
which are plain JSON-shaped values (the ``result`` of a reply envelope, or a CLI report). Must
not: connect, read files, or reshape results in JSON mode (``--json`` prints exactly the result
object, amounts as the decimal strings the exchange sent).

Exit statuses: 0 success; 1 a refusal or a problem found (``{"error": {"code", "message"}}`` in
JSON mode); 2 bad usage (argparse); 3 the exchange cannot be reached.
"""

from collections.abc import Mapping
from typing import Any, Final, TextIO

import msgspec
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3

_cell_chars_max: Final = 120


class Output:
    """Where results and problems go, and in which form."""

    def __init__(self, *, json_mode: bool, stdout: TextIO, stderr: TextIO) -> None:
        self.json_mode = json_mode
        self.stdout = stdout
        self.console = Console(file=stdout, highlight=False, soft_wrap=False)
        self.errors = Console(file=stderr, highlight=False, soft_wrap=True)

    def json(self, value: Any) -> None:
        self.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())
        self.stdout.write("\n")
        self.stdout.flush()

    def result(self, value: Any, *, title: str) -> int:
        """Prints a successful result; returns EXIT_OK."""
        if self.json_mode:
            self.json(value)
        else:
            render(self.console, value, title=title)
        return EXIT_OK

    def error(self, error: Mapping[str, Any], *, status: int = EXIT_REFUSED) -> int:
        """Prints a refusal or problem (``code``, ``message``, details); returns ``status``."""
        if self.json_mode:
            self.json({"error": dict(error)})
        else:
            details = ", ".join(
                f"{key}={value}"
                for key, value in error.items()
                if key not in ("code", "message") and value is not None
            )
            self.errors.print(
                f"[bold red]{error.get('code', 'error')}[/]: {error.get('message', '')}"
                + (f" ({details})" if details else ""),
                markup=True,
                highlight=False,
            )
        return status


def _cell(value: Any) -> str:
    if isinstance(value, Mapping):
        text = ", ".join(f"{key}={_cell(item)}" for key, item in value.items())
    elif isinstance(value, list):
        text = ", ".join(_cell(item) for item in value)
    elif value is None:
        text = "-"
    else:
        text = str(value)
    return text if len(text) <= _cell_chars_max else text[: _cell_chars_max - 1] + "…"


# Health statuses (swarm metrics) are coloured so a warning stands out in a table.
_STATUS_STYLES = {"ok": "green", "watch": "yellow", "warning": "bold red", "no_data": "dim"}


def _styled(column: str, text: str) -> Text:
    style = _STATUS_STYLES.get(text, "") if column == "status" else ""
    return Text(text, style=style)


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def render(console: Console, value: Any, *, title: str) -> None:
    """A key/value table for an object; each list of objects in it as a table of its own."""
    if not isinstance(value, Mapping):
        console.print(_cell(value), markup=False)
        return
    pairs = Table(title=title, box=box.SIMPLE_HEAD, show_header=False, title_justify="left")
    pairs.add_column("field", style="bold")
    pairs.add_column("value", overflow="fold")
    row_tables: list[tuple[str, list[Mapping[str, Any]]]] = []
    for key, item in value.items():
        if _is_rows(item):
            row_tables.append((key, item))
        else:
            pairs.add_row(key, _cell(item))
    if pairs.row_count:
        console.print(pairs)
    for key, rows in row_tables:
        table = Table(title=f"{title}: {key}", box=box.SIMPLE_HEAD, title_justify="left")
        columns = list(rows[0].keys())
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(_styled(column, _cell(row.get(column))) for column in columns))
        console.print(table)
    if not pairs.row_count and not row_tables:
        console.print(f"{title}: (empty)", markup=False)
