"""API v1 views of the annotation app. Short on purpose: the queue's rules live in
``annotation.services``, the project and membership rules in ``annotation.project_services``.

Every queryset starts from what the caller may see (``visible_to``, or the project the
permission check already resolved for them), so a forgotten filter cannot leak rows.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from django.db.models import Count, F, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils.decorators import method_decorator
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.exceptions import Throttled
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import queue_sql
from annotation.api import serializers as s
from annotation.import_jobs import import_job_create, import_job_send
from annotation.models import (
    Assignment,
    ImportJob,
    Judgement,
    Membership,
    Project,
    Role,
    Task,
    TaskState,
)
from annotation.project_services import (
    ProjectRefused,
    membership_add,
    membership_remove,
    membership_set_role,
    project_create,
    project_update,
)
from annotation.services import (
    QueueError,
    assignment_claim_next,
    assignment_release,
    assignment_skip,
    judgement_amend,
    judgement_submit,
)
from arpad.api.permissions import CanCreateProjects, IsProjectManager, IsProjectManagerOrReadOnly, IsProjectMember
from arpad.api.serializers import ErrorSerializer
from arpad.api.views import NoStoreMixin, ProjectScopedMixin, RefusalMixin
from arpad.authentication import api_token_expires_at, api_token_issue, api_token_revoke
from arpad.http import SMALL_BODY_MAX_BYTES, body_limit
from arpad.throttling import AddressRateThrottle, LoginThrottled, login_attempt_start
from jobs.api.views import KindCancelView, cancel_schema

_QUEUE_ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Refused: code invalid or invalid_ranking, with field."),
    403: OpenApiResponse(ErrorSerializer, description="Refused: code not_allowed."),
    404: OpenApiResponse(description="Not your assignment."),
    409: OpenApiResponse(ErrorSerializer, description="Refused: code lease_lost or already_finished."),
}


class QueueErrorMixin(RefusalMixin):
    """Answers the queue services' refusals as ``{detail, code, field}`` with their status."""

    refusals = (QueueError,)


class ProjectRulesMixin:
    """Answers the project services' refusals as a 400 by field, like a serializer's own errors."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, ProjectRefused):
            exc = serializers.ValidationError(exc.errors)
        return super().handle_exception(exc)  # type: ignore[misc]


def projects_with_progress(user: Any) -> QuerySet[Project]:
    """The caller's projects with their role and progress counts, one row per project."""
    if not user.is_authenticated:
        return Project.objects.none()
    tasks = Task.objects.filter(project=OuterRef("pk")).order_by().values("project")
    mine = Judgement.objects.filter(task__project=OuterRef("pk"), annotator=user).order_by().values("task__project")

    def total(qs: QuerySet, aggregate: Any) -> Coalesce:
        return Coalesce(Subquery(qs.annotate(n=aggregate).values("n")), Value(0))

    return Project.objects.visible_to(user).annotate(
        caller_role=F("memberships__role"),
        n_tasks=total(tasks, Count("pk")),
        n_tasks_open=total(tasks.filter(state=TaskState.OPEN), Count("pk")),
        n_tasks_complete=total(tasks.filter(state=TaskState.COMPLETE), Count("pk")),
        n_judgements=total(tasks, Sum("judgement_count")),
        n_my_judgements=total(mine, Count("pk")),
    )


# --- auth -----------------------------------------------------------------------------------


class TokenThrottle(AddressRateThrottle):
    """Requests per client address, whatever they send (``ARPAD_TOKEN_REQUESTS_PER_MINUTE``).

    Password guesses are limited apart from this, per account and per address, like the
    login pages' (``arpad.throttling``).
    """


