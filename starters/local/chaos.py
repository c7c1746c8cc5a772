"""`ledgerbridge chaos --events N --seed S`: a realistic mix of business driven through the
front doors while the machinery fails, then the books checked from the systems themselves.

It starts a private local stack (a temporary home and free ports, so it never meets a
running `up`), with billing's webhooks shuffled and duplicated, and the worker and the API
meeting every counterpart through its fault proxy: the ERP loses answers at random, billing
and support throttle (429 + Retry-After), answer late and lose answers to writes, and each
of the three is down for maintenance now and then (503). It then plays N business events as
people make them — customers signing up (in USD, some with New York sales tax, in EUR with
20 % VAT, in GBP with 20 % VAT included, in JPY; some paying by card automatically, some by
invoice) and renamed, subscriptions on the local catalogue's plan, mid-cycle upgrades,
downgrades and quantity changes (prorated), renewals, invoices paid by card in full, in part
or out of band, refunds in full and in part, voids, cancellations, credits asked on tickets,
small ones auto-approved and larger ones decided by finance through the API — while it
SIGKILLs the worker K times and restarts the Temporal dev server once. Every 8th customer
buys a product finance's mapping lacks: its documents must wait on a finance exception. When
everything is done or waits on a finance exception, it checks, reading billing, support,
Tryton, Temporal and the store (never its own notes of what it did):

1. every webhook accepted (2xx) reached its workflow, which completed or waits on an open
   finance exception;
2. exactly one ERP document per billing document reference (a refund's own credit note
   included; none for what finance's mapping cannot book: an open finance exception holds it);
3. exactly one billing credit per approved credit;
4. per currency, the journal, the ERP and what billing's documents call for agree;
5. a reconciliation of the run's days reports nothing unexplained;
6. per subscription, the ERP numbers its invoices in billing order;
7. what the processes write to support landed once: every billing customer has its support
   organization under its billing name, and no credit ticket holds an internal note twice;
8. every paid invoice payment and succeeded refund is in the ERP exactly once, of its amount,
   applied to its document;
9. per customer and currency, the ERP's open receivable equals billing's amount remaining on
   open and uncollectible invoices plus the customer's balance;
10. per ERP tax and currency, the ERP's tax on the run's documents equals billing's.

What billing's documents call for is stated by the run itself (`starters.local.expectations`),
never with the posting path's rules it checks. Exit 0 when all hold; 1 otherwise (the
private home is then kept for the post-mortem).
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import shutil
import signal
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus
from temporalio.service import RPCError

from adapters.billing import INTENDED_CURRENCY_KEY
from adapters.billing.events import StripeEventPayload, to_business_event
from adapters.billing.stripe import StripeBilling
from adapters.bootstrap import Adapters, build_adapters
from adapters.settings import ERP_ROUTING_FILE, Settings
from adapters.store.erp_coexistence import ErpCoexistenceStore
from adapters.store.models import WebhookReceipt
from adapters.support.zendesk import without_write_marker
from adapters.temporal import connect_for
from canonical import BalanceTransaction, BillingDocument, Money, Subscription
from canonical.ledger import MANUAL_POSTING_PREFIX, REJECTED_POSTING_PREFIX
from canonical.reconciliation import LedgerDocument, LedgerPayment, Receivable
from canonical.shadow_report import SHADOW_FAILED_PREFIX
from sandbox.billing.driver import TEST_CARD, BillingDriver
from starters.console import ApiCallFailed, call_api, table
from starters.local.catalog import ERP_BOOKS, LocalCatalog, load_local_catalog
from starters.local.expectations import (
    CASE_ID,
    PAYOUT_REFERENCE_SUFFIX,
    BilledPayment,
    BilledRefund,
    ExpectedDocument,
    ExpectedPayment,
    OwedInvoice,
    expected_for_balance_credits,
    expected_for_document,
    expected_for_payments,
    expected_for_refund,
    expected_receivables,
    expected_tax,
    must_reach_a_process,
    waits_on_finance,
)
from starters.local.stack import LOCAL_ROUTING, LocalStack, StackError, private_stack_env
from starters.local.subscriber import LocalSubscriber
from starters.shadow_reports import run_shadow_report

DEFAULT_EVENTS = 200
DEFAULT_KILLS = 3
SUBSCRIBER_REFUSALS = 0.02  # of webhooks out: answered 503, so retried later
EVENTS_OUT_WITHIN = 180.0  # seconds after quiescence for every event to be delivered
DEFAULT_SEED = 1
ERP_DROP_PROBABILITY = 0.05  # of every ERP call: forwarded, committed, the answer lost
# Billing and support as the worker and the API meet them (the people the run plays reach
# them directly): of every call, some throttled and some late; of every write, some answers
# lost after the write committed (retried with the same Idempotency-Key: one effect).
SAAS_RATE_LIMITED = 0.04  # 429 + Retry-After 1 s, not forwarded
SAAS_LATENCY = 0.08  # answered SAAS_LATENCY_SECONDS late
SAAS_LATENCY_SECONDS = 0.7
SAAS_DROP_PROBABILITY = 0.05
SAAS_WRITES = {"billing": ("POST", "DELETE"), "support": ("POST", "PUT"),
               "netsuite": ("POST", "PUT", "PATCH")}  # fmt: skip
# Maintenance windows (503 to every call), one per 40 events per system, at least one each
OUTAGE_SECONDS = {"erp": (3.0, 8.0), "billing": (2.0, 5.0), "support": (2.0, 5.0),
                  "netsuite": (2.0, 5.0)}  # fmt: skip
# The entities the run keeps in shadow from its start (every customer is in one): Tryton
# books them, NetSuite gets copies. The local routing, with the US entity moving too.
SHADOW_ENTITIES = ("EU", "US")
CHAOS_ROUTING = LOCAL_ROUTING.replace(
    'name = "US"\nlegacy = "tryton"\n', 'name = "US"\nlegacy = "tryton"\ntarget = "netsuite"\n'
)
WEBHOOK_DUPLICATE_RATE = 0.25  # of billing's deliveries: sent a second time, later
TIERS = ("Basic", "Pro", "Team")
# The plan's monthly price per tier, in each currency the local ERP books (JPY has no minor
# unit), sold on the local catalogue's platform product, which finance's mapping covers.
PRICES = {
    "USD": ("30.00", "90.00", "150.00"),
    "EUR": ("25.00", "75.00", "125.00"),
    "GBP": ("22.00", "66.00", "110.00"),
    "JPY": ("3000", "9000", "15000"),
}
PLAN_PRODUCT = "prod_lb_platform"


@dataclass(frozen=True)
class Profile:
    """How a kind of customer is billed: currency, the tax rate on its plan (a key of the local
    catalogue's rates), card or invoice, and whether finance's mapping covers what it buys."""

    label: str
    currency: str
    tax: str | None = None
    card: bool = False
    mapped: bool = True


# New customers take these in turn. The 4th of every 8 buys a product of the run's own that
# finance's mapping lacks: its documents must end up held by an open finance exception naming
# the product, never posted, never lost; it never pays (its payments would queue behind).
PROFILES = (
    Profile("USD card", "USD", card=True),
    Profile("USD NY sales tax, invoice", "USD", tax="us_ny_sales_8875"),
    Profile("EUR VAT card", "EUR", tax="eu_vat_20", card=True),
    Profile("USD unmapped product, invoice", "USD", mapped=False),
    Profile("GBP VAT incl., invoice", "GBP", tax="uk_vat_20"),
    Profile("JPY card", "JPY", card=True),
    Profile("USD NY sales tax, card", "USD", tax="us_ny_sales_8875", card=True),
    Profile("EUR VAT, invoice", "EUR", tax="eu_vat_20"),
)
UNMAPPED_PRODUCT = "Chaos Analytics (not in finance's mapping)"
# The mix of business, by weight; a kind that cannot happen now (nothing to upgrade) is
# drawn again.
MIX: dict[str, int] = {
    "new_customer": 14,
    "rename_customer": 5,
    "subscribe": 14,
    "upgrade": 11,
    "downgrade": 7,
    "change_quantity": 10,
    "renew": 4,
    "pay_invoice": 7,
    "refund": 5,
    "void_invoice": 2,
    "cancel": 4,
    "small_credit": 12,
    "large_credit": 12,
}
# How an invoice customer pays an open invoice: by card in full, in part, or out of band.
PAY_IN_FULL, PAY_IN_PART = 0.4, 0.3  # the rest: out of band
# Stripe's minimum charge per currency, in minor units: a part payment below it is refused.
MINIMUM_CHARGE = {"USD": 50, "EUR": 50, "GBP": 30, "JPY": 50}
REFUND_IN_FULL = 0.4  # of refunds: all that is left of the charge; the others a part of it
FINANCE_REJECTS = 0.15  # of the credits finance decides during the drive (at the end: approve)
CREDIT_WAITING = ("awaiting_approval", "reminded", "escalated")
CENT = Decimal("0.01")


class ChaosAborted(Exception):
    """The run could not go on (a component died on its own, work never settled)."""


@dataclass
class FaultedSystem:
    """A counterpart behind its fault proxy: the rules it always has, and its outages."""

    name: str
    label: str  # as the run's log names it
    proxy_url: str
    rules: list[dict[str, Any]]
    outages: int = 0
    down: int = 0  # outages may overlap: the system is back when the last one ends


def saas_rules(writes: Iterable[str]) -> list[dict[str, Any]]:
    """A SaaS API on a bad day (latency first: it adds its delay and lets the others fire)."""
    rules: list[dict[str, Any]] = [
        {"mode": "latency", "probability": SAAS_LATENCY, "delay": SAAS_LATENCY_SECONDS},
        {"mode": "rate_limited", "probability": SAAS_RATE_LIMITED, "retry_after": 1},
    ]
    rules += [{"mode": "drop", "probability": SAAS_DROP_PROBABILITY, "method": m} for m in writes]
    return rules


@dataclass(frozen=True)
class ChaosOptions:
    events: int = DEFAULT_EVENTS
    seed: int = DEFAULT_SEED
    kills: int = DEFAULT_KILLS
    keep_home: bool = False
    settle_seconds: float | None = None  # default: 120 s + 4 s per event

    @property
    def settle_timeout(self) -> float:
        return self.settle_seconds or 120.0 + 4.0 * self.events


# --- the private stack ------------------------------------------------------------------


def private_settings(home: Path) -> Settings:
    """Defaults, a private home and free ports, for this process and every child it starts:
    the caller's LEDGERBRIDGE_* settings are dropped, so a chaos run never meets an `up` (but
    the ERP template cache is shared: a fresh home copies its ERP database from it)."""
    kept = ("LEDGERBRIDGE_ERP_TEMPLATE_CACHE",)  # the machine's ERP template, not a stack's
    for name in [n for n in os.environ if n.startswith("LEDGERBRIDGE_") and n not in kept]:
        del os.environ[name]
    os.environ.update(private_stack_env(home))
    return Settings()


def run_chaos(options: ChaosOptions, echo: Callable[[str], None] = print) -> int:
    """Start the private stack, play, check, print the figures; the exit code."""
    if options.events < 1 or options.kills < 0:
        echo("chaos: --events must be at least 1 and --kills at least 0")
        return 2
    root = Path(tempfile.mkdtemp(prefix="ledgerbridge-chaos-"))
    home = root / ".ledgerbridge"
    settings = private_settings(home)
    started = time.monotonic()

    def log(line: str) -> None:
        echo(f"[{time.monotonic() - started:6.1f}s] {line}")

    echo(
        f"chaos: {options.events} events, seed {options.seed}, {options.kills} worker kill(s), "
        f"1 Temporal restart; private stack in {home}"
    )
    home.mkdir(parents=True, exist_ok=True)
    (home / ERP_ROUTING_FILE).write_text(CHAOS_ROUTING)  # `up` keeps a routing it finds
    stack = LocalStack(settings, echo=log)
    report: ChaosReport | None = None
    try:
        with stack.running():
            report = asyncio.run(ChaosRun(stack, settings, options, log).play())
    except (StackError, ChaosAborted) as err:
        echo(f"chaos: aborted: {err}")
    except Exception:
        traceback.print_exc()  # a fault of the run itself, not a finding: show all of it
        echo("chaos: aborted by an unexpected error (above)")
    if report is not None:
        echo(report.render())
    ok = report is not None and report.ok
    if ok and not options.keep_home:
        shutil.rmtree(root, ignore_errors=True)
    else:
        echo(f"chaos: state and logs kept in {home}")
    echo("chaos: all invariants hold" if ok else "chaos: FAILED")
    return 0 if ok else 1


# --- the business, as people make it --------------------------------------------------------


@dataclass
class Account:
    customer_id: str
    profile: Profile
    number: int
    subscription: Subscription | None = None
    tier: int = 0
    quantity: int = 1
    organization_id: int | None = None

    @property
    def active(self) -> bool:
        return self.subscription is not None and self.subscription.status != "canceled"

    @property
    def currency(self) -> str:
        return self.profile.currency

    def monthly(self) -> Decimal:
        return Decimal(PRICES[self.currency][self.tier]) * self.quantity


@dataclass
class ChaosReport:
    figures: list[tuple[str, str]]
    invariants: list[tuple[bool, str, str]]
    violations: list[str]

    @property
    def ok(self) -> bool:
        return all(passed for passed, _, _ in self.invariants) and not self.violations

    def render(self) -> str:
        lines = ["", table(("figure", "value"), self.figures), ""]
        lines.append(
            table(
                ("result", "invariant", "evidence"),
                [("PASS" if ok else "FAIL", name, detail) for ok, name, detail in self.invariants],
            )
        )
        if self.violations:
            lines += ["", "violations:"] + [f"  - {v}" for v in self.violations[:60]]
            if len(self.violations) > 60:
                lines.append(f"  ... and {len(self.violations) - 60} more")
        return "\n".join(lines)


class ChaosRun:
    def __init__(
        self,
        stack: LocalStack,
        settings: Settings,
        options: ChaosOptions,
        log: Callable[[str], None],
    ) -> None:
        self.stack = stack
        self.settings = settings
        self.options = options
        self.log = log
        self.run = f"s{options.seed}"
        # Separate streams: the business mix stays the same whatever the faults do.
        self.mix = random.Random(f"{options.seed}/business")
        self.chaos = random.Random(f"{options.seed}/chaos")
        self.finance = random.Random(f"{options.seed}/finance")
        self.accounts: list[Account] = []
        self.prices: dict[str, list[str]] = {}  # by currency ("unmapped": the run's product)
        self.catalog: LocalCatalog
        self.unmapped_product = ""
        self.payments: Counter[str] = Counter()  # by how invoice customers paid
        self.refunds: Counter[str] = Counter()  # in full or in part
        self.refunded: Counter[str] = Counter()  # minor units per payment intent
        self.credit_tickets: list[str] = []
        self.driven: Counter[str] = Counter()
        self.finance_decisions: Counter[str] = Counter()
        self.kills = 0
        self.server_restarts = 0
        self.broker_kills = 0
        # A subscriber to every event out, refusing some deliveries (retried) on purpose.
        refusals = random.Random(f"{options.seed}/subscriber")
        self.subscriber = LocalSubscriber(
            lambda _line: None, refusing=lambda: refusals.random() < SUBSCRIBER_REFUSALS
        )
        erp_drop = {"mode": "drop", "probability": ERP_DROP_PROBABILITY, "method": "POST"}
        self.systems = {
            "billing": FaultedSystem(
                "billing", "billing", stack.billing_proxy_url, saas_rules(SAAS_WRITES["billing"])
            ),
            "support": FaultedSystem(
                "support", "support", stack.support_proxy_url, saas_rules(SAAS_WRITES["support"])
            ),
            "erp": FaultedSystem("erp", "ERP", stack.erp_proxy_url, [erp_drop]),
            "netsuite": FaultedSystem(
                "netsuite",
                "NetSuite",
                stack.netsuite_proxy_url,
                saas_rules(SAAS_WRITES["netsuite"]),
            ),
        }
        self.started_at = datetime.now(UTC)
        self._restarting = asyncio.Lock()
        self._faults: list[asyncio.Task[None]] = []
        self.adapters: Adapters
        self.billing: StripeBilling  # what the product reads
        self.driver: BillingDriver  # the people the run plays, acting in billing
        self.client: Client

    async def play(self) -> ChaosReport:
        self.adapters = build_adapters(self.settings)
        billing = self.adapters.billing
        assert isinstance(billing, StripeBilling)  # the run acts as a person using billing
        self.billing = billing
        api_key = self.settings.billing_api_key.get_secret_value()
        self.driver = BillingDriver.connect(api_key, self.settings.billing_url)
        try:
            with self.subscriber.serving():
                self.client = await connect_for(self.settings, wait_seconds=30)
                await self._set_the_stage()
                await self._drive()
                if self._faults:
                    self.log("chaos: waiting for the last injected fault to end")
                    await asyncio.gather(*self._faults)
                await self._settle()
                return await Checker(self).check()
        finally:
            await self.driver.aclose()
            await self.adapters.aclose()

    # --- stage: delivery modes, fault rules, the catalog -----------------------------------

    async def _set_the_stage(self) -> None:
        await self._sandbox("billing", "POST", "/_sandbox/webhooks/mode", {
            "shuffle": True, "shuffle_window_seconds": 1.0,
            "duplicate_rate": WEBHOOK_DUPLICATE_RATE, "seed": self.options.seed,
        })  # fmt: skip
        for system in self.systems.values():  # each proxy draws from its own seeded RNG
            await self._fault_rules(system, system.rules, seed=self.chaos.randrange(2**31))
        self.log(
            f"chaos: billing webhooks shuffled, {WEBHOOK_DUPLICATE_RATE:.0%} delivered twice; "
            f"ERP answers lost at random ({ERP_DROP_PROBABILITY:.0%} of calls); billing and "
            f"support {SAAS_RATE_LIMITED:.0%} of calls throttled, {SAAS_LATENCY:.0%} "
            f"{SAAS_LATENCY_SECONDS} s late, {SAAS_DROP_PROBABILITY:.0%} of writes' answers lost"
        )
        created = await asyncio.to_thread(
            call_api, self.settings, "post", "/v1/event-endpoints", role="ops",
            json={"url": self.subscriber.url, "description": f"chaos subscriber {self.run}"},
        )  # fmt: skip
        self.subscriber.secret = created.json()["secret"]
        self.log(f"chaos: a subscriber to every event out, refusing "
                 f"{SUBSCRIBER_REFUSALS:.0%} of deliveries (503)")  # fmt: skip
        today = datetime.now(UTC).date().isoformat()
        for entity in SHADOW_ENTITIES:
            await self._api("post", f"/v1/erp/entities/{entity}/mode", "finance_admin", {
                "mode": "shadow", "effective_from": today, "reason": f"chaos run {self.run}",
            })  # fmt: skip
        self.log(f"chaos: entities {' and '.join(SHADOW_ENTITIES)} in shadow: Tryton books "
                 "them, NetSuite (behind its own faults) gets the same postings")  # fmt: skip
        # Sell from the local catalogue (`ledgerbridge up` put it in billing and wrote
        # finance's mapping of it), and one product of the run's own that the mapping lacks.
        self.catalog = load_local_catalog(self.stack.home)
        if PLAN_PRODUCT not in self.catalog.products:
            raise ChaosAborted(f"the local catalogue has no {PLAN_PRODUCT}")
        for currency, amounts in PRICES.items():
            self.prices[currency] = await self._tier_prices(PLAN_PRODUCT, currency, amounts)
        unmapped = await self.driver.create_product(
            UNMAPPED_PRODUCT, idempotency_key=self._key("unmapped-product")
        )
        self.unmapped_product = str(unmapped.id)
        self.prices["unmapped"] = await self._tier_prices(
            self.unmapped_product, "USD", PRICES["USD"]
        )

    async def _tier_prices(
        self, product_id: str, currency: str, amounts: Iterable[str]
    ) -> list[str]:
        return [
            (
                await self.driver.create_price(
                    product_id,
                    Money.of(amount, currency).to_minor(),
                    currency,
                    nickname=tier,
                    idempotency_key=self._key("price", product_id, currency, tier),
                )
            ).id
            for tier, amount in zip(TIERS, amounts, strict=True)
        ]

    def _fault_plan(self) -> dict[int, list[Callable[[], Coroutine[Any, Any, None]]]]:
        """At which event each fault starts (seeded): kills spread over the run, the server
        restart in its middle third, per system one outage per 40 events (ERP 3-8 s, billing
        and support 2-5 s)."""
        n = self.options.events
        plan: dict[int, list[Callable[[], Coroutine[Any, Any, None]]]] = defaultdict(list)
        window = range(max(1, n // 10), max(2, n * 9 // 10))
        for at in sorted(self.chaos.choices(window, k=self.options.kills)):
            plan[at].append(self._kill_worker)
        plan[self.chaos.randrange(max(1, n // 3), max(2, n * 2 // 3))].append(
            self._restart_temporal
        )
        plan[self.chaos.randrange(max(1, n // 4), max(2, n * 3 // 4))].append(self._kill_broker)
        for system in self.systems.values():
            for _ in range(max(1, n // 40)):
                seconds = self.chaos.uniform(*OUTAGE_SECONDS[system.name])
                plan[self.chaos.randrange(1, max(2, n))].append(
                    functools.partial(self._outage, system, seconds)
                )
        return plan

    # --- the drive ------------------------------------------------------------------------

    async def _drive(self) -> None:
        plan = self._fault_plan()
        kinds, weights = list(MIX), list(MIX.values())
        done = 0
        self.log(f"drive: {self.options.events} business events through the front doors")
        while done < self.options.events:
            for fault in plan.pop(done, []):
                self._faults.append(asyncio.create_task(fault()))
            kind = self.mix.choices(kinds, weights)[0]
            if not await getattr(self, f"_{kind}")():
                continue  # nothing to do that with now: draw again
            done += 1
            self.driven[kind] += 1
            if done % 25 == 0:
                self.log(f"drive: {done} events driven")
            if self.mix.random() < 0.2 and not self._restarting.locked():
                await self._finance_round(final=False)  # (not while the API cannot answer)
            self._check_components()
            await asyncio.sleep(self.mix.uniform(0.05, 0.4))
        self.log(f"drive: done, {done} events ({self._mix_summary()})")

    def _mix_summary(self) -> str:
        return ", ".join(f"{kind} {self.driven[kind]}" for kind in MIX if self.driven[kind])

    def _key(self, *parts: object) -> str:
        return "/".join(["chaos", self.run, *map(str, parts)])

    async def _new_customer(self) -> bool:
        number = len(self.accounts)
        profile = PROFILES[number % len(PROFILES)]
        # Billing fixes a customer's currency with its first subscription; until then the
        # product reads the intended one from metadata.
        metadata = {"chaos_run": self.run, INTENDED_CURRENCY_KEY: profile.currency.lower()}
        customer = await self.driver.create_customer(
            f"Chaos Customer {self.run}-{number}", metadata=metadata,
            idempotency_key=self._key("customer", number),
        )  # fmt: skip
        self.accounts.append(Account(customer.id, profile, number))
        return True

    async def _rename_customer(self) -> bool:
        if not self.accounts:
            return False
        account = self.mix.choice(self.accounts)
        renamed = self.mix.randrange(1000)
        await self.driver.update_customer(
            account.customer_id, name=f"Chaos Customer {self.run}-{account.number} r{renamed}",
            idempotency_key=self._key("rename", account.number, renamed),
        )  # fmt: skip
        return True

    async def _subscribe(self) -> bool:
        waiting = [a for a in self.accounts if a.subscription is None]
        if not waiting:
            return False
        account = self.mix.choice(waiting)
        account.tier = self.mix.randrange(len(TIERS))
        account.quantity = self.mix.randint(1, 4)
        profile = account.profile
        payment_method = None
        if profile.card:  # charged at once, its renewals and plan changes too
            method = await self.driver.attach_payment_method(
                account.customer_id, TEST_CARD, idempotency_key=self._key("card", account.number)
            )
            payment_method = str(method.id)
        tax_rates = [self.catalog.tax_rates[profile.tax]] if profile.tax else None
        created = await self.driver.subscribe(
            account.customer_id,
            self._price(account, account.tier),
            quantity=account.quantity,
            payment_method=payment_method,
            tax_rates=tax_rates,
            idempotency_key=self._key("subscribe", account.number),
        )
        account.subscription = await self.billing.get_subscription(created.id)
        return True

    def _price(self, account: Account, tier: int) -> str:
        return self.prices[account.currency if account.profile.mapped else "unmapped"][tier]

    def _active(self, predicate: Callable[[Account], bool] = lambda a: True) -> Account | None:
        found = [a for a in self.accounts if a.active and predicate(a)]
        return self.mix.choice(found) if found else None

    async def _amend(self, account: Account, tier: int, quantity: int, what: str) -> None:
        assert account.subscription is not None
        period = account.subscription
        span = (period.current_period_end - period.current_period_start).total_seconds()
        # Stripe prorates to the second: a change "later this month" as people make them.
        when = period.current_period_start + timedelta(seconds=span * self.mix.uniform(0.05, 0.95))
        account.tier, account.quantity = tier, quantity
        await self.driver.change_plan(
            period.subscription_id,
            price_id=self._price(account, tier),
            quantity=quantity,
            proration_behavior="always_invoice",
            proration_date=int(when.timestamp()),
            idempotency_key=self._key(what, account.number, self.driven[what]),
        )
        account.subscription = await self.billing.get_subscription(period.subscription_id)

    async def _upgrade(self) -> bool:
        account = self._active(lambda a: a.tier < len(TIERS) - 1)
        if account is None:
            return False
        await self._amend(account, account.tier + 1, account.quantity, "upgrade")
        return True

    async def _downgrade(self) -> bool:
        account = self._active(lambda a: a.tier > 0)
        if account is None:
            return False
        await self._amend(account, account.tier - 1, account.quantity, "downgrade")
        return True

    async def _change_quantity(self) -> bool:
        account = self._active()
        if account is None:
            return False
        quantity = self.mix.choice([q for q in range(1, 6) if q != account.quantity])
        await self._amend(account, account.tier, quantity, "change_quantity")
        return True

    async def _renew(self) -> bool:
        account = self._active()
        if account is None or account.subscription is None:
            return False
        subscription_id = account.subscription.subscription_id
        await self._sandbox("billing", "POST", f"/_sandbox/subscriptions/{subscription_id}/advance")
        account.subscription = await self.billing.get_subscription(subscription_id)
        return True

    async def _open_invoice(self, account: Account | None) -> BillingDocument | None:
        """An open invoice of the account's subscription with something left to pay."""
        if account is None or account.subscription is None:
            return None
        async for invoice in self.billing.list_invoices(
            subscription_id=account.subscription.subscription_id
        ):
            remaining = invoice.amount_remaining
            if invoice.status == "open" and remaining is not None and remaining.amount > 0:
                return invoice
        return None

    async def _pay_invoice(self) -> bool:
        """A customer pays an open invoice: by card in full, a part of what remains by card
        (a payment intent attached to the invoice), or out of band (a bank transfer)."""
        # Card customers are charged as invoices come (their invoices are paid already).
        payers = [
            a for a in self.accounts
            if a.subscription is not None and a.profile.mapped and not a.profile.card
        ]  # fmt: skip
        invoice = await self._open_invoice(self.mix.choice(payers) if payers else None)
        if invoice is None or invoice.amount_remaining is None:
            return False
        key = self._key("pay", invoice.document_id, self.driven["pay_invoice"])
        how = self.mix.random()
        remaining = invoice.amount_remaining.to_minor()
        part = int(remaining * self.mix.uniform(0.3, 0.7))
        if PAY_IN_FULL <= how < PAY_IN_FULL + PAY_IN_PART and (
            MINIMUM_CHARGE[invoice.currency] <= part < remaining
        ):
            await self.driver.pay_part(invoice.document_id, part, idempotency_key=key)
            self.payments["in part"] += 1
        elif how >= PAY_IN_FULL + PAY_IN_PART:
            await self.driver.pay(invoice.document_id, paid_out_of_band=True, idempotency_key=key)
            self.payments["out of band"] += 1
        else:
            await self.driver.pay(invoice.document_id, idempotency_key=key)
            self.payments["by card"] += 1
        return True

    async def _refund(self) -> bool:
        """Money given back on a card payment of a paid invoice: all that is left of the charge,
        or a part of it."""
        payers = [a for a in self.accounts if a.subscription is not None and a.profile.mapped]
        if not payers:
            return False
        account = self.mix.choice(payers)
        assert account.subscription is not None
        refundable: list[tuple[str, int]] = []
        async for invoice in self.billing.list_invoices(
            subscription_id=account.subscription.subscription_id
        ):
            if invoice.status != "paid":
                continue
            for payment in await self.driver.invoice_payments(invoice.document_id):
                intent = payment.payment.payment_intent if payment.payment else None
                intent_id = intent if isinstance(intent, str) else getattr(intent, "id", None)
                if payment.status != "paid" or not intent_id:
                    continue
                left = int(payment.amount_paid or 0) - self.refunded[intent_id]
                if left > 0:
                    refundable.append((intent_id, left))
        if not refundable:
            return False
        intent_id, left = self.mix.choice(refundable)
        share = self.mix.uniform(0.2, 0.6)
        amount = left if self.mix.random() < REFUND_IN_FULL else max(1, int(left * share))
        await self.driver.refund(
            payment_intent_id=intent_id,
            amount=None if amount == left else amount,
            reason="requested_by_customer",
            idempotency_key=self._key("refund", intent_id, self.refunded[intent_id]),
        )
        self.refunded[intent_id] += amount
        self.refunds["in full" if amount == left else "in part"] += 1
        return True

    async def _void_invoice(self) -> bool:
        invoice = await self._open_invoice(self._active())
        if invoice is None or (invoice.amount_paid is not None and invoice.amount_paid.amount):
            return False  # Stripe voids no invoice that money was paid on
        await self.driver.void(
            invoice.document_id, idempotency_key=self._key("void", invoice.document_id)
        )
        return True

    async def _cancel(self) -> bool:
        account = self._active()
        if account is None or account.subscription is None:
            return False
        # The unused time is credited on a final invoice: a negative one, an ERP credit note.
        subscription_id = account.subscription.subscription_id
        await self.driver.cancel(subscription_id, prorate=True, invoice_now=True)
        account.subscription = await self.billing.get_subscription(subscription_id)
        return True

    async def _small_credit(self) -> bool:
        return await self._credit(large=False)

    async def _large_credit(self) -> bool:
        return await self._credit(large=True)

    async def _credit(self, *, large: bool) -> bool:
        """A credit asked on a ticket, as an agent fills in its credit fields."""
        account = self._active(lambda a: a.currency == "USD")
        if account is None:
            return False
        threshold = min(account.monthly() * Decimal("0.1"), Decimal(50))
        if large:
            share = Decimal(str(round(self.mix.uniform(0.15, 0.45), 3)))
            amount = (account.monthly() * share).quantize(CENT, ROUND_DOWN)
        else:
            share = Decimal(str(round(self.mix.uniform(0.3, 1.0), 3)))
            amount = max((threshold * share).quantize(CENT, ROUND_DOWN), CENT)
        organization = await self._organization(account)
        if organization is None:
            return False  # its account sync is still on its way (the ERP is slow today)
        incident = f"INC-{self.mix.randrange(1000, 9999)}"
        case_id = await self._open_ticket(
            organization,
            f"Outage {incident} ({self.run}-{len(self.credit_tickets)})",
            (str(amount), "USD", f"Service credit for {incident}", incident),
        )
        self.credit_tickets.append(case_id)
        return True

    async def _organization(self, account: Account) -> int | None:
        deadline = time.monotonic() + 20
        while account.organization_id is None and time.monotonic() < deadline:
            found = await self.adapters.support.find_organization(account.customer_id)
            if found is not None:
                account.organization_id = int(found.external_id)
            else:
                await asyncio.sleep(1)
        return account.organization_id

    def support_api(self) -> httpx.AsyncClient:
        """Support's API as an agent uses it: straight to support, not through the proxy."""
        auth = (
            f"{self.settings.support_email}/token",
            self.settings.support_api_token.get_secret_value(),
        )
        return httpx.AsyncClient(base_url=self.settings.support_url, auth=auth, timeout=10)

    async def _open_ticket(
        self, organization_id: int, subject: str, credit: tuple[str, str, str, str]
    ) -> str:
        async with self.support_api() as api:
            listed = (await api.get("/api/v2/ticket_fields.json")).json()["ticket_fields"]
            ids = {f["title"]: f["id"] for f in listed}
            titles = ("Credit amount", "Credit currency", "Credit reason", "Incident reference")
            fields = [{"id": ids[t], "value": v} for t, v in zip(titles, credit, strict=True)]
            answer = await api.post(
                "/api/v2/tickets.json",
                json={"ticket": {
                    "subject": subject, "organization_id": organization_id,
                    "custom_fields": fields,
                    "comment": {"body": f"{subject}: the customer asks for a credit."},
                }},
                headers={"Idempotency-Key": self._key("ticket", subject)},
            )  # fmt: skip
            answer.raise_for_status()
        return str(answer.json()["ticket"]["id"])

    async def _finance_round(self, *, final: bool) -> int:
        """Finance works through the credits waiting for it, through the API with its key
        (as `ledgerbridge finance approve|reject` does); at the end it approves them all."""
        try:
            waiting = (await self._api("get", "/v1/approvals", "finance")).json()
        except ApiCallFailed:
            return 0  # the API answers 503 while Temporal restarts: next round
        decided = 0
        for item in waiting:
            if item.get("status") not in CREDIT_WAITING:
                continue
            approve = final or self.finance.random() >= FINANCE_REJECTS
            body = {
                "approve": approve,
                "reason": "incident confirmed" if approve else "outside the SLA credit policy",
            }
            try:
                await self._api("post", f"/v1/credits/{item['credit_id']}:decide", "finance", body)
            except ApiCallFailed:
                continue  # decided meanwhile (409), or the worker is down: next round
            self.finance_decisions["approved" if approve else "rejected"] += 1
            decided += 1
        return decided

    # --- faults -----------------------------------------------------------------------------

    async def _kill_worker(self) -> None:
        async with self._restarting:
            worker = next(c for c in self.stack.components if c.name == "worker")
            pid = worker.process.pid if worker.process else None
            down = self.chaos.uniform(0.5, 3.0)
            self.log(f"chaos: SIGKILL worker (pid {pid}); back in {down:.1f} s")
            await asyncio.to_thread(self.stack.restart, "worker", signal.SIGKILL, down)
            self.kills += 1

    async def _restart_temporal(self) -> None:
        async with self._restarting:
            # Long enough for the API's Temporal calls to time out: webhooks then get a 503
            # and billing and support must send them again.
            down = self.chaos.uniform(6.0, 10.0)
            self.log(f"chaos: SIGTERM Temporal dev server; starting it again in {down:.1f} s")
            await asyncio.to_thread(self.stack.restart, "temporal", signal.SIGTERM, down)
            self.server_restarts += 1

    async def _kill_broker(self) -> None:
        async with self._restarting:
            # Events written meanwhile wait in the outbox; the relay publishes them after.
            down = self.chaos.uniform(2.0, 5.0)
            self.log(f"chaos: SIGKILL NATS server; starting it again in {down:.1f} s")
            await asyncio.to_thread(self.stack.restart, "nats", signal.SIGKILL, down)
            self.broker_kills += 1

    async def _outage(self, system: FaultedSystem, seconds: float) -> None:
        system.down += 1
        await self._fault_rules(system, [{"mode": "unavailable", "status": 503}, *system.rules])
        self.log(
            f"chaos: {system.label} down for maintenance for {seconds:.1f} s (503 to every call)"
        )
        await asyncio.sleep(seconds)
        system.outages += 1
        system.down -= 1
        if not system.down:
            await self._fault_rules(system, system.rules)
            self.log(f"chaos: {system.label} back")

    async def _fault_rules(
        self, system: FaultedSystem, rules: list[dict[str, Any]], seed: int | None = None
    ) -> None:
        body: dict[str, Any] = {"rules": rules}
        if seed is not None:
            body["seed"] = seed
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.put(f"{system.proxy_url}/_faults/rules", json=body)
            answer.raise_for_status()

    def _check_components(self) -> None:
        """A component that stopped without being told to ends the run (a restart in progress
        is not one)."""
        if self._restarting.locked():
            return
        failed = self.stack.failed_component()
        if failed is not None:
            raise ChaosAborted(
                f"{failed.name} stopped on its own; last log lines:\n{self.stack.tail(failed.name)}"
            )

    # --- settling -----------------------------------------------------------------------------

    async def _settle(self) -> None:
        """Until every process is done or waits on an open finance exception (twice in a
        row, 2 s apart), approving the credits still waiting for finance."""
        timeout = self.options.settle_timeout
        self.log(f"settle: waiting for quiescence (at most {timeout:.0f} s)")
        deadline = time.monotonic() + timeout
        calm, last_said = 0, 0.0
        while calm < 2:
            self._check_components()
            await self._finance_round(final=True)
            busy = await self._busy()
            calm = 0 if busy else calm + 1
            if busy and time.monotonic() > deadline:
                raise ChaosAborted(f"not quiescent after {timeout:.0f} s: {'; '.join(busy[:12])}")
            if busy and time.monotonic() - last_said > 15:
                self.log(f"settle: {len(busy)} still busy, e.g. {'; '.join(busy[:3])}")
                last_said = time.monotonic()
            await asyncio.sleep(2)
        self.log("settle: quiescent")

    async def _busy(self) -> list[str]:
        busy = []
        for system in ("billing", "support"):
            pending = await self._pending_deliveries(system)
            if pending:
                busy.append(f"{pending} {system} webhook deliveries pending")
        try:
            running = [e async for e in self.client.list_workflows("ExecutionStatus = 'Running'")]
        except RPCError as err:
            return [*busy, f"Temporal unreachable ({err})"]
        gate = asyncio.Semaphore(10)

        async def why_busy(execution: WorkflowExecution) -> str | None:
            async with gate:
                return await self._why_busy(execution)

        answers = await asyncio.gather(*(why_busy(e) for e in running))
        return busy + [a for a in answers if a]

    async def _why_busy(self, execution: WorkflowExecution) -> str | None:
        kind = execution.workflow_type
        if kind == "FinanceException":
            return None  # open: waits for finance, which is what settled means for it
        if kind not in ("SubscriptionLedger", "CaseToCredit"):
            return f"{execution.id} running"
        query = "status" if kind == "SubscriptionLedger" else "state"
        try:
            state = await self.client.get_workflow_handle(execution.id).query(
                query, rpc_timeout=timedelta(seconds=5)
            )
        except RPCError:
            return f"{execution.id} does not answer (no worker yet?)"
        if state.get("status") == "blocked" or state.get("blocked_by"):
            return None
        if kind == "SubscriptionLedger" and state["status"] == "waiting":
            return None if state["pending_events"] == 0 else f"{execution.id} has events queued"
        return f"{execution.id} {state['status']}"

    async def _pending_deliveries(self, system: str) -> int:
        path = "/_sandbox/webhooks/deliveries"
        listed = await self._sandbox(system, "GET", path, params={"status": "pending"})
        return len(listed["data"] if system == "billing" else listed["deliveries"])

    # --- small helpers ---------------------------------------------------------------------------

    async def _sandbox(
        self,
        system: str,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        base = self.settings.billing_url if system == "billing" else self.settings.support_url
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            answer = await client.request(method, path, json=body, params=params)
        answer.raise_for_status()
        return answer.json()

    async def _api(
        self, method: str, path: str, role: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        return await asyncio.to_thread(call_api, self.settings, method, path, role=role, **kwargs)


# --- the checks -------------------------------------------------------------------------------


DOCUMENT_KINDS = ("invoice", "credit_note")  # journal rows of ERP documents (not money)
# Reconciliation classes that need nothing from finance: in agreement, or healed by replaying
# the posting path (invariant 5 then wants whatever it replayed held by an open exception).
RECONCILED = (
    "matched", "matched_to_journal", "missing_in_erp", "payment_missing_in_erp",
    "refund_missing_in_erp",
)  # fmt: skip


@dataclass(frozen=True)
class BilledMoney:
    """What billing's own API lists of money: payments, refunds, invoices, balances."""

    payments: list[BilledPayment]
    refunds: list[BilledRefund]
    invoices: list[OwedInvoice]
    balances: dict[str, Money]


def _id_of(value: Any) -> str:
    """The id of an expandable field, expanded or not."""
    return str(value if isinstance(value, str) else getattr(value, "id", value))


def _money_figure(run: ChaosRun, money: BilledMoney) -> str:
    def listed(counts: Counter[str], empty: str) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or empty

    paid = Counter(p.amount.currency for p in money.payments if p.status == "paid")
    given_back = Counter(r.amount.currency for r in money.refunds if r.status == "succeeded")
    return (
        f"invoice customers paid {listed(run.payments, 'nothing')}; refunds "
        f"{listed(run.refunds, 'none')}; billing lists {sum(paid.values())} paid invoice "
        f"payments ({listed(paid, '-')}) and {sum(given_back.values())} refunds "
        f"({listed(given_back, '-')})"
    )


def _signed(kind: str, amount: Decimal) -> Decimal:
    return amount if kind == "invoice" else -amount


def _ids_in(value: Any) -> set[str]:
    """Event and request ids anywhere in a decoded workflow input or signal."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("event_id", "request_id") and isinstance(item, str):
                found.add(item)
            elif key == "seen_event_ids" and isinstance(item, list):
                found.update(str(i) for i in item)
            else:
                found |= _ids_in(item)
    elif isinstance(value, list):
        for item in value:
            found |= _ids_in(item)
    return found


@dataclass
class WorkflowRecord:
    """What Temporal holds of one workflow id: its runs, the ids they received, its state."""

    workflow_id: str
    runs: list[WorkflowExecution]
    received: dict[str, set[str]] = field(default_factory=dict)  # run id -> ids
    results: dict[str, Any] = field(default_factory=dict)  # run id -> result (completed)
    state: dict[str, Any] | None = None  # the query answer of the running run

    @property
    def latest(self) -> WorkflowExecution:
        return max(self.runs, key=lambda run: run.start_time)


class Checker:
    """Reads billing, support, Tryton, Temporal and the store, and judges."""

    def __init__(self, run: ChaosRun) -> None:
        self.run = run
        self.settings = run.settings
        self.client = run.client
        self.billing = run.billing
        self.violations: list[str] = []
        self.duplicates = 0
        self.lost = 0
        self.open_exceptions: set[str] = set()
        self.held: dict[str, str] = {}  # reference -> the open exception that holds it
        self.awaiting_finance: set[str] = set()  # references the ledger cannot book yet
        self.held_customers: set[str] = set()  # customers some of whose references are held

    async def check(self) -> ChaosReport:
        run = self.run
        run.log("check: reading billing, support, Tryton, Temporal and the store")
        self.open_exceptions = {
            e.id
            async for e in self.client.list_workflows(
                "WorkflowType = 'FinanceException' AND ExecutionStatus = 'Running'"
            )
        }
        receipts = self._receipts()
        records = await self._temporal_records({r.workflow_id for r in receipts})
        documents, transactions = await self._billing_documents()
        money = await self._billing_money()
        expected = self._expected(documents, transactions, money.refunds)
        expected_money = self._expected_money(money)
        self._hold(records, documents, expected, expected_money)
        erp = await self._erp_documents()
        erp_money = await self._erp_payments()
        invariants = [
            await self._accepted_webhooks_finished(receipts, records),
            self._one_erp_document_each(expected, erp),
            await self._one_billing_credit_per_approved_credit(transactions),
            self._totals_agree(expected, erp),
            self._money_posted_once(expected_money, erp_money),
            self._receivables_agree(
                expected_receivables(money.invoices, money.balances), await self._erp_owed()
            ),
            self._taxes_agree(documents, expected, erp),
        ]
        # Last of the judgements on the books: its healing may post what is missing.
        invariants.append(await self._reconciliation_explains_everything())
        invariants.append(self._billing_order_kept(documents, erp))
        invariants.append(await self._support_written_once())
        invariants.append(await self._events_out_once())
        invariants.append(await self._shadow_copies_once())
        invariants.sort(key=lambda invariant: int(invariant[1].split()[0]))
        figures = await self._figures(receipts, money)
        return ChaosReport(figures, invariants, self.violations)

    # --- reading ----------------------------------------------------------------------------

    def _receipts(self) -> list[WebhookReceipt]:
        with self.run.adapters.store.session() as session:
            return list(session.scalars(select(WebhookReceipt)))

    async def _temporal_records(self, workflow_ids: Iterable[str]) -> dict[str, WorkflowRecord]:
        gate = asyncio.Semaphore(8)

        async def read(workflow_id: str) -> WorkflowRecord:
            async with gate:
                return await self._temporal_record(workflow_id)

        records = await asyncio.gather(*(read(w) for w in sorted(workflow_ids)))
        return {r.workflow_id: r for r in records}

    async def _temporal_record(self, workflow_id: str) -> WorkflowRecord:
        runs = [e async for e in self.client.list_workflows(f"WorkflowId = '{workflow_id}'")]
        record = WorkflowRecord(workflow_id, runs)
        converter = self.client.data_converter
        for execution in runs:
            handle = self.client.get_workflow_handle(workflow_id, run_id=execution.run_id)
            ids: set[str] = set()
            async for event in handle.fetch_history_events():
                if event.HasField("workflow_execution_signaled_event_attributes"):
                    payloads = event.workflow_execution_signaled_event_attributes.input.payloads
                elif event.HasField("workflow_execution_started_event_attributes"):
                    payloads = event.workflow_execution_started_event_attributes.input.payloads
                else:
                    continue
                for value in await converter.decode(list(payloads)):
                    ids |= _ids_in(value)
            record.received[execution.run_id] = ids
            if execution.status == WorkflowExecutionStatus.COMPLETED:
                record.results[execution.run_id] = await handle.result()
            elif execution.status == WorkflowExecutionStatus.RUNNING:
                query = "state" if workflow_id.startswith("credit/") else "status"
                record.state = await handle.query(query, rpc_timeout=timedelta(seconds=10))
        return record

    async def _billing_documents(
        self,
    ) -> tuple[list[BillingDocument], list[BalanceTransaction]]:
        since, until = self._period()
        documents: list[BillingDocument] = []
        for page_of in (self.billing.invoice_page, self.billing.credit_note_page):
            cursor = None
            while True:
                page = await page_of(since, until, cursor, 100)
                documents.extend(page.documents)
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        transactions: list[BalanceTransaction] = []
        async for customer in self.run.driver.customers():
            cursor = None
            while True:
                credits = await self.billing.balance_credit_page(
                    customer.id, since, until, cursor, 100
                )
                transactions.extend(credits.transactions)
                if credits.next_cursor is None:
                    break
                cursor = credits.next_cursor
        return documents, transactions

    def _period(self) -> tuple[datetime, datetime]:
        return self.run.started_at - timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=1)

    def _days(self) -> tuple[date, date]:
        since, until = self._period()
        return since.date(), until.date()

    def _expected(
        self,
        documents: list[BillingDocument],
        transactions: list[BalanceTransaction],
        refunds: list[BilledRefund],
    ) -> dict[str, ExpectedDocument]:
        """The ERP documents billing's books call for (the run's own rules, in
        `starters.local.expectations`), and which of them wait on finance."""
        rows = [row for document in documents for row in expected_for_document(document)]
        rows.extend(expected_for_balance_credits(transactions))
        rows.extend(row for refund in refunds for row in expected_for_refund(refund)[0])
        expected: dict[str, ExpectedDocument] = {}
        for row in rows:
            if row.reference in expected:
                self.violations.append(f"billing lists {row.reference} twice")
            expected[row.reference] = row
        mapped = self.run.catalog.products
        currencies = self.settings.ledger_currencies
        self.awaiting_finance = {
            row.reference
            for document in documents
            if waits_on_finance(document, currencies, mapped)
            for row in expected_for_document(document)
        }
        return expected

    def _expected_money(self, money: BilledMoney) -> dict[str, ExpectedPayment]:
        """The ERP payments in and out billing's payments and refunds call for."""
        rows = expected_for_payments(money.payments)
        rows.extend(row for refund in money.refunds for row in expected_for_refund(refund)[1])
        expected: dict[str, ExpectedPayment] = {}
        for row in rows:
            if row.reference in expected:
                self.violations.append(f"billing lists {row.reference} twice")
            expected[row.reference] = row
        return expected

    def _hold(
        self,
        records: dict[str, WorkflowRecord],
        documents: list[BillingDocument],
        expected: dict[str, ExpectedDocument],
        expected_money: dict[str, ExpectedPayment],
    ) -> None:
        """The references a ledger waiting on an open finance exception still holds back:
        its documents, payments and refunds not journaled (policy stopped one; the later ones
        queue behind it), and the customers they belong to."""
        blocked = {
            wid: record.state["blocked_by"]
            for wid, record in records.items()
            if record.state and record.state.get("blocked_by") in self.open_exceptions
        }
        store = self.run.adapters.store
        ledger_of: dict[str, str] = {}  # billing document id -> the ledger that posts it
        for document in documents:
            ledger = (
                f"subscription/{document.subscription_id}"
                if document.subscription_id
                else f"customer-ledger/{document.customer_id}"
            )
            ledger_of[document.document_id] = ledger
            if ledger not in blocked:
                continue
            for row in expected_for_document(document):
                if store.find_posting("billing", row.reference) is None:
                    self.held[row.reference] = blocked[ledger]
                    self.held_customers.add(document.customer_id)
        for money in expected_money.values():
            if money.kind == "payment":  # posted by its invoice's ledger
                ledger = ledger_of.get(money.applies_to, "")
                references = [money.reference]
            else:  # a refund by its customer's, its own credit note first
                ledger = f"customer-ledger/{money.customer_id}"
                own_note = money.reference.removesuffix(PAYOUT_REFERENCE_SUFFIX)
                references = [money.reference, own_note]
            if ledger not in blocked:
                continue
            for reference in references:
                if store.find_posting("billing", reference) is None:
                    self.held[reference] = blocked[ledger]
                    self.held_customers.add(money.customer_id)
        self.held = {
            ref: exc for ref, exc in self.held.items() if ref in expected or ref in expected_money
        }

    async def _billing_money(self) -> BilledMoney:
        """Billing's invoice payments, refunds (with the credit note that made each, if one
        did), invoices and customer balances, read through billing's own API as anyone would
        (the official SDK), not through the adapter under test."""
        client = self.run.driver.client.v1
        every: Any = {"limit": 100}
        customer_of: dict[str, str] = {}
        invoices: list[OwedInvoice] = []
        async for invoice in (await client.invoices.list_async(every)).auto_paging_iter():
            customer_id = str(_id_of(invoice.customer))
            customer_of[str(invoice.id)] = customer_id
            currency = str(invoice.currency).upper()
            remaining = Money.from_minor(invoice.amount_remaining, currency)
            invoices.append(OwedInvoice(customer_id, str(invoice.status), remaining))
        payments = [
            BilledPayment(str(p.id), str(_id_of(p.invoice)), customer_of[str(_id_of(p.invoice))],
                          str(p.status), Money.from_minor(p.amount_paid or 0, p.currency.upper()))
            async for p in (await client.invoice_payments.list_async(every)).auto_paging_iter()
        ]  # fmt: skip
        made_by: dict[str, str] = {}  # refund id -> the credit note that made it
        async for note in (await client.credit_notes.list_async(every)).auto_paging_iter():
            for part in note.refunds or []:
                made_by[_id_of(part.refund)] = str(note.id)
        refunds = []
        async for refund in (await client.refunds.list_async(every)).auto_paging_iter():
            charge = await client.charges.retrieve_async(str(_id_of(refund.charge)))
            refunds.append(
                BilledRefund(str(refund.id), str(_id_of(charge.customer)), str(refund.status),
                             Money.from_minor(refund.amount, refund.currency.upper()),
                             made_by.get(str(refund.id)))
            )  # fmt: skip
        balances = {
            str(c.id): Money.from_minor(c.balance or 0, str(c.currency).upper())
            async for c in self.run.driver.customers()
            if c.currency
        }
        return BilledMoney(payments, refunds, invoices, balances)

    async def _erp_payments(self) -> list[LedgerPayment]:
        first, last = self._days()
        found: list[LedgerPayment] = []
        cursor = None
        while True:
            page = await self.run.adapters.ledger.payment_page(first, last, cursor, 200)
            found.extend(page.payments)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    async def _erp_owed(self) -> list[Receivable]:
        found: list[Receivable] = []
        cursor = None
        while True:
            page = await self.run.adapters.ledger.open_receivable_page(cursor, 200)
            found.extend(page.receivables)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    async def _erp_documents(self) -> list[LedgerDocument]:
        first, last = self._days()
        found: list[LedgerDocument] = []
        cursor = None
        while True:
            page = await self.run.adapters.ledger.document_page(first, last, cursor, 200)
            found.extend(page.documents)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    # --- invariants ------------------------------------------------------------------------------

    async def _accepted_webhooks_finished(
        self, receipts: list[WebhookReceipt], records: dict[str, WorkflowRecord]
    ) -> tuple[bool, str, str]:
        """(1) Each accepted delivery is in its workflow's history, and that workflow
        completed it or waits on an open finance exception. Also counts lost events: billing
        events a process must see, and credit tickets, that never reached Temporal."""
        done = held = 0
        failures: list[str] = []
        for receipt in receipts:
            record = records[receipt.workflow_id]
            where = f"{receipt.source} event {receipt.event_id} -> {receipt.workflow_id}"
            runs = [r for r in record.runs if receipt.event_id in record.received[r.run_id]]
            if not runs:
                self.lost += 1
                failures.append(f"{where}: accepted, but in no history of that workflow")
                continue
            verdict = self._verdict(record, receipt.event_id, runs)
            if verdict == "done":
                done += 1
            elif verdict == "held":
                held += 1
            else:
                failures.append(f"{where}: {verdict}")
        self.lost += await self._never_accepted({r.event_id for r in receipts}, records)
        self.violations.extend(failures)
        detail = (
            f"{len(receipts)} accepted: {done} completed, {held} waiting on "
            f"{len(self.open_exceptions)} open finance exception(s), {len(failures)} not"
        )
        return not failures and self.lost == 0, "1 accepted webhooks finished", detail

    def _verdict(self, record: WorkflowRecord, event_id: str, runs: list[WorkflowExecution]) -> str:
        latest = record.latest
        if record.workflow_id.startswith("account/"):
            for run in runs:
                result = record.results.get(run.run_id)
                if result and event_id in result.get("handled_requests", []):
                    return "done"
            status = runs[-1].status.name.lower() if runs[-1].status else "unknown"
            return f"account sync run {status} without handling it"
        if latest.status == WorkflowExecutionStatus.RUNNING and record.state is not None:
            state = record.state
            exception = state.get("blocked_by") or state.get("exception_id")
            if state.get("status") == "blocked":
                return "held" if exception in self.open_exceptions else f"blocked by {exception}"
            if record.workflow_id.startswith("credit/"):
                return f"credit still {state.get('status')}"
            if state.get("status") == "waiting" and state.get("pending_events") == 0:
                return "done"
            return f"ledger {state.get('status')} with {state.get('pending_events')} queued"
        if latest.status == WorkflowExecutionStatus.COMPLETED:
            return "done"
        return f"workflow {latest.status.name if latest.status else '?'}"

    async def _never_accepted(self, accepted: set[str], records: dict[str, WorkflowRecord]) -> int:
        """Billing events a process must see, and credit tickets, with no trace in Temporal."""
        lost = 0
        since, _ = self._period()
        async for raw in self.billing.list_events(created_from=since):
            event = to_business_event(StripeEventPayload.model_validate(raw), None)
            if must_reach_a_process(event) and event.event_id not in accepted:
                lost += 1
                self.violations.append(f"billing event {event.event_id} ({event.type}) lost")
        for case_id in self.run.credit_tickets:
            query = f"WorkflowType = 'CaseToCredit' AND CaseId = '{case_id}'"
            if not [e async for e in self.client.list_workflows(query)]:
                lost += 1
                self.violations.append(f"the credit asked on ticket {case_id} started nothing")
        return lost

    def _one_erp_document_each(
        self, expected: dict[str, ExpectedDocument], erp: list[LedgerDocument]
    ) -> tuple[bool, str, str]:
        """(2) One ERP document per billing document reference, of its kind and amount; none
        for money the ledger does not book, which an open finance exception holds instead."""
        by_reference: dict[str | None, list[LedgerDocument]] = defaultdict(list)
        for document in erp:
            by_reference[document.reference].append(document)
        problems = twice = 0
        for reference, row in expected.items():
            copies = by_reference.get(reference, [])
            if reference in self.awaiting_finance:
                problems += self._waits_on_finance(row, copies)
                continue
            if not copies and reference in self.held:
                continue
            if len(copies) != 1:
                problems += 1
                if len(copies) > 1:
                    twice += 1
                    self.duplicates += len(copies) - 1
                numbers = ", ".join(d.number or d.erp_document_id for d in copies)
                self.violations.append(
                    f"{reference}: {len(copies)} ERP documents ({numbers or 'none'})"
                )
                continue
            copy = copies[0]
            if (copy.kind, copy.total.amount, copy.total.currency) != (
                row.kind, row.amount, row.currency
            ):  # fmt: skip
                problems += 1
                self.violations.append(
                    f"{reference}: ERP {copy.kind} {copy.total} != billing {row.kind} "
                    f"{row.amount} {row.currency}"
                )
        orphans = [d for ref, docs in by_reference.items() if ref not in expected for d in docs]
        for document in orphans:
            self.violations.append(
                f"ERP document {document.number or document.erp_document_id} "
                f"({document.reference}) mirrors no billing document"
            )
        detail = (
            f"{len(expected)} billing references: {len(expected) - len(self.held) - problems} "
            f"posted once, {len(self.held)} held by finance, {twice} twice, "
            f"{problems - twice} missing or different, {len(orphans)} ERP orphans"
        )
        ok = problems == 0 and not orphans
        return ok, "2 one ERP document per billing document", detail

    def _waits_on_finance(self, row: ExpectedDocument, copies: list[LedgerDocument]) -> int:
        """The problems of a document the ledger cannot book until finance decides (an
        unmapped product, a currency the ledger does not book): 0 or 1."""
        if copies:
            numbers = ", ".join(d.number or d.erp_document_id for d in copies)
            self.violations.append(
                f"{row.reference}: finance's mapping cannot book it, yet the ERP holds {numbers}"
            )
            return 1
        if row.reference not in self.held:
            self.violations.append(
                f"{row.reference}: {row.amount} {row.currency} waits on no open finance exception"
            )
            return 1
        return 0

    def _money_posted_once(
        self, expected: dict[str, ExpectedPayment], erp: list[LedgerPayment]
    ) -> tuple[bool, str, str]:
        """(8) Every paid invoice payment and succeeded refund is in the ERP exactly once,
        under its own reference, of its amount and applied to its document (unless an open
        finance exception holds it); the ERP holds no payment billing does not know."""
        by_reference: dict[str | None, list[LedgerPayment]] = defaultdict(list)
        for payment in erp:
            by_reference[payment.reference].append(payment)
        once = held = twice = wrong = 0
        for reference, row in expected.items():
            copies = by_reference.get(reference, [])
            if not copies and reference in self.held:
                held += 1
                continue
            if len(copies) != 1:
                if len(copies) > 1:
                    twice += 1
                    self.duplicates += len(copies) - 1
                else:
                    wrong += 1
                moves = ", ".join(p.erp_document_id for p in copies)
                self.violations.append(
                    f"{row.kind} {reference}: {len(copies)} in the ERP ({moves or 'none'})"
                )
                continue
            copy = copies[0]
            found = (copy.kind, copy.amount.amount, copy.amount.currency, copy.applies_to)
            if found != (row.kind, row.amount, row.currency, row.applies_to):
                wrong += 1
                self.violations.append(
                    f"{row.kind} {reference}: ERP {copy.kind} {copy.amount} on "
                    f"{copy.applies_to} != billing {row.amount} {row.currency} on {row.applies_to}"
                )
                continue
            once += 1
        orphans = [p for ref, found in by_reference.items() if ref not in expected for p in found]
        for payment in orphans:
            self.violations.append(
                f"ERP {payment.kind} {payment.reference or payment.erp_document_id} "
                f"({payment.amount}) mirrors no billing payment or refund"
            )
        kinds = Counter(row.kind for row in expected.values())
        detail = (
            f"{kinds['payment']} payments and {kinds['refund']} refunds: {once} in the ERP once, "
            f"{held} held by finance, {twice} twice, {wrong} missing or different, "
            f"{len(orphans)} ERP orphans"
        )
        ok = twice == wrong == 0 and not orphans
        return ok, "8 every payment and refund in the ERP once", detail

    def _receivables_agree(
        self, billing: dict[tuple[str, str], Decimal], erp: list[Receivable]
    ) -> tuple[bool, str, str]:
        """(9) Per customer and currency, the ERP's open receivable equals what billing says
        the customer owes (amount remaining on open and uncollectible invoices plus its
        balance); a customer with documents held by finance is left out, and said so."""
        books: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for receivable in erp:
            key = (receivable.customer_id, receivable.amount.currency.upper())
            books[key] += receivable.amount.amount
        agree, differ, left_out = 0, 0, set()
        owed: dict[str, Decimal] = defaultdict(Decimal)
        for key in sorted(set(billing) | {k for k, v in books.items() if v}):
            customer_id, currency = key
            if customer_id in self.held_customers:
                left_out.add(customer_id)
                continue
            owed[currency] += billing.get(key, Decimal(0))
            if billing.get(key, Decimal(0)) == books.get(key, Decimal(0)):
                agree += 1
                continue
            differ += 1
            self.violations.append(
                f"receivable of {customer_id} in {currency}: ERP {books.get(key, Decimal(0))} "
                f"!= billing {billing.get(key, Decimal(0))}"
            )
        totals = ", ".join(f"{c} {a}" for c, a in sorted(owed.items())) or "nothing"
        detail = (
            f"{agree + differ} customer-currencies owing: {agree} agree, {differ} differ "
            f"(owed {totals}); {len(left_out)} customer(s) left out, their documents held by "
            "finance"
        )
        return differ == 0, "9 open receivable per customer agrees", detail

    def _taxes_agree(
        self,
        documents: list[BillingDocument],
        expected: dict[str, ExpectedDocument],
        erp: list[LedgerDocument],
    ) -> tuple[bool, str, str]:
        """(10) Per ERP tax (billing's rate as finance maps it) and currency, the ERP's tax on
        the run's documents equals billing's tax on them (what finance holds left out)."""
        # The local catalogue's rates by key, and the ERP tax finance's mapping names for each.
        erp_tax_of_rate = {
            rate_id: ERP_BOOKS.taxes[key] for key, rate_id in self.run.catalog.tax_rates.items()
        }
        booked = {ref for ref in expected if ref not in self.held}
        billing: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for document in documents:
            for reference, taxes in expected_tax(document, erp_tax_of_rate).items():
                if reference in booked:
                    for key, amount in taxes.items():
                        billing[key] += amount
        books: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        seen: set[str] = set()
        for copy in erp:
            if copy.reference not in booked or copy.reference in seen:
                continue  # an orphan or a second copy: invariant 2 judges those
            seen.add(copy.reference)
            sign = 1 if copy.kind == "invoice" else -1
            for name, tax in copy.taxes.items():
                books[(name, tax.currency.upper())] += sign * tax.amount
        parts, ok = [], True
        for key in sorted(set(billing) | set(books)):
            name, currency = key
            same = billing.get(key, Decimal(0)) == books.get(key, Decimal(0))
            ok &= same
            parts.append(
                f"{name} {currency} ERP {books.get(key, Decimal(0))} "
                f"{'=' if same else '?'} billing {billing.get(key, Decimal(0))}"
            )
            if not same:
                self.violations.append(f"tax {name} in {currency}: {parts[-1]}")
        return ok, "10 tax per ERP tax agrees", "; ".join(parts) or "no tax billed"

    async def _one_billing_credit_per_approved_credit(
        self, transactions: list[BalanceTransaction]
    ) -> tuple[bool, str, str]:
        """(3) An approved credit that was applied has exactly one billing credit (not taken
        back); every other credit has none."""
        granted = {row.reference for row in expected_for_balance_credits(transactions)}
        by_case: dict[str, list[BalanceTransaction]] = defaultdict(list)
        for transaction in transactions:
            if transaction.transaction_id in granted:
                by_case[transaction.metadata.get(CASE_ID) or "-"].append(transaction)
        approved = credited_once = 0
        problems: list[str] = []
        processes: Counter[str] = Counter()
        query = "WorkflowType = 'CaseToCredit'"
        async for execution in self.client.list_workflows(query):
            state = await self._credit_state(execution)
            request = state["request"]
            processes[request["case_id"]] += 1
            assessment = state.get("assessment") or {}
            approval = state.get("approval") or {}
            was_approved = assessment.get("outcome") == "auto_approve" or bool(
                approval.get("approve")
            )
            approved += was_approved
            given = len(by_case.get(request["case_id"], []))
            want = 1 if state["status"] == "applied" else 0
            if state["status"] == "applied" and not was_approved:
                problems.append(f"{execution.id}: applied without an approval")
            if given != want:
                problems.append(
                    f"{execution.id} ({state['status']}): {given} billing credit(s), want {want}"
                )
                self.duplicates += max(0, given - 1)
            elif want == 1:
                credited_once += 1
        for case_id, count in processes.items():
            if count > 1:
                self.duplicates += count - 1
                problems.append(f"ticket {case_id} started {count} credit processes")
        self.violations.extend(problems)
        detail = (
            f"{approved} approved ({self.run.finance_decisions['approved']} by finance), "
            f"{credited_once} credited once, {len(problems)} wrong"
        )
        return not problems, "3 one billing credit per approved credit", detail

    async def _credit_state(self, execution: WorkflowExecution) -> dict[str, Any]:
        handle = self.client.get_workflow_handle(execution.id, run_id=execution.run_id)
        if execution.status == WorkflowExecutionStatus.COMPLETED:
            return dict(await handle.result())
        return dict(await handle.query("state", rpc_timeout=timedelta(seconds=10)))

    def _totals_agree(
        self, expected: dict[str, ExpectedDocument], erp: list[LedgerDocument]
    ) -> tuple[bool, str, str]:
        """(4) Per currency: the journal = the ERP = billing's expected postings (less what
        open finance exceptions hold back)."""
        totals: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        for ref, row in expected.items():
            side = "held" if ref in self.held else "billing"
            totals[row.currency][side] += _signed(row.kind, row.amount)
        for posting in self.run.adapters.store.postings():
            # Not a payment or refund, nor what finance rejected (journaled, never in the ERP).
            rejected = posting.erp_document_id.startswith(REJECTED_POSTING_PREFIX)
            if posting.document_type in DOCUMENT_KINDS and not rejected:
                totals[posting.currency]["journal"] += _signed(
                    posting.document_type, posting.amount
                )
        for document in erp:
            totals[document.total.currency]["erp"] += _signed(document.kind, document.total.amount)
        ok, parts = True, []
        for currency, sides in sorted(totals.items()):
            journal, books, billing = sides["journal"], sides["erp"], sides["billing"]
            agree = journal == books == billing
            ok &= agree
            text = f"{currency} journal {journal:.2f} {'=' if agree else '?'} ERP {books:.2f} " + (
                f"{'=' if agree else '?'} billing {billing:.2f}"
            )
            if sides["held"]:
                text += f" ({sides['held']:.2f} held)"
            parts.append(text)
            if not agree:
                self.violations.append(f"totals differ in {currency}: {dict(sides)}")
        return ok, "4 totals agree per currency", "; ".join(parts) or "nothing posted"

    async def _reconciliation_explains_everything(self) -> tuple[bool, str, str]:
        """(5) The product's own reconciliation of the run's days: nothing unexplained, and
        whatever it had to replay is held by an open finance exception (else it was lost)."""
        first, last = self._days()
        body = {"period_from": str(first), "period_to": str(last)}
        started = (await self.run._api("post", "/v1/reconciliations", "ops", body)).json()
        workflow_id = started["workflow_id"]
        deadline = time.monotonic() + 300
        while True:
            view = (await self.run._api("get", f"/v1/reconciliations/{workflow_id}", "ops")).json()
            if view["result"] is not None:
                result = view["result"]
                break
            if view["state"] not in ("running", "continued_as_new") or (
                time.monotonic() > deadline
            ):
                self.violations.append(f"{workflow_id} ended {view['state']}")
                return False, "5 reconciliation explains everything", f"{workflow_id} failed"
            await asyncio.sleep(1)
        report = (
            await self.run._api(
                "get", f"/v1/reconciliations/runs/{result['run_id']}?limit=5000", "ops"
            )
        ).json()
        replayed = [i for i in report["items"] if i["outcome"] == "healed"]
        unheld = [i for i in replayed if i["reference"] not in self.held]
        for item in unheld:
            self.lost += 1
            self.violations.append(
                f"reconciliation found {item['kind'] or ''} {item['reference']} missing in the "
                "ERP and replayed it"
            )
        # What a customer owes differs while finance holds some of its documents: the open
        # exception explains it (the run leaves such customers out of invariant 9 too).
        explained = [
            i for i in report["items"]
            if i["classification"] == "receivable_differs"
            and i["customer_id"] in self.held_customers
        ]  # fmt: skip
        for item in report["items"]:
            if item["classification"] not in RECONCILED and item not in explained:
                self.violations.append(
                    f"reconciliation: {item['classification']} {item['kind'] or ''} "
                    f"{item['reference'] or item['customer_id'] or '-'} {item['amount']} "
                    f"{item['currency']}: {item['detail']}"
                )
        unexplained = result["unexplained"] - len(explained)
        ok = unexplained == 0 and not unheld
        detail = (
            f"{result['run_id']}: {result['in_agreement']} in agreement, {len(replayed)} "
            f"replayed ({len(replayed) - len(unheld)} held by finance), {len(explained)} "
            f"receivable(s) of customers held by finance, {unexplained} unexplained"
        )
        return ok, "5 reconciliation explains everything", detail

    def _billing_order_kept(
        self, documents: list[BillingDocument], erp: list[LedgerDocument]
    ) -> tuple[bool, str, str]:
        """(6) Per subscription, ERP document ids (Tryton numbers as it posts) rise in
        billing order (the billing number: per customer, in the order billing issued)."""
        erp_ids = {d.reference: int(d.erp_document_id) for d in erp}
        by_subscription: dict[str, list[BillingDocument]] = defaultdict(list)
        for document in documents:
            if document.kind == "invoice" and document.subscription_id and document.number:
                by_subscription[document.subscription_id].append(document)
        checked = 0
        out_of_order: list[str] = []
        for subscription_id, invoices in by_subscription.items():
            posted = [i for i in sorted(invoices, key=lambda i: i.number or "")
                      if i.document_id in erp_ids]  # fmt: skip
            ids = [erp_ids[i.document_id] for i in posted]
            checked += len(ids)
            if ids != sorted(ids):
                out_of_order.append(
                    f"{subscription_id}: billing order "
                    f"{', '.join(f'{i.number}={erp_ids[i.document_id]}' for i in posted)}"
                )
        self.violations.extend(f"posted out of order: {line}" for line in out_of_order)
        detail = (
            f"{checked} invoices of {len(by_subscription)} subscriptions, "
            f"{len(out_of_order)} out of order"
        )
        return not out_of_order, "6 billing order kept in the ERP", detail

    async def _events_out_once(self) -> tuple[bool, str, str]:
        """(11) Every business fact in the outbox reached the subscriber and the analytics
        table, each id once (a redelivery, after a refusal or a lost answer, is dropped by its
        id), whatever was killed meanwhile."""
        store, subscriber = self.run.adapters.store, self.run.subscriber
        deadline = time.monotonic() + EVENTS_OUT_WITHIN
        while time.monotonic() < deadline:
            recorded = {e.event_id for e in store.outbox_events()}
            stored = {r.event_id for r in store.business_events()}
            if recorded <= set(subscriber.received) and recorded <= stored:
                break
            await asyncio.sleep(1)
        ids = [e.event_id for e in store.outbox_events()]
        unpublished = len(store.unpublished_events(limit=100_000))
        analytics = {r.event_id for r in store.business_events()}
        taken = set(subscriber.received)  # it drops a redelivery by its webhook-id
        missing_sub = [i for i in ids if i not in taken]
        missing_bi = [i for i in ids if i not in analytics]
        strays = (taken | analytics) - set(ids)
        ok = bool(ids) and not (missing_sub or missing_bi or strays or unpublished)
        detail = (
            f"{len(ids)} facts in the outbox ({unpublished} unpublished): "
            f"{len(ids) - len(missing_sub)} at the subscriber, each once "
            f"({subscriber.deliveries - len(taken)} redeliveries dropped by id), "
            f"{len(ids) - len(missing_bi)} in the analytics table"
        )
        if missing_sub or missing_bi or strays:
            self.violations += [f"event {i} never reached the subscriber" for i in missing_sub[:10]]
            self.violations += [f"event {i} not in the analytics table" for i in missing_bi[:10]]
            self.violations += [f"event {i} delivered but not in the outbox" for i in strays]
        if subscriber.refused:
            self.violations.append(f"{subscriber.refused} deliveries failed their signature")
            ok = False
        return ok, "11 every event out delivered once", detail

    async def _shadow_copies_once(self) -> tuple[bool, str, str]:
        """(12) With the entities in shadow, Tryton stayed their book of record and NetSuite
        got a copy of every document, payment and refund booked for them: once each (by
        reference), of the same total; a copy that failed for good is journaled as failed,
        and the entities' shadow reports list exactly those."""
        store = self.run.adapters.store
        netsuite = self.run.adapters.ledger_of("netsuite")
        booked = [p for p in store.postings() if p.entity in SHADOW_ENTITIES
                  and not p.erp_document_id.startswith((MANUAL_POSTING_PREFIX,
                                                        REJECTED_POSTING_PREFIX))]  # fmt: skip
        elsewhere = [p.source_document_id for p in booked if p.erp != "tryton"]
        coexistence = ErpCoexistenceStore(store)
        copies = {}
        for entity in SHADOW_ENTITIES:
            copies.update(coexistence.shadow_postings(
                entity, [p.source_document_id for p in booked if p.entity == entity]))  # fmt: skip
        uncopied = [p.source_document_id for p in booked if p.source_document_id not in copies]
        failed = sorted(r for r, c in copies.items()
                        if c.erp_document_id.startswith(SHADOW_FAILED_PREFIX))  # fmt: skip
        wrong: list[str] = []
        for posting in booked:
            if posting.source_document_id not in copies or posting.source_document_id in failed:
                continue
            if posting.document_type in DOCUMENT_KINDS:
                found = await netsuite.find_document(posting.source_document_id)
                total = found.total.amount if found else None
            else:
                paid = await netsuite.find_payment(posting.source_document_id)
                total = paid.amount.amount if paid else None
            if total != posting.amount:
                wrong.append(f"{posting.source_document_id} {posting.amount} in Tryton, "
                             f"{total} in NetSuite")  # fmt: skip
        twice = await self._netsuite_duplicates()
        day = datetime.now(UTC).date().isoformat()
        listed, compared = [], 0
        for entity in SHADOW_ENTITIES:  # made as the daily schedule makes it, however long
            made = await run_shadow_report(
                self.client, self.settings, entity, date.fromisoformat(day)
            )
            listed += [d.reference for report in made.reports for d in report.differences]
            compared += sum(report.compared for report in made.reports)
        ok = bool(booked) and not (elsewhere or uncopied or wrong or twice)
        ok = ok and sorted(listed) == failed
        self.violations += [f"{r} booked for an entity in shadow outside Tryton" for r in elsewhere]
        self.violations += [f"{r} never sent to NetSuite" for r in uncopied[:10]]
        self.violations += [f"shadow copy differs: {w}" for w in wrong[:10]]
        self.violations += [f"{r} twice in NetSuite" for r in twice[:10]]
        if sorted(listed) != failed:
            self.violations.append(f"shadow reports list {sorted(listed)[:5]}, failed copies "
                                   f"{failed[:5]}")  # fmt: skip
        detail = (f"{len(booked)} postings booked in Tryton, {len(copies) - len(failed)} "
                  f"copied to NetSuite once with equal totals, {len(failed)} failed and listed "
                  f"by the shadow reports ({compared} compared)")  # fmt: skip
        return ok, "12 shadow copies in the second ERP once", detail

    async def _netsuite_duplicates(self) -> list[str]:
        """References NetSuite holds more than one document of, today."""
        netsuite, today = self.run.adapters.ledger_of("netsuite"), datetime.now(UTC).date()
        seen: Counter[str] = Counter()
        cursor: str | None = None
        while True:
            page = await netsuite.document_page(today, today, cursor, 200)
            seen.update(d.reference for d in page.documents if d.reference)
            if page.next_cursor is None:
                return [reference for reference, n in seen.items() if n > 1]
            cursor = page.next_cursor

    async def _support_written_once(self) -> tuple[bool, str, str]:
        """(7) Support's side of exactly once, lost answers or not: every billing customer has
        one organization (support refuses a second) under its billing name, and no credit
        ticket holds the same internal note twice (each names its stage: a second copy is a
        retried write that support did not recognise)."""
        names = {c.id: c.name async for c in self.run.driver.customers()}
        organizations: dict[str, str] = {}
        twice: list[str] = []
        notes = 0
        async with self.run.support_api() as api:
            path: str | None = "/api/v2/organizations.json?per_page=100"
            while path:
                page = (await api.get(path)).raise_for_status().json()
                organizations.update(
                    (str(o.get("external_id")), str(o["name"])) for o in page["organizations"]
                )
                path = page.get("next_page")
            for case_id in self.run.credit_tickets:
                answer = await api.get(f"/api/v2/tickets/{case_id}/comments.json?per_page=100")
                comments = answer.raise_for_status().json()["comments"]
                # Compared without the write marker, so a note written twice under two keys counts.
                bodies = Counter(
                    without_write_marker(c["body"]) for c in comments if not c["public"]
                )
                notes += sum(bodies.values())
                twice += [
                    f"ticket {case_id}: internal note written {n} times: {body[:80]}"
                    for body, n in bodies.items()
                    if n > 1
                ]
        missing = [
            f"customer {c} has no support organization" for c in names if c not in organizations
        ]
        stale = [
            f"support organization of {c} not named as in billing"
            for c, name in names.items()
            if c in organizations and organizations[c] != name
        ]
        self.duplicates += len(twice)
        self.lost += len(missing)
        self.violations.extend(twice + missing + stale)
        wrong = len(twice) + len(missing) + len(stale)
        detail = (
            f"{len(names)} customers: {len(names) - len(missing) - len(stale)} with their "
            f"organization, {len(missing)} without, {len(stale)} misnamed; "
            f"{notes} internal notes on {len(self.run.credit_tickets)} credit tickets, "
            f"{len(twice)} twice"
        )
        return wrong == 0, "7 support written once", detail

    # --- figures -----------------------------------------------------------------------------

    async def _figures(
        self, receipts: list[WebhookReceipt], money: BilledMoney
    ) -> list[tuple[str, str]]:
        run = self.run
        billing = (await run._sandbox("billing", "GET", "/_sandbox/webhooks/deliveries"))["data"]
        support = (await run._sandbox("support", "GET", "/_sandbox/webhooks/deliveries"))[
            "deliveries"
        ]
        refused = sum(
            1
            for delivery in billing + support
            for attempt in delivery["attempts"]
            if attempt.get("status_code") == 503
        )
        faults: list[str] = []
        async with httpx.AsyncClient(timeout=10) as client:
            for system in run.systems.values():
                stats = (await client.get(f"{system.proxy_url}/_faults/stats")).json()
                fired = sorted((mode, n) for mode, n in stats["faults"].items() if n)
                faults += [f"{system.name} {mode} {n}" for mode, n in fired]
                faults.append(f"{system.name} outages {system.outages}")
        faults += [
            f"webhooks delivered twice {sum(d['reason'] == 'duplicate' for d in billing)}",
            f"webhooks answered 503 {refused}",
            f"worker SIGKILL {run.kills}",
            f"temporal restart {run.server_restarts}",
            f"NATS SIGKILL {run.broker_kills}",
            f"subscriber answered 503 {run.subscriber.refusals}",
        ]
        by_source = Counter(r.source for r in receipts)
        profiles = Counter(a.profile.label for a in run.accounts)
        decisions = ", ".join(f"{k} {v}" for k, v in run.finance_decisions.items())
        return [
            ("events driven", f"{sum(run.driven.values())} ({run._mix_summary()})"),
            ("customers", ", ".join(f"{label} {n}" for label, n in profiles.items()) or "none"),
            ("money driven", _money_figure(run, money)),
            ("webhooks delivered", f"billing {len(billing)} (shuffled), support {len(support)}"),
            ("webhooks accepted", ", ".join(f"{s} {n}" for s, n in sorted(by_source.items()))),
            ("finance decisions", decisions or "none"),
            ("faults injected", ", ".join(faults)),
            ("worker kills", str(run.kills)),
            ("server restarts", str(run.server_restarts)),
            ("open finance exceptions", str(len(self.open_exceptions))),
            ("duplicates found", str(self.duplicates)),
            ("lost events", str(self.lost)),
        ]


__all__ = ["ChaosOptions", "private_settings", "run_chaos"]
