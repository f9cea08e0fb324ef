"""``retrywatch lint`` on ingress-nginx: the controller ConfigMap (the real one of
deploy/static/provider/cloud/deploy.yaml, and variants), Helm values, the controller's
Deployment (its image gives the version: the stream rule depends on < 0.42.0), Ingress
annotations (tries "0", backend-protocol GRPC/FCGI), ``kind: List`` and multi-document files,
and nginx.conf files rendered from the controller's template. Findings must point at the
line of the key to change. Fixtures and their provenance: tests/fixtures/lint/README.md.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from retrywatch.cli import main
from retrywatch.detect.remedies import fix
from retrywatch.lint import LintResult, Severity, lint

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "lint"
CONFIGMAP = FIXTURES / "ingress-nginx-controller-v1.11.8-configmap.yaml"
DEPLOY_1_11_8 = FIXTURES / "ingress-nginx-controller-v1.11.8-deploy.yaml"
DEPLOY_0_41_2 = FIXTURES / "ingress-nginx-controller-v0.41.2-deploy.yaml"
RENDERED = {v: FIXTURES / f"ingress-nginx-v{v}.rendered.nginx.conf"
            for v in ("1.11.8", "1.15.1", "0.41.2")}
PREFIX = "nginx.ingress.kubernetes.io"

Row = tuple[str, str, str, int | None]


def rows(result: LintResult, root: Path | None = None) -> list[Row]:
    out = []
    for f in result.findings:
        file = os.path.relpath(f.location.file, root) if root else os.path.basename(
            f.location.file)
        out.append((f.code, f.severity.label, file, f.location.line))
    return sorted(out)


def lines_of(path: Path, needle: str) -> list[int]:
    found = [n for n, line in enumerate(path.read_text().splitlines(), start=1)
             if needle in line]
    assert found, f"{needle!r} not in {path}"
    return found


def line_of(path: Path, needle: str) -> int:
    (line,) = lines_of(path, needle)
    return line


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, ["lint", *args])


# -- the real ConfigMap and Deployments -------------------------------------------------------

def test_fixtures_are_the_upstream_files() -> None:
    """The ConfigMap fixture is lines 322-334 of the v1.11.8 deploy.yaml, unchanged."""
    deploy = DEPLOY_1_11_8.read_text().splitlines(keepends=True)
    assert "".join(deploy[321:334]) == CONFIGMAP.read_text()
    assert CONFIGMAP.read_text().splitlines()[:3] == [
        "apiVersion: v1", "data:", '  allow-snippet-annotations: "false"']
    assert line_of(DEPLOY_1_11_8, "image: registry.k8s.io/ingress-nginx/controller:v1.11.8") \
        == 447
    assert line_of(DEPLOY_0_41_2, "image: k8s.gcr.io/ingress-nginx/controller:v0.41.2") == 333


@pytest.mark.parametrize("path", [CONFIGMAP, DEPLOY_1_11_8], ids=["configmap", "deploy.yaml"])
def test_real_v1_11_8_manifests_are_clean(path: Path) -> None:
    result = lint([str(path)])
    assert result.findings == []
    assert result.files == [str(path)]
    assert cli(str(path)).exit_code == 0


def test_real_v0_41_2_deploy_yaml(tmp_path: Path) -> None:
    """0.41.2 renders no proxy_next_upstream_tries in stream servers: a warning (no TCP/UDP
    service is configured here) at the controller's image, which is what to change."""
    result = lint([str(DEPLOY_0_41_2)])
    assert rows(result) == [("stream_retry_loop", "warning", DEPLOY_0_41_2.name, 333)]
    (finding,) = result.findings
    assert finding.facts["version"] == "0.41.2"
    assert finding.fix == fix("stream_retry_loop", ingress=True)
    related = [(r.file, r.line) for r in finding.related]
    assert (str(DEPLOY_0_41_2), line_of(DEPLOY_0_41_2, "kind: ConfigMap") - 1) in related
    # with a TCP service it is an error
    tcp = tmp_path / "tcp-services.yaml"
    tcp.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tcp-services\n"
                   "  namespace: ingress-nginx\ndata:\n  \"9000\": \"default/example-go:8080\"\n")
    result = lint([str(DEPLOY_0_41_2), str(tcp)])
    assert rows(result) == [("stream_retry_loop", "error", DEPLOY_0_41_2.name, 333)]
    assert cli(str(DEPLOY_0_41_2), str(tcp)).exit_code == 1


