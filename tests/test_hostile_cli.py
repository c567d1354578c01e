"""No traceback reaches a user: every ``tracker`` command, run with hostile arguments, ends normally or with ONE
``tracker: error:`` line and a documented exit code.

The commands are enumerated from the parser itself (``TrackerArgumentParser.commands``), and so are their flags
(``CommandParser.arguments``): a new command or flag is covered without touching this file. ``SKELETONS`` only gives
the positional arguments a command needs to get past argparse (a new command without one is still run, with its
flags). Hypothesis draws the values: database URLs built from hostile parts (drivers we do not ship, ports that are
not numbers, junk hosts, odd query strings), ports, paths, numbers and text.

Rules: in-process (``main(argv)`` with stdout/stderr captured) for speed; a clean environment and cwd in a temporary
directory; loopback only. Hosts are drawn from loopback spellings and junk that never resolves, PostgreSQL database
names always start with ``h14_nope_`` (no real database is ever migrated or dropped), and the parts that would run
forever or contact an exchange are replaced after argument handling (``run_app``, ``run_demo``, ``reconcile_once``,
``run_doctor``,
the fake exchange's wait for Ctrl-C, the metrics HTTP server): ``run``, ``demo``, ``reconcile`` and
``fake-exchange`` get argument-level hostility only, and must fail fast when an argument is bad.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from tracker.cli import CommandParser, build_parser, main
from tracker.store.migrate import upgrade

pytestmark = pytest.mark.timeout(120)

EXIT_CODES = {0, 1, 2, 3}  # README "When something is wrong"; 1 is a normal "no" (verify, reconcile, db current)
SKELETONS: dict[str, list[list[str]]] = {
    "report": [["fees"], ["positions"], ["fills"], ["ledger"], ["balances"]],
    "db downgrade": [["base"], ["0001"]],
    "db upgrade": [[], ["head"]],
    "export": [["--format", "koinly"], ["--format", "bitstamp-legacy"], []],  # --format is required
    # a readable statement, the database itself (binary), a directory, nothing there
    "import-statement": [["statement.csv"], ["tracker.db"], ["dir"], ["absent.csv"]],
}
STATEMENT = (  # a new-format statement of one deposit (tests/test_import_statement.py has the format's rules)
    "ID,Account,Type,Subtype,Datetime,Amount,Amount currency,Value,Value currency,Rate,Rate currency,Fee,"
    "Fee currency,Order ID\n1,Main Account,Deposit,,2024-01-05T15:04:05Z,1.5,BTC,,,,,,,\n"
)
EXAMPLES_PER_COMMAND = 60
FAKE_KEY, FAKE_SECRET = "hostilekey123", "hostilesecret123"


class WouldRun(Exception):
    """Raised where a command would start its long-running part: its arguments were all accepted."""


# -- strategies ----------------------------------------------------------------------------------------------------

JUNK = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12
)  # argv can never hold NUL
NAME = st.text(alphabet="abcXYZ019_-. é%", min_size=1, max_size=10)
NUMBERS = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "0x10", "", " ", "-0", "1_000", "١٢", "9999-12-31", "0", "1"]),
)
PORTS = st.one_of(
    st.sampled_from(["0", "5432", "-1", "65536", "99999", "abc", "", "1e3", " 0"]),
    st.integers(min_value=-(10**6), max_value=-1).map(str),
    st.integers(min_value=65536, max_value=10**9).map(str),
)
PATHS = st.one_of(
    st.sampled_from(["", ".", "/", "..", "dir", "dir/", "/nonexistent-h14/x.db", "x.db", "tracker.db", "a b.db"]),
    NAME,
)
SCHEMES = [
    "sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg", "postgresql+psycopg2", "postgresql+asyncpg",
    "mysql", "", "http", "sqlite+nothing", "SQLITE", "postgres", "postgresql+",
]  # fmt: skip
HOSTS = ["127.0.0.1", "localhost", "[::1]", "", "[::1", "%zz", "@", "127.0.0.1:abc", "[zz]"]
QUERIES = ["", "?", "?sslmode=require", "?options=x", "?foo=bar", "?timeout=abc", "?mode=ro", "?&&", "?=x", "?uri=true"]
PG_DATABASE = st.text(alphabet="abc019_-%. ", max_size=6).map(lambda s: "h14_nope_" + s)


def _only_loopback(url: str) -> bool:
    """Never let a drawn URL reach a real host or a real PostgreSQL database."""
    try:
        parsed = make_url(url)
    except Exception:
        return True  # refused before anything connects
    if not parsed.drivername.startswith("postgres"):
        return True
    return (parsed.host or "") in ("", "127.0.0.1", "localhost", "::1") and (parsed.database or "").startswith(
        "h14_nope_"
    )


URLS = st.one_of(
    st.builds(
        lambda scheme, user, host, port, db, query: f"{scheme}://{user}{host}{port}/{db}{query}",
        st.sampled_from(SCHEMES),
        st.sampled_from(["", "u@", "u:p@", "postgres@", ":@", "u:%zz@"]),
        st.sampled_from(HOSTS),
        st.sampled_from(["", ":5432", ":1", ":abc", ":-1", ":99999", ":"]),
        PG_DATABASE,
        st.sampled_from(QUERIES),
    ),
    st.builds(lambda path, query: f"sqlite:///{path}{query}", PATHS, st.sampled_from(QUERIES)),
    st.sampled_from(["sqlite://", "sqlite:///:memory:", "tracker.db", "://", "sqlite:////", "sqlite:///dir"]),
    JUNK,
).filter(_only_loopback)
HTTP_URLS = st.one_of(
    st.builds(
        lambda scheme, host, port: f"{scheme}://{host}{port}/",
        st.sampled_from(["http", "https", "ws", "wss", "ftp", ""]),
        st.sampled_from(HOSTS),
        st.sampled_from(["", ":1", ":abc", ":99999", ":"]),
    ),
    JUNK,
)


def value_for(action: argparse.Action) -> st.SearchStrategy[str]:
    dest = action.dest
    if action.choices is not None:
        return st.one_of(st.sampled_from([str(c) for c in action.choices]), JUNK)
    if dest == "db_url":
        return URLS
    if dest in ("api_url", "ws_url"):
        return HTTP_URLS
    if dest.endswith("port"):
        return PORTS
    if dest in ("db", "truth_out"):
        return PATHS
    if dest == "out":  # hostile places to write, never over the sandbox's tracker.db or statement.csv
        return st.one_of(
            st.sampled_from(["", ".", "/", "..", "dir", "dir/", "/nonexistent-h14/x.csv", "out.csv"]), NAME
        )
    return st.one_of(NUMBERS, JUNK, PATHS)


# -- running a command in-process -----------------------------------------------------------------------------------


def leaf_commands() -> list[CommandParser]:
    return [p for p in build_parser().commands if p.get_default("func") is not None]


def command_name(parser: CommandParser) -> str:
    return parser.prog.removeprefix("tracker ")


def run_cli(argv: list[str]) -> tuple[int | None, str, str]:
    """``main(argv)`` with stdout and stderr captured; ``None`` as the code when the command would have run on."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: int | None = main(argv)
        except WouldRun:
            code = None
    return code, out.getvalue(), err.getvalue()


