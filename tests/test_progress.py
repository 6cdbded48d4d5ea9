"""A long step shows where it is: ``rnnforge.core.progress`` (export's TensorFlow outputs, int8
calibration) and the ``bench load`` lines that say which configuration runs and the time left."""

from __future__ import annotations

from rnnforge.core.progress import Progress, eta_text


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_short_step_prints_nothing_and_a_long_one_prints_where_it_is():
    clock, lines = _Clock(), []
    quick = Progress("quick", 10, clock=clock, out=lines.append)
    for done in range(1, 11):
        clock.now += 0.1
        quick.update(done)
    quick.finish()
    assert lines == []
    slow = Progress("TensorFlow's outputs", 1000, clock=clock, out=lines.append)
    for done in range(250, 1001, 250):
        clock.now += 6.0
        slow.update(done)
    slow.finish()
    assert lines == [
        "  TensorFlow's outputs: 250/1000 examples after 6 s, about 18 s left",
        "  TensorFlow's outputs: 500/1000 examples after 12 s, about 12 s left",
        "  TensorFlow's outputs: 750/1000 examples after 18 s, about 6 s left",
        "  TensorFlow's outputs: 1000/1000 examples in 24 s",
    ]


def test_eta_text():
    assert eta_text(10.0, 0, 5) == "time left unknown"
    assert eta_text(10.0, 1, 5) == "about 40 s left"
    assert eta_text(60.0, 1, 5) == "about 4 min left"
    assert eta_text(10.0, 5, 5) == "about 0 s left"
