FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY payhook payhook
COPY ingest ingest
COPY workers workers
COPY ledger ledger
COPY providers providers
COPY reconcile reconcile
COPY sandbox sandbox
COPY bench bench
RUN pip install --no-cache-dir .
USER nobody
EXPOSE 8080
CMD ["payhook", "serve", "--port", "8080"]
