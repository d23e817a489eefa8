"""Managers create accounts from the members page: a one-time, expiring link where the new person
chooses a password. Only the project's managers can; the link works once, never for an account
that has a password, and only the digest of its key is stored."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from accounts.models import Invitation
from accounts.services import invitation_create
from annotation.models import Membership, Role
from tests.factories import ProjectFactory, UserFactory

PASSWORD = "pw-for-tests-only"
NEW_PASSWORD = "a-long-enough-passphrase-42"

pytestmark = pytest.mark.django_db


def signed_in(user, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def members_url(project) -> str:
    return f"/projects/{project.pk}/members/"


def invite(client: Client, project, username: str = "newcomer", role: str = "annotator", email: str = ""):
    return client.post(
        members_url(project),
        {"action": "invite", "invite-username": username, "invite-email": email, "invite-role": role},
    )


def link_in(body: str) -> str:
    found = re.search(r'id="invitation-link" value="([^"]+)"', body)
    assert found, "no invitation link on the page"
    return found.group(1)


def path_of(link: str) -> str:
    return urlsplit(link).path


def choose_password(client: Client, path: str, password: str = NEW_PASSWORD, again: str | None = None):
    return client.post(path, {"new_password1": password, "new_password2": password if again is None else again})


# --- the members page -----------------------------------------------------------------------


def test_a_manager_creates_an_account_and_sees_its_link_once(project, manager):
    client = signed_in(manager)
    response = invite(client, project, email="new@example.org", role="manager")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    link = link_in(response.content.decode())
    assert re.fullmatch(r"http://testserver/accounts/invite/[\w-]{40,}/", link)
    user = get_user_model().objects.get(username="newcomer")
    assert user.email == "new@example.org" and user.is_active and not user.has_usable_password()
    assert Membership.objects.get(project=project, user=user).role == Role.MANAGER
    invitation = Invitation.objects.get(user=user)
    key = link.rstrip("/").rsplit("/", 1)[1]
    assert invitation.key_digest == hashlib.sha256(key.encode()).hexdigest()
    assert invitation.created_by == manager and invitation.project == project
    assert key not in str(Invitation.objects.filter(pk=invitation.pk).values().get())
    # Shown once: the next visit lists the person as invited, without the link.
    again = client.get(members_url(project)).content.decode()
    assert key not in again and "(invited: link not used yet)" in again


def test_annotators_cannot_invite_and_outsiders_get_404(project, manager, annotator, outsider):
    assert invite(signed_in(annotator), project).status_code == 403
    assert invite(signed_in(outsider), project).status_code == 404
    assert not get_user_model().objects.filter(username="newcomer").exists()
    assert not Invitation.objects.exists()


def test_a_taken_username_is_said_and_adding_the_existing_person_is_offered(project, manager, annotator):
    UserFactory(username="Existing")
    client = signed_in(manager)
    body = invite(client, project, username="existing").content.decode()
    assert re.search(r'class="field invalid">\s*<label for="id_invite-username"', body)
    assert "“Existing” is taken" in body
    offer = re.search(r'<div class="taken-offer" id="taken-offer">(.*?)</div>', body, re.S).group(1)
    assert 'name="action" value="add"' in offer and 'name="username" value="Existing"' in offer
    assert "Add the existing account “Existing” as annotator instead" in offer
    assert (
        client.post(members_url(project), {"action": "add", "username": "Existing", "role": "annotator"}).status_code
        == 302
    )
    assert Membership.objects.filter(project=project, user__username="Existing").exists()
    # A member already: said so, nothing offered.
    body = invite(client, project, username="ANNOTATOR").content.decode()
    assert "annotator is already a member of this project." in body
    assert not Invitation.objects.exists()


def test_bad_usernames_and_emails_are_refused_at_their_fields(project, manager):
    client = signed_in(manager)
    body = invite(client, project, username="bad name!").content.decode()
    assert re.search(r'class="field invalid">\s*<label for="id_invite-username"', body)
    body = invite(client, project, email="not-an-email").content.decode()
    assert re.search(r'class="field invalid">\s*<label for="id_invite-email"', body)
    body = invite(client, project, role="owner").content.decode()
    assert re.search(r'class="field invalid">\s*<label for="id_invite-role"', body)
    assert get_user_model().objects.count() == 1


def test_invitations_per_manager_are_bounded(project, manager, settings):
    settings.ARPAD_INVITATIONS_PER_DAY = 2
    client = signed_in(manager)
    link_in(invite(client, project, username="one").content.decode())
    link_in(invite(client, project, username="two").content.decode())
    body = invite(client, project, username="three").content.decode()
    assert "You created 2 invitation links in the last 24 hours" in body
    assert not get_user_model().objects.filter(username="three").exists()
    Invitation.objects.update(created_at=timezone.now() - timedelta(hours=25))
    link_in(invite(client, project, username="three").content.decode())


def test_the_members_form_needs_the_csrf_token(project, manager):
    client = signed_in(manager, csrf=True)
    assert invite(client, project).status_code == 403
    assert not get_user_model().objects.filter(username="newcomer").exists()


# --- the link -------------------------------------------------------------------------------


def test_the_link_sets_a_password_logs_in_and_works_once(project, manager):
    path = path_of(link_in(invite(signed_in(manager), project).content.decode()))
    guest = Client()
    page = guest.get(path)
    body = page.content.decode()
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    assert "Welcome, newcomer" in body and project.name in body
    # Mismatch and weak passwords are refused at their fields; the link still works.
    body = choose_password(guest, path, again="something else").content.decode()
    assert "The two passwords differ" in body
    body = choose_password(guest, path, password="newcomer1").content.decode()
    assert re.search(r'<input type="password" name="new_password1"[^>]*>\s*<p class="error field-error"', body)
    assert not get_user_model().objects.get(username="newcomer").has_usable_password()

    done = choose_password(guest, path)
    assert done.status_code == 302 and done["Location"] == "/"
    assert guest.get("/").context["user"].username == "newcomer"  # logged in
    assert Client().login(username="newcomer", password=NEW_PASSWORD)
    assert Invitation.objects.get().used_at is not None
    # Used up: it neither shows the form nor changes the password again.
    for response in (Client().get(path), choose_password(Client(), path, password="another-passphrase-77")):
        assert response.status_code == 410 and "was used already" in response.content.decode()
    assert Client().login(username="newcomer", password=NEW_PASSWORD)
    members = signed_in(manager).get(members_url(project)).content.decode()
    assert "(invited" not in members


def test_an_expired_link_is_refused_and_a_new_one_replaces_it(project, manager):
    client = signed_in(manager)
    first = path_of(link_in(invite(client, project).content.decode()))
    Invitation.objects.update(expires_at=timezone.now() - timedelta(minutes=1))
    response = Client().get(first)
    assert response.status_code == 410 and "has expired" in response.content.decode()
    assert "(invitation link expired)" in client.get(members_url(project)).content.decode()
    user = get_user_model().objects.get(username="newcomer")
    second = path_of(
        link_in(client.post(members_url(project), {"action": "reinvite", "user_id": user.pk}).content.decode())
    )
    assert second != first
    assert Client().get(second).status_code == 200
    assert choose_password(Client(), second).status_code == 302
    # A newer link replaces an older one that still works.
    later = invitation_create(project=project, created_by=manager, username="later", role="annotator")
    reissued = client.post(members_url(project), {"action": "reinvite", "user_id": later.invitation.user_id})
    assert reissued.status_code == 200
    response = Client().get(f"/accounts/invite/{later.key}/")
    assert response.status_code == 410 and "replaced by a newer one" in response.content.decode()


def test_a_made_up_link_is_404(db):
    response = Client().get("/accounts/invite/not-a-real-key/")
    assert response.status_code == 404 and "not valid" in response.content.decode()


def test_no_new_link_for_an_account_that_has_a_password(project, manager, annotator):
    """A manager cannot take over an account (theirs by invitation or not) with a fresh link."""
    client = signed_in(manager)
    response = client.post(members_url(project), {"action": "reinvite", "user_id": annotator.pk}, follow=True)
    assert "annotator was not invited to this project" in response.content.decode()
    path = path_of(link_in(invite(client, project).content.decode()))
    choose_password(Client(), path)
    newcomer = get_user_model().objects.get(username="newcomer")
    response = client.post(members_url(project), {"action": "reinvite", "user_id": newcomer.pk}, follow=True)
    assert "has chosen a password already" in response.content.decode()
    assert Invitation.objects.count() == 1
    # A password set elsewhere (by an administrator) also ends the link.
    issued = invitation_create(project=project, created_by=manager, username="later", role="annotator")
    issued.invitation.user.set_password("set-by-an-admin-123")
    issued.invitation.user.save()
    assert Client().get(f"/accounts/invite/{issued.key}/").status_code == 410


def test_a_manager_of_another_project_cannot_reissue_here(project, manager, other_project):
    issued = invitation_create(project=project, created_by=manager, username="newcomer", role="annotator")
    other_manager = UserFactory(username="other-manager")
    Membership.objects.create(project=other_project, user=other_manager, role=Role.MANAGER)
    client = signed_in(other_manager)
    assert (
        client.post(members_url(project), {"action": "reinvite", "user_id": issued.invitation.user_id}).status_code
        == 404
    )
    response = client.post(
        members_url(other_project), {"action": "reinvite", "user_id": issued.invitation.user_id}, follow=True
    )
    assert "not a member of this project" in response.content.decode()
    assert Invitation.objects.count() == 1


def test_removing_the_member_withdraws_the_link(project, manager):
    issued = invitation_create(project=project, created_by=manager, username="newcomer", role="annotator")
    signed_in(manager).post(members_url(project), {"action": "remove", "user_id": issued.invitation.user_id})
    response = Client().get(f"/accounts/invite/{issued.key}/")
    assert response.status_code == 410 and "withdrawn" in response.content.decode()


def test_the_invitation_page_escapes_what_it_shows(manager):
    project = ProjectFactory(name="<script>alert(1)</script>")
    Membership.objects.create(project=project, user=manager, role=Role.MANAGER)
    issued = invitation_create(project=project, created_by=manager, username="newcomer", role="annotator")
    body = Client().get(f"/accounts/invite/{issued.key}/").content.decode()
    assert "<script>alert(1)</script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    members = signed_in(manager).get(members_url(project)).content.decode()
    assert "<script>alert(1)</script>" not in members


def test_the_invitation_form_needs_the_csrf_token(project, manager):
    issued = invitation_create(project=project, created_by=manager, username="newcomer", role="annotator")
    path = f"/accounts/invite/{issued.key}/"
    guest = Client(enforce_csrf_checks=True)
    assert choose_password(guest, path).status_code == 403
    assert not get_user_model().objects.get(username="newcomer").has_usable_password()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', guest.get(path).content.decode()).group(1)
    response = guest.post(
        path, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD, "csrfmiddlewaretoken": csrf}
    )
    assert response.status_code == 302
