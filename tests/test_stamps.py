"""Stage stamps: finished only when inputs match and artifacts are unchanged."""

from __future__ import annotations

from pathlib import Path

from tinyprec.stamps import inputs_hash, read_valid_stamp, write_stamp


def test_stamp_roundtrip_and_staleness(tmp_path: Path) -> None:
    art = tmp_path / "model" / "m.bin"
    art.parent.mkdir()
    art.write_bytes(b"abc")
    h = inputs_hash({"epochs": 3}, "0.1.0")
    stamp = write_stamp(tmp_path, "export", h, [art], {"arena": 100})
    again = read_valid_stamp(tmp_path, "export", h)
    assert again is not None and again.digest == stamp.digest and again.summary == {"arena": 100}
    # Other inputs: not valid.
    assert read_valid_stamp(tmp_path, "export", inputs_hash({"epochs": 4}, "0.1.0")) is None
    # An artifact changed after the stamp: not valid.
    art.write_bytes(b"abd")
    assert read_valid_stamp(tmp_path, "export", h) is None
    # Deleted: not valid.
    art.unlink()
    assert read_valid_stamp(tmp_path, "export", h) is None


def test_missing_or_corrupt_stamp_is_not_finished(tmp_path: Path) -> None:
    assert read_valid_stamp(tmp_path, "train", "x") is None
    (tmp_path / ".stages").mkdir()
    (tmp_path / ".stages" / "train.json").write_text("{not json")
    assert read_valid_stamp(tmp_path, "train", "x") is None
