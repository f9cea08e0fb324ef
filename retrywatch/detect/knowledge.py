"""What the running configuration says about a connection: can its request retry without
end, or is every request bounded? (``--nginx-config``; issue: runaway or just busy.)

The configuration is read by ``retrywatch lint``'s reader (includes, inheritance, Lua
balancers) and each route judged once (:class:`~retrywatch.lint.rules.Verdict`). A
connection of the log is matched to its route the way nginx chose it:

- http: the server block whose first ``server_name`` is the log's ``server:`` (nginx logs
  that name), then the location of the request's path (exact ``=``, longest prefix, ``^~``,
  regular expressions in order, nested locations);
- stream: the server block whose ``listen`` is the log's ``server:`` (an address:port).

ingress-nginx YAML (the controller ConfigMap, Ingress annotations, the controller's version)
gives verdicts too: every ingress-nginx route goes through its Lua balancer, which adds a
try on every attempt, so the tries settings decide.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from retrywatch.detect.core import Conn
from retrywatch.lint import ingress as ingress_yaml
from retrywatch.lint.nginx_conf import Config, Node, Problem, load
from retrywatch.lint.rules import Route, RouteJudge, Verdict, routes

__all__ = ["Knowledge", "KnowledgeError", "Verdict"]

_YAML = (".yaml", ".yml")


class KnowledgeError(ValueError):
    """The configuration given could not be read: said once, at start."""


@dataclass(slots=True)
class _Server:
    node: Node
    names: list[str]
    listens: list[str]


@dataclass(slots=True)
class _Nginx:
    config: Config
    judge: RouteJudge
    http: list[_Server] = field(default_factory=list)
    stream: list[_Server] = field(default_factory=list)
    by_block: dict[int, list[Route]] = field(default_factory=dict)  # location/server → routes


def _servers(config: Config, subsystem: str) -> Iterator[_Server]:
    for node in config.root.walk():
        if node.name == "server" and node.parent is not None \
                and (node.subsystem() or config.root.name) == subsystem \
                and node.parent.name != "upstream":
            names = [a for d in node.all("server_name") for a in d.args]
            listens = [d.args[0] for d in node.all("listen") if d.args]
            yield _Server(node, names, listens)


def _enclosing(node: Node) -> Node | None:
    """The location (http) or server (stream) a pass directive is in."""
    for anc in node.ancestors():
        if anc.name in ("location", "server"):
            return anc
    return None


def _load_nginx(path: str, prefix: str | None) -> _Nginx:
    config = load(path)
    errors = [p for p in config.problems if p.severity == "error"]
    if errors:
        raise KnowledgeError("; ".join(_said(p) for p in errors[:3]))
    here = os.path.dirname(os.path.abspath(path))
    judge = RouteJudge(config, prefixes=[prefix] if prefix else [here, os.path.dirname(here)])
    known = _Nginx(config, judge, list(_servers(config, "http")),
                   list(_servers(config, "stream")))
    for route in routes(config):
        block = _enclosing(route.pass_node)
        if block is not None:
            known.by_block.setdefault(id(block), []).append(route)
    return known


def _said(p: Problem) -> str:
    return f"{p.file}:{p.line}: {p.message}" if p.line else f"{p.file}: {p.message}"


# -- nginx's choices ----------------------------------------------------------------------------

def _server_for(servers: list[_Server], name: str | None) -> _Server | None:
    if not servers:
        return None
    if name is not None:
        for server in servers:  # nginx logs the first server_name of the block
            if server.names[:1] == [name]:
                return server
        for server in servers:
            if name in server.names or any(_wildcard(n, name) for n in server.names):
                return server
    return servers[0] if len(servers) == 1 else None


def _wildcard(pattern: str, name: str) -> bool:
    if pattern.startswith("~"):
        try:
            return re.search(pattern[1:], name) is not None
        except re.error:
            return False
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    if pattern.startswith("."):
        return name == pattern[1:] or name.endswith(pattern)
    if pattern.endswith(".*"):
        return name.startswith(pattern[:-1])
    return False


def _location(block: Node, path: str) -> Node | None:
    """nginx's location choice among the locations directly in ``block``, then inside it."""
    exact: Node | None = None
    best: Node | None = None
    best_len = -1
    regexes: list[tuple[Node, re.Pattern[str]]] = []
    for loc in block.all("location"):
        args = loc.args
        if not args or args[0].startswith("@"):
            continue
        if args[0] == "=" and len(args) > 1:
            if args[1] == path:
                exact = loc
        elif args[0] in ("~", "~*") and len(args) > 1:
            try:
                regexes.append((loc, re.compile(args[1], re.I if args[0] == "~*" else 0)))
            except re.error:
                continue
        else:
            prefix = args[1] if args[0] == "^~" and len(args) > 1 else args[0]
            if path.startswith(prefix) and len(prefix) > best_len:
                best, best_len = loc, len(prefix)
    if exact is not None:
        return exact
    chosen = best
    if best is None or best.args[0] != "^~":
        for loc, pattern in regexes:
            if pattern.search(path):
                chosen = loc
                break
    if chosen is None:
        return None
    return _location(chosen, path) or chosen


def _path(request: str) -> str:
    """``GET /storm1?cid=x HTTP/1.1`` → ``/storm1``."""
    parts = request.split(" ")
    target = parts[1] if len(parts) > 1 else "/"
    return target.split("?", 1)[0] or "/"


