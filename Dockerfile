# The operator image. Two stages: "build" installs the package into a virtualenv; the final stage copies only
# that virtualenv onto a fresh slim Python base, so no compiler, pip or build cache ships. Every dependency
# (cryptography included) installs from wheels, so the build stage needs no toolchain either.
#
#   docker build -t managed-secrets-operator:0.1.0 .
#
# Runs as the unprivileged user 65532 with a read-only root filesystem: byte code is compiled at build time and
# nothing is written at run time except /tmp (an emptyDir in the chart). Kopf asks for the user name at start
# (getpass.getuser, for its peering identity), so the user has a passwd entry, and USER is set for any other
# UID a platform may impose (e.g. OpenShift's random UIDs).
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
# The dependencies first, in a layer of their own that a rebuild reuses until pyproject.toml changes; then the
# package itself, without dependencies.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && /opt/venv/bin/pip install -r /tmp/requirements.txt
COPY README.md LICENSE ./
COPY src ./src
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools wheel \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE}
# pip and its friends are build tools: the final image has no use for them.
RUN if python -m pip --version >/dev/null 2>&1; then \
        python -m pip uninstall --yes --root-user-action=ignore pip setuptools wheel; \
    fi \
    && rm -rf /root/.cache \
    && groupadd --system --gid 65532 nonroot \
    && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin nonroot
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    USER=nonroot
LABEL org.opencontainers.image.title="managed-secrets-operator" \
      org.opencontainers.image.description="In-cluster secrets manager: versioned, envelope-encrypted, rotated, projected into Secrets" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
# 9090: Prometheus metrics (MSO_METRICS_PORT); 8080: Kopf health endpoint (--liveness).
EXPOSE 9090 8080
ENTRYPOINT ["managed-secrets-operator"]
