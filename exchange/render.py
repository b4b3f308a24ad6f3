"""How the command-line front ends print: one JSON document with ``--json``, rich tables without.

Shared by ``exchange.cli`` and ``exchange.integrations.cli`` (``exchange hook``, ``exchange
issues``); it sits beside them so that neither package imports the other's internals.

Owns: ``Output`` (stdout for results, stderr for problems) and the rendering of result objects,
which are plain JSON-shaped values (the ``result`` of a reply envelope, or a CLI report). Must
not: connect, read files, or reshape results in JSON mode (``--json`` prints exactly the result
object, amounts as the decimal strings the exchange sent).

At a terminal, every table fits the console's width (``COLUMNS`` when set): a ``View`` names,
per list of objects in a result, its columns in order of importance; the columns that fit are
shown, the others are left for ``--json`` or a wider terminal, and a kept column (an id, a state)
is never cropped. Without a view, a table takes the columns of its rows in the order they come,
nested values last. Cells read as people read them: epoch nanoseconds (a field ending in ``_ns``)
as local time, booleans as yes/no, floats to four significant digits, a list of objects as its
count.

Exit statuses: 0 success; 1 a refusal or a problem found (``{"error": {"code", "message"}}`` in
JSON mode); 2 bad usage (argparse); 3 the exchange cannot be reached.
"""

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, TextIO

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
# A field of an object gets a line of its own, folded as the console needs.
_field_chars_max: Final = 2_000
# Integers in a ``*_ns`` field above this are instants (nanoseconds since the epoch, after 2001),
# not durations.
_epoch_ns_min: Final = 1_000_000_000 * 1_000_000_000
_column_width_max_default: Final = 24
# What a column costs beside its text in a SIMPLE_HEAD table: one space of padding either side
# and one separator.
_column_overhead_chars: Final = 3


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a row table. ``keep``: shown at any width and never cropped (ids, states);
    otherwise a value longer than ``width_max`` ends in an ellipsis."""

    key: str
    keep: bool = False
    width_max: int = _column_width_max_default
    justify: Literal["left", "right"] = "left"


@dataclass(frozen=True, slots=True)
class View:
    """How one verb's result reads at a terminal: for each list of objects in it (by key), its
    columns in order of importance (and of display); ``hidden`` fields of the object itself are
    left to ``--json``."""

    rows: Mapping[str, Sequence[Column]] = field(default_factory=dict)
    hidden: frozenset[str] = frozenset()


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

    def result(self, value: Any, *, title: str, view: View | None = None) -> int:
        """Prints a successful result; returns EXIT_OK."""
        if self.json_mode:
            self.json(value)
        else:
            render(self.console, value, title=title, view=view)
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


def parse_or_status(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> argparse.Namespace | int:
    """The parsed arguments, or the status argparse ended with (2 for bad arguments, having
    printed why; 0 after --help), so that a CLI returns instead of exiting."""
    try:
        return parser.parse_args(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


def fail(program: str, message: str, status: int) -> int:
    """A sub-command's refusal: ``program: message`` on stderr; returns ``status``."""
    sys.stderr.write(f"{program}: {message}\n")
    return status


def local_time(at_ns: int, *, today: datetime | None = None) -> str:
    """An instant as local time: ``13:45:31`` today, ``2026-12-03 13:45:31`` another day."""
    moment = datetime.fromtimestamp(at_ns / 1_000_000_000).astimezone()
    reference = today or datetime.now().astimezone()
    if moment.date() == reference.date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _is_instant(key: str, value: Any) -> bool:
    return (
        key.endswith("_ns")
        and isinstance(value, int)
        and not isinstance(value, bool)
        and value >= _epoch_ns_min
    )


def _header(key: str, sample: Any) -> str:
    return key.removesuffix("_ns") if _is_instant(key, sample) else key


def _cell(value: Any, key: str = "", *, chars_max: int = _cell_chars_max) -> str:
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif _is_instant(key, value):
        text = local_time(value)
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif _is_rows(value):
        text = str(len(value))
    elif isinstance(value, Mapping):
        text = ", ".join(f"{name}={_cell(item, name)}" for name, item in value.items())
    elif isinstance(value, list):
        text = ", ".join(_cell(item) for item in value)
    else:
        text = str(value)
    if value is None or not text:
        text = "-"
    return text if len(text) <= chars_max else text[: chars_max - 1] + "…"


