"""Why ``exchange up`` stopped, as one line a person can act on.

Owns: flattening the exception groups the daemon's task groups raise into the exceptions that
caused them (``leaf_exceptions``), and the sentence for each cause (``failure_line``): a full disk
says which disk and that nothing acknowledged was lost, an OSError names its path and what to do,
the daemon's and the journal's own errors keep their messages (they already say what to do).
Must not: log or print (``main.py`` does), or turn a bug into a line: exceptions that are not the
daemon's refusals are never passed here and keep their traceback.
"""

from collections.abc import Iterator

from exchange.daemon.datadir import describe_os_error
from exchange.journal import JournalDiskFullError

# What a failed journal write left undone, by the journal method that failed. A batch's replies
# are sent only after its commit, and a snapshot is written only after its batch was committed.
_not_done = {
    "append_batch": "the last batch was not journaled and no reply was sent",
    "write_snapshot": "a snapshot was not written (every command before it is journaled)",
}


def leaf_exceptions(error: BaseException) -> list[BaseException]:
    """The exceptions inside ``error`` and its nested groups, depth first, in their order."""
    return list(_leaves(error))


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def failure_line(error: BaseException) -> str:
    """One line: what failed, where, and what to do."""
    if isinstance(error, JournalDiskFullError):
        not_done = _not_done.get(error.operation, f"{error.operation} did not complete")
        if error.operation == "append_batch" and not error.rolled_back:
            # The failure hit COMMIT: the batch may or may not be on disk. A restart replays
            # whatever is, and its clients never got a reply, so they retry with the same id.
            not_done = "the last batch may not have been journaled and no reply was sent"
        return (
            f"the disk holding {error.directory} is full: {not_done}; free space and restart "
            "(nothing acknowledged is lost)"
        )
    if isinstance(error, OSError):
        return describe_os_error(error)
    return str(error)
