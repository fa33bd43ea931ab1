"""What a chat request is charged: its budget hold and the tokens its tokens-per-minute
windows count are settled at its answer's cost (its usage, else an estimate, never past the
worst case held) and each try a provider may have billed with no answer; a try after such a
try is held first, or not sent; each says so in the request's notes. The governor books it
(:class:`~switchpoint.governance.governor.Governor`); this says what to book."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import switchpoint.gateway.accounting as accounting
from switchpoint.catalog import ModelCard, usd_text
from switchpoint.gateway.failover import (
    BUDGET_REFUSED,
    RATE_REFUSED,
    AnswerUse,
    Attempt,
    BeforeTry,
    FailoverResult,
    FailoverStream,
    NotSent,
    billed_tries,
    billed_use,
)
from switchpoint.gateway.planning import Plan
from switchpoint.governance.governor import Governor
from switchpoint.governance.ledger import describe_account


class Settler:
    """Settles the reservations of one gateway's chat requests with its ``governor``."""

    def __init__(self, governor: Governor) -> None:
        self.governor = governor

    def before_try(self, plan: Plan) -> BeforeTry | None:
        """What failover asks before each try of a request a budget or a tokens-per-minute
        limit watches (None: neither, nothing to ask): a try after one a provider may have
        billed is held first (see :meth:`Governor.hold_try`), or not sent when a budget cannot
        hold it or a TPM window cannot take it. Each says so in a note, as does a try sent
        with nothing held because the request's reservation expired first (its note named
        for what the reservation held: a budget, a TPM window, or both)."""
        ticket = plan.ticket
        if ticket is None or not ticket.holds_any:  # (no budget, no TPM limit: RPM at most)
            return None

        def before(card: Any, attempts: Sequence[Attempt]) -> NotSent | None:
            # (each as it will be charged: at the usage its upstream reported, when it did)
            billed = [(c, *_use_of(_billed_use(plan, a, c)))
                      for a, c in _billed(plan, attempts)]
            if not billed:
                return None  # (the request's hold covers its first try)
            blocked = self.governor.hold_try(ticket, card, billed)
            tries = f"{len(billed)} tr{'y' if len(billed) == 1 else 'ies'}"
            if blocked is not None:
                budget = blocked.kind == "budget"
                plan.notes.append(f"{'Budget' if budget else 'Rate limit'}: {card.name} not "
                                  f"tried: {blocked.message}.")
                return NotSent(BUDGET_REFUSED if budget else RATE_REFUSED, blocked.message)
            if ticket.closed:  # (expired: its holds were freed, and nothing more is held)
                plan.notes.append(
                    f"{_limits_named(ticket)}: nothing held before "
                    f"{card.name}'s next try, after {tries} a provider may have billed: the "
                    "request's reservation expired (it outlived its hold), so the try is sent "
                    "unheld; what the tries cost and use is still counted when the request "
                    "ends.")
                return None
            if ticket.holds:
                plan.notes.append(
                    f"Budget: held {card.name}'s worst case "
                    f"{usd_text(self.governor.worst_of(ticket, card))} before its next try, after "
                    f"{tries} a provider may have billed ({usd_text(ticket.held_for_usd)} held for "
                    "the request's tries in all).")
            held = ticket.tokens_held()
            if held:
                plan.notes.append(
                    f"Rate limit: held {card.name}'s worst case of {ticket.tokens} tokens in the "
                    f"tokens-per-minute window of {', '.join(map(describe_account, held))} "
                    f"before its next try, after {tries} a provider may have billed "
                    f"({max(held.values())} tokens held for the request's tries in all).")
            return None

        return before

    def settle(self, plan: Plan, card: Any, cost_usd: float | None, usage: Any,
                attempts: Sequence[Attempt] = ()) -> accounting.Settlement | None:
        """Settle the request's reservation (what its budgets hold, the tokens its
        tokens-per-minute windows count): the answer of ``card`` (None: no answer) at
        ``cost_usd`` (None: unknown, its worst case), and each try of ``attempts`` a provider
        may have billed with no answer (:func:`billed_tries`: a timeout, the deadline or a cut
        mid-answer, an answer holding no choice or misnumbered ones, the caller leaving while it
        was under way) at the usage its upstream reported, else (a stream broken or cut off
        while its upstream was reasoning) the estimate of the reasoning it sent, else its
        model's worst case (:func:`~switchpoint.gateway.failover.billed_use`); with
        neither, the hold is released. Each such try carries its charge in the log
        (``charged_usd``), and a note says what they added: charged against the request's
        budgets, or, where none applies (a tokens-per-minute limit alone), recorded in the
        spend ledger only. Returns the ledger rows for its log entry and the amount charged;
        None when it holds no reservation."""
        if plan.ticket is None:
            return None
        tries = _billed(plan, attempts)
        billed = [attempt for attempt, _ in tries]
        uses = [_billed_use(plan, attempt, of) for attempt, of in tries]
        # Each try's charge, worked out once (a usage past its worst case is said once): the
        # log's charged_usd and what the budgets are charged are the same amounts.
        charges = [(of, *self.governor.charge_of(plan.ticket, of, *_use_of(use),
                                                  request_id=plan.request_id))
                   for (_, of), use in zip(tries, uses, strict=True)]
        for attempt, (_, amount, _) in zip(billed, charges, strict=True):
            attempt.charged_usd = amount
        if billed:
            extra = sum(a.charged_usd or 0.0 for a in billed)
            how = ("each at its model's worst case"
                   if all(use.cost_usd is None for use in uses)
                   else "each at the usage its upstream reported, else its model's worst case"
                   if not any(use.estimated for use in uses)
                   else "each at the usage its upstream reported, else the estimate of the "
                        "reasoning it sent before it broke or was cut off, else its model's "
                        "worst case")
            tries_of = (f"{len(billed)} tr{'y' if len(billed) == 1 else 'ies'} a provider may "
                        "have billed with no answer (timed out, cut by the deadline or "
                        "mid-answer, answered with no choice or misnumbered ones, or left by "
                        f"the caller while under way), {how}: "
                        + ", ".join(f"{a.model} #{a.attempt} {a.outcome}{_estimated(use)}"
                                    for a, use in zip(billed, uses, strict=True)))
            if plan.ticket.holds:  # a budget applies: charged against it
                over = (" (more than the request held: charged in full)"
                        if extra + (cost_usd or 0.0)
                        > plan.ticket.held_for_usd * (1 + 1e-9) + 1e-12 else "")
                plan.notes.append(f"Budget: charged {usd_text(extra)} for {tries_of}{over}.")
            else:  # (a tokens-per-minute limit alone: no budget to charge)
                plan.notes.append(f"Spend: recorded {usd_text(extra)} in the spend ledger, "
                                  f"against no budget (none applies to this request), for "
                                  f"{tries_of}.")
        tokens = None if usage is None else usage.prompt_tokens + usage.completion_tokens
        rows, charged = self.governor.settle(plan.ticket, request_id=plan.request_id,
                                             card=card, cost_usd=cost_usd, tokens=tokens,
                                             billed=charges)
        return list(rows), charged

    def entry(self, settlement: accounting.Settlement | None,
               build: Callable[[accounting.Settlement | None], accounting.Entry]
               ) -> accounting.Entry:
        """The log entry ``build`` makes to carry ``settlement``'s ledger rows. Should making
        it fail (an internal error), the rows are written alone before the error goes on, as
        for a request with no log entry (:meth:`release`): the governor booked them already,
        and a restart must count them too."""
        try:
            return build(settlement)
        except BaseException:
            if settlement is not None:
                self.governor.write_unlogged(settlement[0])
            raise

    def release(self, plan: Plan, attempts: Sequence[Attempt] = (),
                 answered: FailoverResult | FailoverStream | None = None) -> None:
        """Close the reservation of a request that ended some unforeseen way (an internal
        error; no log entry carries its ledger rows, so they are written here), as
        :meth:`settle` closes it: the answer ``answered`` got (if any) at its cost (a plain
        answer without usage, the estimate of what it used; a stream, unread, its worst case
        when unknown), and each of its ``attempts`` a provider may have billed
        (:func:`billed_tries`) at its model's worst case; the rest of the hold released.
        Charged even when its reservation expired meanwhile; nothing when it was settled
        already (the governor books a request's end once)."""
        if answered is None:
            settled = self.settle(plan, None, None, None, attempts)
        elif isinstance(answered, FailoverResult):  # (what its answer used, as when settled)
            use = answer_use(plan, answered)
            settled = self.settle(plan, answered.card, use.cost_usd, use.usage, attempts)
        else:
            settled = self.settle(plan, answered.card, answered.cost_usd, answered.usage,
                                   attempts)
        if settled is not None:
            self.governor.write_unlogged(settled[0])


