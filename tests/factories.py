"""factory_boy factories for the annotation models."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from annotation.models import Membership, Project, ProjectKind, Prompt, Response, Role, Task, TaskResponse


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests-only")


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    kind = ProjectKind.PAIRWISE
    responses_per_task = 2
    annotations_per_task = 3


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.ANNOTATOR


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    project = factory.SubFactory(ProjectFactory)
    external_id = factory.Sequence(lambda n: f"p{n}")
    messages = factory.LazyAttribute(lambda o: [{"role": "user", "content": f"Question {o.external_id}?"}])


def make_task(project: Project, *, k: int | None = None, priority: int = 0, required: int | None = None) -> Task:
    """A task with ``k`` fresh responses under a fresh prompt."""
    k = k or project.responses_per_task
    prompt = PromptFactory(project=project)
    responses = [Response.objects.create(prompt=prompt, text=f"Answer {i} to {prompt.external_id}") for i in range(k)]
    task = Task.objects.create(
        project=project,
        prompt=prompt,
        num_responses=k,
        priority=priority,
        required_annotations=required or project.annotations_per_task,
    )
    TaskResponse.objects.bulk_create(TaskResponse(task=task, response=r, position=i) for i, r in enumerate(responses))
    return task
