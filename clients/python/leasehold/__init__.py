"""leasehold: "exactly one of these is running, and if it dies another takes
over", coordinated through Redis — the Python client of the leasehold protocol
(docs/protocol.md), interoperating with the Rust library and CLI on the same
names.

    import leasehold

    client = leasehold.Client.from_url("redis://127.0.0.1:6379")
    with client.lease("nightly-report", ttl=10) as lease:
        while not lease.lost.is_set():
            do_some_work(fencing_token=lease.token)

The asyncio flavour is :class:`leasehold.AsyncClient` (``leasehold.aio``).
"""

from ._common import Taken
from ._protocol import HolderInfo, LeaseStatus
from ._quota import Period
from ._sync import Client, Election, Leadership, Lease, Quota, TokenCache
from .aio import AsyncClient, AsyncElection, AsyncLeadership, AsyncLease, AsyncQuota, AsyncTokenCache
from .errors import (
    AcquireTimeout,
    AuthFailed,
    BadConfig,
    BadName,
    BadUrl,
    BudgetExhausted,
    CommandError,
    CommandUnavailable,
    FetchFailed,
    ForeignKey,
    LeaseholdError,
    NameInUse,
    NotHolder,
    NotReplicated,
    ProtocolError,
    QuotaUnknown,
    Refused,
    Timeout,
    Unavailable,
    Unreachable,
    redact_url,
)

__version__ = "0.1.0"

__all__ = [
    "AcquireTimeout",
    "AsyncClient",
    "AsyncElection",
    "AsyncLeadership",
    "AsyncLease",
    "AsyncQuota",
    "AsyncTokenCache",
    "AuthFailed",
    "BadConfig",
    "BadName",
    "BadUrl",
    "BudgetExhausted",
    "Client",
    "CommandError",
    "CommandUnavailable",
    "Election",
    "FetchFailed",
    "ForeignKey",
    "HolderInfo",
    "Leadership",
    "Lease",
    "LeaseStatus",
    "LeaseholdError",
    "NameInUse",
    "NotHolder",
    "NotReplicated",
    "Period",
    "ProtocolError",
    "Quota",
    "QuotaUnknown",
    "Refused",
    "Taken",
    "Timeout",
    "TokenCache",
    "Unavailable",
    "Unreachable",
    "redact_url",
]
