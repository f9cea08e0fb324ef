"""A user's mistake, or an address that cannot be had, is one line on stderr and an exit
status, never a traceback: ``retrywatch`` run as a user runs it, in a process of its own.

Exit status: 2 for a bad usage or setting, 3 for an address that cannot be listened on,
1 otherwise. Output to a closed pipe ends quietly with the status the command would have
had. Only loopback is ever sent to: 192.0.2.1 (TEST-NET-1) is an address no interface
has here, so binding it fails (EADDRNOTAVAIL) without a packet leaving.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrywatch.serve.service import STARTUP_FAILURE

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_LOGS = ROOT / "sample_logs"
STORM = SAMPLE_LOGS / "scenario-http-lua-storm.error.log.gz"
NORMAL = SAMPLE_LOGS / "scenario-http-normal.error.log.gz"
TRUTH = SAMPLE_LOGS / "scenario-http-normal.truth.json.gz"
NOT_LOCAL = "192.0.2.1"
TIMEOUT = 120


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any RETRYWATCH_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYWATCH_")}
    env.update(extra)
    return env


def retrywatch(*args: str, stdout: int | None = subprocess.PIPE,
               **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "retrywatch", *args], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT, env=clean_env(**env),
                          timeout=TIMEOUT, check=False)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one non-empty line of stderr (and no traceback)."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "error.log"
    path.write_bytes(b"")
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port of 127.0.0.1 that a socket of this test holds, listening."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_cannot_listen_is_uvicorns_exit_status() -> None:
    from retrywatch.cli import _CannotListen

    assert _CannotListen.exit_code == STARTUP_FAILURE == 3


# -- addresses -----------------------------------------------------------------------------------
def test_a_syslog_port_out_of_range_is_a_bad_setting() -> None:
    done = retrywatch("run", "--syslog", "udp://127.0.0.1:99999", "--listen", "127.0.0.1:0")
    assert done.returncode == 2
    line = one_line(done)
    assert line.startswith("Error: --syslog: ") and "99999" in line, line
    assert "out of range" in line, line


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_syslog_address_not_of_this_machine(transport: str) -> None:
    url = f"{transport}://{NOT_LOCAL}:5514"
    done = retrywatch("run", "--syslog", url, "--listen", "127.0.0.1:0")
    assert done.returncode == STARTUP_FAILURE
    assert one_line(done) == f"Error: cannot listen on {url}: Cannot assign requested address"


def test_a_syslog_port_taken(busy_port: int) -> None:
    url = f"tcp://127.0.0.1:{busy_port}"
    done = retrywatch("run", "--syslog", url, "--listen", "127.0.0.1:0")
    assert done.returncode == STARTUP_FAILURE
    assert one_line(done) == f"Error: cannot listen on {url}: Address already in use"


def test_listen_on_an_address_not_of_this_machine(log: Path) -> None:
    """(With an API token: without one, the warning that the API is open beyond loopback
    comes first, a line of its own.)"""
    done = retrywatch("run", "--log", str(log), "--listen", f"{NOT_LOCAL}:8080",
                      RETRYWATCH_API_TOKEN="a-token-long-enough")
    assert done.returncode == STARTUP_FAILURE
    assert one_line(done) == (f"Error: cannot listen on {NOT_LOCAL}:8080: Cannot assign "
                              "requested address")


def test_listen_on_a_port_taken(log: Path, busy_port: int) -> None:
    done = retrywatch("run", "--log", str(log), "--listen", f"127.0.0.1:{busy_port}")
    assert done.returncode == STARTUP_FAILURE
    assert one_line(done) == (f"Error: cannot listen on 127.0.0.1:{busy_port}: Address "
                              "already in use")


def test_demo_on_a_port_taken(busy_port: int) -> None:
    """(uvicorn used to say ``[Errno 98]`` in its thread, and the demo went on.)"""
    done = retrywatch("demo", "--listen", f"127.0.0.1:{busy_port}")
    assert done.returncode == STARTUP_FAILURE
    assert one_line(done) == (f"Error: cannot listen on 127.0.0.1:{busy_port}: Address "
                              "already in use")
    assert done.stdout == ""


# -- settings: the flag, the variable, the file and key ---------------------------------------
def test_a_bad_variable_is_named(log: Path) -> None:
    done = retrywatch("run", "--log", str(log), RETRYWATCH_WINDOW="abc")
    assert done.returncode == 2
    line = one_line(done)
    assert line.startswith("Error: window (RETRYWATCH_WINDOW): "), line
    assert "integer" in line and "'abc'" in line, line


def test_a_variable_that_is_not_json() -> None:
    done = retrywatch("config", RETRYWATCH_LOG="/var/log/nginx/error.log")
    assert done.returncode == 2
    line = one_line(done)
    assert line.startswith("Error: log (RETRYWATCH_LOG): not JSON"), line
    assert done.stdout == ""


def test_a_bad_value_in_the_toml_file_names_the_file_and_key(tmp_path: Path, log: Path) -> None:
    config = tmp_path / "retrywatch.toml"
    config.write_text('threshold = 7\nwindow = "a minute"\n')
    done = retrywatch("run", "--log", str(log), "--config", str(config))
    assert done.returncode == 2
    line = one_line(done)
    assert line.startswith(f"Error: {config}: window: "), line
    assert "'a minute'" in line, line


def test_a_bad_flag_value_names_the_flag() -> None:
    done = retrywatch("config", "--listen", "nowhere")
    assert done.returncode == 2
    assert one_line(done) == "Error: --listen: listen must be HOST:PORT, got 'nowhere'"


def test_the_alias_from_is_read_as_retrywatch_from_only(tmp_path: Path) -> None:
    """pydantic-settings reads an aliased field's variable without the prefix unless told:
    FROM would have been read, RETRYWATCH_FROM not."""
    assert '"from": "beginning"' in retrywatch("config", RETRYWATCH_FROM="beginning").stdout
    assert '"from": "end"' in retrywatch("config", FROM="beginning").stdout
    done = retrywatch("config", RETRYWATCH_FROM="middle")
    assert done.returncode == 2
    assert one_line(done).startswith("Error: from (RETRYWATCH_FROM): "), done.stderr


@pytest.mark.parametrize(("name", "text"), [
    ("retrywatch.json", '{"window": 45, "log": ["/var/log/nginx/error.log"]}'),
    ("retrywatch.toml", 'window = 45\nlog = ["/var/log/nginx/error.log"]\n'),
    ("retrywatch.yaml", "window: 45\nlog: [/var/log/nginx/error.log]\n"),
    ("retrywatch.YML", "window: 45\nlog: [/var/log/nginx/error.log]\n"),
])
def test_a_config_file_is_read_as_its_ending_says(tmp_path: Path, name: str, text: str) -> None:
    import json

    config = tmp_path / name
    config.write_text(text)
    done = retrywatch("config", "--config", str(config))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["window"], data["log"]) == (45, ["/var/log/nginx/error.log"])


def test_a_json_file_that_is_not_json(tmp_path: Path) -> None:
    config = tmp_path / "retrywatch.json"
    config.write_text("window = 45\n")  # TOML
    done = retrywatch("config", "--config", str(config))
    assert done.returncode == 2
    assert one_line(done).startswith(f"Error: {config}: not JSON: "), done.stderr


@pytest.mark.parametrize("name", ["retrywatch.conf", "retrywatch.ini", "retrywatch"])
def test_a_config_file_of_unknown_kind(tmp_path: Path, name: str) -> None:
    config = tmp_path / name
    config.write_text("window = 45\n")
    done = retrywatch("config", "--config", str(config))
    assert done.returncode == 2
    line = one_line(done)
    assert line.startswith(f"Error: {config}: ") and ".toml, .yaml, .yml, .json" in line, line


def test_a_config_file_that_is_not_a_table(tmp_path: Path) -> None:
    config = tmp_path / "retrywatch.yaml"
    config.write_text("- window\n- 45\n")
    done = retrywatch("config", "--config", str(config))
    assert done.returncode == 2
    assert one_line(done) == (f"Error: {config}: not a table of settings (name: value), "
                              "but a list")


def test_malformed_yaml_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "retrywatch.yaml"
    config.write_text("threshold: [1, 2\n")
    done = retrywatch("config", "--config", str(config))
    assert done.returncode == 2
    assert one_line(done).startswith(f"Error: {config}: not YAML: "), done.stderr


# -- output to a closed pipe ----------------------------------------------------------------------
def closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """``retrywatch ARGS | true``: stdout is a pipe whose reader is gone before a byte is
    written."""
    read, write = os.pipe()
    os.close(read)
    try:
        return retrywatch(*args, stdout=write)
    finally:
        os.close(write)


@pytest.mark.parametrize(("args", "status"), [
    (["parse", "--timezone", "UTC", str(NORMAL)], 0),
    (["replay", "--timezone", "UTC", str(STORM)], 0),
    (["replay", "--timezone", "UTC", "--format", "json", str(STORM)], 0),
    (["replay", "--timezone", "UTC", "--format", "jsonl", str(STORM)], 0),
    (["replay", "--timezone", "UTC", "--exit-code", str(STORM)], 1),  # found, all the same
    (["lint", "--fail-on", "never", str(SAMPLE_LOGS / "configs")], 0),
    (["lint", str(SAMPLE_LOGS / "configs")], 1),
    (["lint", "--format", "sarif", "--fail-on", "never", str(SAMPLE_LOGS / "configs")], 0),
    (["config"], 0),
    (["lint", "--explain", "http_retry_loop"], 0),
], ids=["parse", "replay", "replay-json", "replay-jsonl", "replay-exit-code", "lint",
        "lint-findings", "lint-sarif", "config", "lint-explain"])
def test_output_to_a_closed_pipe_ends_quietly(args: list[str], status: int) -> None:
    done = closed_pipe(*args)
    assert done.stderr == ""
    assert done.returncode == status


def test_analyze_to_a_closed_pipe_ends_quietly() -> None:
    pytest.importorskip("pandas")
    done = closed_pipe("analyze", "--timezone", "UTC", str(NORMAL))
    assert (done.returncode, done.stderr) == (0, "")


def test_parse_into_head() -> None:
    """``retrywatch parse storm.log.gz | head -1``: the reader goes away mid-output."""
    with subprocess.Popen([sys.executable, "-m", "retrywatch", "parse", "--timezone", "UTC",
                           str(STORM)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          cwd=ROOT, env=clean_env()) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().startswith(b"{")
        process.stdout.close()
        assert process.wait(TIMEOUT) == 0
        assert process.stderr.read() == b""


# -- replay: a file that is no log, --exit-code ---------------------------------------------------
def test_a_file_that_is_no_nginx_log_is_said_and_the_rest_replayed() -> None:
    import json

    done = retrywatch("replay", "--timezone", "UTC", "--format", "json", str(NORMAL),
                      str(TRUTH))
    assert done.returncode == 0
    assert one_line(done) == (f"Warning: no line of {TRUTH} is an nginx error log line: "
                              "is it one?")
    sources = {s["source"]: s for s in json.loads(done.stdout)["stats"]["sources"]}
    assert sources[str(NORMAL.with_suffix(""))]["lines_parsed"] == 446


@pytest.mark.parametrize(("args", "status"), [
    (["--exit-code", str(STORM)], 1),
    (["--exit-code", str(NORMAL)], 0),
    ([str(STORM)], 0),
    (["--exit-code", "--threshold", "100000", str(STORM)], 0),
])
def test_replay_exit_code(args: list[str], status: int) -> None:
    done = retrywatch("replay", "--timezone", "UTC", *args)
    assert done.returncode == status, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize(("flag", "status"), [(["--exit-code"], 2), ([], 1)])
def test_replay_of_a_missing_file(tmp_path: Path, flag: list[str], status: int) -> None:
    """With --exit-code, 1 means "found": a file that cannot be read is 2, as grep's."""
    missing = tmp_path / "nope.log"
    done = retrywatch("replay", "--timezone", "UTC", *flag, str(missing))
    assert done.returncode == status
    line = one_line(done)
    assert line.startswith("Error: ") and str(missing) in line, line
