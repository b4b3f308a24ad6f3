"""The CLI at a person's terminal: every verb's tables fit 80 columns with ids and states whole and
times readable, a wider terminal shows more; ``--version``, ``completion`` and ``up --json``. The
verbs run against an in-process exchange with ``COLUMNS`` set (rich sizes its console from it);
``up --json`` and the completion script run as real processes.
"""

import json
import os
import re
import shutil
import socket
import sys
from importlib.metadata import version
from pathlib import Path

import anyio
import pytest
from daemon_support import READY_TIMEOUT_S, STOP_TIMEOUT_S, free_port, run_cli, running_exchange

from exchange.cli.main import main as cli_main

pytestmark = pytest.mark.anyio

# Nanoseconds since the epoch are 19 digits today; no table should show one.
_RAW_NS = re.compile(r"\b\d{16,}\b")


def _assert_fits(text: str, width_chars: int) -> None:
    for line in text.splitlines():
        assert len(line) <= width_chars, f"{len(line)} > {width_chars}: {line!r}"


async def _populate(data: str) -> dict[str, str]:
    """A task, a pool and a proposal, so every table has rows; returns their ids."""
    task = await run_cli(
        "task", "announce", "claude", "execute", "BTC", "20", "--data", data, "--json"
    )
    pool = await run_cli("pool", "create", "team", "claude", "10", "--data", data, "--json")
    vote = await run_cli("vote", "propose", "claude", "more fees", "--data", data, "--json")
    assert task.status == pool.status == vote.status == 0, (task, pool, vote)
    tasks = await run_cli("tasks", "--data", data, "--json")
    return {
        "task": task.json()["task_id"],
        "task_state": tasks.json()["tasks"][0]["state"],
        "pool": pool.json()["pool_id"],
        "proposal": vote.json()["proposal_id"],
    }


async def test_every_table_fits_80_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    data = str(tmp_path / "x")
    async with running_exchange(tmp_path / "x"):
        ids = await _populate(data)
        verbs = [
            ("tasks",),
            ("task", "show", ids["task"]),
            ("agents",),
            ("history", "claude"),
            ("balance", "claude"),
            ("limits", "claude"),
            ("pool", "show", ids["pool"]),
            ("vote", "show", ids["proposal"]),
            ("status",),
            ("metrics",),
            ("signals", "recent"),
        ]
        outputs = {}
        for verb in verbs:
            result = await run_cli(*verb, "--data", data)
            assert result.status == 0, result
            _assert_fits(result.stdout, 80)
            assert not _RAW_NS.search(result.stdout), (verb, result.stdout)
            outputs[verb[0]] = result.stdout
    # Ids, names and states are whole, never cropped or split over lines.
    assert re.search(rf"\b{ids['task']}\s+{ids['task_state']}\b", outputs["tasks"]), outputs[
        "tasks"
    ]
    for agent in ("claude", "builder", "observer"):
        assert re.search(rf"^\s+{agent}\s", outputs["agents"], re.MULTILINE), outputs["agents"]
    # Times are clock times; booleans read yes/no.
    assert re.search(r"\d\d:\d\d:\d\d", outputs["history"]), outputs["history"]
    assert re.search(r"\bnow\s+\d\d:\d\d:\d\d", outputs["status"]), outputs["status"]
    assert re.search(r"\bclosed\s+no\b", outputs["pool"]), outputs["pool"]
    assert "False" not in outputs["pool"] and "True" not in outputs["pool"]


async def test_a_wider_terminal_shows_more_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = str(tmp_path / "x")
    async with running_exchange(tmp_path / "x"):
        await _populate(data)
        monkeypatch.setenv("COLUMNS", "80")
        narrow = await run_cli("tasks", "--data", data)
        monkeypatch.setenv("COLUMNS", "200")
        wide = await run_cli("tasks", "--data", data)
    assert "task_type" not in narrow.stdout and "more column(s)" in narrow.stdout
    assert "task_type" in wide.stdout and "escrow_state" in wide.stdout
    _assert_fits(wide.stdout, 200)


def test_version_is_the_installed_package(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--version"], configure_logs=False) == 0
    assert capsys.readouterr().out.strip() == f"exchange {version('agent-exchange')}"


async def test_completion_script_completes_verbs_and_options(tmp_path: Path) -> None:
    result = await run_cli("completion", "bash")
    assert result.status == 0 and "complete -o default -F _exchange exchange" in result.stdout
    zsh = await run_cli("completion", "zsh")
    assert zsh.stdout.startswith("autoload -U +X bashcompinit && bashcompinit\n")
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash to run the script in")
    script = tmp_path / "exchange.bash"
    script.write_text(result.stdout)
    probe = (
        f"source {script}\n"
        'complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _exchange;'
        ' echo "${COMPREPLY[*]}"; }\n'
        "complete_words exchange pool cr\n"
        "complete_words exchange --json ta\n"
        "complete_words exchange history claude --li\n"
        "complete_words exchange completion z\n"
    )
    completed = await anyio.run_process([bash, "--noprofile", "--norc", "-c", probe])
    assert completed.stdout.decode().splitlines() == ["create", "tasks task", "--limit", "zsh"]


async def test_up_json_prints_one_ready_line(tmp_path: Path) -> None:
    data = tmp_path / "x"
    command = [sys.executable, "-m", "exchange.cli.main", "up", "--data", str(data)]
    command += ["--port", str(free_port()), "--json"]
    process = await anyio.open_process(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    async with process:
        assert process.stdout is not None
        received = b""
        with anyio.fail_after(READY_TIMEOUT_S):
            async for chunk in process.stdout:
                received += chunk
                if b"\n" in received:
                    break
        process.terminate()
        with anyio.fail_after(STOP_TIMEOUT_S):
            assert await process.wait() == 0
        received += b"".join([chunk async for chunk in process.stdout])
    lines = received.decode().splitlines()
    assert len(lines) == 1, lines
    ready = json.loads(lines[0])
    assert sorted(ready) == ["data_dir", "digest", "secure", "seq", "service_id", "url"]
    assert ready["data_dir"] == str(data) and ready["secure"] is True
    assert ready["url"].startswith("nats://127.0.0.1:") and len(ready["digest"]) == 64


async def test_up_json_on_a_taken_port_prints_one_error_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "exchange.cli.main", "up", "--data", str(tmp_path / "x")]
        with anyio.fail_after(READY_TIMEOUT_S):
            completed = await anyio.run_process(
                [*command, "--port", str(port), "--json"], check=False
            )
    assert completed.returncode == 1
    lines = completed.stdout.decode().splitlines()
    assert len(lines) == 1, lines
    error = json.loads(lines[0])["error"]
    assert error["code"] == "exchange_failed" and "--port" in error["message"]