# -- ConfigMap variants --------------------------------------------------------------------------

def configmap_with(tmp_path: Path, *keys: str, name: str = "configmap.yaml") -> Path:
    """The real ConfigMap with keys added under data: (the first one lands on line 3)."""
    lines = CONFIGMAP.read_text().splitlines(keepends=True)
    path = tmp_path / name
    path.write_text("".join(lines[:2] + [f"  {k}\n" for k in keys] + lines[2:]))
    return path


TCP_SERVICES = """\
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: tcp-services
  namespace: ingress-nginx
data:
  "9000": "default/example-go:8080"
"""

VARIANTS: dict[str, tuple[list[str], list[tuple[str, str, int]]]] = {
    "tries 0": (['proxy-next-upstream-tries: "0"'], [("http_retry_loop", "error", 3)]),
    "tries 3": (['proxy-next-upstream-tries: "3"'], []),
    "tries 0, retries off": (['proxy-next-upstream-tries: "0"', 'proxy-next-upstream: "off"'],
                             []),
    "tries 0, retries on": (['proxy-next-upstream: "error timeout http_502"',
                             'proxy-next-upstream-tries: "0"'],
                            [("http_retry_loop", "error", 4)]),
    "stream tries 0": (['proxy-stream-next-upstream-tries: "0"'],
                       [("stream_retry_loop", "error", 3)]),
    "stream tries 0, unquoted": (["proxy-stream-next-upstream-tries: 0"],
                                 [("stream_retry_loop", "error", 3)]),
    "stream tries 3": (['proxy-stream-next-upstream-tries: "3"'], []),
    "stream tries 0, stream retries off": (['proxy-stream-next-upstream-tries: "0"',
                                            'proxy-stream-next-upstream: "false"'], []),
    "both 0": (['use-forwarded-headers: "true"', 'proxy-next-upstream-tries: "0"',
                'proxy-stream-next-upstream-tries: "0"'],
               [("http_retry_loop", "error", 4), ("stream_retry_loop", "error", 5)]),
    "stream tries unset": ([], []),
}


@pytest.mark.parametrize(("keys", "expected"), list(VARIANTS.values()), ids=list(VARIANTS))
def test_configmap_variants(tmp_path: Path, keys: list[str],
                            expected: list[tuple[str, str, int]]) -> None:
    path = configmap_with(tmp_path, *keys)
    result = lint([str(path)])
    assert rows(result) == sorted((c, s, path.name, n) for c, s, n in expected)
    for f in result.findings:
        assert f.fix == fix(f.code, ingress=True)
        assert (f.related[0].file, f.related[0].line) == (str(path), 1)  # the ConfigMap
        assert f.location.what.startswith("proxy-")  # the key, as written


def test_stream_tries_unset_with_tcp_services(tmp_path: Path) -> None:
    """Unknown version: a warning at the ConfigMap; a known one decides."""
    path = configmap_with(tmp_path)
    path.write_text(path.read_text() + TCP_SERVICES)
    assert rows(lint([str(path)])) == [("stream_retry_loop", "warning", path.name, 1)]
    assert rows(lint([str(path)], ingress_version=(0, 42, 0))) == []
    assert rows(lint([str(path)], ingress_version=(0, 41, 2))) == [
        ("stream_retry_loop", "error", path.name, 1)]
    result = cli("--ingress-nginx-version", "v0.41.2", "--format", "json", str(path))
    assert result.exit_code == 1
    (f,) = json.loads(result.stdout)["findings"]
    assert (f["code"], f["severity"], f["line"], f["facts"]["version"]) == (
        "stream_retry_loop", "error", 1, "0.41.2")
    assert cli("--ingress-nginx-version", "1.11.8", str(path)).exit_code == 0


def test_old_controller_ignores_stream_tries(tmp_path: Path) -> None:
    """Before 0.42.0 proxy-stream-next-upstream-tries does not exist: "3" does not help."""
    path = configmap_with(tmp_path, 'proxy-stream-next-upstream-tries: "3"')
    (finding,) = lint([str(path)], ingress_version=(0, 41, 2)).findings
    assert (finding.code, finding.severity, finding.location.line) == (
        "stream_retry_loop", Severity.WARNING, 3)
    assert "'3' is ignored" in finding.message


