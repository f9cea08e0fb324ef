"""The ``retrywatch`` command line."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import orjson

from retrywatch import __version__
from retrywatch.detector import DetectorConfig
from retrywatch.events import Event
from retrywatch.timezones import resolve_zone

__all__ = ["main"]

_DEFAULTS = DetectorConfig()


def _zone(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    try:
        return resolve_zone(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


timezone_option = click.option(
    "--timezone", "tz", default=None, callback=_zone, metavar="ZONE",
    help="Zone of nginx's local timestamps (IANA name). Default: this machine's zone.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="retrywatch")
def main() -> None:
    """Find nginx connections stuck in connect() retry loops, from the error log."""


@main.command()
@click.argument("files", nargs=-1)
@timezone_option
def parse(files: tuple[str, ...], tz: Any) -> None:
    """Print each event of nginx error logs as JSON Lines (``-`` or nothing: stdin).

    Unparsed lines print as {"unparsed": true, "reason": ..., "line": ...}.
    """
    from retrywatch.parser import Parser

    out = sys.stdout.buffer
    parser = Parser(tz)
    try:
        _print_events(list(files) or ["-"], parser, out)
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc


def _print_events(files: list[str], parser: Any, out: Any) -> None:
    from retrywatch.pipeline import SourcePipeline
    from retrywatch.sources.files import iter_chunks, source_name

    for path in files:
        pipe = SourcePipeline(source_name(path), parser, ordered=True)
        for chunk in [*iter_chunks(path), None]:
            batch = pipe.feed(chunk) if chunk is not None else pipe.flush()
            for record in batch.records:
                data = record.to_dict()
                if isinstance(record, Event):
                    data.pop("line", None)
                out.write(orjson.dumps(data) + b"\n")
    out.flush()


@main.command()
@click.argument("files", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "jsonl"]), default="table",
              show_default=True, help="Output: a table, one JSON document, or JSON Lines.")
@click.option("--window", type=click.IntRange(min=1), default=_DEFAULTS.window,
              show_default=True, help="Sliding window, seconds of event time.")
@click.option("--threshold", type=click.IntRange(min=1), default=_DEFAULTS.threshold,
              show_default=True, help="Connect failures within the window that make a "
              "connection runaway.")
@click.option("--min-repeat", type=click.IntRange(min=1), default=_DEFAULTS.min_repeat,
              show_default=True, help="...and failures against one peer (repetition).")
@click.option("--resolve-after", type=click.IntRange(min=1),
              default=_DEFAULTS.resolve_after, show_default=True,
              help="Seconds of event time without a failure before an alert resolves.")
@click.option("--max-tracked", type=click.IntRange(min=1), default=_DEFAULTS.max_tracked,
              show_default=True, help="Connection keys tracked at once (then evicted).")
@timezone_option
def replay(files: tuple[str, ...], fmt: str, window: int, threshold: int, min_repeat: int,
           resolve_after: int, max_tracked: int, tz: Any) -> None:
    """Run the detector over whole files (plain or .gz; ``-`` or nothing: stdin) and
    print the alerts."""
    from retrywatch import report
    from retrywatch.replay import replay as run_replay

    config = DetectorConfig(window=window, threshold=threshold, min_repeat=min_repeat,
                            resolve_after=resolve_after, max_tracked=max_tracked)
    started = time.perf_counter()
    try:
        result = run_replay(list(files) or ["-"], tz=tz, config=config)
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc
    elapsed = time.perf_counter() - started
    stats = result.stats()
    stats["seconds"] = round(elapsed, 3)
    stats["lines_per_second"] = round(stats["lines_read"] / elapsed) if elapsed > 0 else 0
    render = {"table": report.render_table, "json": report.render_json,
              "jsonl": report.render_jsonl}[fmt]
    render(result.alerts, stats, sys.stdout)
