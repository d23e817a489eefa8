"""Missing policies and rounds answer in the platform's refusal shape ``{detail, code, field}``."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.parametrize(
    ("method", "rest", "code", "field", "says"),
    [
        ("get", "policies/5/", "no_such_policy", "number", "no policy 5 in this project"),
        ("post", "policies/5/reference/", "no_such_policy", "number", "no policy 5 in this project"),
        ("get", "rl-rounds/99/", "no_such_round", "round_id", "no round 99 in this project"),
        ("post", "rl-rounds/99/cancel/", "no_such_round", "round_id", "no round 99 in this project"),
    ],
)
def test_missing_policy_or_round(project, manager, outsider, annotator, method, rest, code, field, says):
    path = f"/api/v1/projects/{project.pk}/{rest}"
    response = getattr(client_for(manager), method)(path)
    assert response.status_code == 404, response.content
    assert response.json() == {"detail": response.json()["detail"], "code": code, "field": field}
    assert says in response.json()["detail"]
    assert "matches the given query" not in response.json()["detail"]
    # Outsiders learn nothing about the project's policies; annotators are refused first.
    refused = getattr(client_for(outsider), method)(path)
    assert refused.status_code == 404 and refused.json() == {"detail": "No such project."}
    assert getattr(client_for(annotator), method)(path).status_code == 403
