"""The replicas' in-memory journal (``exchange/journal/tail.py``): the chain it accepts, what a
snapshot drops, and the remembered rows a snapshot bundles across snapshots."""

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.journal import EntryInput, JournalCorruptError, JournalInputError
from exchange.journal.tail import JournalTail


def _inputs(count: int, start: int = 0) -> list[EntryInput]:
    return [
        EntryInput(
            at_ns=1_000 + start + index,
            sender="claude",
            verb="transfer",
            body=f'{{"request_id":"r{start + index}"}}'.encode(),
            reply=b'{"ok":true}',
        )
        for index in range(count)
    ]


def test_entries_chain_on_and_a_changed_one_is_refused() -> None:
    writer, reader = JournalTail(), JournalTail()
    first = writer.prepare(_inputs(3))
    writer.extend(first)
    reader.extend(first)
    second = writer.prepare(_inputs(2, start=3))
    changed = msgspec.structs.replace(second[0], reply=b'{"ok":false}')
    with pytest.raises(JournalCorruptError, match="does not chain"):
        reader.extend((changed, second[1]))
    assert reader.last_seq == 3  # nothing of the refused message was taken
    with pytest.raises(JournalCorruptError, match="does not follow"):
        reader.extend(second[1:])
    reader.extend(second)
    writer.extend(second)
    assert (reader.last_seq, reader.last_hash_hex) == (writer.last_seq, writer.last_hash_hex)


def test_a_snapshot_drops_what_it_covers_and_keeps_its_remembered_rows() -> None:
    tail = JournalTail()
    tail.extend(tail.prepare(_inputs(5)))
    bundle = tail.bundle(seq=4, state=b"s", digest="d", stream_seq=2, remembered=[2, 4])
    tail.snapshot_taken(bundle)
    assert [entry.seq for entry in tail.iter_entries(4)] == [5]
    with pytest.raises(JournalInputError):
        tail.iter_entries(3)
    assert [row[2] for row in tail.entries_at([2, 4, 5])] == [
        b'{"request_id":"r1"}',
        b'{"request_id":"r3"}',
        b'{"request_id":"r4"}',
    ]
    # A node that loads the bundle alone answers the same rows and resumes the same chain.
    loaded = JournalTail(bundle)
    assert list(loaded.entries_at([2, 4])) == list(tail.entries_at([2, 4]))
    assert loaded.last_seq == 4
    with pytest.raises(JournalInputError, match="neither bundled"):
        list(loaded.entries_at([3]))


@given(
    batches=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=12),
    snapshot_every=st.integers(min_value=1, max_value=6),
    keep_every=st.integers(min_value=1, max_value=3),
)
def test_remembered_rows_survive_any_number_of_snapshots(
    batches: list[int], snapshot_every: int, keep_every: int
) -> None:
    """Every remembered seq stays answerable after snapshots, from the bundle or the tail."""
    tail = JournalTail()
    bodies: dict[int, bytes] = {}
    for size in batches:
        entries = tail.prepare(_inputs(size, start=tail.last_seq))
        tail.extend(entries)
        bodies.update((entry.seq, entry.body) for entry in entries)
        remembered = [seq for seq in bodies if seq % keep_every == 0]
        if tail.last_seq - tail.base_seq >= snapshot_every:
            tail.snapshot_taken(
                tail.bundle(
                    seq=tail.last_seq, state=b"", digest="", stream_seq=0, remembered=remembered
                )
            )
        assert [row[2] for row in tail.entries_at(remembered)] == [
            bodies[seq] for seq in remembered
        ]
        assert [entry.seq for entry in tail.iter_entries(tail.base_seq)] == list(
            range(tail.base_seq + 1, tail.last_seq + 1)
        )
