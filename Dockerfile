# The worker image: `python -m worker`, one per user's Fly Machine.
# Build: docker build -t registry.fly.io/trademind-workers:<tag> .   (the tag becomes the machine's VERSION)

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Same pins as development and CI: constraints.txt is generated from the tested environment.
COPY pyproject.toml constraints.txt README.md ./
COPY worker ./worker
COPY cli ./cli
COPY devstack ./devstack
# TA-Lib comes as a binary wheel with its C library inside; importing the helpers proves it loads.
RUN pip install -c constraints.txt . \
 && python -c "import worker.indicators.helpers" \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HTTP_PORT=8080
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin worker
COPY --from=build /opt/venv /opt/venv
# The decision schema is shared with the analyze-signal function; the worker validates with the same file.
COPY supabase/functions/_shared/schemas /app/schemas
WORKDIR /app
USER worker
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status != 200)"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "worker"]