def check_outcome(argv: list[str], code: int | None, out: str, err: str) -> None:
    assert "Traceback" not in out + err, (argv, out + err)
    if code is None:
        return  # every argument accepted: the command would have started
    assert code in EXIT_CODES, (argv, code, err)
    if code >= 2:
        errors = [line for line in err.splitlines() if line.startswith("tracker: error: ")]
        assert len(errors) == 1, (argv, err)
        assert err.rstrip("\n").splitlines()[-1] == errors[0], (argv, err)  # the error is the last word
        assert "\n" not in errors[0]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cwd with a migrated ./tracker.db, a directory, fake credentials, and the long-running parts replaced."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "dir").mkdir()
    upgrade(f"sqlite:///{root / 'tracker.db'}")
    (root / "statement.csv").write_text(STATEMENT, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp, socket.socket() as sock:
        mp.chdir(root)
        for name in list(os.environ):
            if name.startswith(("BITSTAMP_", "TRACKER_")):
                mp.delenv(name)
        mp.setenv("BITSTAMP_API_KEY", FAKE_KEY)
        mp.setenv("BITSTAMP_API_SECRET", FAKE_SECRET)
        # An unreachable loopback exchange, in case anything got past the replacements below: bound, never listening,
        # for the whole test (no other xdist worker's server can take the port meanwhile).
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
        mp.setenv("BITSTAMP_API_URL", f"http://127.0.0.1:{closed}/api/v2/")
        mp.setenv("BITSTAMP_WS_URL", f"ws://127.0.0.1:{closed}")

        def would_run(*_args: object, **_kwargs: object) -> None:
            raise WouldRun

        async def stop_at_once() -> None:
            return None

        mp.setattr("tracker.runtime.app.run_app", would_run)
        mp.setattr("tracker.runtime.demo.run_demo", would_run)
        mp.setattr("tracker.runtime.recovery.reconcile_once", would_run)
        mp.setattr("tracker.runtime.doctor.run_doctor", would_run)
        mp.setattr("tracker.cli.fake_exchange.wait_for_stop", stop_at_once)
        mp.setattr("tracker.metrics.serve_metrics", lambda _metrics, port, addr="127.0.0.1": port)
        yield root


# -- the tests -----------------------------------------------------------------------------------------------------


def test_every_command_is_enumerated() -> None:
    names = {command_name(p) for p in leaf_commands()}
    assert {"run", "demo", "status", "report", "reconcile", "verify", "rebuild", "config show"} <= names
    assert {"db upgrade", "db downgrade", "db current", "fake-exchange", "export", "import-statement"} <= names
    assert set(SKELETONS) <= names, "a skeleton for a command that no longer exists"


@pytest.mark.parametrize("command", leaf_commands(), ids=command_name)
@settings(
    max_examples=EXAMPLES_PER_COMMAND,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(data=st.data())
def test_hostile_arguments_never_show_a_traceback(sandbox: Path, command: CommandParser, data: st.DataObject) -> None:
    name = command_name(command)
    argv = [*name.split(), *data.draw(st.sampled_from(SKELETONS.get(name, [[]])), label="skeleton")]
    for action in command.arguments:
        if not action.option_strings or action.dest in ("help", "version"):
            continue
        if not data.draw(st.booleans(), label=f"use {action.dest}"):
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0:
            argv.append(flag)
            continue
        value = data.draw(value_for(action), label=action.dest)
        argv += [f"{flag}={value}"] if data.draw(st.booleans(), label="joined") else [flag, value]
    if data.draw(st.integers(0, 9), label="junk token") == 0:
        argv.append(data.draw(JUNK, label="junk"))
    assume("--help" not in argv and "-h" not in argv)  # prints usage; covered by argparse itself
    code, out, err = run_cli(argv)
    check_outcome(argv, code, out, err)


# -- the cases of issue 14, one each --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["status", "--db-url", "postgresql+psycopg2://postgres@127.0.0.1/x"],
            "--db-url: tracker does not support 'postgresql+psycopg2'",
        ),
        (["status", "--db-url", "postgresql+psycopg://postgres@127.0.0.1:abc/x"], "--db-url has a port that is not"),
        (["demo", "--rate", "0"], "--rate: must be at least 1 frame per second, got 0 (see `tracker demo --help`)"),
        (["demo", "--duration", "abc"], "--duration: not a number of seconds: 'abc' (see `tracker demo --help`)"),
        (["demo", "--duration", "0"], "--duration: must be more than 0 seconds, got 0"),
        (["fake-exchange", "--http-port", "70000"], "--http-port: must be between 0 (any free port) and 65535"),
        (["report", "fees", "--until", "9999-12-3x"], "--until: not a date or datetime: '9999-12-3x'"),
        (["reconcile", "--max-status-checks", "-5"], "--max-status-checks: must be 0 or more, got -5"),
        # A URL given to --db (a --db-url habit) was "in sqlite:, which does not exist".
        (
            ["demo", "--db", "sqlite:///x.db"],
            "--db sqlite:///x.db is a URL, but --db takes the path of a SQLite file: use --db x.db\n",
        ),
        (
            ["demo", "--db", "postgresql://u@127.0.0.1/x"],
            "--db postgresql://u@127.0.0.1/x is a URL, but --db takes the path of a SQLite file (the demo writes"
            " SQLite only)\n",
        ),
        # An argument no parser took names the command's help (it was `tracker --help`) and the option meant.
        (
            ["status", "--formt", "json"],
            "unrecognized arguments: --formt json (did you mean --format?) (see `tracker status --help`)",
        ),
        (
            ["db", "downgrade", "base", "--drop-logs"],
            "unrecognized arguments: --drop-logs (did you mean --drop-log?) (see `tracker db downgrade --help`)",
        ),
        (["report", "fees", "extra"], "unrecognized arguments: extra (see `tracker report --help`)\n"),
        (["--bogus", "status"], "unrecognized arguments: --bogus (see `tracker status --help`)\n"),
    ],
)
def test_issue_14_messages(sandbox: Path, argv: list[str], message: str) -> None:
    code, out, err = run_cli(argv)
    assert code == 2, err
    assert err.startswith(f"tracker: error: {message}"), err
    check_outcome(argv, code, out, err)


