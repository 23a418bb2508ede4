"""bench.memory's table: a column pair a run, a dash where a run lacks a process (an older
stack with more grammar workers), totals over what each run has."""

from bench.memory import table


def test_table_has_a_column_pair_a_run_and_dashes_where_a_process_is_missing():
    runs = {
        "abc1234": {"decode": {"rss": 564.4, "pss": 481.0}, "worker 1": {"rss": 294, "pss": 217}},
        "this tree": {"decode": {"rss": 300.2, "pss": 250.6}},
    }
    lines = table(runs).splitlines()
    assert (
        lines[0]
        == "| process | RSS MB abc1234 | PSS MB abc1234 | RSS MB this tree | PSS MB this tree |"
    )
    assert lines[2] == "| decode | 564 | 481 | 300 | 251 |"
    assert lines[3] == "| worker 1 | 294 | 217 | - | - |"
    assert lines[4] == "| **all** | **858** | **698** | **300** | **251** |"