# Health statuses (swarm metrics) are coloured so a warning stands out in a table.
_STATUS_STYLES = {"ok": "green", "watch": "yellow", "warning": "bold red", "no_data": "dim"}


def _styled(column: str, text: str) -> Text:
    style = _STATUS_STYLES.get(text, "") if column == "status" else ""
    return Text(text, style=style)


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


_KEPT_KEYS: Final = frozenset({"agent", "name", "state", "status", "key"})


def _default_columns(rows: Sequence[Mapping[str, Any]]) -> list[Column]:
    """Every key of the rows; the first one, ids and states kept; nested values least important."""
    keys = list(dict.fromkeys(key for row in rows for key in row))
    nested = {key for key in keys if any(isinstance(row.get(key), list | dict) for row in rows)}
    columns = [
        Column(key, keep=index == 0 or key in _KEPT_KEYS or key.endswith("_id"))
        for index, key in enumerate(keys)
    ]
    return sorted(columns, key=lambda column: column.key in nested)


def fit_columns(
    columns: Sequence[Column], widths: Mapping[str, int], *, width_chars: int
) -> list[Column]:
    """The columns to show within ``width_chars``: the kept ones, then each other one in order
    of importance while it fits; in the order given."""
    total = 1 + sum(widths[c.key] + _column_overhead_chars for c in columns if c.keep)
    chosen = {c.key for c in columns if c.keep}
    for column in columns:
        if column.keep:
            continue
        cost = min(widths[column.key], column.width_max) + _column_overhead_chars
        if total + cost <= width_chars:
            chosen.add(column.key)
            total += cost
    return [column for column in columns if column.key in chosen]


def _rows_table(
    console: Console, title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]
) -> Table:
    samples = {
        c.key: next((r[c.key] for r in rows if r.get(c.key) is not None), None) for c in columns
    }
    headers = {c.key: _header(c.key, samples[c.key]) for c in columns}
    cells = [{c.key: _cell(row.get(c.key), c.key) for c in columns} for row in rows]
    widths = {
        c.key: max([len(headers[c.key]), *(len(line[c.key]) for line in cells)]) for c in columns
    }
    shown = fit_columns(columns, widths, width_chars=console.width)
    hidden_count = len(columns) - len(shown)
    table = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        title_justify="left",
        caption=f"{hidden_count} more column(s): --json or a wider terminal"
        if hidden_count
        else None,
        caption_justify="left",
    )
    for column in shown:
        table.add_column(
            headers[column.key],
            justify=column.justify,
            no_wrap=True,
            overflow="ellipsis",
            min_width=widths[column.key] if column.keep else None,
            max_width=None if column.keep else column.width_max,
        )
    for line in cells:
        table.add_row(*(_styled(column.key, line[column.key]) for column in shown))
    return table


def _pairs(value: Mapping[str, Any], hidden: frozenset[str]) -> list[tuple[str, str]]:
    """The scalar fields of an object as (name, text); a nested object's fields as
    ``name.field``."""
    pairs: list[tuple[str, str]] = []
    for key, item in value.items():
        if key in hidden or _is_rows(item):
            continue
        if isinstance(item, Mapping) and item:
            pairs.extend((f"{key}.{name}", text) for name, text in _pairs(item, frozenset()))
        else:
            name = _header(key, item)
            # An object that carries its instant both ways (``at`` beside ``at_ns``) shows it once.
            if name == key or name not in value:
                pairs.append((name, _cell(item, key, chars_max=_field_chars_max)))
    return pairs


def render(console: Console, value: Any, *, title: str, view: View | None = None) -> None:
    """A key/value table for an object; each list of objects in it as a table of its own, with
    the columns that fit the console (see ``View``)."""
    view = view or View()
    if not isinstance(value, Mapping):
        console.print(_cell(value), markup=False)
        return
    pairs = Table(title=title, box=box.SIMPLE_HEAD, show_header=False, title_justify="left")
    pairs.add_column("field", style="bold", no_wrap=True)
    pairs.add_column("value", overflow="fold")
    for name, text in _pairs(value, view.hidden):
        pairs.add_row(name, text)
    row_tables = [(key, item) for key, item in value.items() if _is_rows(item)]
    if pairs.row_count:
        console.print(pairs)
    for key, rows in row_tables:
        columns = view.rows.get(key) or _default_columns(rows)
        console.print(_rows_table(console, f"{title}: {key}", rows, columns))
    if not pairs.row_count and not row_tables:
        console.print(f"{title}: (empty)", markup=False)