def test_fake_exchange_on_a_port_in_use_is_one_line(sandbox: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run_cli(["fake-exchange", "--http-port", str(port)])
    assert code == 2
    assert err == (
        f"tracker: error: cannot listen on 127.0.0.1 (--http-port {port}): the port is already in use; pick another,"
        " or 0 for any free port\n"
    )
    check_outcome([], code, out, err)


def test_fake_exchange_with_free_ports_starts_and_stops(sandbox: Path) -> None:
    code, out, err = run_cli(["fake-exchange", "--markets", "BTCUSD"])  # symbols are case-insensitive
    assert code == 0, err
    assert "export BITSTAMP_API_URL=http://127.0.0.1:" in out


@pytest.mark.parametrize("argv", [["demo", "-v"], ["-v", "demo"], ["demo", "--verbose", "--log-format", "json"]])
def test_global_flags_after_the_command(sandbox: Path, argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.verbose is True
    assert build_parser().parse_args(["--log-format", "json", "status"]).log_format == "json"
    assert build_parser().parse_args(["status"]).verbose is False


def test_version(sandbox: Path) -> None:
    code, out, err = run_cli(["--version"])
    assert code == 0, err
    assert out.startswith("tracker 0.") and "Python 3." in out and "SQLAlchemy 2." in out and "trio " in out


@pytest.mark.parametrize("command", ["run", "reconcile"])
def test_run_and_reconcile_warn_about_a_readable_secret_file(
    sandbox: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """Issue 14.6: the README promises the warning; `run` and `reconcile` never showed it."""
    secret = sandbox / "loose-secret"
    secret.write_text("file-secret-123\n", encoding="utf-8")
    secret.chmod(0o644)
    monkeypatch.delenv("BITSTAMP_API_SECRET")
    monkeypatch.setenv("BITSTAMP_API_SECRET_FILE", str(secret))
    db = sandbox / f"warn-{command}.db"  # its own: the hostile examples may have downgraded ./tracker.db
    upgrade(f"sqlite:///{db}")
    code, _out, err = run_cli([command, "--db-url", f"sqlite:///{db}"])
    assert code is None, err  # it would have run on
    # Not the whole line: log redaction (global, filled by earlier tests) may mask words of it, like "secret".
    assert "WARNING tracker.config: the API " in err
    assert "is readable by group or others: chmod 600" in err
