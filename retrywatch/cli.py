"""The ``retrywatch`` command line.

Its help is plain text (no markup): the docstrings of commands are their help. Errors
are one line on stderr, no traceback: 2 for a bad usage or setting, 3 for an address
that cannot be listened on, 1 otherwise; output to a closed pipe (``| head``) ends
quietly, as ripgrep's does.
"""

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


class _Option(click.Option):
    """An option whose default, when told in words (``show_default="..."``), shows as
    ``[default: this machine's zone]``, without click's parentheses."""

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        if isinstance(self.show_default, str):
            extra["default"] = self.show_default
        return extra


timezone_option = click.option(
    "--timezone", "tz", cls=_Option, default=None, callback=_zone, metavar="ZONE",
    show_default="this machine's zone", help="Zone of nginx's local timestamps (IANA name).")


@contextmanager
def _closed_pipe_is_quiet() -> Iterator[None]:
    """Output to a closed pipe (``retrywatch parse ... | head``) ends quietly, as ripgrep's
    does: what is left is discarded (stdout pointed at /dev/null, as the Python
    documentation advises, so that no flush fails at exit) and the command goes on to its
    exit status. (rich does the same, then exits 1: that exit is taken back here.)"""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
    except SystemExit:  # rich's Console.on_broken_pipe: stdout now /dev/null, exit 1
        if not os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(os.devnull)):
            raise


def _discard_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class _Main(click.Group):
    """The group: output to a closed pipe ends quietly for every command (those that go on
    to an exit status of their own see to it with _closed_pipe_is_quiet)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()
            return result
        except BrokenPipeError:
            _discard_stdout()
            return None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Shell completion, bash: eval \"$(_RETRYWATCH_COMPLETE=bash_source "
                    "retrywatch)\" (zsh_source, fish_source for zsh and fish).")
@click.version_option(__version__, prog_name="retrywatch")
def main() -> None:
    """Find nginx connections stuck in connect() retry loops, from the error log."""


@main.command(short_help="Print the events of nginx error logs as JSON Lines.")
@click.argument("files", nargs=-1)
@timezone_option
def parse(files: tuple[str, ...], tz: Any) -> None:
    """Print each event of nginx error logs (plain or .gz; '-' or nothing: stdin) as JSON
    Lines.

    Unparsed lines print as {"unparsed": true, "reason": ..., "line": ...}.
    """
    out = sys.stdout.buffer
    try:
        with _closed_pipe_is_quiet():
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
    "--threads", cls=_Option, type=click.IntRange(min=1), default=None, metavar="N",
    show_default="one per processor it may use",
    help="Files read at once, each on its own thread; the results do not depend on it.")

#: The detector's thresholds: (metavar, help), the same for replay, analyze and run.
_DETECTOR = {
    "window": ("SECONDS", "How far back a connection's connect failures are counted, in "
                          "seconds of log time."),
    "threshold": ("N", "Connect failures of one connection within the window that make it "
                       "a runaway connection (an alert)."),
    "min_repeat": ("N", "Failures against one upstream address that a runaway connection "
                        "needs as well: a retry loop comes back to a peer, a request trying "
                        "each server once does not."),
    "resolve_after": ("SECONDS", "Seconds of log time without a failure after which an "
                                 "alert resolves."),
    "max_tracked": ("N", "Connections followed at once (the memory bound); past it a cold "
                         "one, never a firing one, is forgotten."),
}


def _detector_option(name: str, **kwargs: Any) -> Callable[[Any], Any]:
    metavar, text = _DETECTOR[name]
    return click.option("--" + name.replace("_", "-"), type=click.IntRange(min=1),
                        metavar=metavar, help=text, **kwargs)


def detector_options(func: Any) -> Any:
    """The detector's thresholds, shared by the commands that run it."""
    for name in reversed(_DETECTOR):
        func = _detector_option(name, default=getattr(_DEFAULTS, name), show_default=True)(func)
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


class _UnreadableInput(click.ClickException):
    """An input that cannot be read, when exit status 1 means something was found."""

    exit_code = 2


@main.command(short_help="Run the detector over whole log files; print the alerts.")
@click.argument("files", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "jsonl"]), default="table",
              show_default=True, help="Output: a table, one JSON document, or JSON Lines.")
@click.option("--exit-code", is_flag=True,
              help="Exit 1 when a runaway connection was found, 0 when none (2 when a file "
                   "cannot be read), for scripts and CI.")
