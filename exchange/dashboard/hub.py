"""The page's document and who waits for its next version.

Owns: ``Hub``: a version number that a producer bumps on each change (``changed``) and the
browsers' streams wait on (``wait_beyond``); the document itself is rendered lazily, once per
version, however many browsers watch. Must not: know what is in the document.
"""

from collections.abc import Callable

import anyio

__all__ = ["Hub"]


class Hub:
    def __init__(self, render: Callable[[], bytes]) -> None:
        self._render = render
        self._version = 0
        self._rendered: tuple[int, bytes] | None = None
        self._changed = anyio.Event()

    @property
    def version(self) -> int:
        return self._version

    def changed(self) -> None:
        """Marks the document stale and wakes every waiting stream."""
        self._version += 1
        self._changed.set()
        self._changed = anyio.Event()

    def document(self) -> tuple[int, bytes]:
        """The current version and its JSON document (rendered at most once per version)."""
        if self._rendered is None or self._rendered[0] != self._version:
            self._rendered = (self._version, self._render())
        return self._rendered

    async def wait_beyond(self, version: int) -> None:
        """Returns once the version is past ``version`` (at once if it already is)."""
        while self._version <= version:
            await self._changed.wait()
