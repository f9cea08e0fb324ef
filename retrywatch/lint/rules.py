"""The rules over an nginx configuration: each route (a ``*_pass`` to an upstream group)
with the values that apply to it after inheritance, judged against what nginx and
lua-nginx-module do with them.

The facts behind the rules (shared/real-nginx/notes.md, lua-nginx-module's source):

- ``set_more_tries(n)`` is capped by ``*_next_upstream_tries`` only when that is not 0; a
  balancer that calls it on every invocation with tries 0 never stops (~40k tries/s);
- without a Lua balancer, tries 0 means "every peer of the group once": bounded by the
  group's size, but each try may wait ``*_connect_timeout`` and with
  ``*_next_upstream_timeout 0`` nothing bounds the request in time;
- ``*_next_upstream off`` turns retries off whatever the tries.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass

from retrywatch.detect.remedies import fix
from retrywatch.lint.balancer import Balancer, read_balancer
from retrywatch.lint.model import Finding, Location, Severity
from retrywatch.lint.nginx_conf import Config, Node

__all__ = ["DEFAULT_MAX_TRIES", "Route", "RouteJudge", "Verdict", "check", "routes"]

#: Tries per request from which a bounded retry still counts as a storm: retrywatch's
#: default alert threshold (failures of one connection within its window).
DEFAULT_MAX_TRIES = 10

_HTTP_PASSES = {"proxy_pass": "proxy", "grpc_pass": "grpc", "fastcgi_pass": "fastcgi",
                "uwsgi_pass": "uwsgi", "scgi_pass": "scgi", "memcached_pass": "memcached"}
_LUA_BALANCERS = ("balancer_by_lua_block", "balancer_by_lua_file", "balancer_by_lua")
_TIME = re.compile(r"^(\d+)(ms|s|m|h|d|w|M|y)?$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000,
          "y": 31536000, None: 1}

WHY_LUA = (
    "lua-nginx-module caps set_more_tries() only when {tries} is not 0: each failed try "
    "adds one more, so a request to a dead upstream retries until the client goes away. "
    "A real nginx does ~40,000 tries a second on one connection and writes ~10 MB of "
    "error log a second.")
WHY_STREAM = (
    "stream-lua-nginx-module caps set_more_tries() only when proxy_next_upstream_tries is "
    "not 0: each failed try adds one more, so a TCP/UDP session to a dead upstream "
    "retries until the client goes away (the ingress-nginx 0.25 incident: a million "
    "retries on one connection).")


@dataclass(slots=True)
class Route:
    """One ``*_pass`` directive and the upstream group it names."""

    pass_node: Node
    module: str  # proxy, grpc, fastcgi, …
    subsystem: str  # http, stream
    target: str
    upstream: Node | None
    #: The variable the pass names its host by (``$backend``), when ``target`` is one of
    #: its values (a ``map`` or a ``set``): one Route per value.
    variable: str | None = None

    @property
    def block(self) -> Node:
        assert self.pass_node.parent is not None
        return self.pass_node.parent

    def scope(self) -> str:
        """``location /x`` or ``server 127.0.0.1:9000`` (its listen) for messages, with
        ``through $backend`` when the upstream is a value of the pass's variable."""
        where = self._place()
        return f"{where} through {self.variable}" if self.variable else where

    def _place(self) -> str:
        for node in (self.block, *self.block.ancestors()):
            if node.name == "location":
                return f"location {' '.join(node.args)}"
            if node.name == "server":
                listen = node.last("listen")
                return f"server {listen.args[0]}" if listen and listen.args else "server"
        return self.subsystem

    def effective(self, directive: str) -> Node | None:
        return self.block.effective(f"{self.module}_{directive}")


def _upstreams(config: Config) -> dict[tuple[str, str], Node]:
    found: dict[tuple[str, str], Node] = {}
    for node in config.root.walk():
        if node.name == "upstream" and node.args:
            sub = node.subsystem() or config.root.name
            found[(sub, node.args[0].lower())] = node  # nginx compares names caselessly
    return found


#: ``$name`` or ``${name}``.
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
#: Blocks that set a variable (their second argument; geo: its last) from a table.
_TABLES = {"map": 1, "split_clients": 1, "geo": -1}
#: Lines of those tables that are not a value.
_TABLE_KEYWORDS = {"hostnames", "volatile", "ranges", "include", "delete", "proxy",
                   "proxy_recursive"}


def _host_start(arg: str) -> int:
    return arg.index("://") + 3 if "://" in arg else 0


