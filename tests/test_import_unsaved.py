"""``tracker db import-unsaved``: the frames a run saved in a side file (``spill``: a damaged database, or a stop
whose grace ran out in an outage) appended to the log once restored or back, with what the log holds already
skipped, the chain intact, and the file renamed so its quarantined frames are not taken twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_helpers import T0, entry, open_log

from tracker.cli import main
from tracker.domain.log import NewEntry, QuarantineItem
from tracker.runtime.writer import UnsavedFileError, load_spilled, spill

pytestmark = pytest.mark.timeout(60)


def _frames() -> list[NewEntry | QuarantineItem]:
    bad = QuarantineItem(kind="malformed", reason="not JSON", raw='{"ev', received_at=T0, account="1001", source="ws")
    return [entry(1), entry(2), bad, entry(3, payload='{"data":{"id":3,"note":"caf\u00e9 \\\\ \\"q\\""}}')]


def test_the_side_file_reads_back_what_spill_wrote(tmp_path: Path) -> None:
    frames = _frames()
    path = spill([(f, 0.0) for f in frames], tmp_path / "t.db.unsaved-1.jsonl")
    assert load_spilled(path) == frames


@pytest.mark.parametrize(
    "line",
    [
        '{"kind": "entry", "account": "1001", "received_at": "2026-12-07T10:00:00+00:00"}\n',
        "not json\n",
        '{"kind": "other", "received_at": "2026-12-07T10:00:00+00:00"}\n',
        None,
    ],
    ids=["missing-fields", "not-json", "unknown-kind", "cut-short"],
)
def test_a_line_spill_did_not_write_refuses_the_file(tmp_path: Path, line: str | None) -> None:
    path = spill([(f, 0.0) for f in _frames()], tmp_path / "t.jsonl")
    text = path.read_text(encoding="utf-8")
    path.write_text(text[:-1] if line is None else text + line, encoding="utf-8")
    number = 4 if line is None else 5
    with pytest.raises(UnsavedFileError, match=rf"t\.jsonl line {number}: not a frame tracker saved"):
        load_spilled(path)


def test_import_appends_what_the_log_lacks_once(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_log(db_url) as log:
        log.append([entry(1)])  # committed after all before the outage ended the run
    path = spill([(f, 0.0) for f in _frames()], tmp_path / "run.unsaved-20261207T100000Z.jsonl")
    assert main(["db", "import-unsaved", "--db-url", db_url, str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 frame(s): 2 appended, 1 in the log already, 1 quarantined (0 conflicting with the log)" in out, out
    done = path.with_name(path.name + ".imported")
    assert done.exists() and not path.exists()
    with open_log(db_url) as log:
        keys = [e.dedup_key for page in log.iter_after(0) for e in page]
    assert keys == ["ws:order_created:1", "ws:order_created:2", "ws:order_created:3"]
    assert main(["verify", "--db-url", db_url]) == 0
    capsys.readouterr()
    # Imported already: refused by its name; and a copy under the old name adds no entry twice.
    assert main(["db", "import-unsaved", "--db-url", db_url, str(done)]) == 2
    assert "was imported already" in capsys.readouterr().err
    done.rename(path)
    assert main(["db", "import-unsaved", "--db-url", db_url, str(path)]) == 0
    assert "0 appended, 3 in the log already" in capsys.readouterr().out


def test_a_damaged_file_imports_nothing(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open_log(sqlite_url):
        pass
    path = spill([(f, 0.0) for f in _frames()], tmp_path / "run.jsonl")
    path.write_text(path.read_text(encoding="utf-8") + "garbage\n", encoding="utf-8")
    assert main(["db", "import-unsaved", "--db-url", sqlite_url, str(path)]) == 2
    err = capsys.readouterr().err
    assert "run.jsonl line 5: not a frame tracker saved" in err and "nothing imported" in err, err
    assert path.exists()
    with open_log(sqlite_url) as log:
        assert log.head() == 0
