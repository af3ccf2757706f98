"""The status model and the transition rules of CONTRACT §5, as pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """Canonical order status; all but `pending` are terminal."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class Kind(StrEnum):
    """What an order is."""

    PAYMENT = "payment"
    PAYOUT = "payout"
    STATIC_VA = "static_va"


class Outcome(StrEnum):
    """What an event did to the ledger; also the final state of the callback that carried it."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Decision:
    """The verdict: outcome, new status (None: unchanged), flags, and whether money moves."""

    outcome: Outcome
    new_status: Status | None = None
    flags: tuple[str, ...] = ()
    moves_money: bool = False


_UNSUCCESSFUL = frozenset({Status.FAILED, Status.CLOSED, Status.CANCELLED})


def decide(current: Status, incoming: Status, kind: Kind = Kind.PAYMENT) -> Decision:
    """Apply CONTRACT §5 to one new (not yet seen) event.

    For a static VA, `current` is the status of the repayment the event is about: the rules
    hold for each repayment (a success reported failed is a conflict, a failure that succeeds
    a late success), while the VA itself stays open (`pending`) whatever they say.
    """
    if kind is Kind.STATIC_VA:
        repayment = decide(current, incoming)
        return Decision(repayment.outcome, None, repayment.flags, repayment.moves_money)
    if current is Status.PENDING:
        if incoming is Status.PENDING:
            return Decision(Outcome.APPLIED)
        return Decision(Outcome.APPLIED, incoming, moves_money=incoming is Status.SUCCEEDED)
    if incoming is Status.PENDING:
        return Decision(Outcome.STALE)
    if incoming is current:
        return Decision(Outcome.DUPLICATE)
    if current in _UNSUCCESSFUL and incoming is Status.SUCCEEDED:
        return Decision(Outcome.APPLIED, incoming, ("late_success",), moves_money=True)
    # succeeded → failed/closed/cancelled, or one unsuccessful end → another: the ledger keeps
    # what it holds and a person decides.
    return Decision(Outcome.CONFLICT, flags=("conflicting_status",))


_STRENGTH = {Outcome.APPLIED: 3, Outcome.CONFLICT: 2, Outcome.STALE: 1, Outcome.DUPLICATE: 0}


def strongest(outcomes: list[Outcome]) -> Outcome:
    """The outcome that describes a callback whose confirmation produced several events."""
    return max(outcomes, key=_STRENGTH.__getitem__)
