"""The answers files benchmarks write (--answers) and the comparison of two of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.answers import read_answers, write_answers
from benchmarks.compare_answers import main as compare

TOP_MATCH = {"song": "T3", "speed": 1.0}
ROWS = [
    {"key": ["b.wav"], "song": "T2", "song_offset_s": 12.5, "confidence": 0.99, "score": 40},
    {"key": ["a.wav"], "song": None, "song_offset_s": None, "confidence": None, "score": None},
    {
        "key": ["c.wav"],
        "song": "T3",
        "song_offset_s": np.float64(0.1) + np.float64(0.2),
        "confidence": 1.0,
        "score": np.int64(7),
        "matches": [dict(TOP_MATCH), {"song": "T9", "speed": 0.95}],
    },
]


def _write(path: Path, rows: list[dict]) -> Path:
    write_answers(path, "accuracy", rows)
    return path


def test_rows_are_sorted_by_key_and_read_back_exactly(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.jsonl", ROWS)
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["meta"]["benchmark"] == "accuracy"
    assert [json.loads(line)["key"] for line in lines[1:]] == [["a.wav"], ["b.wav"], ["c.wav"]]
    _, rows = read_answers(path)
    # Floats survive the round trip bit for bit; numpy scalars become plain numbers.
    assert rows['["c.wav"]']["song_offset_s"] == 0.1 + 0.2
    assert rows['["c.wav"]']["score"] == 7


def test_repeated_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="same key"):
        write_answers(tmp_path / "a.jsonl", "accuracy", [ROWS[0], dict(ROWS[0])])


def _changed(field: str, value: object, key: str = "c.wav") -> list[dict]:
    rows = [dict(r) for r in ROWS]
    for r in rows:
        if r["key"] == [key]:
            r[field] = value
    return rows


@pytest.mark.parametrize(
    ("rows", "exit_code", "says"),
    [
        (ROWS, 0, "3 answers compared, 0 differ"),
        (_changed("confidence", 1.0 - 1e-12), 0, "0 differ"),
        (_changed("confidence", 1.0 - 1e-6), 1, "confidence x1"),
        (_changed("song", "T4"), 1, "song x1"),
        (_changed("score", 8), 1, "score x1"),
        (_changed("song", "T2", key="a.wav"), 1, "song x1"),
        (_changed("matches", [dict(TOP_MATCH)]), 1, "matches[len] x1"),
        (
            _changed("matches", [dict(TOP_MATCH), {"song": "T8", "speed": 0.95}]),
            1,
            "matches.song x1",
        ),
        (ROWS[:2], 1, "1 only in A"),
    ],
)
def test_compare(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: list[dict], exit_code: int, says: str
) -> None:
    a = _write(tmp_path / "a.jsonl", ROWS)
    b = _write(tmp_path / "b.jsonl", rows)
    assert compare([str(a), str(b)]) == exit_code
    out = capsys.readouterr().out
    assert says in out
    assert out.rstrip().endswith("SAME" if exit_code == 0 else "DIFFERENT")


def test_answers_of_another_benchmark_are_not_compared(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.jsonl", ROWS)
    b = tmp_path / "b.jsonl"
    write_answers(b, "streams", ROWS)
    assert compare([str(a), str(b)]) == 2
    assert compare([str(a), str(tmp_path / "missing.jsonl")]) == 2
