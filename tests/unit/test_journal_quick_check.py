"""The journal's quick entry check agrees with its full checks: it accepts nothing they refuse,
and the hash it computes from its own encoding is ``link_hash_hex`` of the entry."""

from hypothesis import given
from hypothesis import strategies as st

from exchange.journal import EntryInput, limits, link_hash_hex
from exchange.journal.chain import _check_entry, _valid_encoded, genesis_hash_hex, prepare_batch
from exchange.journal.errors import JournalInputError
from exchange.journal.records import Posting

# Mostly valid values (so that most entries are valid), and each kind of invalid one: empty,
# over the limit, a lone surrogate (not encodable as UTF-8), bytes that are not UTF-8.
valid_names = st.sampled_from(["claude", "zero", "@escrow", "é" * 32, "x" * limits.name_bytes_max])
names = st.one_of(
    valid_names,
    valid_names,
    valid_names,
    valid_names,
    valid_names,
    valid_names,
    st.sampled_from(["", "\ud800", "y" * (limits.name_bytes_max + 1)]),
    st.text(max_size=8),
)
memos = st.one_of(st.just(""), st.text(max_size=16), st.just("m" * (limits.memo_bytes_max + 1)))
amounts = st.one_of(
    st.integers(1, 10**6),
    st.integers(1, 10**6),
    st.integers(1, 10**6),
    st.sampled_from([-1, 0, limits.int64_max, limits.int64_max + 1]),
)
json_bytes = st.one_of(
    st.just(b'{"ok":true}'),
    st.just(b'{"ok":true}'),
    st.just(b'{"ok":true}'),
    st.just(b"\xff\xfe"),  # not UTF-8
    st.just(b"b" * (limits.body_bytes_max + 1)),
)
postings = st.builds(
    Posting,
    debit_account=names,
    credit_account=names,
    amount_micro=amounts,
    kind=names,
    memo=memos,
)
valid_postings = st.builds(
    Posting,
    debit_account=st.just("claude"),
    credit_account=valid_names,  # now and then "claude" too: the same account twice
    amount_micro=st.integers(1, limits.int64_max),
    kind=valid_names,
    memo=st.text(max_size=16),
)
valid_entries = st.builds(
    EntryInput,
    at_ns=st.integers(5, 10),
    sender=valid_names,
    verb=valid_names,
    body=st.just(b'{"ok":true}'),
    reply=st.just(b'{"ok":true}'),
    postings=st.lists(valid_postings, max_size=3).map(tuple),
)
any_entries = st.builds(
    EntryInput,
    at_ns=st.one_of(st.integers(-1, 10), st.integers(5, 10), st.just(limits.int64_max + 1)),
    sender=names,
    verb=names,
    body=json_bytes,
    reply=json_bytes,
    postings=st.lists(postings, max_size=3).map(tuple),
)


entries = st.one_of(valid_entries, any_entries, any_entries)


@given(entries, st.integers(0, 5))
def test_the_quick_check_accepts_exactly_what_the_full_checks_accept(
    entry: EntryInput, prev_at_ns: int
) -> None:
    try:
        _check_entry(entry, "batch[0]", prev_at_ns)
        valid = True
    except JournalInputError:
        valid = False
    assert (_valid_encoded(entry, prev_at_ns) is not None) == valid
    if not valid:
        return
    [prepared] = prepare_batch(
        [entry], last_seq=0, last_hash_hex=genesis_hash_hex, last_at_ns=prev_at_ns
    ).entries
    assert prepared.hash_hex == link_hash_hex(
        genesis_hash_hex,
        1,
        entry.at_ns,
        entry.sender,
        entry.verb,
        entry.body,
        entry.reply,
        entry.postings,
    )
