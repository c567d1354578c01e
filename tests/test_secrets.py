"""Secrets and transport, the parts other modules do not cover (test_ingest_process: logs at DEBUG, SQLite file and
dump, argv; test_logging: text and JSON logs with every token; test_config*: file permissions, flags, masking):

- an uncaught traceback of ``tracker run`` is scrubbed like a log line;
- plain ``http://``/``ws://`` to a non-loopback host: ``tracker run`` refuses in one line, ``--insecure`` lets it run;
  a name that only starts with ``127.`` is not loopback;
- TLS verification is on: the HTTP client and the websocket refuse a self-signed certificate on a real TLS server
  (which a client trusting that certificate completes a handshake with, so the refusal is the verification);
- the PostgreSQL reporting role of docs/sql.md: SELECT on every view, nothing on the base tables or the event log, no
  writes through the views, no new tables.

(The PostgreSQL database holds no secret either: test_lease.py's two-account test dumps every table.)

Rules: loopback only (one test binds the fake to this machine's own non-loopback address, skipped if it has none),
port 0, absolute timeouts, no sleep as synchronisation.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import ssl
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import trio
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tracker.config import ConfigError, load_settings
from tracker.exchange.errors import ExchangeUnreachable
from tracker.exchange.rest import BitstampClient
from tracker.exchange.ws import WsUnreachable
from tracker.fake.server import open_fake_exchange
from tracker.runtime.ingest import default_connector
from tracker.store.engine import open_engine
from tracker.store.migrate import upgrade
from tracker.store.projection_schema import PROJECTION_TABLES

pytestmark = pytest.mark.timeout(60)

API_KEY = "keyLEAKcheck0123456789abcdefghijk"
API_SECRET = "secretLEAKcheck0123456789abcdefgh"
MARKETS = "btcusd"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "sql.md"
VIEWS = ("v_orders", "v_fills", "v_fees_daily", "v_self_trades", "v_settlements", "v_liquidations", "v_positions",
         "v_discrepancies")  # fmt: skip


def run_env(api_url: str, ws_url: str, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITSTAMP_", "TRACKER_"))}
    env.update(
        BITSTAMP_API_KEY=API_KEY,
        BITSTAMP_API_SECRET=API_SECRET,
        BITSTAMP_API_URL=api_url,
        BITSTAMP_WS_URL=ws_url,
        TRACKER_DB_URL=db_url,
        TRACKER_MARKETS=MARKETS,
    )
    return env


# --- tracebacks -------------------------------------------------------------------------------------------------------

# A programming error deep in the run whose message carries the secret (the worst case): the child's traceback on
# stderr must not show it. The patch runs in the child before ``tracker run`` starts.
_CRASHING_RUN = """
import os, sys
import tracker.runtime.ingest as ingest
def channels_for(*args, **kwargs):
    raise RuntimeError("unexpected bug while holding " + os.environ["BITSTAMP_API_SECRET"] + " and "
                       + os.environ["BITSTAMP_API_KEY"])
