# The credit service image: `python -m server` by default; the collections bot is the
# same image with the command `python -m collections_bot`.
#
#     docker build -t installment-credit .
#     docker run --env-file credit.env -p 50051:50051 -p 8081:8081 installment-credit
#     docker run --env-file credit.env installment-credit python -m collections_bot
#
# See deploy/README.md for the settings, the Kubernetes manifests and the systemd units.

# --- build: generate the protobuf code, then install the package into a venv ---------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# The code generator lives in a venv of its own, so that it never reaches the image.
RUN python -m venv /opt/protoc \
    && /opt/protoc/bin/pip install 'grpcio-tools>=1.85,<1.86'

WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY server ./server
COPY collections_bot ./collections_bot

# The same generator and outputs as the Makefile's `proto` target, less the type stubs
# (mypy), which nothing reads at run time. The generated package `credit` must exist
# before `pip install .` so that it is installed with the rest.
RUN /opt/protoc/bin/python -m grpc_tools.protoc -Iprotos \
        --python_out=protos --grpc_python_out=protos \
        protos/credit/v1/*.proto

RUN python -m venv /opt/venv && /opt/venv/bin/pip install .

# Fail the build, not the first start, when the installed package lacks a file it reads
# (generated code, migrations, risk ruleset and scorecard, the bot's templates and scripts).
COPY deploy/check_install.py /tmp/check_install.py
RUN cd / && /opt/venv/bin/python /tmp/check_install.py

# --- runtime: the venv and a user, nothing else -------------------------------------------
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VAR_DIR=/var/lib/credit \
    GRPC_LISTEN_ADDR=0.0.0.0:50051 \
    HEALTH_LISTEN_ADDR=0.0.0.0:8081 \
    METRICS_LISTEN_ADDR=0.0.0.0:9100

# A fixed numeric id, so that Kubernetes' runAsNonRoot can verify it without a passwd look-up.
RUN groupadd --system --gid 10001 credit \
    && useradd --system --uid 10001 --gid credit --home-dir /var/lib/credit --no-create-home \
        --shell /usr/sbin/nologin credit \
    && mkdir -p /var/lib/credit \
    && chown credit:credit /var/lib/credit

COPY --from=build /opt/venv /opt/venv

USER 10001:10001
WORKDIR /var/lib/credit

# 50051: the API (mutual TLS); 8081: plaintext health checks only; 9100: metrics.
EXPOSE 50051 8081 9100

# The server and the bot both stop gracefully on SIGTERM (SHUTDOWN_GRACE_S,
# COLLECTIONS_STOP_TIMEOUT_S); give `docker stop` a --time longer than those.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "server"]
