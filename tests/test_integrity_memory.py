"""``tracker run``'s start-up check of a SQLite file does not map the file into the process (its peak RSS stays its
own); ``tracker verify``'s check does, and the same measure sees it (so the measure can fail).

Each check runs in a fresh child process, which reads its own peak resident set (``VmHWM``, Linux) before and after
the check of a ~96 MB file of incompressible pages. Mapped pages count in a process's RSS once touched; pages read with
``read()`` stay in the kernel's page cache, outside it. Rules: local files only, an absolute timeout, no sleeps.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc (Linux)"),
]

FILE_MB = 96

CHILD = """
import json, sys
from tracker.store.engine import open_engine
from tracker.store.integrity import check_integrity

def peak_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

engine = open_engine("sqlite:///" + sys.argv[1])
with engine.connect() as conn:  # the engine's own set-up first: only the check is measured
    conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar_one()
before = peak_kib()
report = check_integrity(engine, quick=sys.argv[2] == "quick")
print(json.dumps({"ok": report.ok, "method": report.method, "grew_mb": (peak_kib() - before) / 1024}))
"""


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("integrity") / "big.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA page_size=8192")
        conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " INSERT INTO blobs (data) SELECT randomblob(4000) FROM n",
            (FILE_MB * 256,),
        )
        conn.commit()
    assert path.stat().st_size > FILE_MB * 2**20
    return path


def check_in_child(path: Path, kind: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), kind], capture_output=True, text=True, timeout=100, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_start_up_check_does_not_map_the_file(big_file: Path) -> None:
    result = check_in_child(big_file, "quick")
    assert result["ok"] is True and result["method"] == "SQLite quick_check"
    grew = result["grew_mb"]
    assert isinstance(grew, float) and grew < FILE_MB / 4, f"the quick check grew the peak RSS by {grew:.1f} MB"


def test_verifys_check_maps_it_and_the_measure_sees_that(big_file: Path) -> None:
    with closing(sqlite3.connect(big_file)) as conn:
        if not conn.execute("PRAGMA mmap_size=1048576").fetchone()[0]:  # the size in force: 0 without mmap support
            pytest.skip("this SQLite was built without memory-mapped I/O (SQLITE_MAX_MMAP_SIZE=0)")
    result = check_in_child(big_file, "full")
    assert result["ok"] is True and result["method"] == "SQLite integrity_check"
    grew = result["grew_mb"]
    assert isinstance(grew, float) and grew > FILE_MB / 2, f"integrity_check grew the peak RSS by {grew:.1f} MB"
