"""Progress lines of the long-running commands: counts, rate, ETA, throttling."""

from config.progress import ProgressPrinter, progress_line


def test_a_line_in_progress_has_the_count_share_rate_and_eta():
    assert progress_line("members", 250, 1_000, 5.0) == (
        "  members: 250/1,000 (25%)  50/s  ETA 15s"
    )


def test_the_last_line_of_a_stage_has_its_total_time_and_rate():
    assert progress_line("members", 1_000, 1_000, 4.0) == (
        "  members: 1,000 done in 4.0s (250/s)"
    )


def test_no_rate_or_eta_before_anything_is_done():
    assert progress_line("members", 0, 1_000, 0.0) == "  members: 0/1,000 (0%)"


def test_a_step_without_a_count_reports_its_time():
    assert progress_line("commit", 0, 0, 2.5) == "  commit: done in 2.5s"


def test_the_printer_throttles_but_keeps_each_stages_first_and_last_line():
    now = [0.0]
    lines: list[str] = []
    printer = ProgressPrinter(lines.append, interval=1.0, clock=lambda: now[0])
    for done in range(0, 101, 10):  # 0.1 s apart: only the first and last print
        printer("load", done, 100)
        now[0] += 0.1
    printer("write", 0, 10)  # a new stage prints at once
    now[0] += 2.0
    printer("write", 6, 10)  # an interval later, prints
    assert lines == [
        "  load: 0/100 (0%)",
        "  load: 100 done in 1.0s (100/s)",
        "  write: 0/10 (0%)",
        "  write: 6/10 (60%)  3/s  ETA 1s",
    ]
