"""Dashboard routes: ``/`` and ``/ui/<page>`` (full page, or its content alone with ``?fragment=1``
for the in-place refresh), login and logout (the token is kept in an HttpOnly cookie), campaign
cancel, and the offline ``/docs`` page (Swagger UI assets served from the files of the
``fastapi-swagger`` package)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import fastapi_swagger.resources
from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from profiler_server.auth import AuthError, Principal, authenticate
from profiler_server.cancel import cancel_campaign
from profiler_server.dashboard.pages import BUILDERS, PAGES
from profiler_server.db import Team
from profiler_server.deps import SessionDep
from profiler_server.errors import NotFound, ServerError

HERE = Path(__file__).parent
SWAGGER_UI = Path(fastapi_swagger.resources.__file__).parent  # Swagger UI 5 (reads OpenAPI 3.1)
COOKIE = "rtseg_dashboard_token"
REFRESH_S = 5
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)


def mount_assets(app: FastAPI) -> None:
    """Static files of the dashboard and of Swagger UI, and ``/docs`` pointing at them."""
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
    app.mount("/ui/swagger", StaticFiles(directory=SWAGGER_UI), name="swagger-static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} - API",
            swagger_js_url="/ui/swagger/swagger-ui-bundle.js", swagger_css_url="/ui/swagger/swagger-ui.css",
            swagger_favicon_url="/ui/swagger/favicon-32x32.png", oauth2_redirect_url="/docs/oauth2-redirect",
        )  # fmt: skip

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def docs_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def _principal(request: Request, session: SessionDep) -> Principal | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        return authenticate(session, token, request.app.state.token_cache)
    except AuthError:
        return None


def _who(session: SessionDep, principal: Principal) -> str:
    team = session.get(Team, principal.team_id) if principal.team_id is not None else None
    who = f"team {team.name}" if team else f"{principal.role} token"
    return who + (f" ({principal.name})" if principal.name and principal.role != "team" else "")


def _render(request: Request, session: SessionDep, page: str, fragment: bool) -> Response:
    principal = _principal(request, session)
    if principal is None:
        if fragment:  # the refresh script sends the browser to the login form
            return JSONResponse({"detail": "log in again"}, status_code=401)
        return templates.TemplateResponse(request, "login.html", {"pages": PAGES, "error": None}, status_code=401)
    context = {"page": page, "pages": PAGES, "who": _who(session, principal), "refresh_s": REFRESH_S,
               "principal": principal, **BUILDERS[page](session, principal)}  # fmt: skip
    name = f"_{page}.html" if fragment else "page.html"
    return templates.TemplateResponse(request, name, context)


@router.get("/")
def overview_page(request: Request, session: SessionDep, fragment: bool = False) -> Response:
    return _render(request, session, "overview", fragment)


@router.get("/ui/{page}")
def dashboard_page(request: Request, session: SessionDep, page: str, fragment: bool = False) -> Response:
    if page not in BUILDERS:
        raise NotFound(f"no dashboard page {page!r}; pages: {', '.join(PAGES)}")
    return _render(request, session, page, fragment)


@router.post("/ui/login")
def login(request: Request, session: SessionDep, token: Annotated[str, Form(max_length=500)]) -> Response:
    try:
        authenticate(session, token.strip())
    except AuthError:
        context = {"pages": PAGES, "error": "unknown or revoked token"}
        return templates.TemplateResponse(request, "login.html", context, status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")  # fmt: skip
    return response


@router.post("/ui/logout")
def logout() -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.post("/ui/campaigns/{campaign_id}/cancel")
def cancel(request: Request, session: SessionDep, campaign_id: int) -> JSONResponse:
    """The dashboard's cancel button (cookie token; SameSite=strict keeps other sites out)."""
    principal = _principal(request, session)
    if principal is None:
        return JSONResponse({"detail": "log in again"}, status_code=401)
    try:
        campaign = cancel_campaign(session, principal, campaign_id)
    except ServerError as exc:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)
    session.commit()
    return JSONResponse({"id": campaign.id, "state": campaign.state})
