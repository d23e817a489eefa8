"""Named API tokens: the key is shown once and stored only as a digest; they authenticate until
revoked or expired (401 saying which), in one query on the hot path; the page and the API make,
list and revoke them, each user only their own."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.services import named_token_create
from arpad.authentication import TokenAuthentication
from tests.factories import UserFactory

TOKENS = "/api/v1/auth/tokens/"
PAGE = "/accounts/tokens/"
PASSWORD = "pw-for-tests-only"

pytestmark = pytest.mark.django_db


def script(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def browser(user, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def create_by_api(client: APIClient, **body) -> dict:
    response = client.post(TOKENS, {"name": "labeller", **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


# --- storage ----------------------------------------------------------------------------------


def test_the_key_is_stored_only_as_its_digest(annotator):
    issued = named_token_create(user=annotator, name="nightly")
    key = issued.key
    assert key.startswith("arpad_") and len(key) >= 40
    row = ApiToken.objects.filter(pk=issued.token.pk).values().get()
    assert row["key_digest"] == hashlib.sha256(key.encode()).hexdigest()
    assert row["prefix"] == key[:14]
    secret_part = key[14:]
    for column, value in row.items():
        assert secret_part not in str(value), f"{column} holds the key"
    assert script(key).get("/api/v1/projects/").status_code == 200
    # Knowing the digest is not knowing the key.
    assert script(row["key_digest"]).get("/api/v1/projects/").status_code == 401


# --- authentication ---------------------------------------------------------------------------


def test_a_named_token_authenticates_in_one_query_when_recently_used(annotator, django_assert_num_queries):
    issued = named_token_create(user=annotator, name="hot path")
    # First use records last_used_at: the lookup and one write.
    with django_assert_num_queries(2):
        user, auth = TokenAuthentication().authenticate_credentials(issued.key)
    assert user == annotator and auth.pk == issued.token.pk
    issued.token.refresh_from_db()
    assert issued.token.last_used_at is not None
    # Within the minute: the lookup alone.
    with django_assert_num_queries(1):
        TokenAuthentication().authenticate_credentials(issued.key)
    ApiToken.objects.filter(pk=issued.token.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    with django_assert_num_queries(2):
        TokenAuthentication().authenticate_credentials(issued.key)


def test_revoked_and_expired_tokens_are_refused_saying_so(annotator, settings):
    revoked = named_token_create(user=annotator, name="old")
    ApiToken.objects.filter(pk=revoked.token.pk).update(revoked_at=timezone.now())
    response = script(revoked.key).get("/api/v1/projects/")
    assert response.status_code == 401 and "revoked" in response.json()["detail"]

    expired = named_token_create(user=annotator, name="short", expires_in_days=1)
    ApiToken.objects.filter(pk=expired.token.pk).update(
        created_at=timezone.now() - timedelta(days=2), expires_at=timezone.now() - timedelta(days=1)
    )
    response = script(expired.key).get("/api/v1/projects/")
    assert response.status_code == 401 and "expired" in response.json()["detail"]

    # A lowered ARPAD_API_TOKEN_MAX_AGE_DAYS applies to tokens made before.
    older = named_token_create(user=annotator, name="long")
    ApiToken.objects.filter(pk=older.token.pk).update(created_at=timezone.now() - timedelta(days=10))
    assert script(older.key).get("/api/v1/projects/").status_code == 200
    settings.ARPAD_API_TOKEN_MAX_AGE_DAYS = 7
    with pytest.raises(AuthenticationFailed, match="expired"):
        TokenAuthentication().authenticate_credentials(older.key)

    assert script("arpad_" + "x" * 40).get("/api/v1/projects/").json()["detail"] == "Invalid token."


def test_an_inactive_users_token_is_refused(annotator):
    issued = named_token_create(user=annotator, name="x")
    annotator.is_active = False
    annotator.save()
    assert script(issued.key).get("/api/v1/projects/").status_code == 401


# --- API --------------------------------------------------------------------------------------


def test_create_list_and_revoke_through_the_api(annotator, manager):
    client = browser(annotator)
    api = APIClient()
    api.force_authenticate(annotator)
    body = create_by_api(api, name="nightly", expires_in_days=3)
    key = body["key"]
    assert body["name"] == "nightly" and body["state"] == "live" and key.startswith(body["prefix"])
    listed = api.get(TOKENS).json()["results"]
    assert [t["name"] for t in listed] == ["nightly"] and "key" not in listed[0]
    assert key not in client.get(TOKENS).content.decode()
    # The manager neither sees nor revokes it.
    other = script(named_token_create(user=manager, name="m").key)
    assert other.get(TOKENS).json()["results"][0]["name"] == "m"
    assert other.delete(f"{TOKENS}{body['id']}/").status_code == 404
    assert script(key).get("/api/v1/projects/").status_code == 200
    # Revoked with the token itself: it then answers 401, and lists as revoked.
    assert script(key).delete(f"{TOKENS}{body['id']}/").status_code == 204
    refused = script(key).get("/api/v1/projects/")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert api.get(TOKENS).json()["results"][0]["state"] == "revoked"


def test_refusals_name_the_field(annotator, settings):
    api = APIClient()
    api.force_authenticate(annotator)
    response = api.post(TOKENS, {"name": "   "}, format="json")
    assert response.status_code == 400 and "name" in response.json()
    for days in (0, settings.ARPAD_API_TOKEN_MAX_AGE_DAYS + 1):
        response = api.post(TOKENS, {"name": "x", "expires_in_days": days}, format="json")
        assert response.status_code == 400 and response.json()["field"] == "expires_in_days", response.content
    settings.ARPAD_API_TOKENS_PER_USER = 2
    create_by_api(api)
    create_by_api(api)
    response = api.post(TOKENS, {"name": "third"}, format="json")
    assert response.status_code == 409 and "revoke one first" in response.json()["detail"]
    assert ApiToken.objects.filter(user=annotator).count() == 2


def test_a_token_made_with_a_token_does_not_outlive_it(annotator):
    parent = named_token_create(user=annotator, name="parent", expires_in_days=2)
    child = create_by_api(script(parent.key), name="child", expires_in_days=30)
    assert ApiToken.objects.get(pk=child["id"]).expires_at == parent.token.expires_at
    # The same for the token issued with the password.
    from rest_framework.authtoken.models import Token

    from arpad.authentication import api_token_expires_at

    password_token = Token.objects.create(user=annotator)
    Token.objects.filter(pk=password_token.pk).update(created=timezone.now() - timedelta(days=29))
    child = create_by_api(script(password_token.key), name="child2")
    assert ApiToken.objects.get(pk=child["id"]).expires_at == api_token_expires_at(Token.objects.get(user=annotator))


def test_the_api_needs_the_csrf_token_from_a_browser(annotator):
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="annotator", password=PASSWORD)
    assert client.post(TOKENS, {"name": "x"}, format="json").status_code == 403
    issued = named_token_create(user=annotator, name="keep")
    assert client.delete(f"{TOKENS}{issued.token.pk}/").status_code == 403
    assert ApiToken.objects.get(pk=issued.token.pk).revoked_at is None
    client.get("/accounts/login/")  # sets the CSRF cookie
    csrf = client.cookies["csrftoken"].value
    assert client.post(TOKENS, {"name": "x"}, format="json", HTTP_X_CSRFTOKEN=csrf).status_code == 201
    assert client.delete(f"{TOKENS}{issued.token.pk}/", HTTP_X_CSRFTOKEN=csrf).status_code == 204


def test_anonymous_callers_are_refused(db):
    assert APIClient().get(TOKENS).status_code == 401
    assert Client().get(PAGE).status_code == 302


# --- the page ---------------------------------------------------------------------------------


def test_the_page_shows_a_new_key_once_then_only_its_prefix(annotator):
    client = browser(annotator)
    page = client.get(PAGE)
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    assert 'href="/accounts/tokens/"' in page.content.decode()  # the top bar links it
    made = client.post(PAGE, {"action": "create", "name": "nightly", "expires_in_days": "5"})
    assert made.status_code == 201 and made["Cache-Control"] == "no-store"
    body = made.content.decode()
    key = re.search(r'id="new-token-key" value="([^"]+)"', body).group(1)
    token = ApiToken.objects.get(user=annotator)
    assert token.key_digest == hashlib.sha256(key.encode()).hexdigest()
    assert abs(token.expires_at - (timezone.now() + timedelta(days=5))) < timedelta(minutes=1)
    again = client.get(PAGE).content.decode()
    assert key not in again and token.prefix in again and "nightly" in again


def test_the_page_names_the_field_at_fault(annotator, settings):
    client = browser(annotator)
    body = client.post(PAGE, {"action": "create", "name": "", "expires_in_days": "5"}).content.decode()
    assert re.search(r'class="field invalid">\s*<label for="id_name"', body)
    body = client.post(PAGE, {"action": "create", "name": "x", "expires_in_days": "400"}).content.decode()
    assert re.search(r'class="field invalid">\s*<label for="id_expires_in_days"', body)
    assert f"Between 1 and {settings.ARPAD_API_TOKEN_MAX_AGE_DAYS} days" in body
    assert not ApiToken.objects.exists()


def test_the_page_escapes_token_names(annotator):
    client = browser(annotator)
    client.post(PAGE, {"action": "create", "name": "<img src=x onerror=alert(1)>", "expires_in_days": "5"})
    body = client.get(PAGE).content.decode()
    assert "<img src=x" not in body and "&lt;img src=x onerror=alert(1)&gt;" in body


def test_revoking_on_the_page_only_reaches_your_own_tokens(annotator, manager):
    mine = named_token_create(user=annotator, name="mine")
    theirs = named_token_create(user=manager, name="theirs")
    client = browser(annotator)
    response = client.post(PAGE, {"action": "revoke", "token_id": theirs.token.pk}, follow=True)
    assert "You hold no such token." in response.content.decode()
    assert ApiToken.objects.get(pk=theirs.token.pk).revoked_at is None
    assert "theirs" not in client.get(PAGE).content.decode()
    response = client.post(PAGE, {"action": "revoke", "token_id": mine.token.pk}, follow=True)
    assert "Token “mine” revoked" in response.content.decode()
    assert script(mine.key).get("/api/v1/projects/").status_code == 401
    assert script(theirs.key).get("/api/v1/projects/").status_code == 200


def test_the_page_revokes_the_password_issued_token_too(annotator):
    from rest_framework.authtoken.models import Token

    key = Token.objects.create(user=annotator).key
    client = browser(annotator)
    assert "Token issued with your password" in client.get(PAGE).content.decode()
    client.post(PAGE, {"action": "revoke-password-token"})
    assert script(key).get("/api/v1/projects/").status_code == 401


def test_the_page_forms_need_the_csrf_token(annotator):
    client = browser(annotator, csrf=True)
    assert client.post(PAGE, {"action": "create", "name": "x", "expires_in_days": "5"}).status_code == 403
    issued = named_token_create(user=annotator, name="keep")
    assert client.post(PAGE, {"action": "revoke", "token_id": issued.token.pk}).status_code == 403
    assert ApiToken.objects.filter(user=annotator, revoked_at__isnull=True).count() == 1
    page = client.get(PAGE).content.decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    made = client.post(PAGE, {"action": "create", "name": "x", "expires_in_days": "5", "csrfmiddlewaretoken": csrf})
    assert made.status_code == 201


def test_each_user_sees_only_their_tokens(annotator, manager):
    named_token_create(user=manager, name="managers-token")
    UserFactory(username="someone")
    assert "managers-token" not in browser(annotator).get(PAGE).content.decode()
