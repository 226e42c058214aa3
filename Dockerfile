# The worker image: `python -m worker`, one per user's Fly Machine (and `python -m worker.validator`, the
# validator app). It carries the worker only: .dockerignore keeps the operator CLI (cli/) and the local
# stack (devstack/) out of the build context, and the build fails if either were installed.
# Build and push: fly deploy --build-only --push --image-label <tag>   (see README, Deploying). The
# lifecycle functions set the machine's VERSION to the image tag; /health reports it.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Same pins as development and CI: constraints.txt is generated from the tested environment.
COPY pyproject.toml constraints.txt README.md ./
COPY worker ./worker
# TA-Lib comes as a binary wheel with its C library inside; importing the helpers proves it loads. The
# project's `trademind` console script belongs to the CLI, which is not here.
RUN pip install -c constraints.txt . \
 && rm /opt/venv/bin/trademind \
 && python -c "import worker.indicators.helpers" \
 && python -c "import importlib.util as u, sys; sys.exit(bool(u.find_spec('cli') or u.find_spec('devstack')))" \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HTTP_PORT=8080
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin worker
COPY --from=build /opt/venv /opt/venv
# Bytecode for every module the worker may import, compiled against the files as this layer holds them (the
# exclusions are CPython's own for its test data): the worker user cannot write it and PYTHONDONTWRITEBYTECODE
# says not to, so without it every start compiled its ~550 modules from source, ~0.8 s more CPU on the way
# to /health (the same start with and without a bytecode cache, python -m bench bench_worker_startup).
RUN python -m compileall -q -j 0 -x 'bad_coding|badsyntax|site-packages|lib2to3/tests/data' /usr/local/lib/python3.11 \
 && python -m compileall -q -j 0 /opt/venv
# The decision schema is shared with the analyze-signal function; the worker validates with the same file.
COPY supabase/functions/_shared/schemas /app/schemas
WORKDIR /app
USER worker
EXPOSE 8080
# start-period = the machine check's grace period (supabase/functions/_shared/machine_runtime.json).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status != 200)"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "worker"]
