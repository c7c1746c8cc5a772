"""ERP-bound posting: webhook -> posted Tryton document, against Tryton's own rate.

    .venv/bin/python -m bench.erp_posting [--documents 40]

Starts a private local stack (free ports, a temporary home), then in the same run:
- baseline: the same script creates and posts N invoices in Tryton directly, one after the
  other (TrytonLedger.post_document, the fastest path the ERP offers us);
- ours: N subscriptions are created in billing; each first invoice travels as a signed
  webhook through the API, the SubscriptionLedgerWorkflow and the worker to Tryton, and is
  journaled. Throughput counts from the first subscription to the last journal entry.
It prints the figures with their ratio, checks there are zero duplicates, reports the
webhook acknowledgement latency (p50/p99) measured by billing's deliveries while the ERP is
the bottleneck, and writes the figures to bench/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from adapters.billing.stripe import StripeBilling
from adapters.bootstrap import build_adapters
from adapters.logs import configure_logging
from adapters.settings import Settings
from bench._common import private_settings, record
from canonical import LedgerLine, LedgerPosting, Money
from starters.stack import LocalStack

TARGET_RATIO = 0.9
TARGET_ACK_P99_MS = 100.0


async def direct_rate(settings: Settings, customer_id: str, count: int) -> float:
    adapters = build_adapters(settings)
    try:
        started = time.monotonic()
        for n in range(count):
            await adapters.ledger.post_document(
                LedgerPosting(
                    reference=f"bench-direct-{n}",
                    kind="invoice",
                    customer_id=customer_id,
                    currency="USD",
                    lines=[
                        LedgerLine(
                            description="Basic", quantity=Decimal(1), unit_price=Decimal("30.00")
                        )
                    ],
                    total=Money.of("30.00", "USD"),
                    billing_date=date.today(),
                    description=f"bench direct {n}",
                )
            )
        return count / (time.monotonic() - started)
    finally:
        await adapters.aclose()


async def pipeline(settings: Settings, count: int) -> dict[str, Any]:
    adapters = build_adapters(settings)
    billing = adapters.billing
    assert isinstance(billing, StripeBilling)
    try:
        customer = await billing.create_customer(
            name="Bench Co", email=None, idempotency_key="bench/customer"
        )
        cid = customer.customer_id
        while await adapters.ledger.find_party(cid) is None:  # account sync first
            await asyncio.sleep(0.2)
        product = await billing.create_product(name="Bench", idempotency_key="bench/p")
        price = await billing.create_price(
            product_id=product, unit_amount=Money.of("30.00", "USD"), idempotency_key="bench/b"
        )
        baseline = await direct_rate(settings, cid, count)

        started = time.monotonic()
        invoices = []
        for n in range(count):
            subscription = await billing.create_subscription(
                cid, price, 1, idempotency_key=f"bench/s/{n}"
            )
            async for invoice in billing.list_invoices(
                subscription_id=subscription.subscription_id
            ):
                invoices.append(invoice.document_id)
        while not all(adapters.store.find_posting("billing", i) for i in invoices):
            await asyncio.sleep(0.1)
        ours = count / (time.monotonic() - started)

        duplicates = 0
        for reference in invoices:
            found = await adapters.ledger.call(  # type: ignore[attr-defined]
                "model.account.invoice.search", [["reference", "=", reference]], 0, None, None
            )
            duplicates += len(found) - 1
        deliveries = httpx.get(
            f"{settings.billing_url}/_sandbox/webhooks/deliveries", timeout=10
        ).json()["data"]
        acks = sorted(
            attempt["duration_ms"]
            for delivery in deliveries
            for attempt in delivery["attempts"]
            if attempt["status_code"] == 200
        )
        return {
            "baseline": baseline,
            "ours": ours,
            "duplicates": duplicates,
            "ack_p50": statistics.median(acks),
            "ack_p99": acks[min(len(acks) - 1, int(len(acks) * 0.99))],
            "acks": len(acks),
            "slowest_acks": acks[-5:],
        }
    finally:
        await adapters.aclose()


def main() -> None:
    configure_logging("WARNING", "console")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ledgerbridge-bench-") as home:
        settings = private_settings(Path(home) / ".ledgerbridge")
        with LocalStack(settings, echo=lambda _line: None).running():
            result = asyncio.run(pipeline(settings, args.documents))
    ratio = result["ours"] / result["baseline"]
    figures = [
        {
            "name": "erp_posting_per_second", "ours": round(result["ours"], 3),
            "baseline": round(result["baseline"], 3), "ratio": round(ratio, 3),
            "target": f">= {TARGET_RATIO}", "met": ratio >= TARGET_RATIO,
        },
        {
            "name": "erp_posting_duplicates", "ours": result["duplicates"], "baseline": 0,
            "ratio": None, "target": "== 0", "met": result["duplicates"] == 0,
        },
        {
            "name": "webhook_ack_p99_ms_while_erp_bound", "ours": result["ack_p99"],
            "baseline": None, "ratio": None, "target": f"< {TARGET_ACK_P99_MS}",
            "met": result["ack_p99"] < TARGET_ACK_P99_MS,
        },
    ]  # fmt: skip
    record(figures)
    print(f"{'figure':<38} {'ours':>9} {'baseline':>9} {'ratio':>7}  target   met")
    for f in figures:
        ratio_text = f"{f['ratio']:.3f}" if f["ratio"] is not None else "-"
        baseline_text = f"{f['baseline']}" if f["baseline"] is not None else "-"
        print(f"{f['name']:<38} {f['ours']:>9} {baseline_text:>9} {ratio_text:>7}  "
              f"{f['target']:<8} {'yes' if f['met'] else 'NO'}")  # fmt: skip
    print(f"({args.documents} documents; webhook acknowledgements: {result['acks']}, "
          f"p50 {result['ack_p50']} ms, slowest {result['slowest_acks']} ms)")  # fmt: skip


if __name__ == "__main__":
    main()
