"""A fault-injection reverse proxy in front of any counterpart (billing, support, Tryton).

Per rule it refuses connections (TCP reset, no answer), answers 503 or 429 + Retry-After,
adds latency, or forwards the request and drops the upstream's answer (the remote
committed, the caller saw a reset or a timeout). Rules carry a probability (seeded RNG),
an optional count and path/method/body filters, and are changed at run time through
`/_faults/` on the proxy's own port. Run it with
`python -m sandbox.faults --listen-port P --upstream URL [--seed S]`.
"""

from sandbox.faults._rules import MODES, FaultMode, FaultRule, RuleBook
from sandbox.faults.app import CONTROL_PREFIX, FaultProxy

__all__ = ["CONTROL_PREFIX", "MODES", "FaultMode", "FaultProxy", "FaultRule", "RuleBook"]
