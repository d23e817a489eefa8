"""Celery tasks of the rewardmodel app. They fetch by id and call a service; nothing more.

``train_reward_model`` goes to the ``gpu`` queue (``arpad/celery.py`` routes
``rewardmodel.tasks.train_*`` there; the service names the queue explicitly too, from
``REWARDMODEL_QUEUE``). The two periodic tasks are bookkeeping on the ``default`` queue, so
a GPU worker busy training (one task at a time) never holds up the reaper that watches it;
their schedule is ``app.conf.beat_schedule`` in ``arpad/celery.py``.
"""

from __future__ import annotations

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


# acks_late: a worker that dies mid-training gets the message redelivered where the broker
# can (Redis); the run row decides whether anything is left to do. Where it cannot, the
# reaper re-queues the run. The task never raises: the row records failures.
@shared_task(name="rewardmodel.tasks.train_reward_model", acks_late=True)
def train_reward_model(run_id: int) -> None:
    from rewardmodel.jobs import reward_model_run_execute

    reward_model_run_execute(run_id=run_id)


@shared_task(name="rewardmodel.tasks.reap_reward_model_runs")
def reap_reward_model_runs() -> list[tuple[int, str]]:
    from rewardmodel.services import reward_model_runs_reap

    return reward_model_runs_reap()


@shared_task(name="rewardmodel.tasks.check_retrain_rules")
def check_retrain_rules() -> list[tuple[int, str]]:
    from rewardmodel.services import retrain_rules_check

    return retrain_rules_check()
