"""structlog set-up: JSON lines with correlation and business ids, no PII.

Only workers/ and starters/ call `configure_logging`; everything else just logs.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

# Values of these keys never reach a log line; emails are masked wherever they appear.
PII_KEYS = frozenset({"email", "name", "customer_name", "requester_email", "phone", "address"})
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")


def redact_pii(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in list(event_dict):
        if key in PII_KEYS:
            event_dict[key] = "[redacted]"
        elif isinstance(event_dict[key], str):
            event_dict[key] = EMAIL.sub("[email]", event_dict[key])
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_pii,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The HTTP client logs every request line at INFO; that is noise in a service log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # The stripe SDK logs request URLs at INFO and whole answers (names, emails) at DEBUG.
    logging.getLogger("stripe").setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
