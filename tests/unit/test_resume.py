"""Resume rules: sequence numbers, duplicate detection, what a reconnecting client gets."""

from __future__ import annotations

from sidecar.core.resume import ResumePlan, Sequencer, plan_resume, replay_is_whole


def test_outbound_messages_are_numbered_from_one_and_a_restored_counter_goes_on() -> None:
    fresh = Sequencer()
    assert [fresh.assign() for _ in range(3)] == [1, 2, 3]
    assert fresh.last_seq == 3
    restored = Sequencer(next_seq=41)
    assert restored.last_seq == 40 and restored.assign() == 41


def test_a_client_message_seen_before_is_refused_and_unnumbered_ones_always_pass() -> None:
    sequencer = Sequencer()
    assert [sequencer.accept_client(cseq) for cseq in (1, 2, 2, 1, 3)] == [
        True,
        True,
        False,
        False,
        True,
    ]
    assert sequencer.accept_client(0) and sequencer.accept_client(0)  # not numbered
    assert sequencer.last_cseq == 3
    assert sequencer.accept_client(7) and not sequencer.accept_client(5)  # a gap is fine


def test_a_client_behind_gets_exactly_what_came_after_its_last_seq() -> None:
    plan = plan_resume(client_last_seq=4, first_kept=2, last_sent=9)
    assert plan == ResumePlan(4, 9, resync=False) and plan.replays


def test_a_client_up_to_date_gets_nothing_and_no_resync() -> None:
    plan = plan_resume(client_last_seq=9, first_kept=1, last_sent=9)
    assert plan == ResumePlan(9, 9, resync=False) and not plan.replays
    assert plan_resume(0, None, 0) == ResumePlan(0, 0, resync=False)  # nothing ever sent


def test_a_gap_that_left_the_window_means_resync() -> None:
    assert plan_resume(client_last_seq=2, first_kept=5, last_sent=9).resync
    assert plan_resume(client_last_seq=2, first_kept=None, last_sent=9).resync  # all trimmed
    # the oldest kept is the very next one: still whole
    assert plan_resume(client_last_seq=4, first_kept=5, last_sent=9) == ResumePlan(4, 9, False)


def test_a_client_claiming_more_than_was_sent_is_told_to_resync() -> None:
    plan = plan_resume(client_last_seq=12, first_kept=1, last_sent=9)
    assert plan.resync and not plan.replays


def test_a_replay_with_a_hole_is_not_whole() -> None:
    plan = ResumePlan(4, 8, resync=False)
    assert replay_is_whole(plan, [5, 6, 7, 8])
    assert not replay_is_whole(plan, [5, 7, 8])  # 6 lost (a failover, an outage)
    assert not replay_is_whole(plan, [5, 6, 7])  # the newest lost
    assert not replay_is_whole(plan, [6, 7, 8])  # the oldest trimmed meanwhile
    assert not replay_is_whole(plan, [])
    assert replay_is_whole(ResumePlan(8, 8, resync=False), [])  # nothing to replay
