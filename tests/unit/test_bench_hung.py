"""bench/hung.py's figures from recorded chats (the bench itself runs only by hand: python -m bench.hung)."""

from __future__ import annotations

from bench.hung_timeline import Chat, Plan, percentile, summarize

PLAN = Plan(rate=2, duration=10, hang_at=4, hang_for=2)


def test_the_plan_sends_open_loop_on_its_timeline() -> None:
    assert PLAN.chats == 20
    assert [PLAN.send_at(i) for i in (0, 1, 8)] == [0.0, 0.5, 4.0]


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile([], 0.5)) == (10.0, 19.0, None)


def test_outage_figures_count_only_the_chats_sent_during_the_hang() -> None:
    chats = [Chat(sent=1.0, latency=0.2, endpoint="70b"),
             Chat(sent=4.1, latency=3.0, endpoint="8b"),   # answered 3.1 s after the hang began
             Chat(sent=4.6, latency=1.0, endpoint="8b"),   # answered 1.6 s after it: the first
             Chat(sent=5.5, latency=None, error="all_endpoints_failed"),
             Chat(sent=7.0, latency=0.2, endpoint="70b")]
    figures = summarize(chats, PLAN, hang_started=4.0, hung_calls=3)
    assert figures["completed"] == 4 and figures["failed"] == {"all_endpoints_failed": 1}
    assert figures["outage_chats"] == 3
    assert (figures["outage_p50_s"], figures["outage_p95_s"]) == (1.0, 3.0)
    assert figures["first_8b_answer_after_hang_s"] == 1.6
    assert figures["answered_by"] == {"70b": 2, "8b": 2} and figures["calls_to_hung_endpoint"] == 3