class TokenView(NoStoreMixin, APIView):
    """Your API token (``Authorization: Token <key>``): POST your username and password for it, DELETE to revoke it.

    POST answers your live token, or a new one if it expired (``ARPAD_API_TOKEN_MAX_AGE_DAYS``
    after it was issued) or if you ask to ``rotate``; the old one then stops working. Rotating
    takes the password, not the token: a stolen token cannot be renewed past its expiry.
    """

    throttle_classes = (TokenThrottle,)

    def get_authenticators(self) -> list[Any]:
        # POST carries the credentials in its body: no session, hence no CSRF. DELETE is
        # the signed-in caller's, by token or by session (with its CSRF check).
        # (The schema generator asks with no request: it documents POST's auth apart.)
        if getattr(self.request, "method", None) == "POST":
            return []
        return super().get_authenticators()

    def get_permissions(self) -> list[Any]:
        return [] if getattr(self.request, "method", None) == "POST" else [IsAuthenticated()]

    @extend_schema(
        request=s.TokenObtainSerializer,
        responses={
            200: s.TokenSerializer,
            400: OpenApiResponse(description="Missing or wrong credentials."),
            429: OpenApiResponse(description="Too many requests or failed logins; see Retry-After."),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        incoming = s.TokenObtainSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        wanted = incoming.validated_data
        try:
            attempt = login_attempt_start(request=request, username=wanted["username"])
        except LoginThrottled as refused:
            raise Throttled(wait=refused.retry_after, detail=refused.message) from None
        user = authenticate(request=request, username=wanted["username"], password=wanted["password"])
        if user is None:  # a wrong password, or an inactive account: the failure stays counted
            raise serializers.ValidationError(
                {"non_field_errors": ["Unable to log in with provided credentials."]}, code="authorization"
            )
        attempt.succeeded()
        token = api_token_issue(user=user, rotate=wanted["rotate"])
        return Response(s.TokenSerializer({"token": token.key, "expires_at": api_token_expires_at(token)}).data)

    @extend_schema(responses={204: None, 404: OpenApiResponse(description="You hold no token.")})
    def delete(self, request: Request) -> Response:
        if not api_token_revoke(user=request.user):
            raise Http404("You hold no token.")
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- projects -------------------------------------------------------------------------------


class ProjectListView(ProjectRulesMixin, generics.ListCreateAPIView):
    """Your projects, with your role and progress. Staff (or ``annotation.add_project``) create them."""

    serializer_class = s.ProjectSerializer
    permission_classes = [IsAuthenticated, CanCreateProjects]

    def get_queryset(self) -> QuerySet[Project]:
        return projects_with_progress(self.request.user)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project = project_create(created_by=request.user, settings=serializer.validated_data)
        data = self.get_serializer(self.get_queryset().get(pk=project.pk)).data
        return Response(data, status=status.HTTP_201_CREATED)


class ProjectDetailView(ProjectRulesMixin, ProjectScopedMixin, generics.RetrieveUpdateDestroyAPIView):
    """A project: every member reads it; managers change or delete it."""

    serializer_class = s.ProjectSerializer
    permission_classes = [IsAuthenticated, IsProjectManagerOrReadOnly]
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Project]:
        return projects_with_progress(self.request.user)

    def get_object(self) -> Project:
        return get_object_or_404(self.get_queryset(), pk=self.project.pk)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(self.project, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        project_update(project=self.project, changes=serializer.validated_data)
        return Response(self.get_serializer(self.get_object()).data)

    def perform_destroy(self, instance: Project) -> None:
        instance.delete()


# --- members --------------------------------------------------------------------------------


class MemberListView(ProjectRulesMixin, ProjectScopedMixin, generics.ListCreateAPIView):
    """The project's members (managers only); add an existing user by username."""

    # Annotators get 403: who else works on the project is none of their business.

    serializer_class = s.MembershipSerializer
    permission_classes = [IsAuthenticated, IsProjectManager]

    def get_queryset(self) -> QuerySet[Membership]:
        if self.is_schema_request():
            return Membership.objects.none()
        return Membership.objects.filter(project=self.project).select_related(
            "user", "user__imported_account", "user__simulated_annotator"
        )

    @extend_schema(request=s.MembershipCreateSerializer, responses={201: s.MembershipSerializer})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        incoming = s.MembershipCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        membership = membership_add(project=self.project, **incoming.validated_data)
        return Response(s.MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)


class MemberDetailView(ProjectRulesMixin, ProjectScopedMixin, generics.GenericAPIView):
    """Change a member's role or remove them (managers only); a project keeps at least one manager."""

    serializer_class = s.MembershipSerializer
    permission_classes = [IsAuthenticated, IsProjectManager]

    def get_queryset(self) -> QuerySet[Membership]:
        if self.is_schema_request():
            return Membership.objects.none()
        return Membership.objects.filter(project=self.project).select_related("user")

    def get_object(self) -> Membership:
        return get_object_or_404(self.get_queryset(), user_id=self.kwargs["user_id"])

    @extend_schema(request=s.MembershipUpdateSerializer, responses={200: s.MembershipSerializer})
    def patch(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        incoming = s.MembershipUpdateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        try:
            membership = membership_set_role(
                project=self.project, user_id=self.kwargs["user_id"], role=incoming.validated_data["role"]
            )
        except Membership.DoesNotExist:
            raise Http404("No such member.") from None
        return Response(s.MembershipSerializer(membership).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            membership_remove(project=self.project, user_id=self.kwargs["user_id"])
        except Membership.DoesNotExist:
            raise Http404("No such member.") from None
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- work queue -----------------------------------------------------------------------------


@method_decorator(body_limit(SMALL_BODY_MAX_BYTES), name="dispatch")
class ClaimView(NoStoreMixin, QueueErrorMixin, ProjectScopedMixin, APIView):
    """Lease the next task: 200 with the assignment, 204 when no work is left for you.

    Your own live lease, if you hold one, is handed back first (``resumed``: true).
    """

    # Hot path: the permission check, the claim service, and two queries for the texts.

    permission_classes = [IsAuthenticated, IsProjectMember]

    @extend_schema(
        request=None,
        responses={
            200: s.ClaimSerializer,
            204: OpenApiResponse(description="No work left for you in this project."),
            403: OpenApiResponse(ErrorSerializer),
        },
    )
    def post(self, request: Request, project_id: int) -> Response:
        claim = assignment_claim_next(project=self.project, annotator=request.user)
        if claim is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        assignment = claim.assignment
        order: list[int] = assignment.display_order
        messages, texts = queue_sql.task_texts(assignment.task_id, order)
        payload = {
            "id": assignment.pk,
            "task_id": assignment.task_id,
            "expires_at": assignment.expires_at,
            "resumed": claim.resumed,
            "display_order": order,
            "prompt": {"messages": messages},
            "responses": [{"id": rid, "text": texts[rid]} for rid in order],
        }
        return Response(s.ClaimSerializer({"assignment": payload}).data)


def own_assignment(user: Any, assignment_id: int) -> Assignment:
    """The caller's own assignment in a project they still belong to; 404 for anybody else's."""
    assignment = queue_sql.own_assignment(assignment_id, user.pk)
    if assignment is None:
        raise Http404("No such assignment.")
    return assignment


@method_decorator(body_limit(s.SUBMIT_MAX_BODY_BYTES), name="dispatch")
class SubmitView(NoStoreMixin, QueueErrorMixin, APIView):
    """Submit your ranking: 201 with the judgement; a retry with the same client_token answers 200."""

    # Hot path: one lookup, then the submit service.

    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=s.SubmitSerializer,
        responses={
            201: OpenApiResponse(s.JudgementSerializer, description="Recorded."),
            200: OpenApiResponse(s.JudgementSerializer, description="A retry: the judgement recorded before."),
            **_QUEUE_ERRORS,
        },
    )
    def post(self, request: Request, assignment_id: int) -> Response:
        assignment = own_assignment(request.user, assignment_id)
        incoming = s.SubmitSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        submission = judgement_submit(assignment=assignment, **incoming.validated_data)
        judgement = submission.judgement
        judgement.annotator = request.user  # it is the caller's: no query for the username
        code = status.HTTP_201_CREATED if submission.created else status.HTTP_200_OK
        return Response(s.JudgementSerializer(judgement).data, status=code)


@method_decorator(body_limit(SMALL_BODY_MAX_BYTES), name="dispatch")
class SkipView(QueueErrorMixin, APIView):
    """Give your task back with a reason; it will not be offered to you again."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=s.SkipSerializer, responses={200: s.AssignmentSerializer, **_QUEUE_ERRORS})
    def post(self, request: Request, assignment_id: int) -> Response:
        assignment = own_assignment(request.user, assignment_id)
        incoming = s.SkipSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        skipped = assignment_skip(assignment=assignment, reason=incoming.validated_data["reason"])
        return Response(s.AssignmentSerializer(skipped).data)


@method_decorator(body_limit(SMALL_BODY_MAX_BYTES), name="dispatch")
class ReleaseView(QueueErrorMixin, APIView):
    """Give your task back without an answer or a reason: the lease ends, and the task returns to
    the queue, where it may be offered to you again later (a skip keeps it from you for good)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={200: s.AssignmentSerializer, **_QUEUE_ERRORS})
    def post(self, request: Request, assignment_id: int) -> Response:
        assignment = own_assignment(request.user, assignment_id)
        return Response(s.AssignmentSerializer(assignment_release(assignment=assignment)).data)


def own_judgement(user: Any, judgement_id: int) -> Judgement:
    """The caller's own judgement in a project they still belong to; 404 for anybody else's."""
    if not 0 < judgement_id <= queue_sql.ID_MAX:
        raise Http404("No such judgement.")
    judgement = (
        Judgement.objects.filter(pk=judgement_id, annotator=user, task__project__memberships__user=user)
        .select_related("annotator")
        .first()
    )
    if judgement is None:
        raise Http404("No such judgement.")
    return judgement


@method_decorator(body_limit(s.SUBMIT_MAX_BODY_BYTES), name="dispatch")
class JudgementAmendView(NoStoreMixin, QueueErrorMixin, APIView):
    """Change your answer while its task is open: the whole answer is replaced and its pair votes rewritten.

    409 ``task_complete`` once the task is complete (its answers are final). Sending the
    stored answer again changes nothing (200 either way).
    """

    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=s.AmendSerializer,
        responses={
            200: OpenApiResponse(s.JudgementSerializer, description="The answer as now stored."),
            **_QUEUE_ERRORS,
        },
    )
    def post(self, request: Request, judgement_id: int) -> Response:
        judgement = own_judgement(request.user, judgement_id)
        incoming = s.AmendSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        amended = judgement_amend(judgement=judgement, **incoming.validated_data).judgement
        amended.annotator = request.user
        return Response(s.JudgementSerializer(amended).data)


# --- tasks and judgements -------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        parameters=[s.TaskFilterSerializer],
        responses=PolymorphicProxySerializer(
            component_name="TaskForRole",
            serializers=[s.TaskManagerSerializer, s.TaskSerializer],
            resource_type_field_name=None,
            many=True,
        ),
    )
)
class TaskListView(NoStoreMixin, ProjectScopedMixin, generics.ListAPIView):
    """Managers see every task with its source; annotators the tasks they were given, without it."""

    permission_classes = [IsAuthenticated, IsProjectMember]

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        if not self.is_schema_request() and self.project.caller_role == Role.MANAGER:
            return s.TaskManagerSerializer
        return s.TaskSerializer

    def get_queryset(self) -> QuerySet[Task]:
        if self.is_schema_request():
            return Task.objects.none()
        filters = s.TaskFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        wanted = filters.validated_data
        if "source" in wanted and self.project.caller_role != Role.MANAGER:
            # Where tasks came from is a manager's business; filtering by it would tell anyway.
            raise serializers.ValidationError({"source": ["Only managers filter tasks by source."]})
        qs = Task.objects.visible_in(self.project, user=self.request.user, role=self.project.caller_role)
        if "state" in wanted:
            qs = qs.filter(state=wanted["state"])
        if "source" in wanted:
            qs = qs.filter(source=wanted["source"])
        if "rl_round" in wanted:
            qs = qs.filter(rl_round=wanted["rl_round"])
        if "min_judgements" in wanted:
            qs = qs.filter(judgement_count__gte=wanted["min_judgements"])
        if "max_judgements" in wanted:
            qs = qs.filter(judgement_count__lte=wanted["max_judgements"])
        return qs


