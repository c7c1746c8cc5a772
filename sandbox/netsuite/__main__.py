"""Run the NetSuite sandbox: `python -m sandbox.netsuite --port 12113 --account-id ... `."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from sandbox.netsuite import DEFAULT_CONCURRENCY_LIMIT, Credentials, create_app

logger = logging.getLogger("sandbox.netsuite")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.netsuite",
        description="NetSuite-compatible ERP sandbox (SuiteTalk REST web services subset)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12113)
    parser.add_argument("--state", type=Path, default=None, help="SQLite file (memory if absent)")
    parser.add_argument("--account-id", required=True, help="the account id (OAuth realm)")
    parser.add_argument("--consumer-key", required=True)
    parser.add_argument("--consumer-secret", required=True)
    parser.add_argument("--token-id", required=True)
    parser.add_argument("--token-secret", required=True)
    parser.add_argument(
        "--concurrency-limit",
        type=int,
        default=DEFAULT_CONCURRENCY_LIMIT,
        help="requests in flight the account allows (NetSuite's standard tier: 5)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    credentials = Credentials(
        account_id=args.account_id,
        consumer_key=args.consumer_key,
        consumer_secret=args.consumer_secret,
        token_id=args.token_id,
        token_secret=args.token_secret,
    )
    app = create_app(args.state, credentials, concurrency_limit=args.concurrency_limit)
    logger.info(
        "netsuite sandbox listening on http://%s:%d (account %s, state: %s, concurrency %d)",
        args.host,
        args.port,
        args.account_id,
        args.state or "memory",
        args.concurrency_limit,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