def _target(arg: str, subsystem: str) -> str | None:
    """The group name a pass argument names literally: the host, after ``scheme://`` up to
    the first ``/``, ``$`` or ``:`` (``$upstream_scheme://apisix_backend$upstream_uri``
    names ``apisix_backend``). None when the host is a variable (``http://$backend``), a
    unix socket or an IPv6 address."""
    rest = arg[_host_start(arg):]
    if rest.startswith(("unix:", "[")):
        return None
    host = re.split(r"[/$:]", rest, maxsplit=1)[0]
    return host or None


def _host_variable(arg: str) -> re.Match[str] | None:
    """The variable in the host's place (``http://$backend/x``, stream ``$up``)."""
    return _VARIABLE.match(arg, _host_start(arg))


def _tables(config: Config) -> dict[tuple[str, str], list[str]]:
    """The values ``map``, ``split_clients`` and ``geo`` blocks give their variable, by
    (subsystem, variable name in lower case: nginx's names are caseless)."""
    found: dict[tuple[str, str], list[str]] = {}
    for node in config.root.walk():
        at = _TABLES.get(node.name)
        if at is None or len(node.args) < 2:
            continue
        var = _VARIABLE.fullmatch(node.args[at])
        if var is None:
            continue
        values = found.setdefault((node.subsystem() or config.root.name,
                                   (var.group(1) or var.group(2)).lower()), [])
        values += [entry.args[-1] for entry in node.children
                   if entry.args and entry.name not in _TABLE_KEYWORDS]
    return found


def _sets(block: Node, name: str) -> list[str]:
    """The values ``set $name value;`` gives in ``block`` and in its ``if`` blocks."""
    values: list[str] = []
    for child in block.children:
        if child.name == "set" and len(child.args) >= 2:
            var = _VARIABLE.fullmatch(child.args[0])
            if var is not None and (var.group(1) or var.group(2)).lower() == name:
                values.append(child.args[1])
        elif child.name == "if":
            values += _sets(child, name)
    return values


def _candidates(node: Node, var: re.Match[str], subsystem: str,
                tables: dict[tuple[str, str], list[str]]) -> list[str]:
    """The groups a pass whose host is a variable may name: each value of the variable
    (its tables in the subsystem, its ``set``s in the route's blocks) put in the
    argument's place; values with variables of their own are skipped."""
    name = (var.group(1) or var.group(2)).lower()
    values = list(tables.get((subsystem, name), []))
    for block in (node.parent, *(node.parent.ancestors() if node.parent else ())):
        if block is None or block.name in ("http", "stream", "main"):
            break
        values += _sets(block, name)
    arg = node.args[0]
    found: dict[str, str] = {}
    for value in values:
        target = _target(arg[:var.start()] + value + arg[var.end():], subsystem)
        if target is not None and "$" not in value:
            found.setdefault(target.lower(), target)
    return list(found.values())


def routes(config: Config) -> Iterator[Route]:
    """Every ``*_pass`` with the group it names; a pass whose host is a variable gives one
    Route per group the variable may hold (``Route.variable`` says which variable)."""
    ups = _upstreams(config)
    tables: dict[tuple[str, str], list[str]] | None = None
    for node in config.root.walk():
        sub = node.subsystem() or config.root.name
        if sub == "http" and node.name in _HTTP_PASSES:
            module = _HTTP_PASSES[node.name]
        elif sub == "stream" and node.name == "proxy_pass":
            module = "proxy"
        else:
            continue
        if not node.args or node.parent is None:
            continue
        target = _target(node.args[0], sub)
        if target is not None:
            yield Route(node, module, sub, target, ups.get((sub, target.lower())))
            continue
        var = _host_variable(node.args[0])
        if var is None:
            continue
        if tables is None:
            tables = _tables(config)
        for target in _candidates(node, var, sub, tables):
            yield Route(node, module, sub, target, ups.get((sub, target.lower())),
                        var.group(0))


def _int(node: Node | None) -> int:
    if node is None or not node.args:
        return 0
    try:
        return int(node.args[0])
    except ValueError:
        return 0


def _seconds(node: Node | None) -> float:
    """An nginx time ("30s", "1m 30s", "500ms"); 0 when unset or unreadable."""
    if node is None:
        return 0.0
    total = 0.0
    for part in " ".join(node.args).split():
        for num, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|M|y)?", part):
            total += int(num) * _UNITS[unit or None]
    return total


