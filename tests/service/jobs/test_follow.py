"""jobs/follow.py: a job's log read into events, and the error of a failed run."""

from service.jobs.follow import failure_reason, read_lines
from training import events


def _line(event: events._Event, prefix: str = "") -> str:
    return f"{prefix}{events.MARKER}: {event.model_dump_json()}}}\n"


def test_our_events_and_ray_trains_lines_are_read_in_order():
    progress = events.Progress(
        step=2, total_steps=4, epoch=0, loss=0.5, learning_rate=1e-4, samples_per_s=1.0,
        tokens_per_s=9.0, tokens=64, eta_s=3,
    )  # fmt: skip
    log = (
        "(TrainController pid=2) Requesting resources: {'CPU': 1.0} * 1\n"
        + _line(progress, "(RayTrainWorker pid=1) ")
        + _line(progress, "(RayTrainWorker pid=1) ").rstrip("\n")
        + " [repeated 2x across cluster]\n"
        + "some line of a library\n"
        + "[FailurePolicy] RETRY the group\n"
    )
    got = read_lines(log)
    assert [type(e).__name__ for e in got] == ["Message", "Progress", "Progress", "Message"]
    assert got[0].message == "Waiting for training resources: {'CPU': 1.0} * 1"
    assert got[1] == progress and got[3].level == "warn"


def test_a_refused_input_is_the_runs_failure_event_and_a_crash_its_last_exception():
    refused = events.Failure(
        code="invalid_training_file", message="bad.jsonl: 1 problem:\n  line 3"
    )
    log = "Traceback (most recent call last):\n" + _line(refused)
    assert failure_reason(log, events.EXIT_BAD_INPUT) == {
        "code": "invalid_training_file",
        "message": "bad.jsonl: 1 problem:\n  line 3",
        "param": "training_file",
    }
    crash = "Traceback (most recent call last):\n  File x\nRuntimeError: the weights are gone\n"
    error = failure_reason(crash, 1)
    assert error["code"] == "training_failed"
    assert error["message"] == "training failed (exit code 1): RuntimeError: the weights are gone"
