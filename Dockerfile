# switchpoint as a container: the router's HTTP service and its OpenAI-compatible gateway.
#
#   docker build -t switchpoint .
#   docker run -d --name switchpoint -p 127.0.0.1:8080:8080 -v switchpoint-data:/data \
#     -e SWITCHPOINT_ADMIN_TOKEN="$(openssl rand -hex 32)" switchpoint
#
# The port is published to the host's loopback only, for a TLS proxy on the same host (drop the
# 127.0.0.1: only when the proxy runs elsewhere). Inside the container it listens on
# 0.0.0.0:8080, so its configuration (deploy/switchpoint.yaml, found through $SWITCHPOINT_CONFIG)
# needs a client key for chat and routing (auth: keys) and locks the admin routes behind
# SWITCHPOINT_ADMIN_TOKEN: the service will not start without the token, nor with a config that
# leaves either open, unless that config says allow_unauthenticated: true. Mount your own config over /etc/switchpoint/switchpoint.yaml (or set
# SWITCHPOINT_CONFIG) to add models and their key variables. Guide: docs/deployment.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SWITCHPOINT_CACHE_DIR=/opt/switchpoint/cache \
    SWITCHPOINT_DATA_DIR=/data \
    SWITCHPOINT_CONFIG=/etc/switchpoint/switchpoint.yaml

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/switchpoint \
        --shell /usr/sbin/nologin switchpoint \
    && mkdir -p /data /opt/switchpoint/cache /etc/switchpoint \
    && chown switchpoint:switchpoint /data

# The package and its dependencies, from this checkout (pyproject.toml names each one and why).
COPY pyproject.toml README.pypi.md /tmp/switchpoint/
COPY src /tmp/switchpoint/src
RUN pip install /tmp/switchpoint && rm -rf /tmp/switchpoint

# Build the int8 embedder now (about 4 s), so a container routes at full speed from its first
# request; routing one prompt also proves the install works. Read-only at run time.
RUN switchpoint route "Is the router installed and its embedder built?" \
    && chmod -R a+rX /opt/switchpoint/cache

COPY deploy/switchpoint.yaml /etc/switchpoint/switchpoint.yaml

# The switchpoint user, by number, so `runAsNonRoot` checks (Kubernetes) can verify it.
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080

# 200 once the weights are loaded (about a second after start); 503 while loading or if loading
# failed. The slim image has no curl, so Python asks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]

# serve reads the config file named by $SWITCHPOINT_CONFIG (set above; override it with -e) and
# keeps its state in $SWITCHPOINT_DATA_DIR.
CMD ["switchpoint", "serve", "--host", "0.0.0.0", "--port", "8080"]
