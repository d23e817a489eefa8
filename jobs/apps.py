from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        # Each app declares its job kinds in its own ``jobs.py`` (a model subclass of
        # ``jobs.models.Job``, a function and a ``@job_kind`` line); importing those
        # modules fills the registry the worker, the reaper, the API and the CLI read.
        from django.utils.module_loading import autodiscover_modules

        autodiscover_modules("jobs")