def _peers(upstream: Node) -> tuple[int, bool]:
    """The servers of a group and whether that number is exact (no host names, no
    ``resolve``: a name may stand for many addresses)."""
    count, exact = 0, True
    for server in upstream.all("server"):
        if not server.args or "down" in server.args[1:]:
            continue  # a server marked down is never tried
        count += 1
        address = server.args[0]
        if "resolve" in server.args[1:] or "service=" in " ".join(server.args):
            exact = False
        elif not address.startswith("unix:"):
            if address.startswith("["):  # [::1]:8080 or [::1]
                host = address[1:address.index("]")] if "]" in address else address
            else:
                host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
            try:
                ipaddress.ip_address(host)
            except ValueError:
                exact = False
    return count, exact


def _looks_like_ingress_nginx(config: Config) -> bool:
    """A configuration the ingress-nginx controller rendered: its upstream_balancer group,
    or the checksum comment its template starts with."""
    if any(n.name == "upstream" and n.args[:1] == ["upstream_balancer"]
           for n in config.root.walk()):
        return True
    return config.head.lstrip().startswith(b"# Configuration checksum")  # as it was read


def _literal(call: str) -> int:
    """``set_more_tries(20000)`` → 20000; 0 for anything but a number."""
    inner = call[call.find("(") + 1 : call.rfind(")")]
    return int(inner) if inner.isdigit() else 0


def _loc(node: Node) -> Location:
    return Location(node.file, node.line, " ".join([node.name, *node.args]))


def _setting(node: Node | None, directive: str) -> str:
    if node is None:
        return f"{directive} is not set (nginx's default: 0, unlimited)"
    return f"{directive} {' '.join(node.args)} at {node.where}"


@dataclass(slots=True, frozen=True)
class Verdict:
    """What the configuration allows one route to do when its upstream is down."""

    loop: bool  # one request (session) can retry without end
    bound: int | None  # when it cannot: the most tries of one request (None: not known)
    why: str  # one sentence, with the directives and their places
    certain: bool = True  # False: the loop depends on code that could not be read or a condition
    requests: int = 1000  # requests one client connection may carry (keepalive_requests)


