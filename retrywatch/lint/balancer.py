"""What an upstream block's Lua balancer does to the tries: read from its code.

The code is the ``balancer_by_lua_block`` body, a ``balancer_by_lua_file`` (read, never
run), and the modules it ``require``s that can be found through ``lua_package_path``. The
balancers of ingress-nginx live in the controller image, not in the configuration; when
their files are not at hand, what they do is known (``KNOWN``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from retrywatch.lint import lua
from retrywatch.lint.model import Location
from retrywatch.lint.nginx_conf import Node, rooted

__all__ = ["KNOWN", "Balancer", "read_balancer"]

#: ingress-nginx's balancers: ``balance()`` calls ``ngx_balancer.set_more_tries(1)`` before
#: ``set_current_peer`` on every invocation, unconditionally, from 0.21.0 (af2dce901) to
#: controller-v1.15.1 (rootfs/etc/nginx/lua/balancer.lua line 354, tcp_udp_balancer.lua line
#: 192), so the tries are bounded only by proxy_next_upstream_tries. Up to 1.11 the template
#: renders ``balancer_by_lua_block { balancer.balance() }``; from v1.12.0-beta.0
#: ``balancer_by_lua_file /etc/nginx/lua/nginx/ngx_conf_balancer.lua`` (``…_tcp_udp.lua``).
KNOWN = {
    "balancer": "is ingress-nginx's balancer.balance() (rootfs/etc/nginx/lua/balancer.lua), "
                "which calls ngx_balancer.set_more_tries(1) on every try",
    "tcp_udp_balancer": "is ingress-nginx's tcp_udp_balancer.balance() "
                        "(rootfs/etc/nginx/lua/tcp_udp_balancer.lua), which calls "
                        "ngx_balancer.set_more_tries(1) on every try",
}
_KNOWN_FILES = {"ngx_conf_balancer.lua": "balancer",
                "ngx_conf_balancer_tcp_udp.lua": "tcp_udp_balancer"}
_MAX_MODULES = 32  # required modules read for one balancer, at most
_MAX_LUA_BYTES = 4 * 1024 * 1024  # a Lua file larger than this is not read


@dataclass(slots=True)
class Balancer:
    """The Lua balancer of one upstream block."""

    directive: Node
    adds_tries: list[Location] = field(default_factory=list)  # on every invocation
    adds_tries_sometimes: list[Location] = field(default_factory=list)  # under a condition
    peer_in_loop: list[Location] = field(default_factory=list)
    largest_added: int | None = None  # the largest literal given to set_more_tries
    budget: int | None = None  # the largest budget of a guard before set_more_tries
    known: str | None = None  # a known balancer's behaviour (ingress-nginx)
    unseen: list[str] = field(default_factory=list)  # code that could not be read

    @property
    def ingress_nginx(self) -> bool:
        return self.known is not None

    @property
    def where(self) -> Location:
        return Location(self.directive.file, self.directive.line,
                        f"{self.directive.name} (upstream {_upstream_name(self.directive)})")


def _upstream_name(node: Node) -> str:
    return node.parent.args[0] if node.parent and node.parent.args else "?"


def _package_paths(node: Node) -> list[str]:
    """The ``?.lua`` templates of ``lua_package_path`` in the subsystem of ``node``."""
    templates: list[str] = []
    for anc in node.ancestors():
        if anc.name in ("http", "stream", "main"):
            for d in anc.all("lua_package_path"):
                templates += [t for t in d.args[0].split(";") if t and t != ";"] if d.args else []
    return templates


def _resolve(path: str, prefixes: list[str], root: str = "/") -> str | None:
    if os.path.isabs(path):
        path = rooted(path, root)  # a copy of a server's tree: its own /etc/nginx/lua
        return path if os.path.isfile(path) else None
    for prefix in prefixes:
        candidate = os.path.join(prefix, path)
        if os.path.isfile(candidate):
            return candidate
    return None


def _read(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read(_MAX_LUA_BYTES + 1)
    if len(data) > _MAX_LUA_BYTES:
        raise OSError(f"larger than {_MAX_LUA_BYTES} bytes")
    return data.decode("utf-8", errors="replace")


def read_balancer(directive: Node, prefixes: list[str], *, max_tries: int = 10,
                  ingress_nginx: bool = False, root: str = "/") -> Balancer:
    """``directive``: a balancer_by_lua_block / _file / balancer_by_lua in an upstream.
    ``prefixes``: the directories relative paths are looked up in (nginx's prefix).
    ``max_tries``: a guard budget below it bounds the tries (``if n > 3 then return``).
    ``ingress_nginx``: the configuration is one the controller rendered, so its balancer
    modules, absent from the file, are the controller's."""
    b = Balancer(directive)
    if directive.name == "balancer_by_lua_file":
        path = directive.args[0] if directive.args else ""
        found = _resolve(path, prefixes, root)
        if found is None and os.path.basename(path) in _KNOWN_FILES and ingress_nginx:
            _know(b, _KNOWN_FILES[os.path.basename(path)], directive)
            return b
        if found is None:
            b.unseen.append(f"{path} (not found under {', '.join(prefixes) or 'any prefix'})")
            return b
        try:
            code = _read(found)
        except OSError as exc:
            b.unseen.append(f"{found} ({exc.strerror or exc})")
            return b
        scanned = [(lua.scan(code), found)]
    else:
        code = directive.args[-1] if directive.args else ""
        scanned = [(lua.scan(code, directive.line), directive.file)]
    modules = _follow_requires(b, scanned, directive, prefixes, ingress_nginx, root)
    for facts, file in scanned:
        _take(b, facts, file, modules, max_tries)
    if not (b.adds_tries or b.adds_tries_sometimes or b.peer_in_loop or b.known):
        unread = [f"calls {call}, whose code is not in the configuration"
                  for facts, _file in scanned for call in facts.outside
                  if facts.bindings.get(call.split(".")[0].split(":")[0]) not in modules]
        b.unseen += list(dict.fromkeys(unread))[:3]
    return b


def _take(b: Balancer, facts: lua.LuaFacts, file: str, modules: set[str],
          max_tries: int) -> None:
    """Count the calls of one piece of code; a call through a module that was read
    (``w.set_more_tries()`` of a wrapper) is judged by that module's own code."""
    if facts.error:
        b.unseen.append(f"{file}: the Lua code could not be read ({facts.error})")
    for call in facts.calls:
        if call.receiver and facts.bindings.get(call.receiver) in modules:
            continue
        loc = Location(file, call.line, f"{call.name}({call.argument})")
        if call.name == "set_more_tries":
            if call.argument.strip() == "0":
                continue  # adds nothing
            if call.guarded and call.budget is not None and call.budget < max_tries:
                continue  # the guard ends the retries first (if n > 3 then return … end)
            if call.guarded and call.budget is not None:
                b.budget = max(b.budget or 0, call.budget)
                b.adds_tries.append(loc)
            elif call.guarded or call.conditional:
                b.adds_tries_sometimes.append(loc)
            else:
                b.adds_tries.append(loc)
            if call.argument.isdigit():
                b.largest_added = max(b.largest_added or 0, int(call.argument))
        elif call.name == "set_current_peer" and call.looped:
            b.peer_in_loop.append(loc)


def _follow_requires(b: Balancer, scanned: list[tuple[lua.LuaFacts, str]], directive: Node,
                     prefixes: list[str], ingress_nginx: bool, root: str) -> set[str]:
    """Read the modules the code requires (found through lua_package_path), appending
    them to ``scanned``; returns the names of those read."""
    prefix = prefixes[0] if prefixes else ""
    here = prefix.rstrip("/") + "/"
    templates = [t.replace("${prefix}", here).replace("$prefix", here).replace("//", "/")
                 for t in _package_paths(directive)]
    seen: set[str] = set()
    found: set[str] = set()  # modules read from a file
    at = 0
    while at < len(scanned) and len(seen) < _MAX_MODULES:
        facts = scanned[at][0]
        at += 1
        # a module called without a require here (ingress-nginx requires its balancer in
        # init_by_lua) is looked for too: the configuration's own, if it has one
        wanted = facts.requires + [facts.bindings.get(r, r) for r in facts.balance_calls]
        for name in wanted:
            if name in seen or name.startswith(("ngx.", "resty.")) or name == "ngx":
                continue
            seen.add(name)
            path = _find_module(name, templates, prefixes, root)
            if path is None:
                continue
            try:
                text = _read(path)
            except OSError:
                continue
            found.add(name)
            scanned.append((lua.scan(text), path))
        for receiver in facts.balance_calls:
            module = facts.bindings.get(receiver, receiver)
            if module in KNOWN and module not in found and b.known is None and ingress_nginx:
                # balancer.balance() with no such module in the configuration's package
                # path: the controller image's own, ingress-nginx's
                _know(b, module, directive)
    return found


def _know(b: Balancer, module: str, directive: Node) -> None:
    b.known = KNOWN[module]
    b.adds_tries.append(Location(directive.file, directive.line, f"{module}.balance()"))
    b.largest_added = max(b.largest_added or 0, 1)


def _find_module(name: str, templates: list[str], prefixes: list[str],
                 root: str = "/") -> str | None:
    rel = name.replace(".", "/")
    for template in templates:
        found = _resolve(template.replace("?", rel), prefixes, root)
        if found is not None:
            return found
    return None
