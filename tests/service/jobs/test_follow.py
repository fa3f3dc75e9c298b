"""jobs/follow.py: a run's event files read from where reading stopped, Ray Train's lines,
and the error of a failed run."""

from service.jobs.follow import failure_reason, ray_messages, read_new, without_paths
from training import events


def _line(event: events._Event, prefix: str = "") -> str:
    return f"{prefix}{events.MARKER}: {event.model_dump_json()}}}\n"


def test_event_files_are_read_on_from_their_offsets_whole_lines_only(tmp_path):
    progress = events.Progress(
        step=2, total_steps=4, epoch=0, loss=0.5, learning_rate=1e-4, samples_per_s=1.0,
        tokens_per_s=9.0, tokens=64, eta_s=3, at=1.0,
    )  # fmt: skip
    hello = _line(events.Message(message="hello", at=2.0))
    (tmp_path / "11.jsonl").write_text(_line(progress) + hello[:20])
    (tmp_path / "12.jsonl").write_text("not an event\n")
    first, offsets = read_new(tmp_path, {})
    assert first == [progress] and offsets["12.jsonl"] == len("not an event\n")
    with (tmp_path / "11.jsonl").open("a") as f:
        f.write(hello[20:])
    second, offsets2 = read_new(tmp_path, offsets)
    assert [e.message for e in second] == ["hello"]  # the half line, once it was whole
    assert read_new(tmp_path, offsets2) == ([], offsets2)


def test_ray_trains_lines_become_messages():
    log = (
        "(TrainController pid=2) Requesting resources: {'CPU': 1.0} * 1\n"
        "some line of a library\n"
        "[FailurePolicy] RETRY the group\n"
    )
    got = ray_messages(log)
    assert got[0].message == "Waiting for training resources: {'CPU': 1.0} * 1"
    assert got[1].level == "warn" and len(got) == 2


def test_a_refused_input_is_the_runs_failure_event_and_a_crash_its_last_exception(tmp_path):
    refused = events.Failure(
        code="invalid_training_file", message="bad.jsonl: 1 problem:\n  line 3"
    )
    (tmp_path / "9.jsonl").write_text(_line(refused))
    assert failure_reason(tmp_path, "", events.EXIT_BAD_INPUT) == {
        "code": "invalid_training_file",
        "message": "bad.jsonl: 1 problem:\n  line 3",
        "param": "training_file",
    }
    crash = "Traceback (most recent call last):\n  File x\nFileNotFoundError: no '/srv/home/runs/ftjob-1/inputs/init'\n"
    error = failure_reason(tmp_path / "none", crash, 1)
    assert error["code"] == "training_failed"
    # no server path in what a client sees: the path is cut to its last part
    assert error["message"] == "training failed (exit code 1): FileNotFoundError: no 'init'"
    assert without_paths("at /a/b/c.py line 3") == "at c.py line 3"