@detector_options
@nginx_config_option
@threads_option
@timezone_option
def replay(files: tuple[str, ...], fmt: str, exit_code: bool, tz: Any, threads: int | None,
           knowledge: Any, **opts: Any) -> None:
    """Run the detector over whole files (plain or .gz; '-' or nothing: stdin) and print
    the alerts.

    A file in which no line is an nginx error log line is said on stderr, and the others
    are replayed. Without --exit-code, the exit status is 0 whatever was found.
    """
    from retrywatch.forensics import report
    from retrywatch.forensics.replay import replay as run_replay

    started = time.perf_counter()
    try:
        result = run_replay(list(files) or ["-"], tz=tz, config=_config(opts), threads=threads,
                            knowledge=knowledge)
    except OSError as exc:  # with --exit-code, 1 says "found"
        raise (_UnreadableInput if exit_code else click.ClickException)(str(exc)) from exc
    elapsed = time.perf_counter() - started
    stats = result.stats()
    stats["seconds"] = round(elapsed, 3)
    stats["lines_per_second"] = round(stats["lines_read"] / elapsed) if elapsed > 0 else 0
    render = {"table": report.render_table, "json": report.render_json,
              "jsonl": report.render_jsonl}[fmt]
    with _closed_pipe_is_quiet():
        render(result.alerts, stats, sys.stdout)
    _warn_not_nginx(result.not_nginx_logs())
    if exit_code and result.found:
        sys.exit(1)


def _warn_not_nginx(paths: list[str]) -> None:
    """One line on stderr per input of which no line parses (the rest is still read)."""
    for path in paths:
        name = "standard input" if path == "-" else path
        click.echo(f"Warning: no line of {name} is an nginx error log line: is it one?",
                   err=True)