class _Checker:
    def __init__(self, config: Config, prefixes: list[str], max_tries: int) -> None:
        self.config = config
        self.prefixes = prefixes
        self.max_tries = max_tries
        self.ingress_nginx = _looks_like_ingress_nginx(config)
        self._balancers: dict[int, Balancer] = {}

    def balancer(self, upstream: Node) -> Balancer | None:
        for name in _LUA_BALANCERS:
            directive = upstream.last(name)
            if directive is not None:
                if id(directive) not in self._balancers:
                    self._balancers[id(directive)] = read_balancer(
                        directive, self.prefixes, max_tries=self.max_tries,
                        ingress_nginx=self.ingress_nginx, root=self.config.root_dir)
                return self._balancers[id(directive)]
        return None

    def verdict(self, route: Route) -> Verdict:
        """Can one request of this route retry without end? (With the requests one client
        connection may carry there: keepalive_requests, nginx's default 1000.)"""
        found = self._route_verdict(route)
        if route.subsystem != "http":
            return Verdict(found.loop, found.bound, found.why, found.certain, 1)
        keepalive = route.block.effective("keepalive_requests")
        requests = _int(keepalive) if keepalive is not None else 1000
        return Verdict(found.loop, found.bound, found.why, found.certain, max(requests, 1))

    def _route_verdict(self, route: Route) -> Verdict:
        nu = route.effective("next_upstream")
        conditions = nu.args if nu is not None else ["error", "timeout"]
        where = f"{route.scope()} ({route.pass_node.where})"
        if "off" in conditions:
            return Verdict(False, 1, f"{where}: {route.module}_next_upstream off: no retries")
        tries_node = route.effective("next_upstream_tries")
        tries = _int(tries_node)
        tries_name = f"{route.module}_next_upstream_tries"
        setting = _setting(tries_node, tries_name)
        if "no_live" in conditions and tries == 0:
            return Verdict(True, None, f"{where} retries on no_live and {setting}")
        balancer = self.balancer(route.upstream) if route.upstream is not None else None
        if balancer is not None:
            if tries:
                return Verdict(False, tries, f"{where}: {setting}")
            if balancer.adds_tries or balancer.adds_tries_sometimes or balancer.unseen:
                calls = balancer.adds_tries or balancer.adds_tries_sometimes
                how = (balancer.known or f"calls {calls[0].what} at {calls[0].file}:"
                       f"{calls[0].line}" if calls else "has code that could not be read")
                certain = bool(balancer.adds_tries)
                return Verdict(True, None, f"{where} passes to upstream {route.target}, whose "
                               f"Lua balancer {how}, and {setting}", certain)
            peers = len(route.upstream.all("server")) if route.upstream is not None else 1
            return Verdict(False, peers, f"{where}: its Lua balancer adds no tries; {setting}")
        if route.upstream is None:
            return Verdict(False, tries or None, f"{where} passes to {route.target} (no "
                           f"upstream group: the addresses of the name); {setting}")
        peers, exact = _peers(route.upstream)
        bound = min(peers, tries) if tries else peers
        return Verdict(False, bound if exact or tries else None,
                       f"{where} passes to upstream {route.target} with {peers} servers and "
                       f"no Lua balancer; {setting}")

    def check(self, route: Route) -> Iterator[Finding]:
        nu = route.effective("next_upstream")
        conditions = nu.args if nu is not None else ["error", "timeout"]
        if "off" in conditions:
            return
        tries_node = route.effective("next_upstream_tries")
        timeout_node = route.effective("next_upstream_timeout")
        tries, timeout = _int(tries_node), _seconds(timeout_node)
        tries_name = f"{route.module}_next_upstream_tries"
        anchor = tries_node if tries_node is not None else route.pass_node
        related = [_loc(route.pass_node)] if anchor is not route.pass_node else []
        if "no_live" in conditions and (tries == 0 or tries >= self.max_tries):
            assert nu is not None
            yield Finding(
                "no_live_retry_loop", Severity.ERROR if tries == 0 else Severity.WARNING,
                _loc(anchor),
                f"{route.scope()} retries on no_live ({_loc(nu).what} at {nu.where}) and "
                f"{_setting(tries_node, tries_name)}"
                + ("" if tries == 0 else f": up to {tries:,} tries of one request") + ".",
                "With no live peer every try fails at once, without going back to the event "
                "loop: the worker spins through the tries inside one event (a review of the "
                "no_live proposal crashed a worker after 100,000 retries of one request).",
                fix("no_live_retry_loop", route.module),
                (_loc(nu), *related),
                {"tries": tries, "timeout": timeout, "scope": route.scope(),
                 "upstream": route.target})
        if route.upstream is None:
            return
        balancer = self.balancer(route.upstream)
        if balancer is not None:
            yield from self._lua(route, balancer, tries, tries_node, timeout, anchor, related)
            return
        peers, exact = _peers(route.upstream)
        attempts = peers if tries == 0 else min(peers, tries)
        if timeout == 0 and attempts >= self.max_tries:
            yield Finding(
                "unbounded_next_upstream", Severity.WARNING, _loc(anchor),
                f"{route.scope()} passes to upstream {route.target} with "
                f"{'' if exact else 'at least '}{peers} servers, "
                f"{_setting(tries_node, tries_name)} and "
                f"{_setting(timeout_node, f'{route.module}_next_upstream_timeout')}: a request "
                f"that finds them down tries {attempts:,} of them, each up to "
                f"{route.module}_connect_timeout.",
                "When the whole group is down (a deploy, a network split) every request "
                "makes one connect() per peer, each waiting up to the connect timeout: the "
                "error log and the latency grow with the group, and nothing bounds the "
                "request in time.",
                fix("unbounded_next_upstream", route.module),
                (Location(route.upstream.file, route.upstream.line,
                                f"upstream {route.target}"), *related),
                {"peers": peers, "exact": exact, "tries": tries, "timeout": timeout,
                 "scope": route.scope(), "upstream": route.target})

    def _verdict(self, b: Balancer, setting: str, one: str
                 ) -> tuple[Severity, Location | None, str] | None:
        """With tries 0: how bad the balancer is, the call that shows it, and why.
        ``one``: "one request" (http) or "one session" (stream)."""
        if b.adds_tries:
            call = b.adds_tries[0]
            budget = f", up to {b.budget:,} tries by its guard" if b.budget else ""
            what = b.known or f"calls {call.what} on every try ({call.file}:{call.line}{budget})"
            return (Severity.ERROR, call,
                    f"{what}, and {setting}: {one} retries a dead upstream without end.")
        if b.adds_tries_sometimes and (b.largest_added or 0) >= self.max_tries:
            call = max(b.adds_tries_sometimes, key=lambda c: _literal(c.what))
            return (Severity.ERROR, call,
                    f"calls {call.what} ({call.file}:{call.line}), and {setting}: {one} "
                    f"makes {b.largest_added:,} more tries, a storm even if it ends.")
        if b.adds_tries_sometimes:
            call = b.adds_tries_sometimes[0]
            return (Severity.WARNING, call,
                    f"calls {call.what} under a condition ({call.file}:{call.line}), and "
                    f"{setting}: if the condition holds on every try, {one} never stops "
                    "retrying.")
        if b.peer_in_loop:
            call = b.peer_in_loop[0]
            return (Severity.NOTE, call,
                    f"calls set_current_peer in a loop ({call.file}:{call.line}) and {setting}: "
                    "the loop does not add tries by itself, but nothing bounds them if the "
                    "balancer ever calls set_more_tries.")
        if b.unseen:
            return (Severity.NOTE, None,
                    f"has code that could not be read ({'; '.join(b.unseen)}), and {setting}: "
                    f"if it calls set_more_tries on every try, {one} retries without end.")
        return None

    def _lua(self, route: Route, b: Balancer, tries: int, tries_node: Node | None,
             timeout: float, anchor: Node, related: list[Location]) -> Iterator[Finding]:
        code = "stream_retry_loop" if route.subsystem == "stream" else "http_retry_loop"
        tries_name = f"{route.module}_next_upstream_tries"
        why = WHY_STREAM if code == "stream_retry_loop" else WHY_LUA.format(tries=tries_name)
        ingress = bool(b.ingress_nginx)
        head = f"{route.scope()} passes to upstream {route.target}, whose Lua balancer"
        facts = {"tries": tries, "timeout": timeout, "scope": route.scope(),
                 "upstream": route.target,
                 "ingress_nginx": b.ingress_nginx}
        setting = _setting(tries_node, tries_name)
        if tries == 0:
            one = "one session" if route.subsystem == "stream" else "one request"
            verdict = self._verdict(b, setting, one)
            if verdict is not None:
                severity, call, text = verdict
                remedy = fix(code, route.module, ingress=None if ingress else False)
                if ingress and route.scope().startswith("location @custom_"):
                    remedy = ("ingress-nginx renders its custom-error locations "
                              "(custom-http-errors) with no proxy_next_upstream_tries of their "
                              "own: set proxy_next_upstream_tries 3; in the controller "
                              "ConfigMap's http-snippet, which they inherit.")
                yield Finding(code, severity, _loc(anchor), f"{head} {text}", why, remedy,
                              (*([call] if call else []), b.where, *related), facts)
            return
        if (b.adds_tries or b.adds_tries_sometimes) and timeout == 0 \
                and tries >= self.max_tries:
            timeout_name = f"{route.module}_next_upstream_timeout"
            yield Finding(
                "unbounded_next_upstream", Severity.WARNING, _loc(anchor),
                f"{head} adds tries, {setting} and "
                f"{_setting(route.effective('next_upstream_timeout'), timeout_name)}: up to "
                f"{tries:,} tries of one {'session' if route.subsystem == 'stream' else 'request'}"
                ", with no time limit.",
                f"The tries are bounded, but {tries:,} connect() failures on one connection "
                "are a storm in the error log, and retrywatch pages on it when the tries "
                f"repeat a peer ({self.max_tries} failures on one connection by default).",
                fix("unbounded_next_upstream", route.module),
                (*b.adds_tries[:1], *b.adds_tries_sometimes[:1], b.where, *related),
                facts)


