# retrywatch: finds nginx connections stuck in connect() retry loops, live.
#   docker build -t retrywatch .
#   docker run -p 8734:8734 -p 5514:5514/udp retrywatch            # syslog from nginx
#   docker run -v /var/log/nginx:/var/log/nginx:ro retrywatch run --log /var/log/nginx/error.log
# Configuration is the RETRYWATCH_* environment (lists as JSON), flags, or --config FILE.
# The image is the live service only: `pip install retrywatch`, without the analyze extra
# (pandas, pyarrow, matplotlib, jinja2: about 430 MB), so `retrywatch analyze` is not in it.

# -- builder: the compiled core (Rust, maturin) and one wheel for every dependency --------
# (of the live service: no extra is asked for, so the analyze extra's are not built)
# Debian bookworm's python3 is 3.11, the version the final image runs; the wheel is abi3.
FROM rust:1.85-slim-bookworm AS builder
# Debian's own python3 for the build only; its version moves with bookworm's point releases.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /venv
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PATH=/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY core ./core
COPY retrywatch ./retrywatch
# The bundled demo sample: retrywatch/samples/ links to it, the wheel carries it.
COPY sample_logs/scenario-http-lua-storm.error.log.gz ./sample_logs/
# The lint rules' pages (retrywatch lint --explain, SARIF help): retrywatch/lint/docs/ links
# to each of them.
COPY docs/lint ./docs/lint
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# -- final: the wheels installed into a clean slim image, no compiler, no Rust toolchain ---
FROM python:3.11.11-slim-bookworm
LABEL org.opencontainers.image.title="retrywatch" \
      org.opencontainers.image.description="Finds nginx connections stuck in connect() retry loops from error logs" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RETRYWATCH_LISTEN=0.0.0.0:8734 \
    RETRYWATCH_STATE_DIR=/var/lib/retrywatch \
    RETRYWATCH_SYSLOG='["udp://0.0.0.0:5514"]' \
    RETRYWATCH_LOG_FORMAT=json
RUN groupadd --system --gid 10001 retrywatch \
    && useradd --system --uid 10001 --gid retrywatch --no-create-home \
       --home-dir /var/lib/retrywatch --shell /usr/sbin/nologin retrywatch \
    && mkdir -p /var/lib/retrywatch \
    && chown retrywatch:retrywatch /var/lib/retrywatch
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/retrywatch-*.whl
USER 10001:10001
WORKDIR /var/lib/retrywatch
VOLUME ["/var/lib/retrywatch"]
# HTTP (REST API, /metrics, /healthz, /readyz) and the syslog listener.
EXPOSE 8734 5514/udp
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('RETRYWATCH_LISTEN', '0.0.0.0:8734').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
ENTRYPOINT ["retrywatch"]
CMD ["run"]
