"""Run the fault proxy: `python -m sandbox.faults --listen-port P --upstream URL [--seed S]`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
from pathlib import Path

import pydantic

from sandbox.faults._rules import FaultRule
from sandbox.faults.app import FaultProxy

logger = logging.getLogger("sandbox.faults")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.faults",
        description="Fault-injection reverse proxy (rules at run time under /_faults/)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed for probabilities")
    parser.add_argument(
        "--rules", type=Path, default=None, help="JSON file with a list of rules to start with"
    )
    parser.add_argument("--upstream-timeout", type=float, default=60.0)
    parser.add_argument("--log-level", default="INFO")
    return parser


async def _serve(args: argparse.Namespace, rules: list[FaultRule]) -> None:
    proxy = FaultProxy(
        args.upstream, seed=args.seed, upstream_timeout=args.upstream_timeout, rules=rules
    )
    await proxy.start(args.host, args.listen_port)
    logger.info(
        "fault proxy listening on http://%s:%d -> %s (seed %s, %d rule(s); control at /_faults/)",
        args.host,
        proxy.port,
        proxy.upstream,
        args.seed,
        len(rules),
    )
    try:
        await proxy.serve_forever()
    finally:
        await proxy.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    rules: list[FaultRule] = []
    if args.rules is not None:
        try:
            rules = pydantic.TypeAdapter(list[FaultRule]).validate_python(
                json.loads(args.rules.read_text())
            )
        except (OSError, ValueError) as err:
            parser.error(f"--rules: {err}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args, rules))


if __name__ == "__main__":
    main()
