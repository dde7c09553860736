"""The socket's connection slots as bookkeeping (the server's behaviour with real peers:
tests/integration/test_api_slots.py)."""

from __future__ import annotations

from autogit.agent.api.admission import REFUSING_MAX, REFUSING_PER_UID, ConnectionSlots, Verdict
from autogit.agent.api.auth import Access


def test_per_uid_quota_then_general_cap_then_admin_reserve():
    slots = ConnectionSlots(max_connections=4, per_uid=2, admin_reserve=1)
    assert [slots.admit(1001, Access.READ).verdict for _ in range(3)] == [Verdict.ADMITTED, Verdict.ADMITTED, Verdict.UID_QUOTA]
    assert [slots.admit(1002, Access.READ).verdict for _ in range(2)] == [Verdict.ADMITTED, Verdict.ADMITTED]
    assert slots.admit(1003, Access.READ).verdict is Verdict.FULL  # 4 held: the general cap
    assert slots.admit(0, Access.ADMIN).verdict is Verdict.ADMITTED  # the reserve
    assert slots.admit(1004, Access.ADMIN).verdict is Verdict.FULL  # the reserve is used up
    assert slots.held == 5


def test_no_access_never_holds_a_slot_and_release_gives_back_what_admit_took():
    slots = ConnectionSlots(max_connections=1, per_uid=1, admin_reserve=0)
    refused = slots.admit(2000, Access.NONE)
    assert (refused.verdict, refused.polite, slots.held, slots.refusing) == (Verdict.FORBIDDEN, True, 0, 1)
    admitted = slots.admit(1001, Access.READ)
    assert admitted.verdict is Verdict.ADMITTED
    slots.release(refused)
    slots.release(admitted)
    assert (slots.held, slots.refusing) == (0, 0)


def test_refusals_are_answered_only_while_few_are_pending():
    slots = ConnectionSlots(max_connections=1, per_uid=1, admin_reserve=0)
    one_uid = [slots.admit(2000, Access.NONE) for _ in range(REFUSING_PER_UID + 3)]
    assert [a.polite for a in one_uid] == [True] * REFUSING_PER_UID + [False] * 3
    assert slots.refusing == REFUSING_PER_UID  # the unanswered ones hold nothing
    slots.release(one_uid[-1])  # an unanswered one: nothing to give back
    assert slots.refusing == REFUSING_PER_UID
    slots.release(one_uid[0])
    assert slots.admit(2000, Access.NONE).polite  # its place is free again
    many = [slots.admit(3000 + n, Access.NONE) for n in range(REFUSING_MAX)]
    assert sum(a.polite for a in many) == REFUSING_MAX - REFUSING_PER_UID  # the pool is shared
    assert slots.refusing == REFUSING_MAX
