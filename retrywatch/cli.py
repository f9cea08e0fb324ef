"""The ``retrywatch`` command line."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import orjson

from retrywatch import __version__
from retrywatch.detect.core import DetectorConfig
from retrywatch.detect.events import Event
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
    out = sys.stdout.buffer
    try:
        _print_events(list(files) or ["-"], tz, out)
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc


def _print_events(files: list[str], tz: Any, out: Any) -> None:
    from retrywatch.detect.records import RecordReader
    from retrywatch.sources.files import iter_chunks, source_name

    for path in files:
        reader = RecordReader(tz, source_name(path))
        for chunk in [*iter_chunks(path), None]:
            records = reader.feed(chunk) if chunk is not None else reader.flush()
            for record in records:
                data = record.to_dict()
                if isinstance(record, Event):
                    data.pop("line", None)
                out.write(orjson.dumps(data) + b"\n")
    out.flush()


threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None, metavar="N",
    help="Files read at once, each on its own thread (default: one per processor it may use); "
         "the results do not depend on it.")


def detector_options(func: Any) -> Any:
    """The detector's thresholds, shared by the commands that run it."""
    options = [
        click.option("--window", type=click.IntRange(min=1), default=_DEFAULTS.window,
                     show_default=True, help="Sliding window, seconds of event time."),
        click.option("--threshold", type=click.IntRange(min=1), default=_DEFAULTS.threshold,
                     show_default=True,
                     help="Connect failures within the window that make a connection runaway."),
        click.option("--min-repeat", type=click.IntRange(min=1), default=_DEFAULTS.min_repeat,
                     show_default=True, help="...and failures against one peer (repetition)."),
        click.option("--resolve-after", type=click.IntRange(min=1),
                     default=_DEFAULTS.resolve_after, show_default=True,
                     help="Seconds of event time without a failure before an alert resolves."),
        click.option("--max-tracked", type=click.IntRange(min=1),
                     default=_DEFAULTS.max_tracked, show_default=True,
                     help="Connection keys tracked at once (then evicted)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _knowledge(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> Any:
    if not value:
        return None
    from retrywatch.detect.knowledge import Knowledge, KnowledgeError

    try:
        return Knowledge.load(list(value))
    except KnowledgeError as exc:
        raise click.BadParameter(str(exc)) from exc


nginx_config_option = click.option(
    "--nginx-config", "knowledge", multiple=True, callback=_knowledge, metavar="PATH",
    type=click.Path(exists=True, dir_okay=False),
    help="The nginx configuration (or ingress-nginx YAML) of the nginx that wrote the log "
         "(repeatable): routes whose tries are bounded get no loop alert, routes that can "
         "loop are confirmed at once.")


def _config(opts: dict[str, Any]) -> DetectorConfig:
    return DetectorConfig(window=opts["window"], threshold=opts["threshold"],
                          min_repeat=opts["min_repeat"], resolve_after=opts["resolve_after"],
                          max_tracked=opts["max_tracked"])


@main.command()
@click.argument("files", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "jsonl"]), default="table",
              show_default=True, help="Output: a table, one JSON document, or JSON Lines.")
