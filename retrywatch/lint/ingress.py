"""ingress-nginx inputs: the controller's ConfigMap, Helm values, Ingress annotations and the
controller's Deployment (for its version), read from Kubernetes YAML.

What the controller renders from them (kubernetes/ingress-nginx, nginx.tmpl and config.go;
the facts and their commits are in docs/lint/stream_retry_loop.md and http_retry_loop.md):

- every HTTP location: ``proxy_next_upstream_tries {{ $location.Proxy.NextUpstreamTries }}``,
  from the annotation ``nginx.ingress.kubernetes.io/proxy-next-upstream-tries`` or the
  ConfigMap key ``proxy-next-upstream-tries`` (default 3; "0" renders 0: unlimited);
- gRPC and FastCGI backends (``backend-protocol: GRPC|GRPCS|FCGI``) get ``grpc_pass`` /
  ``fastcgi_pass`` and no ``*_next_upstream_tries`` at all (ingress-nginx #5524, #12090);
- every TCP/UDP service: ``proxy_next_upstream_tries {{ $cfg.ProxyStreamNextUpstreamTries }}``
  from controller-v0.42.0 (PR #6553; default 3); from 0.21.0 to 0.41.x nothing, so
  nginx's 0 (unlimited) applied: the incident retrywatch was made for;
- both Lua balancers call ``set_more_tries(1)`` on every try, so those values are the only
  bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from retrywatch.detect.remedies import fix
from retrywatch.lint.model import Finding, Location, Severity
from retrywatch.lint.nginx_conf import Problem

__all__ = ["ANNOTATION_PREFIX", "STREAM_TRIES_SINCE", "Inputs", "check", "read_yaml",
           "version_of"]

ANNOTATION_PREFIX = "nginx.ingress.kubernetes.io"
#: The first controller version that renders proxy_next_upstream_tries in stream servers.
STREAM_TRIES_SINCE = (0, 42, 0)
#: From this version allow-snippet-annotations is "false" by default (#10393): snippet
#: annotations are dropped unless the ConfigMap allows them.
SNIPPETS_OFF_SINCE = (1, 9, 0)
#: From this version snippet annotations also need annotations-risk-level: Critical.
RISK_LEVEL_SINCE = (1, 12, 0)
#: Names the controller's ConfigMap goes by (the official manifests, the Helm chart, the
#: old nginx-configuration).
_CONTROLLER_NAME = re.compile(r"(.+-)?(ingress-nginx-controller|nginx-ingress-controller)"
                              r"|nginx-configuration")
#: Keys only the controller's ConfigMap has; two of them make a ConfigMap the controller's.
_CONTROLLER_KEYS = frozenset((
    "proxy-next-upstream-tries", "proxy-next-upstream", "proxy-next-upstream-timeout",
    "proxy-stream-next-upstream-tries", "proxy-stream-next-upstream",
    "proxy-stream-next-upstream-timeout", "proxy-stream-timeout", "use-forwarded-headers",
    "proxy-body-size", "proxy-connect-timeout", "ssl-protocols", "log-format-upstream",
    "allow-snippet-annotations", "annotations-risk-level", "http-snippet", "server-snippet",
    "location-snippet", "worker-processes", "enable-real-ip", "keep-alive-requests",
    "upstream-keepalive-connections", "use-http2", "ssl-redirect", "hsts"))
_IMAGE = re.compile(r"(?:ingress-nginx/controller|nginx-ingress-controller)(?:-chroot)?"
                    r"(?::|@[^:]*:)v?(\d+\.\d+(?:\.\d+)?)")
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")
_TRIES_SNIPPET = re.compile(r"\b(grpc|fastcgi)_next_upstream_tries\s+(\d+)\s*;")

WHY_HTTP = (
    "ingress-nginx's Lua balancer calls set_more_tries(1) on every try, and "
    "lua-nginx-module caps it only when proxy_next_upstream_tries is not 0: with 0 one "
    "request retries a dead backend until the client goes away.")
WHY_GRPC = (
    "ingress-nginx renders grpc_pass / fastcgi_pass with no grpc_next_upstream_tries / "
    "fastcgi_next_upstream_tries (ingress-nginx #5524, #12090), so nginx's 0 (unlimited) "
    "applies, and its Lua balancer adds a try on every attempt: a call to a dead backend "
    "retries without end.")
WHY_STREAM = (
    "ingress-nginx's TCP/UDP balancer calls set_more_tries(1) on every try; the stream "
    "servers are bounded only by proxy_next_upstream_tries, which controllers before "
    "0.42.0 do not render and \"0\" makes unlimited (the 0.25 incident: a million retries "
    "on one connection, ingress-nginx #4182, #5425).")


@dataclass(slots=True, frozen=True)
class Setting:
    value: str
    where: Location


@dataclass(slots=True)
class Inputs:
    """Everything read from the YAML files given to one lint run."""

    configmaps: list[tuple[Location, dict[str, Setting]]] = field(default_factory=list)
    ingresses: list[tuple[Location, str, dict[str, Setting]]] = field(default_factory=list)
    hosts: dict[str, list[str]] = field(default_factory=dict)  # Ingress name → its rules' hosts
    #: ConfigMaps not recognised by name or keys: the controller's if its arguments name one
    others: list[tuple[Location, str, dict[str, Setting]]] = field(default_factory=list)
    referenced: set[str] = field(default_factory=set)  # --configmap=ns/NAME of a controller
    classes: set[str] = field(default_factory=lambda: {"nginx"})  # the controller's classes
    ingress_classes: dict[str, str] = field(default_factory=dict)  # Ingress name → its class
    versions: list[tuple[tuple[int, ...], Location]] = field(default_factory=list)
    stream_services: list[Location] = field(default_factory=list)
    documents: int = 0


def version_of(text: str) -> tuple[int, ...] | None:
    """``v1.9.4``, ``controller-v1.11.8``, ``0.25.0`` → a tuple; None if it has none."""
    match = _VERSION.search(text)
    if match is None:
        return None
    return tuple(int(g) for g in match.groups(default="0"))


def _show(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


# -- reading YAML with line numbers ----------------------------------------------------------

def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _get(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            found: yaml.Node = v
            return found
    return None


def _path(node: yaml.Node | None, *keys: str) -> yaml.Node | None:
    for key in keys:
        node = _get(node, key)
    return node


def _key_line(node: yaml.Node | None, key: str) -> int:
    """The line of ``key:`` in a mapping (the mapping's own line if it has no such key)."""
    if isinstance(node, yaml.MappingNode):
        for k, _v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return _line(k)
        return _line(node)
    return 0


def _controller_args(args: yaml.Node | None, into: Inputs) -> None:
    """The controller's ``--configmap=NS/NAME`` and ``--ingress-class=NAME`` arguments."""
    if not isinstance(args, yaml.SequenceNode):
        return
    for arg in args.value:
        text = _scalar(arg) or ""
        flag, _, value = text.partition("=")
        if flag in ("--configmap", "--tcp-services-configmap", "--udp-services-configmap"):
            into.referenced.add(value.rsplit("/", 1)[-1])
        elif flag in ("--ingress-class", "--controller-class") and value:
            into.classes.add(value.rsplit("/", 1)[-1] if flag == "--controller-class"
                             else value)


def _scalar(node: yaml.Node | None) -> str | None:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else None


def _settings(node: yaml.Node | None, file: str) -> dict[str, Setting]:
    out: dict[str, Setting] = {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode):
                out[str(k.value)] = Setting(str(v.value),
                                            Location(file, _line(k), f"{k.value}: {v.value!r}"))
    return out


def read_yaml(path: str, text: str, into: Inputs, problems: list[Problem]) -> None:
    """Add what ``text`` (one YAML file, any number of documents) holds to ``into``."""
    if "{{" in text and "}}" in text:
        problems.append(Problem(path, None, "a Helm template: lint what it renders "
                                "(helm template … > rendered.yaml)", "note"))
        return
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        problems.append(Problem(path, int(mark.line) + 1 if mark else None,
                                f"not valid YAML: {problem}", "error"))
        return
    before = (len(into.configmaps), len(into.ingresses), len(into.versions),
              len(into.stream_services), len(into.others))
    for doc in documents:
        into.documents += 1
        for item in _items(doc):
            _read_object(path, item, into)
    after = (len(into.configmaps), len(into.ingresses), len(into.versions),
             len(into.stream_services), len(into.others))
    if before == after:
        problems.append(Problem(path, None, "nothing retrywatch lint reads here (no ingress-"
                                "nginx ConfigMap, Ingress, controller Deployment or Helm "
                                "values)", "note"))


def _items(doc: yaml.Node) -> Iterator[yaml.Node]:
    kind = _scalar(_get(doc, "kind"))
    items = _get(doc, "items")
    if kind and kind.endswith("List") and isinstance(items, yaml.SequenceNode):
        yield from items.value
    else:
        yield doc


def _read_object(path: str, doc: yaml.Node, into: Inputs) -> None:
    kind = _scalar(_get(doc, "kind"))
    name = _scalar(_path(doc, "metadata", "name")) or "?"
    where = Location(path, _line(doc), f"{kind or 'values'} {name}")
    if kind == "ConfigMap":
        data = _settings(_get(doc, "data"), path)
        if name.endswith(("tcp-services", "udp-services")) or (
                data and all(k.isdigit() for k in data)):
            into.stream_services += [s.where for s in data.values()]
        elif _CONTROLLER_NAME.fullmatch(name) or len(set(data) & _CONTROLLER_KEYS) >= 2:
            into.configmaps.append((where, data))
        else:
            into.others.append((where, name, data))
    elif kind == "Ingress":
        annotations = _settings(_path(doc, "metadata", "annotations"), path)
        into.ingresses.append((where, name, annotations))
        rules = _path(doc, "spec", "rules")
        if isinstance(rules, yaml.SequenceNode):
            into.hosts[name] = [h for r in rules.value if (h := _scalar(_get(r, "host")))]
        klass = _scalar(_path(doc, "spec", "ingressClassName")) or (
            annotations["kubernetes.io/ingress.class"].value
            if "kubernetes.io/ingress.class" in annotations else None)
        if klass:
            into.ingress_classes[name] = klass
    elif kind in ("Deployment", "DaemonSet", "StatefulSet", "Pod"):
        spec = _path(doc, "spec", "template", "spec") if kind != "Pod" else _get(doc, "spec")
        containers = _get(spec, "containers")
        if isinstance(containers, yaml.SequenceNode):
            for container in containers.value:
                image = _get(container, "image")
                text = _scalar(image)
                if text and (match := _IMAGE.search(text)):
                    version = version_of(match.group(1))
                    assert version is not None and image is not None
                    into.versions.append((version, Location(path, _line(image),
                                                            f"image: {text}")))
                    _controller_args(_get(container, "args"), into)
    elif kind is None and (controller := _get(doc, "controller")) is not None:
        # Helm values of the ingress-nginx chart
        config = _get(controller, "config")
        if isinstance(config, yaml.MappingNode) or _get(controller, "image") is not None:
            into.configmaps.append((Location(path, _key_line(controller, "config"),
                                             "controller.config"), _settings(config, path)))
        for key in ("ingressClass",):
            if (klass := _scalar(_get(controller, key))):
                into.classes.add(klass)
        if (klass := _scalar(_path(controller, "ingressClassResource", "name"))):
            into.classes.add(klass)
        tag = _scalar(_path(controller, "image", "tag"))
        if tag and (version := version_of(tag)):
            node = _path(controller, "image", "tag")
            assert node is not None
            into.versions.append((version, Location(path, _line(node), f"tag: {tag}")))
        for key in ("tcp", "udp"):
            services = _settings(_get(doc, key), path)
            into.stream_services += [s.where for s in services.values()]


# -- the rules ---------------------------------------------------------------------------------

def _tries(value: str) -> int | None:
    try:
        return int(value.strip().strip('"'))
    except ValueError:
        return None


def check(inputs: Inputs, *, version: tuple[int, ...] | None = None,
          prefix: str = ANNOTATION_PREFIX) -> list[Finding]:
    """The findings of the ingress-nginx inputs; ``version``: the controller's, when the
    inputs do not say (a Deployment or Helm values do)."""
    known = version
    version_at: Location | None = None
    if known is None and inputs.versions:
        known, version_at = min(inputs.versions)
    findings: list[Finding] = []
    configmaps = inputs.configmaps + [(where, data) for where, name, data in inputs.others
                                      if name in inputs.referenced]
    merged: dict[str, Setting] = {}  # every ConfigMap given, the later ones winning
    for where, data in configmaps:
        findings += _http(where, data)
        merged.update(data)
    anchor = (configmaps[0][0] if configmaps else version_at
              or (inputs.stream_services[0] if inputs.stream_services else None))
    if anchor is not None:
        findings += _stream(anchor, merged, known, version_at, bool(inputs.stream_services))
    globally: dict[str, int] = {}  # grpc/fastcgi tries set in the ConfigMap's snippets
    for key in ("http-snippet", "server-snippet", "location-snippet"):
        if key in merged:
            globally.update(_snippet_tries(merged[key].value))
    allow = merged.get("allow-snippet-annotations")
    snippets = (allow.value.strip().lower() == "true" if allow is not None
                else known is not None and known < SNIPPETS_OFF_SINCE)
    # from v1.12.0 a snippet annotation is also a Critical risk: refused unless
    # annotations-risk-level is Critical (the default is High)
    risk = merged.get("annotations-risk-level")
    if snippets and not (known is not None and known < RISK_LEVEL_SINCE) \
            and (risk is None or risk.value.strip().lower() != "critical"):
        snippets = False
    for where, name, notes in inputs.ingresses:
        klass = inputs.ingress_classes.get(name)
        if klass is not None and klass not in inputs.classes:
            continue  # another controller's Ingress
        findings += _ingress(where, name, notes, prefix, globally, snippets)
    return findings


def _http(where: Location, data: dict[str, Setting]) -> Iterator[Finding]:
    http_on = data.get("proxy-next-upstream")
    tries = data.get("proxy-next-upstream-tries")
    if tries is not None and (http_on is None or "off" not in http_on.value.split()):
        n = _tries(tries.value)
        if n is not None and n < 0:
            yield _negative(tries, where)
        elif n is not None and n == 0:
            yield Finding(
                "http_retry_loop", Severity.ERROR, tries.where,
                f"proxy-next-upstream-tries is {tries.value!r} in {where.what}: every "
                "location renders proxy_next_upstream_tries 0 (unlimited) unless its Ingress "
                "sets the annotation.",
                WHY_HTTP, fix("http_retry_loop", ingress=True), (where,),
                {"key": "proxy-next-upstream-tries", "value": tries.value})


def _stream(where: Location, data: dict[str, Setting], version: tuple[int, ...] | None,
            version_at: Location | None, stream: bool) -> Iterator[Finding]:
    old = version is not None and version < STREAM_TRIES_SINCE
    stream_on = data.get("proxy-stream-next-upstream")
    if not old and stream_on is not None \
            and stream_on.value.strip().lower() in ("false", "off", "0"):
        return  # retries off (the key came with the tries, in 0.42.0: older ones ignore it)
    stream_tries = data.get("proxy-stream-next-upstream-tries")
    facts: dict[str, Any] = {"version": _show(version) if version else None,
                             "stream_services": stream}
    related = tuple(dict.fromkeys(x for x in (where, version_at) if x is not None))
    if old:
        yield Finding(
            "stream_retry_loop", Severity.ERROR if stream else Severity.WARNING,
            version_at or (stream_tries.where if stream_tries else where),
            f"ingress-nginx {_show(version or ())} renders no proxy_next_upstream_tries in its "
            "TCP/UDP servers (it came in 0.42.0): every TCP/UDP service"
            + (" (this configuration has some)" if stream else "")
            + " retries a dead backend without end"
            + (f"; proxy-stream-next-upstream-tries {stream_tries.value!r} is ignored"
               if stream_tries else "") + ".",
            WHY_STREAM, fix("stream_retry_loop", ingress=True), related, facts)
    elif stream_tries is not None and (n := _tries(stream_tries.value)) is not None and n <= 0:
        yield Finding(
            "stream_retry_loop", Severity.ERROR, stream_tries.where,
            f"proxy-stream-next-upstream-tries is {stream_tries.value!r} in {where.what}: "
            "every TCP/UDP service renders proxy_next_upstream_tries 0 (unlimited).",
            WHY_STREAM, fix("stream_retry_loop", ingress=True), related, facts)
    elif stream_tries is None and version is None and stream:
        yield Finding(
            "stream_retry_loop", Severity.WARNING, where,
            f"{_named(where)} does not set proxy-stream-next-upstream-tries and the controller's "
            "version is not known: from 0.42.0 the default is 3, before it TCP/UDP services "
            "retry without end (give --ingress-nginx-version, or lint the controller's "
            "Deployment or Helm values with it).",
            WHY_STREAM, fix("stream_retry_loop", ingress=True), related, facts)


def _named(where: Location) -> str:
    """The ConfigMap (or Helm values) a stream finding is about, as a sentence's subject."""
    if where.what.startswith(("ConfigMap", "controller.config")):
        return where.what
    return "The controller's ConfigMap (none given)"


def _negative(tries: Setting, where: Location) -> Finding:
    """The controller renders a negative value as it is; nginx refuses it."""
    return Finding(
        "lint_input", Severity.ERROR, tries.where,
        f"proxy-next-upstream-tries is {tries.value!r} in {where.what}: the controller "
        "renders it as it is and nginx refuses it (invalid number), so the new configuration "
        "does not load.", "nginx reads only 0 (unlimited) or a positive number of tries.",
        'Set it to "3".', (where,))


def _snippet_tries(text: str) -> dict[str, int]:
    """``grpc_next_upstream_tries 3;`` in a snippet → {"grpc": 3}."""
    return {module: int(n) for module, n in _TRIES_SNIPPET.findall(text)}


def _ingress(where: Location, name: str, annotations: dict[str, Setting], prefix: str,
             globally: dict[str, int], snippets: bool) -> Iterator[Finding]:
    tries = annotations.get(f"{prefix}/proxy-next-upstream-tries")
    nu = annotations.get(f"{prefix}/proxy-next-upstream")
    retries_off = nu is not None and "off" in nu.value.split()
    if tries is not None and not retries_off:
        n = _tries(tries.value)
        if n is not None and n < 0:
            yield _negative(tries, where)
        elif n is not None and n == 0:
            yield Finding(
                "http_retry_loop", Severity.ERROR, tries.where,
                f"Ingress {name} sets proxy-next-upstream-tries {tries.value!r}: its "
                "locations render proxy_next_upstream_tries 0 (unlimited).",
                WHY_HTTP, fix("http_retry_loop", ingress=True), (where,),
                {"annotation": f"{prefix}/proxy-next-upstream-tries", "value": tries.value})
    protocol = annotations.get(f"{prefix}/backend-protocol")
    if protocol is not None and protocol.value.upper() in ("GRPC", "GRPCS", "FCGI"):
        module = "fastcgi" if protocol.value.upper() == "FCGI" else "grpc"
        bound = dict(globally)  # the ConfigMap's snippets, then this Ingress's own
        dropped = []
        for key in ("server-snippet", "configuration-snippet"):
            if (snippet := annotations.get(f"{prefix}/{key}")) is not None:
                if snippets:
                    bound.update(_snippet_tries(snippet.value))
                elif _snippet_tries(snippet.value):
                    dropped.append(key)
        if bound.get(module, 0) == 0:
            yield Finding(
                "http_retry_loop", Severity.ERROR, protocol.where,
                f"Ingress {name} uses backend-protocol {protocol.value}: ingress-nginx "
                f"renders {module}_pass with no {module}_next_upstream_tries, so nginx's 0 "
                "(unlimited) applies"
                + (f"; its {' and '.join(dropped)} annotation is dropped, because snippet "
                   "annotations are off (allow-snippet-annotations, \"false\" by default "
                   "since v1.9.0)" if dropped else "") + ".",
                WHY_GRPC,
                f"Set {module}_next_upstream_tries 3; (and {module}_next_upstream_timeout) in "
                "the controller ConfigMap's http-snippet, which every location inherits (or "
                f"in this Ingress's {prefix}/configuration-snippet, where snippet "
                "annotations are allowed); then restore the backend.",
                (where,), {"annotation": f"{prefix}/backend-protocol",
                           "value": protocol.value})
