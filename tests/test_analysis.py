"""``retrywatch analyze``: the bundled real nginx logs against their truth, the aggregates,
the Parquet/CSV export, rotated sets and the command line.

The logs in sample_logs/ were written by a real nginx (see sample_logs/README.md); their
truth files were built without parsing the error log. The timestamps are UTC.
"""

from __future__ import annotations

import functools
import gzip
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from click.testing import CliRunner, Result
from helpers import stream_refused

import retrywatch.forensics.analysis as analysis_module
from retrywatch.cli import main
from retrywatch.forensics.analysis import EVENT_COLUMNS, Analysis, analyze
from retrywatch.forensics.discover import discover
from retrywatch.forensics.export import EventExport, write_aggregates
from retrywatch.forensics.replay import replay

SAMPLE_LOGS = Path(__file__).resolve().parent.parent / "sample_logs"
SCENARIOS = ("stream-plain", "stream-multi", "http-lua-storm", "http-normal")
STORM = SAMPLE_LOGS / "scenario-http-lua-storm.error.log.gz"
STORM_CIDS = {73, 20137, 20302, 41557, 49447}
UTC = ZoneInfo("UTC")
LOG_SECOND = "%Y/%m/%d %H:%M:%S"  # nginx's timestamps, and the truth's per-second keys
#: The truth's by_message kinds that retrywatch counts as connect failures under that name.
TRUTH_KINDS = ("connect_failed", "connect_to_failed", "no_live_upstreams")
AGGREGATES = ("timeline", "by_kind", "by_upstream", "by_server", "connections")


def log_path(scenario: str) -> Path:
    return SAMPLE_LOGS / f"scenario-{scenario}.error.log.gz"


