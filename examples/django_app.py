"""A Django project in one file, served as ASGI: `cicada examples.django_app:app`.

Sync views (Django runs them in a thread), async views, a sync view calling async code on the
server's loop through asgiref's `async_to_sync`, JSON echo, a multipart upload, a streaming
response from an async generator, 404 and 405. Django has no lifespan protocol: the server says
so once at startup and serves on.
"""

from __future__ import annotations

import asyncio
import json

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="an example, not a secret",
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    INSTALLED_APPS=[],
    USE_TZ=True,
    APPEND_SLASH=False,
    LOGGING_CONFIG=None,
)
django.setup()

from asgiref.sync import async_to_sync  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import (  # noqa: E402
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from django.views.decorators.http import require_GET, require_POST  # noqa: E402


@require_GET
def index(request):
    return HttpResponse("Hello from Django!", content_type="text/plain")


@require_GET
async def item(request, item_id: int):
    await asyncio.sleep(0)
    return JsonResponse({"item": item_id, "q": request.GET.get("q")})


async def _lookup(name: str) -> str:
    await asyncio.sleep(0.001)
    return name.upper()


@require_GET
def bridge(request):
    """A sync view (in a worker thread) that needs async code: asgiref hands it to the loop."""
    return JsonResponse({"upper": async_to_sync(_lookup)(request.GET.get("name", "x"))})


@csrf_exempt
@require_POST
def echo(request):
    try:
        data = json.loads(request.body)
    except ValueError:
        return HttpResponseBadRequest("invalid JSON", content_type="text/plain")
    return JsonResponse({"echo": data, "length": len(request.body)})


@csrf_exempt
@require_POST
def upload(request):
    files = {name: {"name": f.name, "size": f.size, "head": f.read(8).decode("latin-1")}
             for name, f in request.FILES.items()}
    return JsonResponse({"fields": dict(request.POST.items()), "files": files})


@require_GET
async def stream(request):
    async def lines():
        for i in range(int(request.GET.get("n", "5"))):
            yield f"line {i}\n"
            await asyncio.sleep(0)

    return StreamingHttpResponse(lines(), content_type="text/plain")


urlpatterns = [
    path("", index),
    path("items/<int:item_id>", item),
    path("bridge", bridge),
    path("echo", echo),
    path("upload", upload),
    path("stream", stream),
]

app = get_asgi_application()
