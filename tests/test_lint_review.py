"""``retrywatch lint`` against the cases a user's review found (each failed before its fix):
guards that bound the tries, balancers whose code is elsewhere, aliases, ingress-nginx
guessing, SARIF fingerprints, and the command line's own errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from retrywatch.lint import Severity, lint

LINT = [sys.executable, "-m", "retrywatch", "lint"]


def conf(tmp_path: Path, balancer: str, *, http: str = "", upstream: str = "lb",
         extra: str = "", name: str = "nginx.conf") -> Path:
    path = tmp_path / name
    path.write_text(f"""events {{}}
http {{
    lua_package_path "/usr/share/lua/5.1/?.lua;;";
{http}
    upstream {upstream} {{
        server 127.0.0.1:9000;
        balancer_by_lua_block {{
{balancer}
        }}
    }}
{extra}
    server {{
        listen 127.0.0.1:8080;
        location / {{ proxy_pass http://{upstream}; }}
    }}
}}
""")
    return path


def found(path: Path, **kwargs: object) -> list[tuple[str, Severity]]:
    return [(f.code, f.severity) for f in lint([str(path)], **kwargs).findings]  # type: ignore[arg-type]


ERROR = [("http_retry_loop", Severity.ERROR)]
WARNING = [("http_retry_loop", Severity.WARNING)]
NOTE = [("http_retry_loop", Severity.NOTE)]


# -- what the balancer does -------------------------------------------------------------------

@pytest.mark.parametrize(("code", "expected"), [
    # a budget below --max-tries ends the retries first: a real nginx fails 3 times, then 500
    ("local b = require 'ngx.balancer'\nngx.ctx.n = (ngx.ctx.n or 0) + 1\n"
     "if ngx.ctx.n > 3 then return ngx.exit(ngx.ERROR) end\nb.set_more_tries(1)\n"
     "assert(b.set_current_peer('127.0.0.1', 9001))", []),
    # the sample storm's /unixstorm: a budget of 8,000 is a storm that ends
    ("local b = require 'ngx.balancer'\nngx.ctx.n = (ngx.ctx.n or 0) + 1\n"
     "if ngx.ctx.n > 8000 then\n ngx.log(ngx.ERR, 'giving up')\n return ngx.exit(500)\nend\n"
     "b.set_more_tries(1)", ERROR),
    # a guard with no number: the budget is not known
    ("local b = require 'ngx.balancer'\nif not ngx.ctx.ok then return end\nb.set_more_tries(1)",
     WARNING),
    ("local b = require 'ngx.balancer'\nb.set_more_tries(0)", []),
    ("local smt = require('ngx.balancer').set_more_tries\nsmt(1)", ERROR),
    ("local b = require 'ngx.balancer'\nb['set_more_tries'](1)", ERROR),
])
def test_balancer_code(tmp_path: Path, code: str, expected: list[tuple[str, Severity]]) -> None:
    assert found(conf(tmp_path, code)) == expected


def test_a_guarded_storm_says_its_budget(tmp_path: Path) -> None:
    path = conf(tmp_path, "local b = require 'ngx.balancer'\n"
                          "if ngx.ctx.n > 8000 then return ngx.exit(500) end\nb.set_more_tries(1)")
    (finding,) = lint([str(path)]).findings
    assert "up to 8,000 tries by its guard" in finding.message


@pytest.mark.parametrize("call", ["Kong.balancer()", "apisix.http_balancer_phase()",
                                  "local m = require 'mine'\nm.pick()"])
def test_balancer_code_that_is_elsewhere_is_a_note(tmp_path: Path, call: str) -> None:
    """Kong's and APISIX's balancers, or a module not found: lint cannot see whether they add
    tries, and says so (with tries 0, they would loop if they did)."""
    (finding,) = lint([str(conf(tmp_path, call))]).findings
    assert (finding.code, finding.severity) == NOTE[0]
    assert "whose code is not in the configuration" in finding.message


def test_balancer_balance_is_ingress_nginx_only_in_its_configuration(tmp_path: Path) -> None:
    own = conf(tmp_path, "balancer.balance()", name="own.conf")
    assert found(own) == NOTE  # someone's own module called balancer, not found
    rendered = conf(tmp_path, "balancer.balance()", upstream="upstream_balancer",
                    name="rendered.conf")
    (finding,) = lint([str(rendered)]).findings
    assert (finding.code, finding.severity) == ERROR[0]
    assert "ingress-nginx" in finding.message


@pytest.mark.parametrize("template", ["$prefix/lua/?.lua", "${prefix}lua/?.lua"])
def test_prefix_in_the_package_path(tmp_path: Path, template: str) -> None:
    (tmp_path / "lua").mkdir()
    (tmp_path / "lua" / "kong.lua").write_text(
        "local b = require 'ngx.balancer'\nreturn { balancer = function() b.set_more_tries(1) "
        "end }\n")
    path = conf(tmp_path, "local k = require 'kong'\nk.balancer()",
                http=f"    lua_package_path '{template};;';")
    assert found(path, prefix=str(tmp_path)) == ERROR


# -- groups --------------------------------------------------------------------------------------

def test_down_servers_are_not_tried(tmp_path: Path) -> None:
    path = tmp_path / "nginx.conf"
    servers = "".join(f"server 127.0.0.1:{9001 + i} down; " for i in range(9))
    path.write_text("events {}\nhttp {\n upstream g { " + servers + "server [::1]:9100; }\n"
                    " server { listen 127.0.0.1:8080; location / { proxy_pass http://g; } }\n}\n")
    assert found(path) == []  # one server is tried, not ten


# -- ingress-nginx YAML --------------------------------------------------------------------------

def ingress(name: str, *annotations: str, klass: str | None = None) -> str:
    notes = "".join(f"    nginx.ingress.kubernetes.io/{a}\n" for a in annotations)
    spec = f"spec:\n  ingressClassName: {klass}\n" if klass else ""
    return (f"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n"
            f"  annotations:\n{notes}{spec}")


def test_another_controllers_ingress_is_not_judged(tmp_path: Path) -> None:
    path = tmp_path / "ingress.yaml"
    path.write_text(ingress("t", 'proxy-next-upstream-tries: "0"', klass="traefik"))
    assert found(path) == []
    path.write_text(ingress("n", 'proxy-next-upstream-tries: "0"', klass="nginx"))
    assert found(path) == ERROR


def test_a_configmap_is_the_controllers_by_name_keys_or_reference(tmp_path: Path) -> None:
    path = tmp_path / "cms.yaml"
    path.write_text("""apiVersion: v1
kind: ConfigMap
metadata: {name: my-ingress-settings}
data:
  proxy-next-upstream-tries: "0"
---
apiVersion: v1
kind: ConfigMap
metadata: {name: edge-settings}
data:
  proxy-next-upstream-tries: "0"
""")
    # one known key, an unknown name: not the controller's
    assert [f for f in found(path) if f[1] >= Severity.WARNING] == []
    deployment = tmp_path / "deploy.yaml"
    deployment.write_text("""apiVersion: apps/v1
kind: Deployment
metadata: {name: edge}
spec:
  template:
    spec:
      containers:
        - name: controller
          image: registry.k8s.io/ingress-nginx/controller:v1.11.3
          args: [/nginx-ingress-controller, --configmap=$(POD_NAMESPACE)/edge-settings]
""")
    result = lint([str(deployment), str(path)])
    assert [(f.code, f.location.line) for f in result.findings] == [("http_retry_loop", 11)]


def test_a_negative_tries_annotation_is_refused_by_nginx(tmp_path: Path) -> None:
    path = tmp_path / "ingress.yaml"
    path.write_text(ingress("n", 'proxy-next-upstream-tries: "-1"'))
    (finding,) = lint([str(path)]).findings
    assert (finding.code, finding.severity) == ("lint_input", Severity.ERROR)
    assert "nginx refuses it" in finding.message


def test_a_helm_template_is_a_note_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "configmap.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
                    "data:\n{{- toYaml .Values.config | nindent 2 }}\n")
    (finding,) = lint([str(path)]).findings
    assert (finding.code, finding.severity) == ("lint_input", Severity.NOTE)
    assert "helm template" in finding.message


def test_helm_values_findings_point_at_config(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text("controller:\n  replicaCount: 2\n  image:\n    tag: v1.11.3\n  config:\n"
                    "    proxy-stream-next-upstream-tries: \"0\"\ntcp:\n  \"9000\": a/b:9000\n")
    (finding,) = lint([str(path)]).findings
    assert (finding.code, finding.location.line) == ("stream_retry_loop", 6)
    assert found(path)  # and it is an error
    assert "controller.config" in finding.related[0].what


# -- SARIF and the command line ----------------------------------------------------------------

def test_sarif_fingerprints_tell_places_apart(tmp_path: Path) -> None:
    path = tmp_path / "nginx.conf"
    routes = "".join(f"  server {{ listen 127.0.0.1:{8080 + i}; location /{i} {{ proxy_pass "
                     "http://lb; } }\n" for i in range(3))
    path.write_text("events {}\nhttp {\n  upstream lb { server 127.0.0.1:9000; "
                    "balancer_by_lua_block { require('ngx.balancer').set_more_tries(1) } }\n"
                    + routes + "}\n")
    done = subprocess.run([*LINT, "--format", "sarif", "nginx.conf"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    run = json.loads(done.stdout)["runs"][0]
    prints = [r["partialFingerprints"]["retrywatch/v1"] for r in run["results"]]
    assert len(prints) == 3 and len(set(prints)) == 3
    assert all(a["location"].get("uriBaseId") == "%SRCROOT%" for a in run["artifacts"])


@pytest.mark.parametrize("args", [["-o", "/nonexistent/x.sarif"], ["-o", "/dev/full"]])
def test_a_report_that_cannot_be_written_is_one_line(tmp_path: Path, args: list[str]) -> None:
    path = conf(tmp_path, "require('ngx.balancer').set_more_tries(1)")
    done = subprocess.run([*LINT, *args, str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("retrywatch lint: cannot write") and "Traceback" not in \
        done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_usage_errors(tmp_path: Path) -> None:
    path = conf(tmp_path, "require('ngx.balancer').set_more_tries(1)")
    for args in (["--explain", "http_retry_loop", str(path)],
                 ["--prefix", str(tmp_path / "nope"), str(path)]):
        done = subprocess.run([*LINT, *args], capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 2, args
        assert "Traceback" not in done.stderr


def test_custom_error_locations_get_the_http_snippet_fix(tmp_path: Path) -> None:
    path = tmp_path / "nginx.conf"
    path.write_text("""events {}
http {
    upstream upstream_balancer { server 0.0.0.1; balancer_by_lua_block { balancer.balance() } }
    server {
        listen 127.0.0.1:8080;
        location / { proxy_pass http://upstream_balancer; proxy_next_upstream_tries 3; }
        location @custom_upstream-default-backend_503 { proxy_pass http://upstream_balancer; }
    }
}
""")
    (finding,) = lint([str(path)]).findings
    assert finding.facts["scope"].startswith("location @custom_")
    assert "http-snippet" in finding.fix


def test_absolute_lua_paths_are_read_under_the_root(tmp_path: Path) -> None:
    """A copy of a server's tree: balancer_by_lua_file /etc/nginx/lua/lb.lua is the copy's."""
    etc = tmp_path / "etc" / "nginx"
    (etc / "lua").mkdir(parents=True)
    (etc / "lua" / "lb.lua").write_text("local b = require 'ngx.balancer'\nb.set_more_tries(1)\n")
    (etc / "nginx.conf").write_text("""events {}
http {
    upstream lb { server 127.0.0.1:9000; balancer_by_lua_file /etc/nginx/lua/lb.lua; }
    server { listen 127.0.0.1:8080; location / { proxy_pass http://lb; } }
}
""")
    (finding,) = lint([str(etc / "nginx.conf")]).findings
    assert (finding.code, finding.severity) == ERROR[0]
    assert finding.related[0].file == str(etc / "lua" / "lb.lua")