@functools.cache
def truth(scenario: str) -> dict[str, Any]:
    with gzip.open(SAMPLE_LOGS / f"scenario-{scenario}.truth.json.gz", "rt",
                   encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


@functools.cache
def analyzed(scenario: str) -> Analysis:
    """One analysis per scenario, shared by the tests (they only read it)."""
    return analyze(discover([str(log_path(scenario))]), tz=UTC)


def log_second(text: str) -> pd.Timestamp:
    return pd.Timestamp(datetime.strptime(text, LOG_SECOND).replace(tzinfo=UTC))


def utc(text: str) -> pd.Timestamp:
    ts = pd.Timestamp(text)
    assert ts.tzinfo is not None, text
    return ts.tz_convert("UTC")


def first_and_last_line_seconds(path: Path) -> tuple[pd.Timestamp, pd.Timestamp]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    return log_second(lines[0][:19]), log_second(lines[-1][:19])


def runaway_cases() -> list[Any]:
    return [pytest.param(scenario, rec["id"], id=f"{scenario}-{rec['id']}")
            for scenario in SCENARIOS for rec in truth(scenario)["runaway_connections"]]


# -- the bundled real logs against their truth ----------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_runaway_connections_are_exactly_the_truth(scenario: str) -> None:
    a = analyzed(scenario)
    expected = sorted(rec["id"] for rec in truth(scenario)["runaway_connections"])
    assert sorted(truth(scenario)["runaway_ids"]) == expected
    assert sorted(alert.cid for alert in a.alerts) == expected  # no others, no duplicates
    conns = a.connections()
    assert len(conns) == len(expected)
    if expected:
        assert sorted(conns["cid"]) == expected
    assert a.summary["storms"] == len(expected)
    assert a.summary["storm_failures"] == sum(
        rec["failures"] for rec in truth(scenario)["runaway_connections"])


@pytest.mark.parametrize(("scenario", "cid"), runaway_cases())
def test_runaway_connection_start_end_failures(scenario: str, cid: int) -> None:
    rec = next(r for r in truth(scenario)["runaway_connections"] if r["id"] == cid)
    per_second = rec["failures_per_log_second"]
    start, end = log_second(min(per_second)), log_second(max(per_second))

    [row] = analyzed(scenario).connections().query("cid == @cid").to_dict("records")
    assert row["pid"] == rec["worker_pid"]
    assert utc(row["start"]) == start
    assert utc(row["end"]) == end
    assert row["failures"] == rec["failures"]
    assert row["duration_seconds"] == (end - start).total_seconds() + 1
    assert row["peak_per_second"] == max(per_second.values())
    assert row["client"] == rec["client"]
    assert row["server"] == rec["server"]
    assert row["request"] == rec.get("request")
    assert row["diagnosis"]
    for addr in rec["upstreams"]:
        assert addr in row["upstreams"]

    [alert] = [x for x in analyzed(scenario).alerts if x.cid == cid]
    d = alert.to_dict()
    assert utc(d["first_seen"]) == start
    assert utc(d["last_seen"]) == end
    assert d["failures"] == rec["failures"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_summary_matches_truth(scenario: str) -> None:
    t = truth(scenario)
    s = analyzed(scenario).summary
    assert s["files"] == 1
    assert s["bytes"] == log_path(scenario).stat().st_size
    assert s["lines_read"] == t["log_summary"]["lines"]
    assert s["lines_parsed"] == t["log_summary"]["lines"]
    assert s["lines_unparsed"] == 0, s["unparsed_by_reason"]
    by_kind = s["connect_failures_by_kind"]
    for kind in TRUTH_KINDS:
        assert by_kind.get(kind, 0) == t["log_summary"]["by_message"][kind], kind
    assert s["connect_failures"] == sum(by_kind.values())
    assert sum(s["connect_failures_by_errno"].values()) <= s["connect_failures"]
    first, last = first_and_last_line_seconds(log_path(scenario))
    assert utc(s["first_event"]) == first
    assert utc(s["last_event"]) == last


def test_storm_errnos_are_all_connection_refused() -> None:
    s = analyzed("http-lua-storm").summary
    assert s["connect_failures_by_errno"] == {"111": s["connect_failures"]}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_same_alerts_as_replay(scenario: str) -> None:
    replayed = replay([str(log_path(scenario))], tz=UTC)
    assert ([a.to_dict() for a in analyzed(scenario).alerts]
            == [a.to_dict() for a in replayed.alerts])
    stats = replayed.stats()
    s = analyzed(scenario).summary
    for key in ("lines_read", "lines_parsed", "lines_unparsed", "connect_failures",
                "connect_failures_by_kind"):
        assert s[key] == stats[key], key


def test_progress_callback_covers_every_byte() -> None:
    files = discover([str(SAMPLE_LOGS)])
    done: list[int] = []
    analyze(files, tz=UTC, on_raw=done.append)
    assert sum(done) == sum(f.size for f in files)
    assert all(n >= 0 for n in done)


# -- aggregates -----------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_aggregates_sum_to_connect_failures(scenario: str) -> None:
    a = analyzed(scenario)
    total = a.summary["connect_failures"]
    assert total > 0
    assert int(a.timeline.sum()) == total
    assert int(a.by_kind.to_numpy().sum()) == total
    assert int(a.by_upstream["failures"].sum()) == total
    assert int(a.by_server["failures"].sum()) == total
    assert a.timeline.index.is_monotonic_increasing
    assert str(a.timeline.index.tz) == "UTC"
    doc = a.to_dict()
    assert sum(doc["timeline"]["failures"].values()) == total
    assert sum(doc["upstreams"].values()) == total
    assert sum(doc["servers"].values()) == total


def test_storm_timeline_per_second() -> None:
    a = analyzed("http-lua-storm")
    expected: dict[pd.Timestamp, int] = {}
    for rec in truth("http-lua-storm")["runaway_connections"]:
        for second, n in rec["failures_per_log_second"].items():
            expected[log_second(second)] = expected.get(log_second(second), 0) + n
    # The runaways' failures are in their seconds (the normal connections add a few).
    for when, n in expected.items():
        assert a.timeline[when] >= n
    series, rule = a.resampled()
    assert rule == "1s"
    assert int(series.sum()) == int(a.timeline.sum())
    pd.testing.assert_series_equal(series, a.timeline.asfreq("1s", fill_value=0),
                                   check_freq=False)


def synthetic(path: Path, seconds: list[int]) -> Path:
    """A stream log with one refused connect per listed second (distinct connections)."""
    path.write_text("".join(stream_refused(t, 100 + i) + "\n" for i, t in enumerate(seconds)))
    return path


def test_resampled_picks_coarser_bins_for_a_long_range(tmp_path: Path) -> None:
    seconds = [0, 1, 2, 1800, 3600, 7200, 10799, 10800]  # three hours and a second
    a = analyze(discover([str(synthetic(tmp_path / "error.log", seconds))]), tz=UTC)
    assert a.summary["connect_failures"] == len(seconds)
    assert a.alerts == []
    assert len(a.timeline) == len(seconds)
    series, rule = a.resampled()
    assert rule != "1s"
    step = pd.to_timedelta(rule)
    assert step >= pd.Timedelta(seconds=10801 / 40)
    assert len(series) <= 40
    assert int(series.sum()) == len(seconds)
    assert (series.index[1:] - series.index[:-1] == step).all()
    series, rule = a.resampled(max_bins=10_000)
    assert rule == "5s"


def test_resampled_keeps_seconds_for_a_short_range(tmp_path: Path) -> None:
    seconds = [0, 3, 3, 10]
    a = analyze(discover([str(synthetic(tmp_path / "error.log", seconds))]), tz=UTC)
    series, rule = a.resampled()
    assert rule == "1s"
    assert len(series) == 11  # the quiet seconds are there, with 0
    assert series.tolist() == [1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1]


def test_no_failures_gives_empty_aggregates(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("2026/11/25 17:33:43 [notice] 1#1: start worker processes\n")
    a = analyze(discover([str(log)]), tz=UTC)
    assert a.summary["connect_failures"] == 0
    assert a.summary["lines_read"] == 1
    assert a.timeline.empty
    assert a.alerts == []
    assert a.resampled()[0].empty
    json.dumps(a.to_dict())


# -- export ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def storm_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Analysis, Path,
                                                                     list[pd.DataFrame]]:
    folder = tmp_path_factory.mktemp("export")
    sink = EventExport(folder)
    chunks: list[pd.DataFrame] = []

    def tee(frame: pd.DataFrame) -> None:
        chunks.append(frame.copy())
        sink(frame)

    a = analyze(discover([str(STORM)]), tz=UTC, sink=tee)
    sink.close()
    written = write_aggregates(a, folder)
    assert sorted(written) == sorted(f"{n}.{ext}" for n in AGGREGATES
                                     for ext in ("parquet", "csv"))
    return a, folder, chunks


def test_events_parquet_round_trips(storm_export: tuple[Analysis, Path,
                                                        list[pd.DataFrame]]) -> None:
    a, folder, chunks = storm_export
    events = pd.read_parquet(folder / "events.parquet")
    assert list(events.columns) == EVENT_COLUMNS
    assert int(events["count"].sum()) == a.summary["connect_failures"]
    assert len(events) == a.summary["event_rows"]
    assert isinstance(events["time"].dtype, pd.DatetimeTZDtype)
    assert str(events["time"].dt.tz) == "UTC"
    assert events["errno"].dtype == pd.Int64Dtype()
    pd.testing.assert_frame_equal(events, pd.concat(chunks, ignore_index=True))
    storms = events[events["cid"].isin(STORM_CIDS)].groupby("cid")["count"].sum()
    expected = {r["id"]: r["failures"] for r in truth("http-lua-storm")["runaway_connections"]}
    assert storms.to_dict() == expected


def test_events_csv_has_the_same_rows(storm_export: tuple[Analysis, Path,
                                                          list[pd.DataFrame]]) -> None:
    a, folder, _ = storm_export
    text = (folder / "events.csv").read_text()
    assert text.splitlines()[0].split(",") == EVENT_COLUMNS
    assert text.count("\ntime,") == 0  # one header, not one per chunk
    events = pd.read_csv(folder / "events.csv")
    assert len(events) == a.summary["event_rows"]
    assert int(events["count"].sum()) == a.summary["connect_failures"]


def test_aggregates_parquet_round_trip(storm_export: tuple[Analysis, Path,
                                                           list[pd.DataFrame]]) -> None:
    a, folder, _ = storm_export
    in_memory = {
        "timeline": a.timeline.rename("failures").reset_index(),
        "by_kind": a.by_kind.reset_index().rename_axis(columns=None),
        "by_upstream": a.by_upstream,
        "by_server": a.by_server,
        "connections": a.connections(),
    }
    for name, frame in in_memory.items():
        back = pd.read_parquet(folder / f"{name}.parquet")
        pd.testing.assert_frame_equal(back, frame.reset_index(drop=True), obj=name)
    assert sorted(pd.read_parquet(folder / "connections.parquet")["cid"]) == sorted(STORM_CIDS)


def test_aggregate_csvs_have_a_header(storm_export: tuple[Analysis, Path,
                                                          list[pd.DataFrame]]) -> None:
    _, folder, _ = storm_export
    for name in AGGREGATES:
        csv = pd.read_csv(folder / f"{name}.csv")
        parquet = pd.read_parquet(folder / f"{name}.parquet")
        assert list(csv.columns) == [str(c) for c in parquet.columns], name
        assert len(csv) == len(parquet), name


def test_export_without_runaways_keeps_the_connection_columns(tmp_path: Path) -> None:
    # A notebook reads connections.csv whether or not there was a storm.
    a = analyze(discover([str(log_path("stream-plain"))]), tz=UTC)
    assert a.alerts == []
    write_aggregates(a, tmp_path)
    columns = list(analyzed("http-lua-storm").connections().columns)
    assert list(pd.read_parquet(tmp_path / "connections.parquet").columns) == columns
    assert (tmp_path / "connections.csv").read_text().splitlines()[0].split(",") == columns


def test_event_export_when_the_first_chunk_has_no_peer(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A failure line without the upstream/server tail first, a full one after: the first
    # chunk's all-null columns must not fix the Parquet schema to the null type.
    monkeypatch.setattr(analysis_module, "FRAME_ROWS", 1)
    bare = tmp_path / "a" / "error.log"
    bare.parent.mkdir()
    bare.write_text("2026/11/25 17:00:00 [error] 1#1: *1 connect() failed (111: Connection "
                    "refused) while connecting to upstream\n")
    full = synthetic(tmp_path / "error.log", [1])
    sink = EventExport(tmp_path / "out")
    a = analyze(discover([str(bare), str(full)]), tz=UTC, sink=sink)
    sink.close()
    assert a.summary["connect_failures"] == 2
    events = pd.read_parquet(tmp_path / "out" / "events.parquet")
    assert events["peer"].isna().tolist() == [True, False]


# -- a rotated set --------------------------------------------------------------------------


def test_rotated_set_gives_the_alerts_of_the_whole_file(tmp_path: Path) -> None:
    with gzip.open(STORM, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    third = len(lines) // 3
    parts = [lines[:third], lines[third:2 * third], lines[2 * third:]]
    folder = tmp_path / "nginx"
    folder.mkdir()
    with gzip.open(folder / "error.log.2.gz", "wb") as f:  # oldest
        f.writelines(parts[0])
    (folder / "error.log.1").write_bytes(b"".join(parts[1]))
    (folder / "error.log").write_bytes(b"".join(parts[2]))  # newest

    files = discover([str(folder)])
    assert [Path(f.path).name for f in files] == ["error.log.2.gz", "error.log.1", "error.log"]
    assert {f.source for f in files} == {str(folder / "error.log")}

    rotated = analyze(files, tz=UTC)
    whole = analyzed("http-lua-storm")

    def key(a: Analysis) -> list[tuple[int, int, int, str, str]]:
        return sorted((x.pid, x.cid, x.to_dict()["failures"], x.to_dict()["first_seen"],
                       x.to_dict()["last_seen"]) for x in a.alerts)

    assert key(rotated) == key(whole)
    assert sorted(x.cid for x in rotated.alerts) == sorted(STORM_CIDS)
    assert {x.source for x in rotated.alerts} == {str(folder / "error.log")}
    for name in ("lines_read", "lines_parsed", "connect_failures", "connect_failures_by_kind",
                 "first_event", "last_event"):
        assert rotated.summary[name] == whole.summary[name], name
    assert rotated.summary["files"] == 3
    pd.testing.assert_series_equal(rotated.timeline, whole.timeline)


# -- the command line -----------------------------------------------------------------------


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args)


def assert_clean_error(result: Result) -> None:
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert "Error:" in result.output


@pytest.fixture(scope="module")
def folder_json() -> dict[str, Any]:
    result = invoke(["analyze", "--timezone", "UTC", "--format", "json", str(SAMPLE_LOGS)])
    assert result.exit_code == 0, result.output
    assert "reading" not in result.output  # no progress bar: not a terminal
    assert result.stderr == ""
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_cli_json_summary_and_alerts(folder_json: dict[str, Any]) -> None:
    assert {"summary", "alerts"} <= set(folder_json)
    assert len(folder_json["alerts"]) == 5
    assert {a["cid"] for a in folder_json["alerts"]} == STORM_CIDS
    s = folder_json["summary"]
    assert s["files"] == 4
    assert s["lines_read"] == sum(truth(sc)["log_summary"]["lines"] for sc in SCENARIOS)
    assert s["storms"] == 5
    assert s["connect_failures"] == sum(analyzed(sc).summary["connect_failures"]
                                        for sc in SCENARIOS)
    assert utc(s["first_event"]) == min(first_and_last_line_seconds(log_path(sc))[0]
                                        for sc in SCENARIOS)
    assert utc(s["last_event"]) == max(first_and_last_line_seconds(log_path(sc))[1]
                                       for sc in SCENARIOS)


def test_cli_json_alerts_are_replays(folder_json: dict[str, Any]) -> None:
    result = invoke(["replay", "--timezone", "UTC", "--format", "json", str(STORM)])
    assert result.exit_code == 0, result.output
    replayed = json.loads(result.stdout)["alerts"]
    ours = [a for a in folder_json["alerts"] if a["source"] == replayed[0]["source"]]
    assert ours == replayed


def test_cli_table(tmp_path: Path) -> None:
    result = invoke(["analyze", "--timezone", "UTC", str(STORM)])
    assert result.exit_code == 0, result.output
    assert "Runaway connections" in result.output
    assert "Summary" in result.output
    for cid in STORM_CIDS:
        assert f"*{cid}" in result.output
    assert "reading" not in result.output


def test_cli_export(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(["analyze", "--timezone", "UTC", "--format", "json", "--export", str(out),
                     str(STORM)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    for name in ("events", *AGGREGATES):
        assert (out / f"{name}.parquet").is_file(), name
        assert (out / f"{name}.csv").is_file(), name
    events = pd.read_parquet(out / "events.parquet")
    assert int(events["count"].sum()) == doc["summary"]["connect_failures"]
    assert sorted(pd.read_parquet(out / "connections.parquet")["cid"]) == sorted(STORM_CIDS)


def test_cli_missing_path_is_a_clean_error(tmp_path: Path) -> None:
    assert_clean_error(invoke(["analyze", "--timezone", "UTC", str(tmp_path / "missing.log")]))


def test_cli_folder_without_logs_is_a_clean_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a log\n")
    result = invoke(["analyze", "--timezone", "UTC", str(tmp_path)])
    assert_clean_error(result)
    assert "no log files" in result.output


def test_cli_glob_matching_nothing_is_a_clean_error(tmp_path: Path) -> None:
    assert_clean_error(invoke(["analyze", "--timezone", "UTC", str(tmp_path / "*.log")]))