ingest.channels_for = channels_for
from tracker.cli import run
sys.argv = ["tracker", "--verbose", "run"]
run()
"""


async def test_uncaught_traceback_is_scrubbed(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'tracker.db'}"
    upgrade(db_url)
    async with open_fake_exchange(markets=(MARKETS,), api_key=API_KEY, api_secret=API_SECRET) as fx:
        with trio.fail_after(30):
            result = await trio.run_process(
                [sys.executable, "-c", _CRASHING_RUN],
                env=run_env(fx.api_url, fx.ws_url, db_url),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "Traceback (most recent call last)" in err and "RuntimeError: unexpected bug while holding ***" in err
    assert API_SECRET not in err and API_KEY not in err


# --- plain transports ------------------------------------------------------------------------------------------------


def test_a_name_that_starts_with_127_is_not_loopback() -> None:
    with pytest.raises(ConfigError, match="unencrypted http:// to a non-loopback host"):
        load_settings(env={"BITSTAMP_API_URL": "http://127.attacker.example/api/v2/"})
    with pytest.raises(ConfigError, match="unencrypted ws:// to a non-loopback host"):
        load_settings(env={"BITSTAMP_WS_URL": "ws://127.0.0.1.nip.io:9000"})
    assert load_settings(env={"BITSTAMP_WS_URL": "ws://[::1]:9000"}).ws_url == "ws://[::1]:9000"
    assert load_settings(env={"BITSTAMP_WS_URL": "ws://127.0.0.2:9000"}).ws_url == "ws://127.0.0.2:9000"


def _own_non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # UDP: picks the outgoing interface, sends nothing
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def test_tracker_run_refuses_plain_transport_to_a_non_loopback_host_unless_insecure(tmp_path: Path) -> None:
    address = _own_non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    db_url = f"sqlite:///{tmp_path / 'tracker.db'}"
    upgrade(db_url)
    async with open_fake_exchange(markets=(MARKETS,), api_key=API_KEY, api_secret=API_SECRET, host=address) as fx:
        env = run_env(fx.api_url, fx.ws_url, db_url)
        with trio.fail_after(20):
            refused = await trio.run_process(
                [sys.executable, "-m", "tracker", "run"], env=env, capture_stdout=True, capture_stderr=True, check=False
            )
        assert refused.returncode == 2
        assert refused.stderr.decode().strip() == (
            "tracker: error: BITSTAMP_API_URL uses unencrypted http:// to a non-loopback host; use https:// or pass "
            "--insecure"
        )
        assert fx.hub.connections_total == 0

        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tracker", "run", "--insecure"], env=env, stderr=subprocess.DEVNULL
        )
        try:
            with trio.fail_after(30):
                await fx.wait_subscribed(fx.private_channels())
            process.terminate()
            with trio.fail_after(30):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


# --- TLS verification ------------------------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


class Outcomes(list[str]):
    """Handshake outcomes the TLS server saw, in order, with a way to wait for the next one."""

    def __init__(self) -> None:
        super().__init__()
        self.grew = trio.Event()

    def add(self, outcome: str) -> None:
        self.append(outcome)
        grew, self.grew = self.grew, trio.Event()
        grew.set()

    async def next_after(self, n: int) -> str:
        """The ``n``-th outcome (0-based), once it is there."""
        with trio.fail_after(15):
            while len(self) <= n:
                await self.grew.wait()
        return self[n]


async def _tls_server(nursery: trio.Nursery, cert: Path, key: Path) -> tuple[int, Outcomes]:
    """A TLS server on 127.0.0.1 (port 0) answering one HTTP 404 per connection; returns the port and the handshake
    outcomes it saw."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    outcomes = Outcomes()

    async def handle(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            await stream.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            outcomes.add("refused by the client")
            return
        outcomes.add("ok")
        try:
            await stream.receive_some(65536)
            await stream.send_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    listeners = await nursery.start(
        functools.partial(trio.serve_ssl_over_tcp, handle, 0, context, host="127.0.0.1", https_compatible=True)
    )
    return listeners[0].transport_listener.socket.getsockname()[1], outcomes


def _verification_failed(error: BaseException) -> bool:
    """Somewhere in the cause chain: the certificate did not verify (not a refused connection or a timeout)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def test_tls_verification_refuses_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with trio.open_nursery() as nursery:
        port, outcomes = await _tls_server(nursery, cert, key)

        # Control: a client that trusts this certificate completes the handshake, so the server is sound.
        stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=trusting)
        await stream.do_handshake()
        await stream.aclose()
        assert await outcomes.next_after(0) == "ok"

        # The HTTP client as tracker builds it: the certificate does not verify.
        async with BitstampClient(f"https://127.0.0.1:{port}/api/v2/", API_KEY, API_SECRET) as client:
            with trio.fail_after(15), pytest.raises(ExchangeUnreachable) as http_error:
                await client.websockets_token()
        assert _verification_failed(http_error.value)
        assert await outcomes.next_after(1) == "refused by the client"

        # The websocket as tracker's ingest connects (default connector, no SSL context passed): the TLS handshake
        # never completes on the server (trio-websocket reports the failed handshake as its connect timeout).
        connect = default_connector()
        with pytest.raises(WsUnreachable, match="ConnectionTimeout"):
            async with connect(f"wss://127.0.0.1:{port}", connect_timeout=2):  # type: ignore[call-arg]
                pass
        assert "ok" not in outcomes[2:]  # without verification the server would have completed it in milliseconds
        # Control: the same connector with a context trusting the certificate gets through TLS (then the server's 404
        # rejects the upgrade): so what stopped the default one was the verification. Its timeout is only a bound for
        # a failure: 2 s, as above, is too short for a TLS handshake on a loaded machine.
        with pytest.raises(WsUnreachable, match=r"ConnectionRejected|HandshakeError"):
            async with default_connector(trusting)(f"wss://127.0.0.1:{port}", connect_timeout=20):  # type: ignore[call-arg]
                pass
        with trio.fail_after(15):
            while "ok" not in outcomes[2:]:
                await outcomes.grew.wait()
        nursery.cancel_scope.cancel()


# --- the reporting role ----------------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_reporting_role_selects_views_and_nothing_else(pg_url: str) -> None:
    block = next(b for b in re.findall(r"```sql\n(.*?)```", DOCS.read_text(), flags=re.DOTALL) if "CREATE ROLE" in b)
    upgrade(pg_url)
    role = f"reporting_{uuid.uuid4().hex[:8]}"  # identifiers cannot be bound parameters: a generated name
    engine = open_engine(pg_url)
    try:
        with engine.begin() as conn:
            database = conn.exec_driver_sql("SELECT current_database()").scalar_one()
            schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
            script = block.replace("reporting", role).replace("DATABASE tracker", f'DATABASE "{database}"')
            conn.exec_driver_sql(script.replace("SCHEMA public", f'SCHEMA "{schema}"'))
        base_tables = ["event_log", "quarantine", "projector_checkpoint", *(t.name for t in PROJECTION_TABLES.values())]
        denied = [
            *(f"SELECT * FROM {t} LIMIT 1" for t in base_tables),
            *(f"DELETE FROM {t}" for t in base_tables),
            *(f"INSERT INTO {v} (account) VALUES ('x')" for v in VIEWS),
            *(f"UPDATE {v} SET account = 'x'" for v in VIEWS),
            *(f"DELETE FROM {v}" for v in VIEWS),
            "CREATE TABLE mine (x int)",
            "CREATE VIEW mine AS SELECT 1",
        ]
        with engine.connect() as conn:
            for view in VIEWS:
                conn.exec_driver_sql(f'SET ROLE "{role}"')
                assert conn.exec_driver_sql(f"SELECT count(*) FROM {view}").scalar_one() >= 0
                conn.rollback()
            for statement in denied:
                conn.exec_driver_sql(f'SET ROLE "{role}"')
                # A view over a join (v_settlements, v_ledger, ...) is refused as not updatable before permissions.
                with pytest.raises(DBAPIError, match=r"permission denied|cannot (insert into|update|delete from) view"):
                    conn.exec_driver_sql(statement)
                conn.rollback()
            conn.exec_driver_sql("RESET ROLE")
            assert conn.execute(text("SELECT count(*) FROM event_log")).scalar_one() == 0
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
        engine.dispose()