@detector_options
@nginx_config_option
@threads_option
@timezone_option
def replay(files: tuple[str, ...], fmt: str, tz: Any, threads: int | None, knowledge: Any,
           **opts: Any) -> None:
    """Run the detector over whole files (plain or .gz; ``-`` or nothing: stdin) and
    print the alerts."""
    from retrywatch.forensics import report
    from retrywatch.forensics.replay import replay as run_replay

    started = time.perf_counter()
    try:
        result = run_replay(list(files) or ["-"], tz=tz, config=_config(opts), threads=threads,
                            knowledge=knowledge)
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc
    elapsed = time.perf_counter() - started
    stats = result.stats()
    stats["seconds"] = round(elapsed, 3)
    stats["lines_per_second"] = round(stats["lines_read"] / elapsed) if elapsed > 0 else 0
    render = {"table": report.render_table, "json": report.render_json,
              "jsonl": report.render_jsonl}[fmt]
    render(result.alerts, stats, sys.stdout)


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output: tables, or one JSON document.")
@click.option("--html", "html", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write a self-contained HTML report with plots to this file.")
@click.option("--export", "export", type=click.Path(file_okay=False), default=None,
              help="Also write events and aggregates as Parquet and CSV into this folder.")
@detector_options
@nginx_config_option
@threads_option
@timezone_option
def analyze(paths: tuple[str, ...], fmt: str, html: str | None, export: str | None, tz: Any,
            threads: int | None, knowledge: Any, **opts: Any) -> None:
    """Forensics over historical logs: files, globs, folders, .gz, rotated sets.

    Reports the time range, connect failures by kind and errno, each runaway connection
    (the same alerts as replay), failures per upstream and per server, and a timeline.
    """
    from pathlib import Path

    from retrywatch.forensics.analysis import analyze as run_analysis
    from retrywatch.forensics.analysis_view import render_analysis
    from retrywatch.forensics.discover import discover

    try:
        files = discover(list(paths))
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc
    if not files:
        raise click.ClickException("no log files found in " + ", ".join(paths))
    sink = None
    if export is not None:
        from retrywatch.forensics.export import EventExport, write_aggregates

        sink = EventExport(Path(export))
    started = time.perf_counter()
    with _progress(sum(f.size for f in files)) as advance:
        try:
            result = run_analysis(files, tz=tz, config=_config(opts), on_raw=advance, sink=sink,
                                  threads=threads, knowledge=knowledge)
        except OSError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            if sink is not None:
                sink.close()
    elapsed = time.perf_counter() - started
    result.summary["seconds"] = round(elapsed, 3)
    result.summary["lines_per_second"] = (
        round(result.summary["lines_read"] / elapsed) if elapsed > 0 else 0)
    if export is not None:
        write_aggregates(result, Path(export))
    if html is not None:
        from retrywatch.forensics.html_report import render_html

        render_html(result, Path(html))
    if fmt == "json":
        sys.stdout.write(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        render_analysis(result, sys.stdout)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar of file bytes read on a terminal (stderr); silent otherwise."""
    if not sys.stderr.isatty():
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress("reading", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("logs", total=total)
        yield lambda n: bar.advance(task, n)


def service_options(func: Any) -> Any:
    """The live service's settings as flags; unset flags leave the environment and the
    config file to decide."""
    options = [
        click.option("--log", "log", multiple=True, metavar="PATH",
                     help="A log file or glob to follow (repeatable); '-' for stdin."),
        click.option("--syslog", "syslog", multiple=True, metavar="URL",
                     help="Listen for nginx's syslog output: udp://HOST:PORT or tcp://..."),
        click.option("--syslog-max-clients", type=click.IntRange(min=1), default=None,
                     metavar="N", help="TCP syslog clients at once (default 1024); more "
                                       "are refused and counted."),
        click.option("--syslog-idle-timeout", type=click.FloatRange(min=0, min_open=True),
                     default=None, metavar="SECONDS",
                     help="Close a TCP syslog client silent this long (default 300)."),
        click.option("--syslog-max-frame", type=click.IntRange(min=480, max=65536),
                     default=None, metavar="BYTES",
                     help="The longest syslog record (default 65536); longer ones are "
                          "skipped and counted."),
        click.option("--listen", default=None, metavar="HOST:PORT",
                     help="The HTTP service (default 127.0.0.1:8734)."),
        click.option("--state-dir", default=None, type=click.Path(file_okay=False),
                     help="Checkpoints and alert state (SQLite); none: memory only."),
        click.option("--from", "start_from", default=None,
                     type=click.Choice(["beginning", "end"]),
                     help="Where to start a file without a checkpoint (default end)."),
        click.option("--timezone", "timezone", default=None, metavar="ZONE",
                     help="Zone of nginx's local timestamps (default: this machine's)."),
        click.option("--nginx-config", "nginx_config", multiple=True, metavar="PATH",
                     help="The nginx configuration (or ingress-nginx YAML) of the nginx whose "
                          "log is read (repeatable): bounded routes get no loop alert."),
        click.option("--window", type=click.IntRange(min=1), default=None),
        click.option("--threshold", type=click.IntRange(min=1), default=None),
        click.option("--min-repeat", type=click.IntRange(min=1), default=None),
        click.option("--resolve-after", type=click.IntRange(min=1), default=None),
        click.option("--max-tracked", type=click.IntRange(min=1), default=None),
        click.option("--source-retention", type=click.FloatRange(min=0), default=None,
                     metavar="SECONDS", help="Forget a file source gone this long, with its "
                                             "metric series (default 21600: 6 hours)."),
        click.option("--shutdown-timeout", type=click.FloatRange(min=0), default=None,
                     metavar="SECONDS", help="On SIGTERM/SIGINT, how long to go on delivering "
                                             "queued alerts after the last checkpoint "
                                             "(default 10)."),
        click.option("--stall-timeout", type=click.FloatRange(min=0, min_open=True),
                     default=None, metavar="SECONDS",
                     help="/healthz fails when the ingest loop has not turned this long "
                          "(default 60)."),
        click.option("--http-max-connections", type=click.IntRange(min=8), default=None,
                     metavar="N", help="HTTP connections at once (default 1000, lowered to "
                                       "fit ulimit -n); the oldest idle one is closed to "
                                       "make room."),
        click.option("--http-header-timeout", type=click.FloatRange(min=0, min_open=True),
                     default=None, metavar="SECONDS",
                     help="Close a connection that has not sent a whole request head in "
                          "this time (default 10)."),
        click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
                     help="retrywatch's own log lines: text or JSON."),
        # The API token has no flag (a command line is visible to every user of the host):
        # RETRYWATCH_API_TOKEN or api_token in the config file.
        click.option("--tls-cert", "ssl_certfile", default=None, metavar="PATH",
                     help="Serve HTTPS with this certificate chain (PEM; with --tls-key)."),
        click.option("--tls-key", "ssl_keyfile", default=None, metavar="PATH",
                     help="The private key of --tls-cert."),
        click.option("--keep-query-strings/--redact-query-strings", "keep_query_strings",
                     default=None, help="Show the query strings of requests and referrers "
                     "as logged (default: values replaced, ?token=…)."),
        click.option("--max-stream-clients", type=click.IntRange(min=1), default=None,
                     metavar="N", help="Event-stream clients at once (default 500)."),
        click.option("--config", "config_file", default=None,
                     type=click.Path(dir_okay=False),
                     help="A YAML or TOML file of settings (also RETRYWATCH_CONFIG)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _settings(config_file: str | None, flags: dict[str, Any]) -> Any:
    import yaml
    from pydantic import ValidationError

    from retrywatch.serve.settings import load_settings

    flags = {k: (list(v) if isinstance(v, tuple) else v) for k, v in flags.items()}
    flags = {k: v for k, v in flags.items() if v not in (None, [])}
    if "start_from" in flags:
        flags["from"] = flags.pop("start_from")
    try:
        return load_settings(config_file, **flags)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                             for e in exc.errors())
        raise click.UsageError(problems) from exc
    except (ValueError, yaml.YAMLError) as exc:  # a TOML decode error is a ValueError
        where = config_file or os.environ.get("RETRYWATCH_CONFIG")
        raise click.UsageError(f"{where}: {exc}" if where else str(exc)) from exc


def _logging(fmt: str, level: str) -> None:
    import logging

    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        class Json(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                return orjson.dumps({"time": self.formatTime(record), "level": record.levelname,
                                     "logger": record.name, "message": record.getMessage()}
                                    ).decode()
        handler.setFormatter(Json())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("retrywatch")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@main.command()
@service_options
def config(config_file: str | None, **flags: Any) -> None:
    """Print the effective configuration (flags, environment, file), secrets masked."""
    settings = _settings(config_file, flags)
    sys.stdout.write(orjson.dumps(settings.masked(), option=orjson.OPT_INDENT_2).decode())
    sys.stdout.write("\n")


class _StartError(click.ClickException):
    """A setting that cannot be used, found at start: ``Error: ...`` in one line, exit 2."""

    exit_code = 2


@main.command()
@service_options
def run(config_file: str | None, **flags: Any) -> None:
    """Follow nginx error logs live; serve REST alerts and Prometheus metrics."""
    from retrywatch.serve.api import create_app
    from retrywatch.serve.service import Service, serve

    settings = _settings(config_file, flags)
    if not settings.log and not settings.syslog:
        raise click.UsageError("nothing to follow: give --log PATH and/or --syslog URL")
    _logging(settings.log_format, settings.log_level)
    from retrywatch.detect.knowledge import KnowledgeError
    from retrywatch.serve.state import StateDirError

    try:
        service = Service(settings)
    except KnowledgeError as exc:
        raise click.UsageError(f"--nginx-config: {exc}") from exc
    except StateDirError as exc:  # one line, exit 2: a crash loop says why in its log
        raise _StartError(f"--state-dir: {exc}") from exc
    host, port = settings.host_port()
    token = settings.api_token.get_secret_value() if settings.api_token else None
    if token is None and not settings.loopback_only():
        import logging

        logging.getLogger("retrywatch").warning(
            "listening on %s, beyond loopback, without an API token: anyone who reaches it "
            "reads the alerts (set api_token, RETRYWATCH_API_TOKEN)", settings.listen)
    serve(service, host, port, create_app(service.engine, service.notifier, api_token=token,
                                          max_stream_clients=settings.max_stream_clients))


@main.command("notify-test")
@click.option("--receiver", "receiver_name", required=True, metavar="NAME",
              help="The receiver (by name, from the settings) to send a sample alert to.")
@service_options
def notify_test(receiver_name: str, config_file: str | None, **flags: Any) -> None:
    """Send a sample alert to one receiver now and print the outcome."""
    from retrywatch.delivery import Notifier

    settings = _settings(config_file, flags)
    names = [r.name for r in settings.receivers]
    if receiver_name not in names:
        raise click.UsageError(f"no receiver named {receiver_name!r} "
                               f"(configured: {', '.join(names) or 'none'})")
    receiver = next(r for r in settings.receivers if r.name == receiver_name)
    notifier = Notifier([receiver])
    try:
        result = notifier.test(receiver_name)
    finally:
        notifier.stop()
    word = "delivered" if result.ok else "FAILED"
    click.echo(f"{receiver_name} ({receiver.format}, {receiver.url}): {word}: {result.detail}")
    if not result.ok:
        sys.exit(1)


@main.command()
@click.option("--listen", default="127.0.0.1:8734", show_default=True, metavar="HOST:PORT",
              help="The HTTP service.")
@click.option("--keep-serving", is_flag=True, help="Stay up after the sample is done.")
def demo(listen: str, keep_serving: bool) -> None:
    """Watch a real nginx retry storm live: a bundled log is written at its own pace into a
    temporary file that the live service follows; alerts print as they fire."""
    from retrywatch.serve.demo import run_demo

    try:
        run_demo(listen=listen, keep_serving=keep_serving)
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc


def _version(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    from retrywatch.lint.ingress import version_of

    parsed = version_of(value)
    if parsed is None:
        raise click.BadParameter(f"not a version: {value!r} (e.g. 1.11.3 or v0.25.1)")
    return parsed


@main.command()
@click.argument("paths", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text",
              show_default=True, help="text for people, json for scripts, sarif for CI.")
@click.option("--fail-on", type=click.Choice(["error", "warning", "note", "never"]),
              default="error", show_default=True,
              help="Exit 1 when a finding is at least this severe.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the report here instead of standard output.")
@click.option("--prefix", type=click.Path(file_okay=False, exists=True), default=None,
              help="nginx's -p: where relative Lua paths are found. Default: the folder of "
                   "each file and its parent.")
@click.option("--root", type=click.Path(file_okay=False, exists=True), default=None,
              help="Where absolute paths (include /etc/nginx/...) are looked up: a copy of a "
                   "machine's tree. Default: the part of a file's path before /etc/nginx/, "
                   "or /.")
@click.option("--max-tries", type=click.IntRange(min=2), default=10, show_default=True,
              help="Tries of one request from which a bounded retry is still reported "
                   "(retrywatch's default alert threshold).")
@click.option("--ingress-nginx-version", "ingress_version", callback=_version, default=None,
              metavar="VERSION", help="The controller's version (it wins over what a "
                                      "Deployment or Helm values given say).")
@click.option("--annotations-prefix", default="nginx.ingress.kubernetes.io", show_default=True,
              help="The controller's --annotations-prefix.")
@click.option("--explain", metavar="CODE", default=None,
              help="Print the page of a rule (or of a live alert's diagnosis code) and exit.")
def lint(paths: tuple[str, ...], fmt: str, fail_on: str, output: str | None,
         prefix: str | None, root: str | None, max_tries: int, ingress_version: Any,
         annotations_prefix: str, explain: str | None) -> None:
    """Find retry-loop misconfigurations in nginx configuration files (with their includes)
    and ingress-nginx YAML (controller ConfigMap, Helm values, Ingress annotations).

    PATHS are nginx.conf files, conf.d snippets, the nginx.conf copied out of an
    ingress-nginx controller pod, Kubernetes YAML, or folders of them. Exit status: 0 clean,
    1 a finding at --fail-on or worse, 2 a file could not be read.
    """
    from retrywatch import lint as linter
    from retrywatch.lint import report
    from retrywatch.lint.model import Severity

    if explain is not None:
        if paths:
            raise click.UsageError("--explain prints a page: give it without files")
        try:
            click.echo(linter.explain(explain), nl=False)
        except (KeyError, OSError) as exc:
            known = ", ".join(linter.pages())
            raise click.ClickException(f"no page for {explain!r} (known: {known})") from exc
        return
    if not paths:
        raise click.UsageError("give at least one file or folder (or --explain CODE)")
    try:  # before the work: a report that cannot be written is said at once
        out = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    except OSError as exc:
        click.echo(f"retrywatch lint: cannot write {output}: {exc.strerror or exc}", err=True)
        sys.exit(2)
    result = linter.lint(list(paths), prefix=prefix, max_tries=max_tries,
                         ingress_version=ingress_version,
                         annotations_prefix=annotations_prefix,
                         **({"root": root} if root else {}))
    try:
        if fmt == "text":
            report.render_text(result, out, color=output is None and sys.stdout.isatty())
        elif fmt == "json":
            report.render_json(result, out)
        else:
            report.render_sarif(result, out)
        out.flush()
        if output:
            out.close()
    except OSError as exc:  # a full disk, /dev/full
        with contextlib.suppress(OSError):
            out.close()
        click.echo(f"retrywatch lint: cannot write {output or 'the report'}: "
                   f"{exc.strerror or exc}", err=True)
        sys.exit(2)
    for problem in result.input_errors:
        where = f"{problem.location.file}:{problem.location.line}" if problem.location.line \
            else problem.location.file
        click.echo(f"retrywatch lint: {where}: {problem.message}", err=True)
    if result.input_errors:
        sys.exit(2)
    if fail_on != "never" and result.at_least(Severity.parse(fail_on)):
        sys.exit(1)
