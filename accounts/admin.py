"""Tokens and invitations in the admin: to look at and revoke, never to read a secret (none is stored)."""

from __future__ import annotations

from django.contrib import admin

from accounts.models import ApiToken, Invitation


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "user__username", "prefix"]
    readonly_fields = ["user", "key_digest", "prefix", "created_at", "last_used_at", "expires_at"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role", "created_by", "created_at", "expires_at", "used_at", "replaced_at"]
    search_fields = ["user__username", "project__name"]
    readonly_fields = ["user", "project", "role", "created_by", "key_digest", "created_at", "used_at", "replaced_at"]
