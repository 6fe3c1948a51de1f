# simcharge — production image. Build: docker build -t simcharge .
# Two stages: the first installs simcharge and its dependencies into a virtualenv; the second
# copies only that virtualenv onto a clean base and runs as an unprivileged user. Nothing is
# downloaded when a container starts (fonts, templates, translations are in the package).

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/simcharge
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/simcharge/bin/pip install --no-compile . \
 && /opt/simcharge/bin/python -m compileall -q /opt/simcharge/lib \
 && SIMCHARGE_FONT_CACHE_DIR=/opt/simcharge/fonts /opt/simcharge/bin/simcharge receipt-fonts

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 simcharge \
 && useradd --system --uid 10001 --gid simcharge --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin simcharge
COPY --from=build /opt/simcharge /opt/simcharge
ENV PATH=/opt/simcharge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SIMCHARGE_ENV=production \
    SIMCHARGE_LOG_JSON=true \
    SIMCHARGE_FONT_CACHE_DIR=/opt/simcharge/fonts \
    SIMCHARGE_WORKER_IN_PROCESS=false
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# The web processes. With more than one, `serve` gives them a shared PROMETHEUS_MULTIPROC_DIR
# (a temporary one unless set) so that /metrics adds up all of them. compose.yaml runs the same
# image as `simcharge db upgrade` (once) and `simcharge worker --metrics-port 9100` too.
CMD ["simcharge", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--proxy-headers"]
