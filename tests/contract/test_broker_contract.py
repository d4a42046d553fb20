"""The broker contract, run against every broker (see conftest.BROKER_FACTORIES)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from stemrun.brokers.base import Broker, DeadLetter, Delivery, Message, QueueStats
from stemrun.clock import ManualClock

LEASE_S = 30.0


def msg(task_id: str, queue: str = "q", *, priority: int = 0, eta: float | None = None) -> Message:
    return Message(
        id=task_id, queue=queue, body=f"body-{task_id}".encode(), priority=priority, eta=eta
    )


def take(broker: Broker, queues: Sequence[str] = ("q",), limit: int = 100) -> list[Delivery]:
    return broker.fetch(list(queues), limit, consumer="c1", lease_s=LEASE_S)


def ids(deliveries: Sequence[Delivery]) -> list[str]:
    return [d.id for d in deliveries]


def dead(delivery: Delivery, at: float, reason: str = "max-retries-exhausted") -> DeadLetter:
    return DeadLetter(
        id=delivery.id,
        queue=delivery.queue,
        body=delivery.body,
        reason=reason,
        task="email.send",
        attempt=3,
        dead_at=at,
        error={"type": "ValueError", "message": "boom", "traceback": None},
    )


def test_publish_fetch_ack(broker: Broker) -> None:
    broker.publish([msg("a", priority=4)])
    [delivery] = take(broker)
    assert (delivery.id, delivery.queue, delivery.body) == ("a", "q", b"body-a")
    assert (delivery.priority, delivery.deliveries) == (4, 1)
    assert take(broker) == []
    assert broker.ack([delivery]) == [True]
    assert broker.stats(["q"])["q"] == QueueStats()
    assert broker.ack([delivery]) == [False]


def test_fetch_respects_limit(broker: Broker) -> None:
    broker.publish([msg(str(i)) for i in range(5)])
    assert len(take(broker, limit=2)) == 2
    assert len(take(broker, limit=2)) == 2
    assert len(take(broker, limit=2)) == 1


def test_earlier_queues_are_preferred(broker: Broker) -> None:
    broker.publish([msg("low1", "low"), msg("high1", "high", priority=0), msg("low2", "low")])
    broker.publish([msg("high2", "high")])
    assert ids(take(broker, ["high", "low"], limit=3)) == ["high1", "high2", "low1"]
    assert ids(take(broker, ["high", "low"])) == ["low2"]


def test_unlisted_queues_are_not_fetched(broker: Broker) -> None:
    broker.publish([msg("other", "other")])
    assert take(broker, ["q"]) == []


def test_higher_priority_first_then_fifo(broker: Broker) -> None:
    broker.publish([msg("p0", priority=0), msg("p5a", priority=5), msg("p9", priority=9)])
    broker.publish([msg("p5b", priority=5), msg("p1", priority=1)])
    assert ids(take(broker, limit=1)) == ["p9"]
    assert ids(take(broker, limit=2)) == ["p5a", "p5b"]
    assert ids(take(broker)) == ["p1", "p0"]


def test_one_batch_is_ordered_by_priority(broker: Broker) -> None:
    broker.publish([msg("p0", priority=0), msg("p9", priority=9), msg("p5", priority=5)])
    assert ids(take(broker)) == ["p9", "p5", "p0"]


def test_fifo_within_a_priority_across_fetches(broker: Broker) -> None:
    names = [f"m{i:02d}" for i in range(20)]
    broker.publish([msg(n) for n in names])
    got = ids(take(broker, limit=7)) + ids(take(broker, limit=7)) + ids(take(broker, limit=7))
    assert got == names


def test_delayed_message_invisible_until_due(broker: Broker, clock: ManualClock) -> None:
    broker.publish([msg("later", eta=clock.now() + 10), msg("past", eta=clock.now() - 1)])
    assert ids(take(broker)) == ["past"]
    assert broker.stats(["q"])["q"].delayed == 1
    clock.advance(9.9)
    assert take(broker) == []
    clock.advance(0.1)
    assert ids(take(broker)) == ["later"]


def test_expired_lease_is_redelivered(broker: Broker, clock: ManualClock) -> None:
    broker.publish([msg("a")])
    [first] = broker.fetch(["q"], 1, consumer="c1", lease_s=5)
    clock.advance(4.9)
    assert take(broker) == []
    clock.advance(0.2)
    [second] = take(broker)
    assert second.id == "a"
    assert second.deliveries == 2
    assert second.receipt != first.receipt


def test_stale_receipt_changes_nothing(broker: Broker, clock: ManualClock) -> None:
    broker.publish([msg("a")])
    [stale] = broker.fetch(["q"], 1, consumer="c1", lease_s=5)
    clock.advance(6)
    [fresh] = take(broker)
    assert broker.ack([stale]) == [False]
    assert broker.extend([stale], 60) == [False]
    assert broker.requeue(stale, b"retry", None) is False
    assert broker.dead_letter(stale, dead(stale, clock.now())) is False
    assert broker.stats(["q"])["q"] == QueueStats(in_flight=1)
    assert broker.dead_letters() == []
    assert broker.ack([stale, fresh]) == [False, True]


def test_lapsed_lease_not_taken_over_can_still_ack(broker: Broker, clock: ManualClock) -> None:
    broker.publish([msg("a")])
    [delivery] = broker.fetch(["q"], 1, consumer="c1", lease_s=5)
    clock.advance(6)
    assert broker.ack([delivery]) == [True]
    assert take(broker) == []


def test_extend_keeps_the_lease(broker: Broker, clock: ManualClock) -> None:
    broker.publish([msg("a"), msg("b")])
    first = broker.fetch(["q"], 2, consumer="c1", lease_s=5)
    clock.advance(4)
    assert broker.extend(first[:1], 10) == [True]
    clock.advance(5)  # past the original expiry
    assert ids(take(broker)) == ["b"]
    clock.advance(5.1)  # past the extended one
    [again] = take(broker)
    assert (again.id, again.deliveries) == ("a", 2)


def test_requeue_with_eta(broker: Broker, clock: ManualClock) -> None:
    broker.publish([msg("a")])
    [delivery] = take(broker)
    assert broker.requeue(delivery, b"retry-body", clock.now() + 30) is True
    assert broker.ack([delivery]) == [False]
    assert take(broker) == []
    assert broker.stats(["q"])["q"] == QueueStats(delayed=1)
    clock.advance(30)
    [retry] = take(broker)
    assert (retry.id, retry.body, retry.deliveries) == ("a", b"retry-body", 1)


def test_requeue_without_eta_is_due_now_behind_earlier_messages(broker: Broker) -> None:
    broker.publish([msg("a"), msg("b")])
    [first] = take(broker, limit=1)
    assert broker.requeue(first, b"again", None) is True
    assert ids(take(broker)) == ["b", "a"]


def test_dead_letter_list_get_replay(broker: Broker, clock: ManualClock) -> None:
    broker.publish([msg("a", "q", priority=7), msg("b", "other")])
    [a] = take(broker, ["q"])
    [b] = take(broker, ["other"])
    assert broker.dead_letter(a, dead(a, clock.now())) is True
    clock.advance(1)
    assert broker.dead_letter(b, dead(b, clock.now(), reason="decode-error")) is True
    assert take(broker, ["q", "other"]) == []
    assert [d.id for d in broker.dead_letters()] == ["a", "b"]
    assert [d.id for d in broker.dead_letters("other")] == ["b"]
    got = broker.dead_letter_get("a")
    assert got == dead(a, clock.now() - 1)
    assert broker.dead_letter_get("missing") is None
    assert broker.stats(["q", "other"])["q"].dead == 1

    assert broker.replay("a", b"replayed", None) is True
    assert broker.replay("a", b"replayed", None) is False
    assert broker.dead_letter_get("a") is None
    assert [d.id for d in broker.dead_letters()] == ["b"]
    [replayed] = take(broker, ["q"])
    assert (replayed.id, replayed.body, replayed.priority) == ("a", b"replayed", 7)
    assert replayed.deliveries == 1


def test_replay_with_eta(broker: Broker, clock: ManualClock) -> None:
    broker.publish([msg("a")])
    [a] = take(broker)
    broker.dead_letter(a, dead(a, clock.now()))
    assert broker.replay("a", b"later", clock.now() + 5) is True
    assert take(broker) == []
    clock.advance(5)
    assert ids(take(broker)) == ["a"]


def test_later_dead_letter_of_same_id_replaces_earlier(broker: Broker, clock: ManualClock) -> None:
    broker.publish([msg("a"), msg("z")])
    a, z = take(broker)
    broker.dead_letter(a, dead(a, clock.now(), reason="first"))
    clock.advance(1)
    broker.dead_letter(z, dead(z, clock.now()))
    broker.replay("a", b"v2", None)
    [a2] = take(broker)
    clock.advance(1)
    broker.dead_letter(a2, dead(a2, clock.now(), reason="second"))
    letters = broker.dead_letters()
    assert [(d.id, d.reason) for d in letters] == [("z", "max-retries-exhausted"), ("a", "second")]


def test_dead_letters_oldest_first_with_limit(broker: Broker, clock: ManualClock) -> None:
    broker.publish([msg(str(i)) for i in range(5)])
    for delivery in take(broker):
        broker.dead_letter(delivery, dead(delivery, clock.now()))
        clock.advance(1)
    assert [d.id for d in broker.dead_letters(limit=3)] == ["0", "1", "2"]
    assert [d.id for d in broker.dead_letters("q", limit=2)] == ["0", "1"]


def test_purge_dead_letters(broker: Broker, clock: ManualClock) -> None:
    broker.publish([msg("a", "q"), msg("b", "q"), msg("c", "other")])
    for delivery in take(broker, ["q", "other"]):
        broker.dead_letter(delivery, dead(delivery, clock.now()))
    assert broker.purge_dead_letters("q") == 2
    assert [d.id for d in broker.dead_letters()] == ["c"]
    assert broker.purge_dead_letters() == 1
    assert broker.dead_letters() == []
    assert broker.replay("c", b"x", None) is False


def test_delete_dead_letters_by_id(broker: Broker, clock: ManualClock) -> None:
    broker.publish([msg("a", "q"), msg("b", "other"), msg("c", "q")])
    for delivery in take(broker, ["q", "other"]):
        broker.dead_letter(delivery, dead(delivery, clock.now()))
    assert broker.delete_dead_letters(["a", "b", "missing", "a"]) == 2
    assert [d.id for d in broker.dead_letters()] == ["c"]
    assert [d.id for d in broker.dead_letters("q")] == ["c"]
    assert broker.dead_letters("other") == []
    assert broker.dead_letter_get("a") is None
    assert broker.stats(["q", "other"])["other"].dead == 0
    assert broker.delete_dead_letters(["missing"]) == 0
    assert broker.delete_dead_letters([]) == 0
    assert broker.purge_dead_letters() == 1


def test_stats_counts(broker: Broker, clock: ManualClock) -> None:
    broker.publish([msg("due1"), msg("due2"), msg("lease1"), msg("lease2")])
    broker.publish([msg("late", eta=clock.now() + 100), msg("x", "other")])
    for d in broker.fetch(["q"], 2, consumer="c", lease_s=10):
        broker.dead_letter(d, dead(d, clock.now()))
    broker.fetch(["q"], 1, consumer="c", lease_s=10)
    broker.fetch(["q"], 1, consumer="c", lease_s=50)
    stats = broker.stats(["q", "other", "empty"])
    assert stats["q"] == QueueStats(pending=0, delayed=1, in_flight=2, dead=2)
    assert stats["other"] == QueueStats(pending=1)
    assert stats["empty"] == QueueStats()
    clock.advance(20)  # one lease lapsed: pending again
    assert broker.stats(["q"])["q"] == QueueStats(pending=1, delayed=1, in_flight=1, dead=2)


def test_two_consumers_never_share_a_message(broker_opener: Callable[[], Broker]) -> None:
    producer, consumers = broker_opener(), [broker_opener(), broker_opener()]
    total = 600
    producer.publish([msg(f"m{i}") for i in range(total)])
    got: list[list[str]] = [[], []]
    start = threading.Barrier(2)

    def consume(index: int) -> None:
        start.wait()
        while batch := consumers[index].fetch(["q"], 7, consumer=f"c{index}", lease_s=LEASE_S):
            got[index].extend(ids(batch))
            assert all(consumers[index].ack(batch))

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = got[0] + got[1]
    assert len(everything) == total
    assert set(everything) == {f"m{i}" for i in range(total)}


def test_blocking_fetch_wakes_on_publish(broker_opener: Callable[[], Broker]) -> None:
    consumer, producer = broker_opener(), broker_opener()
    assert consumer.fetch(["q"], 1, consumer="c", lease_s=LEASE_S, block_s=0.05) == []
    timer = threading.Timer(0.05, producer.publish, args=([msg("a")],))
    timer.start()
    try:
        got = consumer.fetch(["q"], 1, consumer="c", lease_s=LEASE_S, block_s=10)
    finally:
        timer.join()
    assert ids(got) == ["a"]


def test_blocking_fetch_wakes_when_a_delayed_message_is_due(
    broker: Broker, clock: ManualClock
) -> None:
    broker.publish([msg("later", eta=clock.now() + 60)])
    timer = threading.Timer(0.05, clock.advance, args=(60,))
    timer.start()
    try:
        got = broker.fetch(["q"], 1, consumer="c", lease_s=LEASE_S, block_s=10)
    finally:
        timer.join()
    assert ids(got) == ["later"]


def test_blocking_fetch_gives_up_after_block_s(broker: Broker) -> None:
    broker.publish([msg("elsewhere", "other")])
    assert broker.fetch(["q"], 1, consumer="c", lease_s=LEASE_S, block_s=0.05) == []


def test_fetch_acknowledges_what_it_is_given_first(broker: Broker) -> None:
    broker.publish([Message(id="a", queue="q", body=b"A"), Message(id="b", queue="q", body=b"B")])
    [first] = broker.fetch(["q"], 1, consumer="c", lease_s=30)
    [second] = broker.fetch(["q"], 1, consumer="c", lease_s=30, ack=[first])
    assert second.id != first.id
    # The acknowledged message is gone: a stale second ack of it changes nothing.
    assert broker.ack([first]) == [False]
    assert broker.ack([second]) == [True]
