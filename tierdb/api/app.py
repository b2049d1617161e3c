"""The Litestar application: ``create_app(settings, engine=None)``.

The lifespan starts the engine (recovery in the background, see lifecycle.py) and closes it
on shutdown; routes get the engine through the ``engine`` dependency, which answers 503 until
recovery has finished (the hot query route calls the same ``EngineHost.require_ready`` from
``app.state`` instead, see controllers/query.py).  OpenAPI is served at ``/schema`` (``/schema/openapi.json``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.routes import HTTPRoute

from ..config import Settings
from ..node import Engine
from .auth import SETTINGS_STATE_KEY, log_security_mode
from .controllers import ROUTE_HANDLERS
from .controllers.admin import add_admin_schemas
from .errors import EXCEPTION_HANDLERS
from .lifecycle import HOST_STATE_KEY, EngineHost
from .middleware import RequestMiddleware, before_send
from .openapi import add_request_schemas, openapi_config, union_responses_as_any_of


def _lifespan(host: EngineHost) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await host.start()
        try:
            yield
        finally:
            await host.stop()

    return lifespan


def _dependencies(host: EngineHost) -> dict[str, Provide]:
    def provide_settings() -> Settings:
        return host.settings

    def provide_host() -> EngineHost:
        return host

    return {
        "engine": Provide(host.require_ready, sync_to_thread=False),
        "settings": Provide(provide_settings, sync_to_thread=False, use_cache=True),
        "host": Provide(provide_host, sync_to_thread=False, use_cache=True),
    }


def _complete_options_allow(app: Litestar) -> None:
    """Make the automatic OPTIONS answers list every method of their path.

    Litestar 2 (issue litestar-org/litestar#4169, fixed in v3) builds a path's OPTIONS handler
    with the first route for that path and keeps it when it merges more handlers into a new
    route, so ``Allow`` misses their methods.  The handler reads only ``route.methods``: point
    it at the merged route.
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            fn = handler.fn
            if handler.http_methods != {"OPTIONS"} or getattr(fn, "__name__", "") != "options_handler":
                continue
            for cell in getattr(fn, "__closure__", None) or ():
                if isinstance(cell.cell_contents, HTTPRoute):
                    cell.cell_contents = route


def create_app(settings: Settings, engine: Engine | None = None) -> Litestar:
    """Build the API around ``engine`` (or a new ``Engine(settings)``, created at startup)."""
    host = EngineHost(settings, engine)
    app = Litestar(
        route_handlers=ROUTE_HANDLERS,
        dependencies=_dependencies(host),
        lifespan=[_lifespan(host)],
        on_startup=[add_request_schemas, union_responses_as_any_of, add_admin_schemas, log_security_mode],
        # read by the auth guards (auth.py) and by the query route, which skips dependency injection
        state=State({SETTINGS_STATE_KEY: settings, HOST_STATE_KEY: host}),
        exception_handlers=EXCEPTION_HANDLERS,
        # one layer: request context, body deadline, metrics, access log (middleware.py); the
        # before-send hook echoes the request id and notes the status for it
        middleware=[
            DefineMiddleware(
                RequestMiddleware,
                access_log=settings.log.access_log,
                body_read_timeout_secs=settings.server.body_read_timeout_secs,
            ),
        ],
        before_send=[before_send],
        openapi_config=openapi_config(),
        request_max_body_size=settings.server.max_body_bytes,
        logging_config=None,
        debug=False,
    )
    _complete_options_allow(app)
    return app
