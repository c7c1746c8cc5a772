# The ledgerbridge image: worker, API, migrations and the bundled Tryton ERP server.
FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 LEDGERBRIDGE_HOME=/var/lib/ledgerbridge
WORKDIR /app
COPY pyproject.toml README.md ./
COPY canonical canonical
COPY adapters adapters
COPY activities activities
COPY workflows workflows
COPY workers workers
COPY starters starters
COPY sandbox sandbox
RUN pip install . && useradd --system --home /var/lib/ledgerbridge ledgerbridge \
    && mkdir -p /var/lib/ledgerbridge && chown ledgerbridge /var/lib/ledgerbridge
USER ledgerbridge
ENTRYPOINT ["ledgerbridge"]
CMD ["--help"]