def _billed(plan: Plan, attempts: Sequence[Attempt]) -> list[tuple[Attempt, Any]]:
    """The tries of ``attempts`` a provider may have billed with no answer (see
    :func:`billed_tries`), each with its model's card (the request's budget charges each its
    worst case)."""
    cards = {c.name: c for c in plan.cards}
    return [(a, cards[a.model]) for a in billed_tries(attempts) if a.model in cards]


def _use_of(use: AnswerUse) -> tuple[float | None, int | None]:
    """(cost in USD, tokens) of a try's ``use`` as the governor charges them (None: unknown,
    its worst case)."""
    usage = use.usage
    return use.cost_usd, None if usage is None else usage.prompt_tokens + usage.completion_tokens


def _estimated(use: AnswerUse) -> str:
    """What a billed try's note adds when its charge is an estimate (see
    :func:`~switchpoint.gateway.failover.billed_use`): from what, at how much."""
    if not use.estimated or use.usage is None:
        return ""
    prompt = ("as the upstream reported it" if use.prompt_reported
              else "the prompt as the gateway estimates it")
    cost = "" if use.cost_usd is None else f", {usd_text(use.cost_usd)}"
    return (f" (estimated: {use.usage.prompt_tokens} prompt tokens ({prompt}) and "
            f"{use.usage.completion_tokens} answer tokens, for the {use.unrelayed_bytes} bytes, "
            f"in UTF-8, of reasoning it sent before any content{cost})")


