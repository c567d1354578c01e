"""A small HTTP/1.1 server on trio + h11 serving the fake's `/api/v2/` (keep-alive, one request at a time).

Authenticated routes verify the v2 signature (:mod:`tracker.fake.auth`) and sign 200 responses with
``X-Server-Auth-Signature`` (not in the ``unsigned`` mode, :mod:`tracker.fake.modes`). Errors are JSON and never
signed: auth failures are HTTP 403 ``{"status":"error","reason":..,"code":"API0005"}``; others use ``response_code``
(``404.002``, ``404.008``, ``400.002`` on HTTP 429 when rate limiting is switched on), the derivatives refusals
``{"code":"API5506","message":..}``, and in the ``error-200`` mode order errors come with HTTP 200
(:class:`tracker.fake.rest.ApiError`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import NoReturn
from urllib.parse import parse_qsl

import h11
import trio

from tracker.fake.auth import Authenticator, AuthError, Verified, response_signature
from tracker.fake.modes import Modes
from tracker.fake.rest import PUBLIC_GET, ApiError, RestApi
from tracker.fake.wire import dumps

log = logging.getLogger("tracker.fake.http")
PREFIX = "/api/v2/"
JSON = "application/json"


@dataclass(slots=True)
class HttpFaults:
    reject_next: int = 0  # answer the next N requests with 400.002 / HTTP 429
    requests_seen: int = 0
    on_request: list[Callable[[str, str], None]] = field(default_factory=list)


@dataclass(slots=True)
class HttpApp:
    api: RestApi
    auth: Authenticator
    faults: HttpFaults = field(default_factory=HttpFaults)
    modes: Modes = field(default_factory=Modes)

    def respond(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        path, _, query = target.partition("?")
        self.faults.requests_seen += 1
        for hook in self.faults.on_request:
            hook(method, path)
        if not path.startswith(PREFIX):
            return _error(404, {"status": "error", "reason": "Not found.", "response_code": "404.001"})
        route = path[len(PREFIX) :]
        if self.faults.reject_next > 0:
            self.faults.reject_next -= 1
            return _error(
                429,
                {
                    "status": "error",
                    "reason": "Request rate limit exceeded.",
                    "response_code": "400.002",
                    "code": "400.002",
                },
            )
        public = method == "GET" and route in PUBLIC_GET
        checked: Verified | None = None
        if not public:
            try:
                checked = self.auth.check(
                    method=method, host=headers.get("host", ""), path=path, query=query, headers=headers, body=body
                )
            except AuthError as exc:
                return _error(exc.status, {"status": "error", "reason": exc.reason, "code": exc.code})
        params = dict(parse_qsl(query, keep_blank_values=True))
        if body:
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            text = self.api.handle(method, route, params, headers, bound_to=checked.bound_to if checked else None)
        except ApiError as exc:
            return _error(exc.status, None, exc.body())
        payload = text.encode()
        out = [("Content-Type", JSON)]
        if checked is not None and not self.modes.unsigned:
            sig = response_signature(
                api_secret=checked.secret,
                nonce=checked.nonce,
                timestamp=checked.timestamp,
                content_type=JSON,
                body=payload,
            )
            out.append(("X-Server-Auth-Signature", sig))
        return 200, out, payload


def _error(status: int, obj: object, text: str | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("Content-Type", JSON)], (text if text is not None else dumps(obj)).encode()


async def _serve_one(app: HttpApp, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request: h11.Request | None = None
            body = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return
            assert request is not None  # h11 yields Request before EndOfMessage
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
            status, out_headers, payload = app.respond(
                request.method.decode(), request.target.decode("latin-1"), headers, bytes(body)
            )
            # Every HTTP server sends Date (RFC 9110 §6.6.1), from its own clock: clients resync on API0017 from it.
            date = formatdate(app.auth.clock(), usegmt=True)
            out_headers = [*out_headers, ("Date", date), ("Content-Length", str(len(payload)))]
            await stream.send_all(conn.send(h11.Response(status_code=status, headers=out_headers)) or b"")
            await stream.send_all(conn.send(h11.Data(data=payload)) or b"")
            await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        log.debug("bad HTTP request: %s", exc)
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                data = conn.send(h11.Response(status_code=400, headers=[("Content-Length", "0")]))
                await stream.send_all((data or b"") + (conn.send(h11.EndOfMessage()) or b""))
            except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await stream.aclose()


async def serve_http(
    app: HttpApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve until cancelled; ``task_status.started(port)`` once listening."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]

    async def handler(stream: trio.SocketStream) -> None:
        await _serve_one(app, stream)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(bound)
        await trio.sleep_forever()
    raise AssertionError("unreachable")
