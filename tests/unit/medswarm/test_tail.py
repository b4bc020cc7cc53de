import json
from pathlib import Path

from medswarm.web.tail import JsonlTail


def line(round_: int) -> bytes:
    return (json.dumps({"round": round_}) + "\n").encode()


def test_each_read_returns_only_what_was_appended(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    tail = JsonlTail(path)
    assert tail.read() == []  # not there yet
    path.write_bytes(line(1) + line(2))
    assert [r["round"] for r in tail.read()] == [1, 2]
    assert tail.read() == []
    with open(path, "ab") as f:
        f.write(line(3))
    assert [r["round"] for r in tail.read()] == [3]
    assert tail.offset == path.stat().st_size


def test_a_line_being_written_waits_for_its_end(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    whole = line(2)
    path.write_bytes(line(1) + whole[:7])
    tail = JsonlTail(path)
    assert [r["round"] for r in tail.read()] == [1]
    with open(path, "ab") as f:
        f.write(whole[7:-1])  # still no newline
    assert tail.read() == []
    with open(path, "ab") as f:
        f.write(b"\n")
    assert [r["round"] for r in tail.read()] == [2]


def test_a_torn_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(line(1) + b'{"round": 2, "tor\n' + line(3) + b"[1, 2]\n")
    assert [r["round"] for r in JsonlTail(path).read()] == [1, 3]


def test_a_replaced_or_shorter_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(line(1) + line(2) + line(3))
    tail = JsonlTail(path)
    assert len(tail.read()) == 3 and not tail.restarted
    path.write_bytes(line(1))  # truncated in place
    assert [r["round"] for r in tail.read()] == [1]
    assert tail.restarted
    other = tmp_path / "new.jsonl"
    other.write_bytes(line(7) + line(8) + line(9))
    other.replace(path)  # a new file under the name, longer than what was read
    assert [r["round"] for r in tail.read()] == [7, 8, 9]
    assert tail.restarted
