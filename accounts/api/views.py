"""Your named API tokens: list, create (the key answered once), revoke. Session (with CSRF) or token."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api import serializers as s
from accounts.models import ApiToken
from accounts.services import named_token_create, named_token_revoke
from arpad.api.serializers import ErrorSerializer
from arpad.api.views import NoStoreMixin, RefusalMixin
from arpad.authentication import api_token_expires_at


def caller_token_expiry(request: Request) -> datetime | None:
    """When the token this request came with expires; None for a browser session."""
    if isinstance(request.auth, ApiToken):
        return ApiToken.objects.values_list("expires_at", flat=True).get(pk=request.auth.pk)
    if isinstance(request.auth, Token):
        return api_token_expires_at(Token.objects.get(key=request.auth.key))
    return None


class ApiTokenListView(NoStoreMixin, RefusalMixin, generics.ListAPIView):
    """Your named tokens, newest first (revoked and expired ones too); POST makes a new one."""

    serializer_class = s.ApiTokenSerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self) -> QuerySet[ApiToken]:
        if getattr(self, "swagger_fake_view", False):
            return ApiToken.objects.none()
        return ApiToken.objects.filter(user=self.request.user)

    @extend_schema(
        request=s.ApiTokenCreateSerializer,
        responses={
            201: s.ApiTokenCreatedSerializer,
            400: OpenApiResponse(ErrorSerializer, description="A field at fault, named."),
            409: OpenApiResponse(ErrorSerializer, description="You hold ARPAD_API_TOKENS_PER_USER live tokens."),
        },
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        incoming = s.ApiTokenCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        issued = named_token_create(
            user=request.user, not_after=caller_token_expiry(request), **incoming.validated_data
        )
        body = s.ApiTokenCreatedSerializer(issued.token, context={"key": issued.key}).data
        return Response(body, status=status.HTTP_201_CREATED)


class ApiTokenDetailView(NoStoreMixin, APIView):
    """One of your named tokens: DELETE revokes it (it then gets 401); someone else's is a 404."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={204: None, 404: OpenApiResponse(description="You hold no such token.")})
    def delete(self, request: Request, token_id: int) -> Response:
        try:
            named_token_revoke(user=request.user, token_id=token_id)
        except ApiToken.DoesNotExist:
            raise Http404("You hold no such token.") from None
        return Response(status=status.HTTP_204_NO_CONTENT)