@extend_schema_view(
    get=extend_schema(
        responses=PolymorphicProxySerializer(
            component_name="TaskDetailForRole",
            serializers=[s.TaskManagerDetailSerializer, s.TaskDetailSerializer],
            resource_type_field_name=None,
        )
    )
)
class TaskDetailView(NoStoreMixin, ProjectScopedMixin, generics.RetrieveAPIView):
    """A task with its prompt and responses; managers also see its origin, gold answer and judgements."""

    permission_classes = [IsAuthenticated, IsProjectMember]

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        if not self.is_schema_request() and self.project.caller_role == Role.MANAGER:
            return s.TaskManagerDetailSerializer
        return s.TaskDetailSerializer

    def get_queryset(self) -> QuerySet[Task]:
        if self.is_schema_request():
            return Task.objects.none()
        return Task.objects.visible_in(
            self.project, user=self.request.user, role=self.project.caller_role
        ).select_related("prompt")

    def get_object(self) -> Task:
        task = get_object_or_404(self.get_queryset(), pk=self.kwargs["task_id"])
        links = task.task_responses.select_related("response").order_by("position")
        task.ordered_responses = [link.response for link in links]
        if self.project.caller_role == Role.MANAGER:
            task.visible_judgements = list(
                Judgement.objects.visible_in(self.project, user=self.request.user, role=self.project.caller_role)
                .filter(task=task)
                .select_related("annotator")
            )
        return task


