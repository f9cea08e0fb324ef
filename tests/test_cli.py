"""The ``retrywatch`` command line, run in-process with click's CliRunner."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from retrywatch.cli import main

SAMPLE_LOGS = Path(__file__).resolve().parent.parent / "sample_logs"
STORM = SAMPLE_LOGS / "scenario-http-lua-storm.error.log.gz"
STORM_CIDS = {73, 20137, 20302, 41557, 49447}
STORM_LINES = 57522

HTTP_FAILURE = (
    '2026/11/25 17:33:43 [error] 18264#18264: *20137 connect() failed (111: Connection '
    'refused) while connecting to upstream, client: 127.0.0.66, server: storm.test, request: '
    '"GET /storm1?cid=s1a HTTP/1.1", upstream: "http://127.0.0.1:17939/storm1?cid=s1a", '
    'host: "storm.test"'
)
STREAM_FAILURE = (
    "2019/09/17 03:46:20 [error] 2454#2454: *3584946 connect() failed (111: Connection "
    "refused) while connecting to upstream, client: 10.10.122.117, server: 0.0.0.0:55556, "
    'upstream: "10.12.39.132:5555", bytes from/to client:0/0, bytes from/to upstream:0/0'
)
NOTICE = "2026/11/25 17:33:40 [notice] 17996#17996: start worker processes"
ORPHAN = "this is not an nginx line"  # first in the file: no event for it to continue
BAD_DATE = "2026/13/45 17:33:40 [error] 1#1: *1 a month that does not exist"

#: The fields `retrywatch parse` documents for an event (absent values are left out).
DOCUMENTED = ("time", "level", "pid", "tid", "cid", "message", "client", "server", "request",
              "upstream", "host", "kind", "errno", "errno_text", "context", "subsystem")


def invoke(args: list[str], stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(main, args, input=stdin)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- replay ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def storm_json() -> dict[str, Any]:
    result = invoke(["replay", "--timezone", "UTC", "--format", "json", str(STORM)])
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_replay_json_finds_the_storm_connections(storm_json: dict[str, Any]) -> None:
    assert set(storm_json) == {"alerts", "stats"}
    assert {a["cid"] for a in storm_json["alerts"]} == STORM_CIDS
    assert len(storm_json["alerts"]) == len(STORM_CIDS)
    stats = storm_json["stats"]
    assert stats["lines_read"] == STORM_LINES
    assert stats["lines_parsed"] + stats["lines_unparsed"] == STORM_LINES
    assert stats["alerts_fired"] == len(STORM_CIDS)


def test_replay_json_alert_fields(storm_json: dict[str, Any]) -> None:
    by_cid = {a["cid"]: a for a in storm_json["alerts"]}
    alert = by_cid[20137]
    assert alert["pid"] == 18264
    assert alert["client"] == "127.0.0.66"
    assert alert["server"] == "storm.test"
    assert alert["request"] == "GET /storm1?cid=s1a HTTP/1.1"
    assert alert["upstreams"] == {"127.0.0.1:17939": 11555}
    assert alert["fired_at"].startswith("2026-11-25T17:33:4")
    assert alert["fired_at"].endswith("+00:00")
    assert by_cid[49447]["upstreams"] == {
        "unix:/tmp/retrywatch-real-nginx.PJCwCC/stale-upstream.sock": 8000}


def test_replay_jsonl_is_one_alert_a_line_then_stats(storm_json: dict[str, Any]) -> None:
    result = invoke(["replay", "--timezone", "UTC", "--format", "jsonl", str(STORM)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(STORM_CIDS) + 1
    records = [json.loads(line) for line in lines]
    *alerts, last = records
    assert set(last) == {"stats"}
    assert last["stats"]["lines_read"] == STORM_LINES
    assert {a["cid"] for a in alerts} == STORM_CIDS
    assert [a["id"] for a in alerts] == [a["id"] for a in storm_json["alerts"]]


def test_replay_table_mentions_each_connection() -> None:
    result = invoke(["replay", "--timezone", "UTC", str(STORM)])
    assert result.exit_code == 0, result.output
    for cid in STORM_CIDS:
        assert f"*{cid}" in result.stdout
    assert "57,522" in result.stdout


def test_replay_table_without_alerts(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text(NOTICE + "\n")
    result = invoke(["replay", "--timezone", "UTC", str(log)])
    assert result.exit_code == 0, result.output
    assert "No runaway connections" in result.stdout


def test_replay_reads_stdin() -> None:
    with gzip.open(STORM, "rb") as f:
        data = f.read()
    result = invoke(["replay", "--timezone", "UTC", "--format", "json", "-"], stdin=data)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {a["cid"] for a in doc["alerts"]} == STORM_CIDS
    assert {a["source"] for a in doc["alerts"]} == {"stdin"}
    assert doc["stats"]["lines_read"] == STORM_LINES


def test_replay_thresholds_are_options() -> None:
    result = invoke(["replay", "--timezone", "UTC", "--format", "json", "--threshold", "20002",
                     str(STORM)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["alerts"] == []


def test_replay_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.log"
    result = invoke(["replay", "--timezone", "UTC", str(missing)])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "Error:" in result.stderr
    assert "nope.log" in result.stderr
    assert "Traceback" not in result.output


# -- parse ----------------------------------------------------------------------------------------


@pytest.fixture
def small_log(tmp_path: Path) -> Path:
    log = tmp_path / "error.log"
    log.write_text("\n".join([ORPHAN, HTTP_FAILURE, STREAM_FAILURE, NOTICE, BAD_DATE]) + "\n")
    return log


def test_parse_prints_json_lines(small_log: Path) -> None:
    result = invoke(["parse", "--timezone", "UTC", str(small_log)])
    assert result.exit_code == 0, result.output
    records = json_lines(result.stdout)
    assert len(records) == 5
    orphan, http, stream, notice, bad = records

    assert orphan == {"unparsed": True, "reason": "no_timestamp", "line": ORPHAN,
                      "source": str(small_log)}
    assert bad["unparsed"] is True
    assert bad["reason"] == "bad_timestamp"
    assert bad["line"] == BAD_DATE

    assert set(DOCUMENTED) <= set(http)
    assert "line" not in http
    assert http["time"] == "2026-11-25T17:33:43+00:00"
    assert (http["level"], http["pid"], http["tid"], http["cid"]) == ("error", 18264, 18264,
                                                                      20137)
    assert http["message"] == ("connect() failed (111: Connection refused) while connecting "
                               "to upstream")
    assert http["client"] == "127.0.0.66"
    assert http["server"] == "storm.test"
    assert http["request"] == "GET /storm1?cid=s1a HTTP/1.1"
    assert http["upstream"] == "http://127.0.0.1:17939/storm1?cid=s1a"
    assert http["host"] == "storm.test"
    assert (http["kind"], http["errno"], http["errno_text"]) == ("connect_failed", 111,
                                                                 "Connection refused")
    assert http["context"] == "connecting to upstream"
    assert http["subsystem"] == "http"

    assert stream["subsystem"] == "stream"
    assert stream["upstream"] == "10.12.39.132:5555"
    assert stream["time"] == "2019-09-17T03:46:20+00:00"
    assert stream["cid"] == 3584946

    assert notice["level"] == "notice"
    assert notice["message"] == "start worker processes"
    assert "unparsed" not in notice
    assert notice.get("cid") is None


def test_parse_time_carries_the_zone_offset(small_log: Path) -> None:
    result = invoke(["parse", "--timezone", "Europe/Berlin", str(small_log)])
    assert result.exit_code == 0, result.output
    http = json_lines(result.stdout)[1]
    assert http["time"] == "2026-11-25T17:33:43+01:00"
    stream = json_lines(result.stdout)[2]
    assert stream["time"] == "2019-09-17T03:46:20+02:00"


def test_parse_reads_stdin() -> None:
    data = (HTTP_FAILURE + "\r\n" + NOTICE + "\n").encode()
    for args in (["parse", "--timezone", "UTC", "-"], ["parse", "--timezone", "UTC"]):
        result = invoke(args, stdin=data)
        assert result.exit_code == 0, result.output
        records = json_lines(result.stdout)
        assert [r.get("cid") for r in records] == [20137, None]
        assert {r["source"] for r in records} == {"stdin"}
        assert records[0]["host"] == "storm.test"


def test_parse_reads_gzip(tmp_path: Path) -> None:
    log = tmp_path / "error.log.1.gz"
    with gzip.open(log, "wb") as f:
        f.write((HTTP_FAILURE + "\n").encode())
    result = invoke(["parse", "--timezone", "UTC", str(log)])
    assert result.exit_code == 0, result.output
    [record] = json_lines(result.stdout)
    assert record["cid"] == 20137
    assert record["source"] == str(tmp_path / "error.log")


def test_parse_invalid_utf8_and_nul(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_bytes(b"\x00\x00" + NOTICE.encode() + b" \xff\n")
    result = invoke(["parse", "--timezone", "UTC", str(log)])
    assert result.exit_code == 0, result.output
    [record] = json_lines(result.stdout)
    assert record["message"] == "start worker processes \\xff"


def test_parse_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    result = invoke(["parse", "--timezone", "UTC", str(tmp_path / "nope.log")])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "nope.log" in result.stderr


# -- options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["parse", "replay"])
def test_unknown_timezone_is_a_usage_error(command: str, small_log: Path) -> None:
    result = invoke([command, "--timezone", "Not/AZone", str(small_log)])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert "Invalid value for '--timezone'" in result.stderr
    assert "Not/AZone" in result.stderr
    assert result.stdout == ""


def test_unknown_format_is_a_usage_error() -> None:
    result = invoke(["replay", "--format", "xml", str(STORM)])
    assert result.exit_code == 2
    assert "Invalid value for '--format'" in result.stderr


def test_help() -> None:
    result = invoke(["--help"])
    assert result.exit_code == 0
    assert "replay" in result.stdout
    assert "parse" in result.stdout


# -- help -----------------------------------------------------------------------------------------
COMMANDS = sorted(main.commands)


def help_of(*command: str) -> str:
    result = CliRunner().invoke(main, [*command, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_command_list_is_whole_and_plain() -> None:
    """Each command's summary whole on its line at 80 columns (click cut them with
    "..."), without markup."""
    text = help_of()
    listed = text.split("Commands:\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in listed] == COMMANDS
    for line in listed:
        assert len(line) <= 80 and not line.endswith("...") and "``" not in line, line


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_plain_text_within_80_columns(command: str) -> None:
    text = help_of(command)
    assert "``" not in text and ":class:" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "INTEGER RANGE" not in text  # a metavar that says what the number is


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help(command: str) -> None:
    import click

    for param in main.commands[command].params:
        if isinstance(param, click.Option):
            assert param.help, f"{command} {param.opts[0]} has no help"


def test_detector_flags_say_what_they_are_and_their_defaults() -> None:
    text = " ".join(help_of("replay").split())
    assert "--window SECONDS How far back a connection's connect failures are counted" in text
    assert "[default: 60; x>=1]" in text
    assert "--threshold N Connect failures of one connection within the window" in text
    assert "[default: 100000; x>=1]" in text
    text = " ".join(help_of("run").split())
    assert "--window SECONDS How far back" in text
    assert "[env var: RETRYWATCH_WINDOW; default: 60; x>=1]" in text


def setting_options() -> list[Any]:
    from retrywatch.cli import _SettingOption

    return [p for p in main.commands["run"].params
            if isinstance(p, _SettingOption)]


def test_each_setting_flag_shows_the_variable_the_settings_read() -> None:
    """The variable shown is RETRYWATCH_ and the name `retrywatch config` prints (the
    alias: from), and a flag's default shown is the settings' own."""
    from retrywatch.serve.settings import Settings

    text = " ".join(help_of("run").split())
    dumped = Settings.model_validate({}).model_dump(by_alias=True)
    for option in setting_options():
        if option.name == "config_file":
            assert "[env var: RETRYWATCH_CONFIG]" in text
            continue
        key = Settings.model_fields[option.name].alias or option.name
        assert key in dumped
        assert f"[env var: RETRYWATCH_{key.upper()}" in text, option.name
    assert "[env var: RETRYWATCH_FROM; default: end]" in text
    assert "[env var: RETRYWATCH_LISTEN; default: 127.0.0.1:8734]" in text
    assert "default: 300; x>0]" in text  # --syslog-idle-timeout: 300, not 300.0
    assert "default: redact-query-strings]" in text


@pytest.mark.parametrize(("variable", "value", "key", "expected"), [
    ("RETRYWATCH_FROM", "beginning", "from", "beginning"),
    ("RETRYWATCH_WINDOW", "45", "window", 45),
    ("RETRYWATCH_LOG", '["/var/log/nginx/error.log"]', "log", ["/var/log/nginx/error.log"]),
    ("RETRYWATCH_SYSLOG_IDLE_TIMEOUT", "12.5", "syslog_idle_timeout", 12.5),
    ("RETRYWATCH_KEEP_QUERY_STRINGS", "true", "keep_query_strings", True),
])
def test_the_variables_shown_are_read(monkeypatch: pytest.MonkeyPatch, variable: str,
                                      value: str, key: str, expected: Any) -> None:
    for name in [k for k in os.environ if k.startswith("RETRYWATCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(variable, value)
    result = invoke(["config"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[key] == expected


def test_a_variable_is_not_read_by_click(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings read RETRYWATCH_LOG as JSON; click would have split it on spaces."""
    monkeypatch.setenv("RETRYWATCH_LOG", '["/var/log/a b.log"]')
    result = invoke(["config"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["log"] == ["/var/log/a b.log"]


@pytest.mark.parametrize(("shell", "mark"), [
    ("bash", "complete -o nosort -F"), ("zsh", "compdef"),
    ("fish", "complete --no-files --command retrywatch")])
def test_shell_completion_script(shell: str, mark: str) -> None:
    """README, Shell completion: eval "$(_RETRYWATCH_COMPLETE=bash_source retrywatch)"."""
    env = {**os.environ, "_RETRYWATCH_COMPLETE": f"{shell}_source"}
    done = subprocess.run([sys.executable, "-c", "from retrywatch.cli import main; "
                           "main(prog_name='retrywatch')"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert mark in done.stdout and "_RETRYWATCH_COMPLETE" in done.stdout


def test_shell_completion_of_a_command_and_a_flag() -> None:
    def complete(words: str) -> list[str]:
        env = {**os.environ, "_RETRYWATCH_COMPLETE": "bash_complete", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - 1)}
        done = subprocess.run([sys.executable, "-c", "from retrywatch.cli import main; "
                               "main(prog_name='retrywatch')"], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    assert complete("retrywatch re") == ["plain,replay"]
    assert complete("retrywatch run --thr") == ["plain,--threshold"]


# -- replay --exit-code -------------------------------------------------------------------------
def test_replay_exit_code_in_process(tmp_path: Path) -> None:
    assert invoke(["replay", "--timezone", "UTC", "--exit-code", str(STORM)]).exit_code == 1
    log = tmp_path / "error.log"
    log.write_text(NOTICE + "\n")
    assert invoke(["replay", "--timezone", "UTC", "--exit-code", str(log)]).exit_code == 0