# -- the knowledge --------------------------------------------------------------------------------

class Knowledge:
    """Verdicts for connections, from nginx configuration files and ingress-nginx YAML."""

    def __init__(self) -> None:
        self._nginx: list[_Nginx] = []
        self._ingress: ingress_yaml.Inputs | None = None
        self._version: tuple[int, ...] | None = None
        self.paths: list[str] = []

    @classmethod
    def load(cls, paths: list[str], *, prefix: str | None = None,
             ingress_version: tuple[int, ...] | None = None) -> Knowledge:
        known = cls()
        known._version = ingress_version
        problems: list[Problem] = []
        for path in paths:
            if not os.path.isfile(path):
                raise KnowledgeError(f"{path}: not a file")
            known.paths.append(path)
            if path.endswith(_YAML):
                known._ingress = known._ingress or ingress_yaml.Inputs()
                with open(path, encoding="utf-8", errors="replace") as f:
                    ingress_yaml.read_yaml(path, f.read(), known._ingress, problems)
            else:
                known._nginx.append(_load_nginx(path, prefix))
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            raise KnowledgeError("; ".join(_said(p) for p in errors[:3]))
        return known

    def verdict(self, conn: Conn) -> Verdict | None:
        """What the configuration allows this connection's route; None when no route of
        the configuration can be matched to it."""
        for nginx in self._nginx:
            found = self._nginx_verdict(nginx, conn)
            if found is not None:
                return found
        if self._ingress is not None:
            return self._ingress_verdict(conn)
        return None

    def _nginx_verdict(self, nginx: _Nginx, conn: Conn) -> Verdict | None:
        if conn.subsystem == "stream":
            server = next((s for s in nginx.stream if conn.server and any(
                _same_listen(listen, conn.server) for listen in s.listens)), None)
            if server is None:
                return None
            found = nginx.by_block.get(id(server.node), [])
            return _worst(nginx.judge, found)
        server = _server_for(nginx.http, conn.server)
        if server is None:
            return None
        verdicts = []
        for request in sorted(conn.requests, key=lambda r: -conn.requests[r])[:8] or [""]:
            location = _location(server.node, _path(request)) if request else None
            block = location if location is not None else server.node
            verdicts += [nginx.judge.verdict(r) for r in nginx.by_block.get(id(block), [])]
        return _worst_of(verdicts)

    def _ingress_verdict(self, conn: Conn) -> Verdict | None:
        inputs = self._ingress
        assert inputs is not None
        data: dict[str, ingress_yaml.Setting] = {}
        for _where, cm in inputs.configmaps:
            data.update(cm)
        version = self._version or (min(inputs.versions)[0] if inputs.versions else None)
        if conn.subsystem == "stream":
            if version is not None and version < ingress_yaml.STREAM_TRIES_SINCE:
                return Verdict(True, None, f"ingress-nginx {'.'.join(map(str, version))} "
                               "renders no proxy_next_upstream_tries in TCP/UDP servers")
            value = data.get("proxy-stream-next-upstream-tries")
            tries = _number(value.value) if value else (3 if version else None)
            if tries is None:
                return None
            return _tries_verdict(tries, "proxy-stream-next-upstream-tries", value)
        host = conn.host or conn.server
        for _where, name, notes in inputs.ingresses:
            if host and host in inputs.hosts.get(name, []):
                protocol = notes.get(f"{ingress_yaml.ANNOTATION_PREFIX}/backend-protocol")
                if protocol and protocol.value.upper() in ("GRPC", "GRPCS", "FCGI"):
                    return Verdict(True, None, f"Ingress {name} uses backend-protocol "
                                   f"{protocol.value}: rendered with no tries limit")
                value = notes.get(f"{ingress_yaml.ANNOTATION_PREFIX}/proxy-next-upstream-tries")
                if value is not None and _number(value.value) is not None:
                    return _tries_verdict(_number(value.value) or 0,
                                          "proxy-next-upstream-tries", value)
        value = data.get("proxy-next-upstream-tries")
        return _tries_verdict(_number(value.value) if value else 3,
                              "proxy-next-upstream-tries", value)


def _number(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _tries_verdict(tries: int | None, key: str, value: ingress_yaml.Setting | None) -> Verdict:
    where = (f"{key}: {value.value!r} at {value.where.file}:{value.where.line}" if value
             else f"{key} not set (the controller's default: 3)")
    if tries is not None and tries <= 0:
        return Verdict(True, None, f"ingress-nginx's Lua balancer adds a try on every "
                       f"attempt and {where}")
    return Verdict(False, tries, where)


def _same_listen(listen: str, server: str) -> bool:
    if listen == server:
        return True
    host, _, port = server.rpartition(":")
    if listen == port:
        return True
    lhost, _, lport = listen.rpartition(":")
    return lport == port and lhost in ("*", "0.0.0.0", "[::]", host)


def _worst(judge: RouteJudge, found: list[Route]) -> Verdict | None:
    return _worst_of([judge.verdict(r) for r in found])


def _worst_of(verdicts: list[Verdict]) -> Verdict | None:
    """A loop if any route can loop; else the largest bound; None if no route."""
    if not verdicts:
        return None
    loops = [v for v in verdicts if v.loop]
    if loops:
        return loops[0]
    bounds = [v.bound for v in verdicts]
    if None in bounds:
        return next(v for v in verdicts if v.bound is None)
    return max(verdicts, key=lambda v: v.bound or 0)
