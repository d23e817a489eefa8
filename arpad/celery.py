"""The Celery application: two queues, `default` for bookkeeping and `gpu` for training.

Tasks hold no logic: they fetch a job row by id and call a service. The row, not the
broker, is the source of truth, so acknowledging late and redelivering is harmless.
"""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arpad.settings")

app = Celery("arpad")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_queues=(Queue("default"), Queue("gpu")),
    task_default_queue="default",
    task_routes={
        "rewardmodel.tasks.*": {"queue": "gpu"},
        "rlloop.tasks.gpu_*": {"queue": "gpu"},
    },
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
app.autodiscover_tasks()