@main.command(short_help="Forensics over historical logs: tables, HTML, Parquet.")
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
    from importlib.util import find_spec
    from pathlib import Path

    missing = [m for m in ("pandas", "pyarrow", "matplotlib", "jinja2") if find_spec(m) is None]
    if missing:  # an extra (pyproject.toml): the live service goes without it
        click.echo("retrywatch analyze needs the forensics extra: pip install "
                   f"'retrywatch[analyze]' (missing: {', '.join(missing)})", err=True)
        sys.exit(2)
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
    with _closed_pipe_is_quiet():
        if fmt == "json":
            sys.stdout.write(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
            sys.stdout.write("\n")
        else:
            render_analysis(result, sys.stdout)
    _warn_not_nginx(result.not_nginx_logs)


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


class _SettingOption(_Option):
    """A flag of a setting of the live service (serve/settings.py). Its default and its
    RETRYWATCH_* variable, shown in the help, are the settings' own; the settings read the
    variable, not click (a list is JSON there). An unset flag is None: the variable, the
    config file, then the default decide."""

    def __init__(self, *args: Any, envvar_shown: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, default=None, **kwargs)
        self.envvar_shown = envvar_shown

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        return None  # the settings read it

    def get_help_extra(self, ctx: click.Context) -> Any:
        from retrywatch.serve.settings import Settings, env_var

        extra = super().get_help_extra(ctx)
        field = Settings.model_fields.get(self.name or "")
        if field is not None:
            extra["envvars"] = (env_var(self.name or ""),)
            default = _shown(field.get_default(call_default_factory=True), self)
            if default:
                extra["default"] = default
        elif self.envvar_shown:
            extra["envvars"] = (self.envvar_shown,)
        return extra


def _shown(default: Any, option: click.Option) -> str | None:
    """A setting's default as the help shows it: 300 (not 300.0), the flag a boolean
    default stands for, nothing for none."""
    if default is None or default == []:
        return None
    if isinstance(default, bool):
        opts = option.opts if default else option.secondary_opts
        return opts[0].lstrip("-") if opts else None
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def _setting(*decls: str, **kwargs: Any) -> Callable[[Any], Any]:
    return click.option(*decls, cls=_SettingOption, **kwargs)


def service_options(func: Any) -> Any:
    """The live service's settings as flags; unset flags leave the environment and the
    config file to decide."""
    options = [
        _setting("--log", "log", multiple=True, metavar="PATH",
                 help="A log file or glob to follow (repeatable); '-' for stdin."),
        _setting("--syslog", "syslog", multiple=True, metavar="URL",
                 help="Listen for nginx's syslog output on udp://HOST:PORT or tcp://HOST:PORT "
                      "(repeatable)."),
        _setting("--syslog-max-clients", type=click.IntRange(min=1), metavar="N",
                 help="TCP syslog clients at once; more are refused and counted."),
        _setting("--syslog-idle-timeout", type=click.FloatRange(min=0, min_open=True),
                 metavar="SECONDS", help="Close a TCP syslog client silent this long."),
        _setting("--syslog-max-frame", type=click.IntRange(min=480, max=65536),
                 metavar="BYTES",
                 help="The longest syslog record; longer ones are skipped and counted."),
        _setting("--listen", metavar="HOST:PORT",
                 help="Where the HTTP service (API, metrics, health checks) listens."),
        _setting("--state-dir", type=click.Path(file_okay=False),
                 help="Where checkpoints and alert state are kept (SQLite); none: in memory "
                      "only."),
        _setting("--from", "start_from", type=click.Choice(["beginning", "end"]),
                 help="Where to start a file without a checkpoint."),
        _setting("--timezone", "timezone", metavar="ZONE",
                 help="Zone of nginx's local timestamps (IANA name; local: this machine's)."),
        _setting("--nginx-config", "nginx_config", multiple=True, metavar="PATH",
                 help="The nginx configuration (or ingress-nginx YAML) of the nginx whose log "
                      "is read (repeatable): bounded routes get no loop alert."),
        *(_setting("--" + name.replace("_", "-"), name, type=click.IntRange(min=1),
                   metavar=metavar, help=text) for name, (metavar, text) in _DETECTOR.items()),
        _setting("--disk-forecast/--no-disk-forecast", "disk_forecast",
                 help="Sample the followed files' growth and their disks' free space (on by "
                      "default) for the disk forecast and its alert."),
        _setting("--disk-horizon", type=click.FloatRange(min=0), metavar="SECONDS",
                 help="Alert when the followed logs will fill their disk within this time "
                      "(1800: 30 minutes; 0: never)."),
        _setting("--upstream-anomalies/--no-upstream-anomalies", "upstream_anomalies",
                 help="Count connect failures per upstream peer against its learnt baseline "
                      "(on by default) and alert on a peer failing for many connections."),
        _setting("--upstream-peers", type=click.IntRange(min=1, max=65536), metavar="N",
                 help="Upstream peers named at most (256); the rest are summed as other."),
        _setting("--upstream-warmup", type=click.IntRange(min=0, max=86400),
                 metavar="SECONDS", help="Log seconds after the first line during which what "
                                         "fails is learnt as usual (60)."),
        _setting("--upstream-min-connections", type=click.IntRange(min=1), metavar="N",
                 help="Distinct connections failing against a peer within a minute before "
                      "it can alert (20)."),
        _setting("--source-retention", type=click.FloatRange(min=0), metavar="SECONDS",
                 help="Forget a file source gone this long (21600: 6 hours), with its metric "
                      "series."),
        _setting("--shutdown-timeout", type=click.FloatRange(min=0), metavar="SECONDS",
                 help="On SIGTERM or SIGINT, how long to go on delivering queued alerts "
                      "after the last checkpoint."),
        _setting("--stall-timeout", type=click.FloatRange(min=0, min_open=True),
                 metavar="SECONDS",
                 help="/healthz fails when the ingest loop has not turned this long."),
        _setting("--http-max-connections", type=click.IntRange(min=8), metavar="N",
                 help="HTTP connections at once (lowered to fit ulimit -n); the oldest idle "
                      "one is closed to make room."),
        _setting("--http-header-timeout", type=click.FloatRange(min=0, min_open=True),
                 metavar="SECONDS", help="Close a connection that has not sent a whole "
                                         "request head in this time."),
        _setting("--log-format", type=click.Choice(["text", "json"]),
                 help="retrywatch's own log lines: text or JSON Lines."),
        # The API token has no flag (a command line is visible to every user of the host):
        # RETRYWATCH_API_TOKEN or api_token in the config file.
        _setting("--tls-cert", "ssl_certfile", metavar="PATH",
                 help="Serve HTTPS with this certificate chain (PEM; with --tls-key)."),
        _setting("--tls-key", "ssl_keyfile", metavar="PATH",
                 help="The private key of --tls-cert."),
        _setting("--keep-query-strings/--redact-query-strings", "keep_query_strings",
                 help="Show the query strings of requests and referrers as logged, or with "
                      "their values replaced (?token=…)."),
        _setting("--max-stream-clients", type=click.IntRange(min=1), metavar="N",
                 help="Event-stream clients at once; more are refused (503)."),
        _setting("--config", "config_file", type=click.Path(dir_okay=False),
                 envvar_shown="RETRYWATCH_CONFIG",
                 help="A file of settings: TOML, YAML or JSON, by the ending of its name "
                      "(.toml, .yaml or .yml, .json)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


#: Said after the options of the commands that take the settings.
_SETTINGS_EPILOG = (
    "Each setting is taken from its flag, else its RETRYWATCH_* variable (a list as JSON), "
    "else the config file, else its default. Without a flag: RETRYWATCH_API_TOKEN, "
    "RETRYWATCH_RECEIVERS, RETRYWATCH_LOG_LEVEL, RETRYWATCH_POLL_INTERVAL (or in the file: "
    "api_token, receivers, log_level, poll_interval). retrywatch config prints them all.")


class _StartError(click.ClickException):
    """A setting that cannot be used (a flag, a variable, the config file), found at start:
    ``Error: ...`` in one line, exit 2."""

    exit_code = 2


class _CannotListen(click.ClickException):
    """An address that cannot be listened on (HTTP, syslog): ``Error: cannot listen on
    ...`` in one line, exit 3 (serve.service.STARTUP_FAILURE, uvicorn's for it)."""

    exit_code = 3


def _settings(config_file: str | None, flags: dict[str, Any]) -> Any:
    from retrywatch.serve.settings import SettingsError, load_settings

    command = click.get_current_context().command
    spelled = {p.name: p.opts[0] for p in command.params
               if isinstance(p, _SettingOption) and p.name}
    flags = {k: (list(v) if isinstance(v, tuple) else v) for k, v in flags.items()}
    flags = {k: v for k, v in flags.items() if v not in (None, [])}
    try:
        return load_settings(config_file, flag_names=spelled, **flags)
    except SettingsError as exc:
        raise _StartError(str(exc)) from exc


def _logging(fmt: str, level: str) -> None:
    from retrywatch.serve.logs import configure

    configure(fmt, level)


@main.command(short_help="Print the effective settings, secrets masked.",
              epilog=_SETTINGS_EPILOG)
@service_options
def config(config_file: str | None, **flags: Any) -> None:
    """Print the effective configuration (flags, environment, file), secrets masked."""
    settings = _settings(config_file, flags)
    with _closed_pipe_is_quiet():
        sys.stdout.write(orjson.dumps(settings.masked(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")


@main.command(short_help="Follow nginx error logs live; serve alerts and metrics.",
              epilog=_SETTINGS_EPILOG)
@service_options
def run(config_file: str | None, **flags: Any) -> None:
    """Follow nginx error logs live; serve REST alerts and Prometheus metrics.

    Exit status: 0 when stopped by SIGTERM or SIGINT, 1 when the HTTP server stopped by
    itself, 2 for a bad setting, 3 when an address cannot be listened on.
    """
    from retrywatch.errors import ListenError
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
        raise _StartError(f"--nginx-config: {exc}") from exc
    except StateDirError as exc:  # one line, exit 2: a crash loop says why in its log
        raise _StartError(f"--state-dir: {exc}") from exc
    host, port = settings.host_port()
    token = settings.api_token.get_secret_value() if settings.api_token else None
    if token is None and not settings.loopback_only():
        import logging

        logging.getLogger("retrywatch").warning(
            "listening on %s, beyond loopback, without an API token: anyone who reaches it "
            "reads the alerts (set api_token, RETRYWATCH_API_TOKEN)", settings.listen)
    try:
        serve(service, host, port, create_app(service.engine, service.notifier, api_token=token,
                                              max_stream_clients=settings.max_stream_clients))
    except ListenError as exc:  # HTTP or syslog: the address is taken, not local, ...
        raise _CannotListen(str(exc)) from exc


@main.command("notify-test", short_help="Send a sample alert to one receiver; print the outcome.",
              epilog=_SETTINGS_EPILOG)
@click.option("--receiver", "receiver_name", required=True, metavar="NAME",
              help="The receiver (by name, from the settings) to send a sample alert to.")
@service_options
def notify_test(receiver_name: str, config_file: str | None, **flags: Any) -> None:
    """Send a sample alert to one receiver now and print the outcome."""
    from retrywatch.delivery import Notifier
    from retrywatch.serve.settings import mask_url

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
    url = mask_url(receiver.url, path=receiver.format != "alertmanager")  # as `config` shows it
    click.echo(f"{receiver_name} ({receiver.format}, {url}): {word}: {result.detail}")
    if not result.ok:
        sys.exit(1)


@main.command(short_help="Watch the live service catch a real nginx retry storm.")
@click.option("--listen", default="127.0.0.1:8734", show_default=True, metavar="HOST:PORT",
              help="Where the HTTP service listens.")
@click.option("--keep-serving", is_flag=True, help="Stay up after the sample is done.")
def demo(listen: str, keep_serving: bool) -> None:
    """Watch a real nginx retry storm live: a bundled log is written at its own pace into a
    temporary file that the live service follows; alerts print as they fire."""
    from retrywatch.errors import ListenError
    from retrywatch.serve.demo import run_demo

    try:
        run_demo(listen=listen, keep_serving=keep_serving)
    except ListenError as exc:
        raise _CannotListen(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command(short_help="A live terminal view of a running retrywatch.")
@click.option("--url", default=None, metavar="URL",
              help="The retrywatch to watch [default: http:// and RETRYWATCH_LISTEN, else "
                   "http://127.0.0.1:8734].")
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A file holding its API token [default: RETRYWATCH_API_TOKEN].")
@click.option("--every", type=click.FloatRange(min=0.5), default=5.0, show_default=True,
              metavar="SECONDS",
              help="How often connections and sources are read again (alerts come from the "
                   "event stream as they change).")
def top(url: str | None, token_file: str | None, every: float) -> None:
    """A live view of a running retrywatch, over its REST API and event stream: the alerts
    firing with their cause and fix, the hottest connections, the upstreams they fail
    against, each source's lag and disk forecast. Keys: 1-4 the tabs, s sort, r reverse,
    / filter, u update, q quit."""
    from retrywatch.serve.settings import DEFAULT_LISTEN
    from retrywatch.top.app import TopApp

    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        raise click.ClickException("retrywatch top needs a terminal (the API has the same "
                                   "figures as JSON: /api/v1/alerts, /api/v1/sources)")
    token = (open(token_file, encoding="utf-8").read().strip() if token_file  # noqa: SIM115
             else os.environ.get("RETRYWATCH_API_TOKEN"))
    TopApp(url or f"http://{os.environ.get('RETRYWATCH_LISTEN') or DEFAULT_LISTEN}",
           token or None, every=every).run()


def _version(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    from retrywatch.lint.ingress import version_of

    parsed = version_of(value)
    if parsed is None:
        raise click.BadParameter(f"not a version: {value!r} (e.g. 1.11.3 or v0.25.1)")
    return parsed


@main.command(short_help="Find retry-loop misconfigurations in nginx configuration.")
@click.argument("paths", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text",
              show_default=True, help="text for people, json for scripts, sarif for CI.")
@click.option("--fail-on", type=click.Choice(["error", "warning", "note", "never"]),
              default="error", show_default=True,
              help="Exit 1 when a finding is at least this severe.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the report here instead of standard output.")
@click.option("--prefix", type=click.Path(file_okay=False, exists=True), default=None,
              cls=_Option, show_default="the folder of each file and its parent",
              help="nginx's -p: where relative Lua paths are found.")
@click.option("--root", type=click.Path(file_okay=False, exists=True), default=None,
              cls=_Option, show_default="the part of a file's path before /etc/nginx/, or /",
              help="Where absolute paths (include /etc/nginx/...) are looked up: a copy of a "
                   "machine's tree.")
@click.option("--max-tries", type=click.IntRange(min=2), default=10, show_default=True,
              metavar="N",
              help="Tries of one request from which a bounded retry is still reported "
                   "(retrywatch's default alert threshold).")
@click.option("--ingress-nginx-version", "ingress_version", callback=_version, default=None,
              metavar="VERSION", help="The controller's version (it wins over what a "
                                      "Deployment or Helm values given say).")
@click.option("--annotations-prefix", default="nginx.ingress.kubernetes.io", show_default=True,
              metavar="PREFIX", help="The controller's --annotations-prefix.")
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
            page = linter.explain(explain)
        except (KeyError, OSError) as exc:
            known = ", ".join(linter.pages())
            raise click.ClickException(f"no page for {explain!r} (known: {known})") from exc
        click.echo(page, nl=False)  # (a closed pipe: _Main)
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
        with _closed_pipe_is_quiet():
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
