"""The routing of a deployment with one ERP, as activities for the workflow tests' workers:
every document and payment goes to the ERP on the `erp` queue, nothing is shadowed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from activities.erp_routing import RoutePaymentInput, RoutePostingInput
from canonical.erp_routing import DEFAULT_ENTITY, DEFAULT_ERP, PostingRoute

ONE_ERP = PostingRoute(entity=DEFAULT_ENTITY, mode="legacy", book=DEFAULT_ERP, book_queue="erp")


@activity.defn(name="route_erp_posting")
async def route_erp_posting(_request: RoutePostingInput) -> PostingRoute:
    return ONE_ERP


@activity.defn(name="route_erp_payment")
async def route_erp_payment(_request: RoutePaymentInput) -> PostingRoute:
    return ONE_ERP


def with_one_erp(
    activities: dict[str, list[Callable[..., Any]]],
) -> dict[str, list[Callable[..., Any]]]:
    """The fakes' activities, and the routing's: local activities of the workflow queue's
    worker, and on billing's queue for runs from before, as the worker has them."""
    routes = [route_erp_posting, route_erp_payment]
    return {
        **activities,
        "": [*activities.get("", []), *routes],
        "billing": [*activities.get("billing", []), *routes],
    }