def check(config: Config, *, prefixes: list[str], max_tries: int = DEFAULT_MAX_TRIES
          ) -> list[Finding]:
    """The findings of one parsed configuration, one per (rule, place), merged over the
    routes that share the directive to fix."""
    checker = _Checker(config, prefixes, max_tries)
    merged: dict[tuple[object, ...], Finding] = {}
    scopes: dict[tuple[object, ...], list[str]] = {}
    for route in routes(config):
        for finding in checker.check(route):
            key: tuple[object, ...] = (finding.code, finding.severity, finding.location.file,
                                       finding.location.line, route.target,
                                       finding.related[:1])
            if key not in merged:
                merged[key] = finding
                scopes[key] = []
            scopes[key].append(route.scope())
    out = []
    for key, first in merged.items():
        where = scopes[key]
        if len(where) == 1:
            out.append(first)
            continue
        shown = ", ".join(where[:5])
        more = f" and {len(where) - 5} more" if len(where) > 5 else ""
        out.append(Finding(first.code, first.severity, first.location,
                           f"{first.message} It applies to {len(where)} places: "
                           f"{shown}{more}.",
                           first.why, first.fix, first.related,
                           {**first.facts, "places": len(where)}))
    return out


class RouteJudge:
    """The verdicts of one configuration's routes, for the detector (``--nginx-config``)."""

    def __init__(self, config: Config, *, prefixes: list[str]) -> None:
        self.config = config
        self._checker = _Checker(config, prefixes, DEFAULT_MAX_TRIES)

    def verdict(self, route: Route) -> Verdict:
        return self._checker.verdict(route)