@extend_schema_view(get=extend_schema(parameters=[s.JudgementFilterSerializer]))
class JudgementListView(NoStoreMixin, ProjectScopedMixin, generics.ListAPIView):
    """Managers see every judgement of the project; annotators their own."""

    serializer_class = s.JudgementSerializer
    permission_classes = [IsAuthenticated, IsProjectMember]

    def get_queryset(self) -> QuerySet[Judgement]:
        if self.is_schema_request():
            return Judgement.objects.none()
        filters = s.JudgementFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        wanted = filters.validated_data
        qs = Judgement.objects.visible_in(self.project, user=self.request.user, role=self.project.caller_role)
        if "annotator" in wanted:
            qs = qs.filter(annotator_id=wanted["annotator"])
        if "task" in wanted:
            qs = qs.filter(task_id=wanted["task"])
        return qs.select_related("annotator")


# --- imports --------------------------------------------------------------------------------


class ImportListView(ProjectScopedMixin, generics.ListCreateAPIView):
    """Import jobs of the project (managers only). Upload a file to start one: 202, run by a worker."""

    serializer_class = s.ImportJobSerializer
    permission_classes = [IsAuthenticated, IsProjectManager]
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self) -> QuerySet[ImportJob]:
        if self.is_schema_request():
            return ImportJob.objects.none()
        return ImportJob.objects.filter(project=self.project).select_related("created_by")

    @extend_schema(request=s.ImportCreateSerializer, responses={202: s.ImportJobSerializer})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        incoming = s.ImportCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        job = import_job_create(
            project=self.project,
            user=request.user,
            uploaded_file=incoming.validated_data["file"],
            format=incoming.validated_data["format"],
            options=incoming.validated_data["options"],
        )
        # After commit: a worker must never look for a row that is not there yet.
        import_job_send(job)
        return Response(s.ImportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class ImportDetailView(ProjectScopedMixin, generics.RetrieveAPIView):
    """One import job: state, progress, summary and errors (file, line, field, message)."""

    serializer_class = s.ImportJobSerializer
    permission_classes = [IsAuthenticated, IsProjectManager]

    def get_queryset(self) -> QuerySet[ImportJob]:
        if self.is_schema_request():
            return ImportJob.objects.none()
        return ImportJob.objects.filter(project=self.project).select_related("created_by")

    def get_object(self) -> ImportJob:
        return get_object_or_404(self.get_queryset(), pk=self.kwargs["job_id"])


@cancel_schema(s.ImportJobSerializer, "import")
class ImportCancelView(KindCancelView):
    """Cancel an import: a queued one at once, a running one at its next progress report (nothing is written)."""

    model = ImportJob
    serializer_class = s.ImportJobSerializer
