"""Run the support sandbox: `python -m sandbox.support --port 12112 --state PATH ...`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from sandbox.support.app import create_app

logger = logging.getLogger("sandbox.support")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.support",
        description="Zendesk-compatible support sandbox (REST API v2 subset)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12112)
    parser.add_argument("--state", type=Path, default=None, help="SQLite file (memory if absent)")
    parser.add_argument("--email", required=True, help="agent email of the API token")
    parser.add_argument("--token", required=True, help="API token")
    parser.add_argument(
        "--webhook-url", action="append", default=[], help="webhook endpoint (repeatable)"
    )
    parser.add_argument(
        "--webhook-secret",
        action="append",
        default=[],
        help="signing secret, one per --webhook-url in the same order",
    )
    parser.add_argument("--rate-limit", type=int, default=None, help="API calls per minute")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if len(args.webhook_url) != len(args.webhook_secret):
        parser.error("give exactly one --webhook-secret per --webhook-url")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    app = create_app(
        args.state,
        args.email,
        args.token,
        list(zip(args.webhook_url, args.webhook_secret, strict=True)),
        args.rate_limit,
    )
    logger.info(
        "support sandbox listening on http://%s:%d (state: %s, %d webhook endpoint(s))",
        args.host,
        args.port,
        args.state or "memory",
        len(args.webhook_url),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
