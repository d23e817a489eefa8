"""Periodic tasks of the loop: catch up cycles whose job-finished announcement was lost, and check loop rules."""

from __future__ import annotations

from celery import shared_task


# Run by Celery beat (arpad/celery.py) on the default queue.
@shared_task(name="rlloop.advance_cycles")
def advance_cycles() -> dict[str, list]:
    from rlloop.cycle import cycles_advance, loop_rules_check

    advanced = [(c.pk, c.state, c.step) for c in cycles_advance()]
    return {"cycles": advanced, "rules": loop_rules_check()}
