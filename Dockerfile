# The one image of the compose stack: proxy, worker and sim-server are all `only1mcp <command>`.
#   docker build -t only1mcp .        (docker compose builds it for you)
#   docker run --rm only1mcp --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the distribution is built from (pyproject.toml maps these folders to subpackages).
COPY pyproject.toml README.md ./
COPY only1mcp ./only1mcp
COPY proxy ./proxy
COPY streams ./streams
COPY feature_store ./feature_store
COPY models ./models
COPY jobs ./jobs
COPY infra ./infra
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /data --no-create-home only1mcp \
    && mkdir -p /data \
    && chown only1mcp /data

# /data: the Parquet offline store of the workers (a named volume in docker-compose.yml).
WORKDIR /data
USER only1mcp
EXPOSE 8080
ENTRYPOINT ["only1mcp"]
CMD ["--help"]
