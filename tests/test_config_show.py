"""``tracker config show`` through the real command (a subprocess, cwd a temp dir holding ``tracker.toml``): the
documented precedence (flag > environment > tracker.toml > default), where each value came from, secrets masked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

KEY = "keyABCDEFGH12345678"
SECRET = "secretXYZ987654321abcdef"


def show(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracker", "config", "show", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_precedence_origins_and_masking(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    (tmp_path / "tracker.toml").write_text(
        "[tracker]\n"
        f'db_url = "sqlite:///{tmp_path}/from-file.db"\n'
        'markets = ["ethusd"]\n'
        "reconcile_interval_s = 60\n"
        f'api_secret_file = "{secret_file}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITSTAMP_", "TRACKER_"))}
    env.update(BITSTAMP_API_KEY=KEY, TRACKER_MARKETS="btcusd", TRACKER_RECONCILE_INTERVAL="30")

    result = show(tmp_path, env, "--markets", "btcusd-perp", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows["TRACKER_DB_URL"] == {
        "value": f"sqlite:///{tmp_path}/from-file.db",
        "from": "file",
        "source": "tracker.toml",
    }
    assert rows["TRACKER_MARKETS"] == {"value": "btcusd-perp", "from": "flag", "source": "--markets"}
    assert rows["TRACKER_RECONCILE_INTERVAL"] == {
        "value": "30.0",
        "from": "env",
        "source": "TRACKER_RECONCILE_INTERVAL",
    }  # env over file
    assert rows["BITSTAMP_API_URL"] == {"value": "https://www.bitstamp.net/api/v2/", "from": "default"}
    assert rows["BITSTAMP_API_KEY"] == {"value": "keyA…***", "from": "env", "source": "BITSTAMP_API_KEY"}
    assert rows["BITSTAMP_API_SECRET"] == {"value": "***", "from": "file", "source": str(secret_file)}

    table = show(tmp_path, env)
    assert table.returncode == 0, table.stderr
    assert "TRACKER_MARKETS" in table.stdout and "(env)" in table.stdout
    assert "(file tracker.toml)" in table.stdout
    assert f"(file {secret_file})" in table.stdout
    for output in (result.stdout + result.stderr, table.stdout + table.stderr):
        assert KEY not in output
        assert SECRET not in output


def test_password_in_the_database_url_is_hidden(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITSTAMP_", "TRACKER_"))}
    env["TRACKER_DB_URL"] = "postgresql://tracker:hunter22@db.example/tracker"
    result = show(tmp_path, env, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["TRACKER_DB_URL"]["value"] == "postgresql://tracker:***@db.example/tracker"
    assert "hunter22" not in result.stdout
    # The exchange's URLs too (they were shown as given).
    env.update(BITSTAMP_API_URL="https://u:hunter22@api.example/api/v2/", BITSTAMP_WS_URL="wss://u:hunter22@ws.example")
    result = show(tmp_path, env, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["BITSTAMP_API_URL"]["value"] == "https://u:***@api.example/api/v2/"
    assert json.loads(result.stdout)["BITSTAMP_WS_URL"]["value"] == "wss://u:***@ws.example"
    assert "hunter22" not in result.stdout


def test_the_flags_of_tracker_run_are_shown_as_flags(tmp_path: Path) -> None:
    # config show took only --db-url and --markets: what `tracker run --api-url ...` would use could not be shown.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITSTAMP_", "TRACKER_"))}
    env.update(BITSTAMP_API_URL="https://env.example/api/v2/")
    flags = ("--api-url", "http://10.1.2.3/api/v2/", "--ws-url", "ws://10.1.2.3", "--metrics-port", "9100")
    refused = show(tmp_path, env, *flags)
    assert refused.returncode == 2
    assert refused.stderr.startswith("tracker: error: --api-url uses unencrypted http:// to a non-loopback host")
    result = show(tmp_path, env, *flags, "--insecure", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows["BITSTAMP_API_URL"] == {"value": "http://10.1.2.3/api/v2/", "from": "flag", "source": "--api-url"}
    assert rows["BITSTAMP_WS_URL"] == {"value": "ws://10.1.2.3", "from": "flag", "source": "--ws-url"}
    assert rows["TRACKER_METRICS_PORT"] == {"value": "9100", "from": "flag", "source": "--metrics-port"}
    assert rows["insecure"] == {"value": "True", "from": "flag", "source": "--insecure"}


def test_a_secret_named_by_the_environment_is_labelled_with_its_file(tmp_path: Path) -> None:
    """Issue 14.6: a secret read from BITSTAMP_API_SECRET_FILE was labelled "(env)"; it comes from the file."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITSTAMP_", "TRACKER_"))}
    env["BITSTAMP_API_SECRET_FILE"] = str(secret_file)
    table = show(tmp_path, env)
    assert table.returncode == 0, table.stderr
    line = next(line for line in table.stdout.splitlines() if line.startswith("BITSTAMP_API_SECRET "))
    assert line.endswith(f"(file {secret_file})")
    assert SECRET not in table.stdout


def test_each_listed_account_is_shown_masked(tmp_path: Path) -> None:
    secrets = []
    for n in (1, 2):
        secret = tmp_path / f"secret{n}"
        secret.write_text(f"{SECRET}{n}\n")
        secret.chmod(0o600)
        secrets.append(secret)
    (tmp_path / "tracker.toml").write_text(
        f'[[accounts]]\napi_key = "{KEY}1"\napi_secret_file = "{secrets[0]}"\nmarkets = ["btcusd"]\n'
        f'[[accounts]]\napi_key = "{KEY}2"\napi_secret_file = "{secrets[1]}"\nsubaccounts = [7]\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITSTAMP_", "TRACKER_"))}
    text = show(tmp_path, env)
    assert text.returncode == 0, text.stderr
    lines = {line.split()[0]: line for line in text.stdout.splitlines()}
    assert "keyA…***" in lines["accounts[1].api_key"] and "[[accounts]] #1" in lines["accounts[1].api_key"]
    assert f"(file {secrets[1]})" in lines["accounts[2].api_secret"]
    assert "btcusd" in lines["accounts[1].markets"] and "accounts[2].markets" not in lines  # the shared one
    assert lines["accounts[2].subaccounts"].split()[1] == "7"
    data = json.loads(show(tmp_path, env, "--format", "json").stdout)
    assert data["accounts[1].api_secret"] == {"value": "***", "from": "file", "source": str(secrets[0])}
    assert SECRET not in text.stdout and KEY not in text.stdout
