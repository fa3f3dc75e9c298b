"""bench/soak.py's verdict on synthetic windows: each way a soak fails, and one that passes."""

from bench.soak import judge


def _windows(p99s: list[float], rss: list[float] | None = None, errors: int = 0) -> list[dict]:
    rss = rss or [100.0] * len(p99s)
    return [
        {
            "requests_per_s": 50.0,
            "errors": errors if i == 0 else 0,
            "p50_ms": 10.0,
            "p99_ms": p,
            "rss_mb": r,
        }
        for i, (p, r) in enumerate(zip(p99s, rss, strict=True))
    ]


def test_a_steady_soak_passes():
    ok, lines = judge(_windows([90, 40, 41, 40, 42, 41]))  # the first window is the warm-up
    assert ok, lines


def test_errors_memory_growth_and_a_doubled_p99_each_fail():
    assert not judge(_windows([40] * 6, errors=1))[0]
    assert not judge(_windows([40] * 6, rss=[100, 100, 100, 105, 108, 111]))[0]
    assert not judge(_windows([40, 40, 40, 60, 85, 90]))[0]


def test_fewer_than_six_windows_do_not_judge_the_p99():
    ok, lines = judge(_windows([40, 40, 40, 200, 400]))
    assert ok and "not judged" in lines[-1]
