"""The alert store: idempotent adds (replays raise nothing twice), filters, pages, the delivery outbox."""

from __future__ import annotations

from pathlib import Path

from service_kit import T0, make_alert

from sentinelle.respond import AlertStore


def test_add_is_idempotent_by_alert_id(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "alerts.db")
    a = make_alert(1)
    assert store.add(a, ["webhook"]) == 1
    assert store.add(a, ["webhook"]) is None  # a replayed alert is recognised
    assert store.count() == {"high": 1}
    assert [n for n, _, _ in store.pending("webhook")] == [1]
    store.close()
    again = AlertStore(tmp_path / "alerts.db")  # survives a restart
    assert again.add(a) is None
    assert again.get(a.id) is not None and again.get(a.id).alert == a  # type: ignore[union-attr]


def test_latest_version_per_episode_and_filters(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "alerts.db")
    store.add(make_alert(1, severity="medium", version=1, time_ms=T0))
    store.add(make_alert(1, severity="high", version=2, time_ms=T0 + 60_000))
    store.add(make_alert(2, severity="critical", kind="decoy", account="x.y", time_ms=T0 + 120_000))
    store.add(make_alert(3, severity="low", kind="care", account="z", time_ms=T0 + 180_000))
    latest = store.query()
    assert [s.alert.id for s in latest.items] == [make_alert(3).id, make_alert(2).id, make_alert(1, version=2).id]
    every = store.query(latest=False)
    assert len(every.items) == 4
    assert [s.alert.id for s in store.query(severity=["critical", "low"]).items] == [make_alert(3).id,
                                                                                    make_alert(2).id]
    assert [s.alert.kind for s in store.query(min_severity="high").items] == ["decoy", "volume"]
    assert [s.alert.account for s in store.query(kind=["decoy"]).items] == ["x.y"]
    assert [s.alert.account for s in store.query(account="z").items] == ["z"]
    assert len(store.query(since_ms=T0 + 120_000).items) == 2
    assert len(store.query(until_ms=T0 + 120_000).items) == 1
    assert [s.alert.version for s in store.query(episode=make_alert(1).episode, latest=False).items] == [2, 1]


def test_pages_follow_the_cursor_without_gaps(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "alerts.db")
    for i in range(7):
        store.add(make_alert(i + 1))
    seen: list[str] = []
    cursor = None
    while True:
        page = store.query(limit=3, cursor=cursor)
        seen += [s.alert.id for s in page.items]
        if page.next is None:
            break
        cursor = page.next
    assert seen == [make_alert(i).id for i in range(7, 0, -1)]


def test_outbox_states(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "alerts.db")
    n = store.add(make_alert(1), ["webhook", "email"])
    assert n is not None
    store.mark(n, "webhook", "done", 1)
    store.mark(n, "email", "dead", 7, "550 no such user")
    assert store.pending("webhook") == [] and store.pending("email") == []
    assert store.deliveries(n) == {"webhook": ("done", 1, ""), "email": ("dead", 7, "550 no such user")}
