"""The admin app, with Arpad's admin site: Django's, whose login counts and limits password checks.

Django's documented way to replace the default site (``AdminConfig.default_site``). A module of
its own because ``INSTALLED_APPS`` imports it before any model may be imported.
"""

from django.contrib.admin.apps import AdminConfig as DjangoAdminConfig


class AdminConfig(DjangoAdminConfig):
    default_site = "arpad.login.AdminSite"
