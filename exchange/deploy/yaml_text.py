"""A small YAML writer for documents this project generates (compose.yaml): block mappings, flow
lists of scalars, block lists of mappings, comments above keys.

Owns: turning a tree of dicts, lists, strings, ints and bools into YAML text that any YAML 1.1 or
1.2 parser reads back as the same tree (tests/unit/test_deploy_cluster.py parses it with PyYAML
and compares). A string is written bare only when it cannot be read as anything else (no number,
no boolean or null word of either YAML version, no indicator character); every other string is
double-quoted, in printable ASCII with escapes.

Must not: read or write files. Not a general YAML library: no anchors, tags, multi-line blocks,
or floats (a generated document has none).
"""

import re
from collections.abc import Mapping, Sequence
from typing import Final

INDENT: Final = "  "
# A list of scalars longer than this on one line is written one item per line.
LINE_CHARS_MAX: Final = 100
# Bare: starts with a letter or "/", then letters, digits and _ . / : - (not ending with ":").
_BARE_RE: Final = re.compile(r"[A-Za-z/][A-Za-z0-9_./:-]*")
# Words a YAML 1.1 parser reads as booleans or null (1.2 reads a subset of them so).
_RESERVED: Final = frozenset(
    {"y", "n", "yes", "no", "true", "false", "on", "off", "null", "nan", "inf"}
)


def scalar(value: str | int | bool) -> str:
    """One scalar as YAML text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    bare = (
        _BARE_RE.fullmatch(value) is not None
        and not value.endswith(":")
        and value.lower() not in _RESERVED
    )
    return value if bare else _quoted(value)


def _quoted(value: str) -> str:
    """A double-quoted YAML string in printable ASCII: everything else escaped (``\\uXXXX``, and
    ``\\UXXXXXXXX`` past U+FFFF, which YAML reads as one character, unlike a surrogate pair)."""
    parts = ['"']
    for char in value:
        code = ord(char)
        if char in '"\\':
            parts.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            parts.append(char)
        elif code <= 0xFFFF:
            parts.append(f"\\u{code:04x}")
        else:
            parts.append(f"\\U{code:08x}")
    parts.append('"')
    return "".join(parts)


def render(
    document: Mapping[str, object],
    *,
    header: str = "",
    comments: Mapping[tuple[str, ...], str] | None = None,
) -> str:
    """``document`` as YAML text, ``header`` as comment lines on top, and each of ``comments``
    (a key's path from the top, to its text) as comment lines above that key."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    if lines:
        lines.append("")
    _mapping(document, 0, (), comments or {}, lines)
    return "\n".join(lines) + "\n"


def _mapping(
    mapping: Mapping[str, object],
    depth: int,
    path: tuple[str, ...],
    comments: Mapping[tuple[str, ...], str],
    lines: list[str],
) -> None:
    pad = INDENT * depth
    for key, value in mapping.items():
        assert isinstance(key, str), key
        key_path = (*path, key)
        if key_path in comments:
            # A commented key opens a paragraph, unless it is the first under its parent.
            if lines and lines[-1] and not lines[-1].endswith(":"):
                lines.append("")
            lines += [f"{pad}# {line}".rstrip() for line in comments[key_path].splitlines()]
        head = f"{pad}{scalar(key)}:"
        if isinstance(value, (str, int, bool)):
            lines.append(f"{head} {scalar(value)}")
        elif isinstance(value, Mapping):
            if not value:
                lines.append(f"{head} {{}}")
                continue
            lines.append(head)
            _mapping(value, depth + 1, key_path, comments, lines)
        else:
            assert isinstance(value, Sequence) and not isinstance(value, str), value
            _sequence(value, head, depth, key_path, comments, lines)


def _sequence(
    items: Sequence[object],
    head: str,
    depth: int,
    path: tuple[str, ...],
    comments: Mapping[tuple[str, ...], str],
    lines: list[str],
) -> None:
    pad = INDENT * (depth + 1)
    if all(isinstance(item, (str, int, bool)) for item in items):
        texts = [scalar(item) for item in items if isinstance(item, (str, int, bool))]
        flow = f"{head} [{', '.join(texts)}]"
        # An empty list has no block form (a key with nothing under it reads as null).
        if len(flow) <= LINE_CHARS_MAX or not texts:
            lines.append(flow)
        else:
            lines += [head, *(f"{pad}- {text}" for text in texts)]
        return
    lines.append(head)
    for item in items:
        assert isinstance(item, Mapping) and item, f"a list holds scalars or mappings: {item!r}"
        nested: list[str] = []
        _mapping(item, depth + 2, path, comments, nested)
        first, *rest = nested
        lines.append(f"{pad}- {first.lstrip()}")
        lines += rest
