"""A route table of plain Starlette routes: FHIR endpoints take the Request and its path parameters.

Why not FastAPI's APIRouter: its per-request dependency and validation machinery costs more than a
FHIR read itself (measured with py-spy under wrk), and FHIR bodies are validated by our own validator.
The app stays a FastAPI app; these routes are added to its router. Registering the same method on the
same path twice is a wiring bug and raises.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Handler = Callable[..., Awaitable[Response]]


class RouteTable:
    def __init__(self) -> None:
        self._entries: list[tuple[str, str, Handler]] = []
        self._seen: set[tuple[str, str]] = set()

    def add(self, method: str, path: str, handler: Handler) -> None:
        key = (method, path)
        if key in self._seen:
            raise ValueError(f"route {method} {path} is registered twice")
        self._seen.add(key)
        self._entries.append((method, path, handler))

    def _decorator(self, method: str, path: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.add(method, path, handler)
            return handler

        return register

    def get(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator("GET", path)

    def post(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator("POST", path)

    def put(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator("PUT", path)

    def patch(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator("PATCH", path)

    def delete(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator("DELETE", path)

    def routes(self, prefix: str) -> list[Route]:
        """Starlette routes in registration order (more specific paths are registered first)."""
        out: list[Route] = []
        for method, path, handler in self._entries:
            out.append(Route(prefix + path, _endpoint(handler), methods=[method], name=f"{method} {path}"))
        return out


def _endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        params: dict[str, Any] = request.path_params
        return await handler(request, **params)

    endpoint.__name__ = handler.__name__
    return endpoint