def answer_use(plan: Plan, answer: FailoverResult | FailoverStream) -> AnswerUse:
    """What ``answer`` of ``plan`` is charged at (:func:`~switchpoint.gateway.failover.
    answer_use`): its usage, else the estimate from the plan's prompt, never past the worst
    case its hold holds."""
    return answer.use(plan.needs.prompt_tokens, worst_held(plan, answer.model))


def _billed_use(plan: Plan, attempt: Attempt, card: ModelCard) -> AnswerUse:
    """What ``attempt``, a try of ``card`` a provider may have billed with no answer, is
    charged at (:func:`~switchpoint.gateway.failover.billed_use`), by ``plan``'s prompt and
    the worst case its hold holds."""
    return billed_use(attempt, card, plan.needs.prompt_tokens, worst_held(plan, card.name))


def worst_held(plan: Plan, model: str) -> float | None:
    """The worst case the plan's budget hold holds for an answer of ``model`` (what an
    estimated charge is never past; None: no budget holds one)."""
    ticket = plan.ticket
    return (ticket.worst_by_model.get(model, ticket.worst_usd)
            if ticket is not None and ticket.worst_by_model else None)


def _limits_named(ticket: Any) -> str:
    """What a note about ``ticket``'s holds is about: ``Budget`` when a budget holds for it,
    ``Rate limit`` when a tokens-per-minute window counts it, ``Budget and rate limit`` when
    both do."""
    kinds = [kind for kind, held in (("budget", ticket.holds), ("rate limit",
                                                                 ticket.rate_entries)) if held]
    return " and ".join(kinds).capitalize() or "Rate limit"
