"""A Django project for the integration tests (``djangoapp:app``): the example's views plus a
slow async view that records whether the client's disconnect cancelled it."""

from __future__ import annotations

import asyncio

from django_app import app, urlpatterns  # noqa: F401  (settings are configured there)
from django.http import JsonResponse
from django.urls import path

EVENTS: list[str] = []


async def slow(request):
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        EVENTS.append("cancelled")
        raise
    EVENTS.append("finished")
    return JsonResponse({"slow": "done"})


async def events(request):
    return JsonResponse({"events": EVENTS})


urlpatterns += [path("slow", slow), path("events", events)]
