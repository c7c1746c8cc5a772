"""Serve the billing sandbox: `python -m sandbox.billing --port 12111 --state PATH ...`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from sandbox.billing.app import create_app

logger = logging.getLogger("sandbox.billing")

# The local stack's development key (adapters.settings.LOCAL_BILLING_API_KEY) when none given.
DEFAULT_API_KEY = "sk_test_ledgerbridge_local"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.billing", description="Stripe-compatible billing sandbox"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--state", type=Path, default=None, help="SQLite file; memory if omitted")
    parser.add_argument(
        "--api-key", action="append", dest="api_keys", help="accepted secret key (repeatable)"
    )
    parser.add_argument(
        "--webhook-url", action="append", dest="webhook_urls", default=[], help="repeatable"
    )
    parser.add_argument(
        "--webhook-secret",
        action="append",
        dest="webhook_secrets",
        default=[],
        help="signing secret of the --webhook-url at the same position",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if len(args.webhook_urls) != len(args.webhook_secrets):
        parser.error("give one --webhook-secret per --webhook-url")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    app = create_app(
        args.state,
        args.api_keys or [DEFAULT_API_KEY],
        list(zip(args.webhook_urls, args.webhook_secrets, strict=True)),
    )
    logger.info(
        "billing sandbox listening on http://%s:%d (state: %s, webhook endpoints: %d)",
        args.host,
        args.port,
        args.state or "memory",
        len(args.webhook_urls),
    )
    # No access log: query strings (e.g. ?email=) would put customer PII in the logs.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
