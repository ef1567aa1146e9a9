# One image for the API and the workers (docker-compose.yml, ops/k8s would run it).
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
RUN pip install --no-cache-dir .
ENV MGW_HOST=0.0.0.0 MGW_PORT=8080
EXPOSE 8080
CMD ["mgw", "up"]
