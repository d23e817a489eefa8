"""Celery tasks of the rewardmodel app. They fetch by id and call a service; nothing more.

Training runs are jobs of the shared lifecycle: their messages are ``jobs.run`` tasks sent
to the ``gpu`` queue (``REWARDMODEL_QUEUE``), and ``jobs.reap`` watches them. The retrain
rule check below is bookkeeping on the ``default`` queue; its schedule is
``app.conf.beat_schedule`` in ``arpad/celery.py``.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(name="rewardmodel.tasks.check_retrain_rules")
def check_retrain_rules() -> list[tuple[int, str]]:
    from rewardmodel.services import retrain_rules_check

    return retrain_rules_check()
