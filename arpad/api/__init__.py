"""What every app's REST API shares; each app's own endpoints live in its ``api/`` package.

``arpad/urls.py`` mounts ``annotation.api.urls``, ``exports.api.urls`` and
``rewardmodel.api.urls`` side by side under ``/api/v1/``. They all import from here:

``permissions``
    who may do what: a project the caller is not a member of is a 404, a member without
    the role a 403 (``project_for_caller``, ``IsProjectMember``, ``IsProjectManager`` ...).
``views``
    ``ProjectScopedMixin`` (the URL's project, resolved once per request for the caller),
    ``RefusalMixin`` and ``refusal_response`` (a service's refusal as ``{detail, code, field}``),
    ``NoStoreMixin`` (``Cache-Control: no-store`` on answers that carry judgements, gold or tokens).
``serializers``
    ``ErrorSerializer`` (that refusal body in the schema), ``NamedChoiceField`` and
    ``MessagesField``.
"""