def test_old_controller_ignores_stream_next_upstream_off(tmp_path: Path) -> None:
    path = configmap_with(tmp_path, 'proxy-stream-next-upstream: "false"')
    path.write_text(path.read_text() + TCP_SERVICES)
    assert rows(lint([str(path)], ingress_version=(0, 41, 2))) == [
        ("stream_retry_loop", "error", path.name, 1)]


# -- Helm values ----------------------------------------------------------------------------------

HELM = """\
controller:
  image:
    registry: registry.k8s.io
    image: ingress-nginx/controller
    tag: "{tag}"
  config:
    use-forwarded-headers: "true"
{config}
tcp:
  "9000": "default/example-go:8080"
"""


@pytest.mark.parametrize(("tag", "config", "expected"), [
    ("v0.41.2", "", [("stream_retry_loop", "error", 5)]),
    ("v1.11.8", "", []),
    ("1.11.8", "", []),
    ("v1.11.8", '    proxy-next-upstream-tries: "0"', [("http_retry_loop", "error", 8)]),
    ("v1.11.8", "    proxy-stream-next-upstream-tries: 0", [("stream_retry_loop", "error", 8)]),
    ("v1.11.8", '    proxy-stream-next-upstream-tries: "5"', []),
], ids=["0.41.2", "1.11.8", "tag without v", "tries 0", "stream tries 0", "stream tries 5"])
def test_helm_values(tmp_path: Path, tag: str, config: str,
                     expected: list[tuple[str, str, int]]) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(HELM.format(tag=tag, config=config))
    result = lint([str(path)])
    assert rows(result) == [(c, s, "values.yaml", n) for c, s, n in expected]


# -- the controller's Deployment ---------------------------------------------------------------

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ingress-nginx-controller
  namespace: ingress-nginx
spec:
  template:
    spec:
      containers:
        - name: controller
          image: registry.k8s.io/ingress-nginx/controller:{version}
          args:
            - /nginx-ingress-controller
"""


@pytest.mark.parametrize(("version", "expected"), [
    ("v0.41.2", [("stream_retry_loop", "error", "deployment.yaml", 11)]),
    ("v0.42.0", []),
    ("v1.11.8@sha256:695d79381ee6af00c7f5c9fd434f50851d7d32838ad5b2c507e416cf2084fc79", []),
])
def test_deployment_version_decides_the_stream_rule(tmp_path: Path, version: str,
                                                    expected: list[Row]) -> None:
    cm = configmap_with(tmp_path)
    tcp = tmp_path / "tcp-services.yaml"
    tcp.write_text(TCP_SERVICES)
    dep = tmp_path / "deployment.yaml"
    dep.write_text(DEPLOYMENT.format(version=version))
    result = lint([str(cm), str(tcp), str(dep)])
    assert rows(result) == expected
    # a folder of them says the same
    assert rows(lint([str(tmp_path)])) == expected


def test_old_deployment_with_tcp_services_and_no_controller_configmap(tmp_path: Path) -> None:
    path = tmp_path / "manifests.yaml"
    path.write_text(DEPLOYMENT.format(version="v0.41.2") + TCP_SERVICES)
    assert rows(lint([str(path)])) == [("stream_retry_loop", "error", path.name, 11)]


# -- Ingress annotations -------------------------------------------------------------------------

INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: default
  annotations:
{annotations}
spec:
  ingressClassName: nginx
  rules:
    - host: {name}.example
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: {name}
                port:
                  number: 80
"""


def ingress(name: str, *annotations: str, prefix: str = PREFIX) -> str:
    return INGRESS.format(name=name, annotations="\n".join(
        a if a.startswith(" ") else f"    {prefix}/{a}" for a in annotations))


