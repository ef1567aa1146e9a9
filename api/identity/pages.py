"""The two pages a person reaches from outside an app: the reset link and the TV code.

* ``GET /reset-password?token=...`` (the link in the reset mail) shows a form for the new
  password; ``POST /reset-password`` spends the token (api/identity/accounts.py
  ``complete_reset``).
* ``GET /device[?user_code=...]`` (the ``verification_uri`` a TV shows) asks for the code
  and the account's credentials (and authenticator code when MFA is on); ``POST /device``
  approves or denies the device (api/identity/device.py ``decide_device``).

Plain HTML forms without scripts, never cached or framed. A device approved here gets a
full session, so these credentials are checked like a sign-in (same answer for a wrong
password and an unknown account, the login and MFA rate limits).
"""

from __future__ import annotations

import html
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from api.errors import Problem
from api.identity.accounts import complete_reset
from api.identity.authorize import PAGE_HEADERS, authorizing_user
from api.identity.device import decide_device

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width"></head><body><h1>{title}</h1>
{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> Response:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), body=body), status_code=status, headers=PAGE_HEADERS
    )


def _note(text: str, error: bool = False) -> str:
    style = ' style="color:#a00"' if error else ""
    return f"<p{style}>{html.escape(text)}</p>" if text else ""


async def _form(request: Request) -> dict[str, str]:
    raw = await request.body()
    if len(raw) > 16 * 1024:
        raise Problem(413, "form too large", field="body")
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        raise Problem(400, "the form is not valid text", field="body") from None
    form = {k: v for k, v in pairs if len(v) <= 1024 and "\x00" not in v}
    for v in form.values():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise Problem(400, "the form is not valid text", field="body") from None
    return form


def _reset_form(token: str, error: str = "") -> str:
    return (
        _note(error, error=True)
        + '<form method="post"><input type="hidden" name="token" value="'
        + html.escape(token)
        + '"><label>New password (12 characters or more) <input name="password" '
        'type="password" autocomplete="new-password" minlength="12" maxlength="128" required>'
        '</label> <button type="submit">Set the new password</button></form>'
    )


async def reset_page(request: Request) -> Response:
    if request.method == "GET":
        token = request.query_params.get("token", "")
        if not 20 <= len(token) <= 256:
            return _page("Reset your password", _note("Open the link from the mail.", True), 400)
        return _page("Reset your password", _reset_form(token))
    form = await _form(request)
    token = form.get("token", "")
    try:
        await complete_reset(request, token, form.get("password", ""))
    except Problem as exc:
        status = 429 if exc.status == 429 else 400
        return _page("Reset your password", _reset_form(token, exc.detail), status)
    return _page(
        "Password changed",
        _note("Your password is changed and every device was signed out. Sign in again."),
    )


def _device_form(user_code: str, error: str = "") -> str:
    return (
        _note(error, error=True)
        + "<p>Enter the code your TV shows and sign in to let it use your account.</p>"
        '<form method="post"><label>Code <input name="user_code" value="'
        + html.escape(user_code)
        + '" autocomplete="off" required></label>'
        '<label>Email <input name="username" type="email" autocomplete="username" required>'
        '</label><label>Password <input name="password" type="password" '
        'autocomplete="current-password" required></label>'
        '<label>Authenticator or backup code (if enabled) <input name="otp"></label>'
        '<button name="approve" value="true" type="submit">Allow</button> '
        '<button name="approve" value="false" type="submit">Deny</button></form>'
    )


async def device_page(request: Request) -> Response:
    if request.method == "GET":
        return _page("Connect a device", _device_form(request.query_params.get("user_code", "")))
    form = await _form(request)
    typed = form.get("user_code", "")
    user, _, error, _ = await authorizing_user(request, form)
    if user is None:
        return _page("Connect a device", _device_form(typed, error or "Sign in first."), 401)
    approve = form.get("approve", "true") != "false"
    try:
        await decide_device(request, user.user_id, typed, approve)
    except Problem as exc:
        return _page("Connect a device", _device_form(typed, exc.detail), exc.status)
    done = "Your device is connected: it signs in by itself in a few seconds."
    return _page("Connect a device", _note(done if approve else "The device was denied."))


routes = [
    Route("/reset-password", reset_page, methods=["GET", "POST"]),
    Route("/device", device_page, methods=["GET", "POST"]),
]
