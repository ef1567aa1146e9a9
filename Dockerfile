# One image for the API and the workers (docker-compose.yml and ops/k8s run it).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY domain domain
COPY streams streams
COPY projections projections
COPY api api
COPY mgw mgw
COPY schemas schemas
COPY ops ops
RUN pip install --no-cache-dir . \
 && useradd --uid 10001 --home-dir /var/lib/mgw --create-home --shell /usr/sbin/nologin mgw
# a non-root user whose uid the Kubernetes manifests name (runAsUser: 10001)
USER 10001
ENV MGW_HOST=0.0.0.0 MGW_PORT=8080 MGW_DATA_DIR=/var/lib/mgw/data
# 8080: the API; 9000: a worker's /health, /ready and /metrics (mgw worker --health-port)
EXPOSE 8080 9000
CMD ["mgw", "up"]