@pytest.mark.parametrize(("annotations", "expected"), [
    (['proxy-next-upstream-tries: "0"'], [("http_retry_loop", "error", 7)]),
    (['proxy-next-upstream-tries: "3"'], []),
    (['proxy-next-upstream-tries: "many"'], []),  # not an int: the ConfigMap's default applies
    (['proxy-next-upstream: "off"', 'proxy-next-upstream-tries: "0"'], []),
    (['backend-protocol: "GRPC"'], [("http_retry_loop", "error", 7)]),
    (['backend-protocol: "GRPCS"'], [("http_retry_loop", "error", 7)]),
    (['backend-protocol: "FCGI"'], [("http_retry_loop", "error", 7)]),
    (['backend-protocol: "HTTPS"'], []),
    (['backend-protocol: "GRPC"', "configuration-snippet: |",
      "      grpc_next_upstream_tries 3;", "      grpc_next_upstream_timeout 30s;"],
     [("http_retry_loop", "error", 7)]),  # snippet annotations: off unless allowed
    (['backend-protocol: "GRPC"', 'configuration-snippet: "grpc_next_upstream_tries 0;"'],
     [("http_retry_loop", "error", 7)]),
    (['backend-protocol: "FCGI"', 'configuration-snippet: "grpc_next_upstream_tries 3;"'],
     [("http_retry_loop", "error", 7)]),
    (['backend-protocol: "GRPC"', 'proxy-next-upstream-tries: "0"'],
     [("http_retry_loop", "error", 7), ("http_retry_loop", "error", 8)]),
], ids=["tries 0", "tries 3", "tries not a number", "retries off", "GRPC", "GRPCS", "FCGI",
        "HTTPS", "GRPC with a snippet", "GRPC with a snippet of 0",
        "FCGI with a grpc snippet", "GRPC and tries 0"])
def test_ingress_annotations(tmp_path: Path, annotations: list[str],
                             expected: list[tuple[str, str, int]]) -> None:
    path = tmp_path / "ingress.yaml"
    path.write_text(ingress("web", *annotations))
    result = lint([str(path)])
    assert rows(result) == [(c, s, path.name, n) for c, s, n in expected]
    for f in result.findings:
        assert f.location.what.startswith(PREFIX + "/")
        assert (f.related[0].file, f.related[0].line) == (str(path), 1)  # the Ingress


def test_grpc_ingress_fix_names_grpc_and_fcgi_names_fastcgi(tmp_path: Path) -> None:
    path = tmp_path / "ingress.yaml"
    path.write_text(ingress("g", 'backend-protocol: "GRPC"') + "---\n"
                    + ingress("f", 'backend-protocol: "FCGI"'))
    grpc, fcgi = sorted(lint([str(path)]).findings, key=lambda f: f.location.line or 0)
    assert "grpc_next_upstream_tries" in grpc.fix
    assert "fastcgi_next_upstream_tries" in fcgi.fix
    assert "grpc" not in fcgi.fix


DROPPED = [("http_retry_loop", "error", "ingress.yaml", 7)]


@pytest.mark.parametrize(("allow", "version", "expected"), [
    ('"true"', (1, 11, 3), []),
    # from v1.12.0 (and when the version is not known) a snippet also needs
    # annotations-risk-level: Critical, or the controller refuses the Ingress
    ('"true"', None, DROPPED),
    ('"true"', (1, 12, 0), DROPPED),
    ('"true"\n  annotations-risk-level: Critical', None, []),
    (None, (1, 8, 4), []),  # before v1.9.0 snippet annotations were on by default
    (None, (1, 9, 0), DROPPED),
    (None, None, DROPPED),
    ('"false"', (1, 8, 4), DROPPED),
])
def test_grpc_snippet_counts_where_snippets_are_allowed(
        tmp_path: Path, allow: str | None, version: tuple[int, ...] | None,
        expected: list[tuple[str, str, str, int]]) -> None:
    path = tmp_path / "ingress.yaml"
    path.write_text(ingress("g", 'backend-protocol: "GRPC"',
                            'configuration-snippet: "grpc_next_upstream_tries 3;"'))
    inputs = [str(path)]
    if allow is not None:
        cm = tmp_path / "cm.yaml"
        cm.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ingress-nginx-"
                      f"controller\ndata:\n  allow-snippet-annotations: {allow}\n")
        inputs.insert(0, str(cm))
    result = lint(inputs, ingress_version=version)
    assert rows(result) == expected
    if expected:
        assert "dropped" in result.findings[0].message


