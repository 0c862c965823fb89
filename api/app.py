"""The shim's FastAPI app: `uvicorn api.app:app --port 8080`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.auth import BearerAuth
from api.body_limit import install_body_limit
from api.deps import open_state
from api.errors import install_error_handlers
from api.openapi_docs import document_errors
from api.routes import chat, control, jobs, metrics, openai, status
from llmpool import __version__
from llmpool.logs import configure_logging
from llmpool.settings import print_issues_report_once, settings_or_exit

__all__ = ["app", "create_app"]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = settings_or_exit()
    configure_logging(settings, service="api")  # after uvicorn's own: its loggers then write through ours
    print_issues_report_once(settings)
    app.state.llmpool = open_state(settings)
    app.state.llmpool.start()
    try:
        yield
    finally:
        await app.state.llmpool.close()


def create_app() -> FastAPI:
    app = FastAPI(title="llmpool", version=__version__, lifespan=lifespan,
                  description="HTTP shim for llmpool, compatible with the TT-Studio agent's routes.")
    install_error_handlers(app)
    install_body_limit(app)
    document_errors(app)
    app.add_middleware(BearerAuth)  # added last, so outermost: a request without a valid token reads no body
    app.include_router(status.router)
    app.include_router(chat.router)
    app.include_router(jobs.router)
    app.include_router(control.router)
    app.include_router(metrics.router)
    app.include_router(openai.router)
    return app


app = create_app()
