"""The Celery application: queues `default` for bookkeeping and exports, `imports`, and `gpu` for training.

Tasks hold no logic: they fetch a job row by id and call a service. The row, not the
broker, is the source of truth, so acknowledging late and redelivering is harmless.
Every long job is one ``jobs.run`` task, sent to the queue its kind names (``jobs.registry``).
"""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arpad.settings")

app = Celery("arpad")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_queues=(Queue("default"), Queue("imports"), Queue("gpu")),
    task_default_queue="default",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
# Periodic tasks, run by the `beat` service (docker-compose.yml).
app.conf.beat_schedule = {
    # Running jobs of every kind (imports, exports, reward-model runs, ...) whose worker
    # stopped sending heartbeats: queued again a bounded number of times (resuming or
    # restarting per their kind), then failed with the reason (jobs.lifecycle.jobs_reap).
    "jobs-reap": {
        "task": "jobs.reap",
        "schedule": 60.0,
        "options": {"queue": "default", "expires": 50.0},
    },
    # Projects with a retrain rule: a run when enough new agreed pairs arrived.
    "rewardmodel-check-retrain-rules": {
        "task": "rewardmodel.tasks.check_retrain_rules",
        "schedule": 300.0,
        "options": {"queue": "default", "expires": 240.0},
    },
    # Loop cycles: the next step of a cycle whose job ended while no process announced it,
    # and a cycle for projects whose loop rule saw enough new agreed pairs (rlloop.cycle).
    "rlloop-advance-cycles": {
        "task": "rlloop.advance_cycles",
        "schedule": 60.0,
        "options": {"queue": "default", "expires": 50.0},
    },
}
app.autodiscover_tasks()