def test_configmap_http_snippet_bounds_grpc_everywhere(tmp_path: Path) -> None:
    cm = tmp_path / "cm.yaml"
    cm.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ingress-nginx-controller"
                  "\ndata:\n  http-snippet: |\n    grpc_next_upstream_tries 3;\n")
    path = tmp_path / "ingress.yaml"
    path.write_text(ingress("g", 'backend-protocol: "GRPC"'))
    assert rows(lint([str(cm), str(path)])) == []


def test_grpc_snippet_does_not_count_when_snippets_are_disabled(tmp_path: Path) -> None:
    path = tmp_path / "ingress.yaml"
    path.write_text(ingress("g", 'backend-protocol: "GRPC"',
                            'configuration-snippet: "grpc_next_upstream_tries 3;"'))
    result = lint([str(CONFIGMAP), str(path)])
    assert rows(result) == [("http_retry_loop", "error", path.name, 7)]


def test_annotations_prefix(tmp_path: Path) -> None:
    path = tmp_path / "ingress.yaml"
    path.write_text(ingress("web", 'proxy-next-upstream-tries: "0"', prefix="example.com"))
    assert rows(lint([str(path)])) == []
    assert rows(lint([str(path)], annotations_prefix="example.com")) == [
        ("http_retry_loop", "error", path.name, 7)]
    assert cli(str(path)).exit_code == 0
    assert cli("--annotations-prefix", "example.com", str(path)).exit_code == 1


# -- List and multi-document files ---------------------------------------------------------------

