"""The state machines (exchange/core/states.py): tables, refusals, reachability."""

import pytest

from exchange.core.states import (
    ESCROW,
    MACHINES,
    TASK,
    EscrowEvent,
    EscrowState,
    Machine,
    TaskEvent,
    TaskState,
)


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_every_state_of_a_machine_is_reachable_from_its_first(machine: Machine) -> None:  # type: ignore[type-arg]
    first = next(iter(machine.table))[0]
    reached, frontier = {first}, [first]
    while frontier:
        state = frontier.pop()
        for (source, _), target in machine.table.items():
            if source == state and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == machine.states()


def test_a_task_has_its_ten_states_and_the_finished_ones_take_no_event() -> None:
    assert TASK.states() == set(TaskState)
    finished = {TaskState.completed, TaskState.failed, TaskState.expired, TaskState.refunded}
    finished |= {TaskState.unawarded, TaskState.cancelled}
    assert not [pair for pair in TASK.table if pair[0] in finished]


def test_a_move_a_command_asks_for_is_refused_with_the_machines_code() -> None:
    refusal = TASK.refusal(TaskState.completed, TaskEvent.cancel, "task-1", "too late")
    assert refusal is not None
    assert refusal.body.code == "task_closed"
    assert refusal.body.message == "task-1 is completed; cancel needs it awarded or open; too late"
    resolve = ESCROW.refusal(EscrowState.locked, EscrowEvent.resolve_release, "escrow-1")
    assert resolve is not None and resolve.body.code == "escrow_not_disputed"
    assert ESCROW.refusal(EscrowState.locked, EscrowEvent.dispute, "escrow-1") is None


def test_a_move_a_rule_makes_on_its_own_is_asserted() -> None:
    assert TASK.next(TaskState.open, TaskEvent.award) is TaskState.awarded
    with pytest.raises(AssertionError, match="a task that is open cannot take inform"):
        TASK.next(TaskState.open, TaskEvent.inform)