def test_kind_list(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("""\
apiVersion: v1
kind: List
items:
  - apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: a
      annotations:
        nginx.ingress.kubernetes.io/proxy-next-upstream-tries: "0"
  - apiVersion: v1
    kind: ConfigMap
    metadata:
      name: ingress-nginx-controller
    data:
      proxy-stream-next-upstream-tries: "0"
  - apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: ingress-nginx-controller
    spec:
      template:
        spec:
          containers:
            - name: controller
              image: registry.k8s.io/ingress-nginx/controller:v1.11.8
""")
    assert rows(lint([str(path)])) == [("http_retry_loop", "error", "list.yaml", 9),
                                       ("stream_retry_loop", "error", "list.yaml", 15)]


def test_multi_document_file(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    docs = [ingress("a", 'proxy-next-upstream-tries: "0"'),
            ingress("b", 'proxy-next-upstream-tries: "3"'),
            ingress("c", 'backend-protocol: "GRPC"'),
            CONFIGMAP.read_text().replace("\ndata:\n",
                                          '\ndata:\n  proxy-next-upstream-tries: "0"\n', 1)]
    path.write_text("---\n" + "---\n".join(docs))
    annotation, key = lines_of(path, 'tries: "0"')  # Ingress a, then the ConfigMap
    assert rows(lint([str(path)])) == [
        ("http_retry_loop", "error", "all.yaml", annotation),
        ("http_retry_loop", "error", "all.yaml", line_of(path, "backend-protocol")),
        ("http_retry_loop", "error", "all.yaml", key)]


def test_yaml_with_nothing_to_read_is_a_note(tmp_path: Path) -> None:
    path = tmp_path / "service.yaml"
    path.write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n")
    result = lint([str(path)])
    assert [(f.code, f.severity, f.location.file) for f in result.findings] == [
        ("lint_input", Severity.NOTE, str(path))]
    assert cli(str(path)).exit_code == 0


def test_yaml_without_a_yaml_suffix_is_read_as_yaml(tmp_path: Path) -> None:
    path = tmp_path / "configmap.txt"
    path.write_text(configmap_with(tmp_path, 'proxy-next-upstream-tries: "0"').read_text())
    assert rows(lint([str(path)])) == [("http_retry_loop", "error", "configmap.txt", 3)]


# -- nginx.conf rendered by the controller -----------------------------------------------------

def test_rendered_v1_11_8_inline_balancers() -> None:
    """1.11: balancer_by_lua_block { balancer.balance() }. Flags the location rendered from
    the tries "0" annotation and the gRPC location (no grpc_next_upstream_tries); the
    default locations (tries 3) and the TCP/UDP servers (tries 3) are fine."""
    conf = RENDERED["1.11.8"]
    result = lint([str(conf)])
    assert rows(result) == sorted([
        ("http_retry_loop", "error", conf.name,
         line_of(conf, "proxy_next_upstream_tries               0;")),
        ("http_retry_loop", "error", conf.name, line_of(conf, "grpc_pass")),
    ])
    for f in result.findings:
        assert f.facts["ingress_nginx"] is True
        assert "ingress-nginx's balancer.balance()" in f.message
        http_balancer = lines_of(conf, "balancer_by_lua_block")[0]  # then the stream one
        assert (f.related[0].file, f.related[0].line) == (str(conf), http_balancer)
    grpc = next(f for f in result.findings if f.location.what.startswith("grpc_pass"))
    assert grpc.fix == fix("http_retry_loop", "grpc")
    assert "grpc_next_upstream_tries is not set" in grpc.message
    unlimited = next(f for f in result.findings if f is not grpc)
    assert unlimited.fix == fix("http_retry_loop", "proxy")
    assert "proxy-next-upstream-tries" in unlimited.fix  # the ingress-nginx setting too


def test_rendered_v1_15_1_balancer_files() -> None:
    """>= 1.12: balancer_by_lua_file .../ngx_conf_balancer.lua (not on this machine: known).
    Flags the custom-error location (the template renders no tries there), the gRPC
    location without a snippet, and both stream servers rendered with stream tries "0"."""
    conf = RENDERED["1.15.1"]
    result = lint([str(conf)])
    stream_lines = lines_of(conf, "proxy_next_upstream_tries   0;")
    assert len(stream_lines) == 2
    assert rows(result) == sorted([
        ("http_retry_loop", "error", conf.name,
         line_of(conf, "proxy_pass            http://upstream_balancer;")),
        ("http_retry_loop", "error", conf.name,
         lines_of(conf, "grpc_pass grpc://upstream_balancer;")[0]),
        *[("stream_retry_loop", "error", conf.name, n) for n in stream_lines],
    ])
    for f in result.findings:
        assert f.facts["ingress_nginx"] is True
        balancer = ("tcp_udp_balancer.balance()" if f.code == "stream_retry_loop"
                    else "balancer.balance()")
        assert f"ingress-nginx's {balancer}" in f.message
        file_line = line_of(conf, "ngx_conf_balancer_tcp_udp.lua" if f.code ==
                            "stream_retry_loop" else "ngx_conf_balancer.lua;")
        assert (f.related[0].file, f.related[0].line) == (str(conf), file_line)
    stream = [f for f in result.findings if f.code == "stream_retry_loop"]
    assert {f.fix for f in stream} == {fix("stream_retry_loop")}
    assert "proxy-stream-next-upstream-tries" in stream[0].fix


def test_rendered_v0_41_2_stream_servers_without_tries() -> None:
    """Before 0.42.0 the stream servers have no proxy_next_upstream_tries: both TCP and UDP
    servers loop, flagged at their proxy_pass; the HTTP location (tries 3) is fine."""
    conf = RENDERED["0.41.2"]
    result = lint([str(conf)])
    passes = lines_of(conf, "proxy_pass              upstream_balancer;")
    assert len(passes) == 2
    assert rows(result) == [("stream_retry_loop", "error", conf.name, n) for n in passes]
    for f in result.findings:
        assert "proxy_next_upstream_tries is not set" in f.message
        assert f.facts["ingress_nginx"] is True


def test_rendered_config_and_configmap_in_one_folder(tmp_path: Path) -> None:
    """A folder: the nginx.conf copied out of the pod and the controller's YAML, together."""
    shutil.copy(RENDERED["0.41.2"], tmp_path / "nginx.conf")
    shutil.copy(DEPLOY_0_41_2, tmp_path / "deploy.yaml")
    result = lint([str(tmp_path)])
    passes = lines_of(tmp_path / "nginx.conf", "proxy_pass              upstream_balancer;")
    assert rows(result, tmp_path) == sorted(
        [("stream_retry_loop", "error", "nginx.conf", n) for n in passes]
        + [("stream_retry_loop", "warning", "deploy.yaml", 333)])
    out = cli("--format", "json", str(tmp_path))
    assert out.exit_code == 1
    assert json.loads(out.stdout)["summary"] == {"error": 2, "warning": 1, "note": 0, "files": 2}
