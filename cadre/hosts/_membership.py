"""Who the workers are, and which partition each one should own.

Membership over the broker: every worker has a random member id and announces itself every
`HEARTBEAT` seconds on its name's fanout exchange (``<name>.members``); each worker hears
every announcement on an exclusive queue of its own, and counts as members the workers
heard within `LEASE` seconds. A worker that stops gracefully announces that it leaves; one
that crashes loses its exclusive queue with its connection, which `Membership.present`
asks the broker about before a partition is handed to it.

Assignment (`assign`) is a pure function of the partitions and the members, so every
worker computes the same one from the same members: a worker pinned to a share
(``CADRE_WORKER_INDEX`` / ``CADRE_WORKER_COUNT``, count > 1) owns the partitions
``p % count == index``; the other partitions go to the members by rendezvous
(highest-random-weight) hashing with a cap of ``ceil(partitions / members)`` each, so the
shares are even and a join or a leave moves about a member's share, not everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("cadre.worker")

HEARTBEAT = 0.5
"""Seconds between two announcements of a worker."""
LEASE = 3.0
"""A member not heard for this many seconds is gone."""


@dataclass(frozen=True)
class Member:
    """A worker: its random id and, if pinned, its share (``index`` of ``count``)."""

    id: str
    index: int | None = None
    count: int | None = None

    @classmethod
    def new(cls, index: int = 0, count: int = 1) -> Member:
        """A fresh member id; pinned only for a share of more than one (count > 1)."""
        pinned = count > 1
        return cls(uuid.uuid4().hex, index if pinned else None, count if pinned else None)

    def pins(self, partition: int) -> bool:
        """Whether this member's share holds `partition`."""
        return self.count is not None and partition % self.count == self.index

    def to_bytes(self, *, leaving: bool = False) -> bytes:
        """The announcement."""
        return json.dumps(
            {"id": self.id, "index": self.index, "count": self.count, "leaving": leaving}
        ).encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> tuple[Member, bool] | None:
        """An announcement's member and whether it leaves; None if unreadable."""
        try:
            data = json.loads(body)
            index, count = data.get("index"), data.get("count")
            member = cls(
                str(data["id"]),
                int(index) if index is not None else None,
                int(count) if count is not None else None,
            )
            return member, bool(data.get("leaving", False))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def _weight(partition: int, member: str) -> int:
    digest = hashlib.blake2b(f"{partition}:{member}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign(partitions: int, members: Iterable[Member]) -> dict[int, str]:
    """Each partition's owner (a member id); empty without members.

    Pinned partitions go to their pinned member (the highest weight among several claiming
    one); every other partition, in order of decreasing weight of its (partition, member)
    pairs, to the member of the pair unless that member has ``ceil(partitions / members)``
    already."""
    ranked = sorted(set(members), key=lambda m: m.id)
    if not ranked:
        return {}
    owners: dict[int, str] = {}
    load: Counter[str] = Counter()
    for p in range(partitions):
        pinned = [m for m in ranked if m.pins(p)]
        if pinned:
            owner = max(pinned, key=lambda m: _weight(p, m.id)).id
            owners[p] = owner
            load[owner] += 1
    cap = -(-partitions // len(ranked))
    pairs = sorted(
        ((_weight(p, m.id), p, m.id) for p in range(partitions) if p not in owners for m in ranked),
        reverse=True,
    )
    for _, p, member in pairs:
        if p not in owners and load[member] < cap:
            owners[p] = member
            load[member] += 1
    return owners


class Roster(Protocol):
    """What membership needs of the broker (`RabbitMQTransport`)."""

    async def join_members(self, member: str, on_message: Callable[[bytes], None]) -> None:
        """Hear every announcement, on a queue that goes with this process's connection."""
        ...

    async def announce(self, body: bytes) -> None:
        """Send an announcement to every member."""
        ...

    async def member_present(self, member: str) -> bool:
        """Whether `member`'s queue (so its connection) is still there."""
        ...


class Membership:
    """The members this worker has heard within the lease, itself included."""

    def __init__(
        self,
        roster: Roster,
        me: Member,
        *,
        heartbeat: float = HEARTBEAT,
        lease: float = LEASE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._roster, self.me = roster, me
        self.heartbeat, self.lease, self._clock = heartbeat, lease, clock
        self._heard: dict[str, tuple[Member, float, float]] = {}  # id -> (member, first, last)
        self._started = clock()
        self._left = False
        self.changed = asyncio.Event()

    async def start(self) -> None:
        """Listen, then announce this worker."""
        self._started = self._clock()
        await self._roster.join_members(self.me.id, self.hear)
        await self._roster.announce(self.me.to_bytes())

    async def run(self) -> None:
        """Announce this worker every heartbeat until cancelled or it leaves; a broker away
        skips one."""
        while True:
            await asyncio.sleep(self.heartbeat)
            if self._left:  # a heartbeat after "leaving" would make it a member again
                return
            with contextlib.suppress(Exception):
                await self._roster.announce(self.me.to_bytes())
            self._expire()

    async def leave(self) -> None:
        """Tell the others this worker leaves (they reassign its partitions at once). No
        heartbeat starts after this."""
        self._left = True
        with contextlib.suppress(Exception):
            await self._roster.announce(self.me.to_bytes(leaving=True))

    def hear(self, body: bytes) -> None:
        """An announcement arrived."""
        heard = Member.from_bytes(body)
        if heard is None or heard[0].id == self.me.id:
            return
        member, leaving = heard
        if leaving:
            if self._heard.pop(member.id, None) is not None:
                log.info("member %s: member %s leaves", self.me.id[:8], member.id[:8])
                self.changed.set()
            return
        now = self._clock()
        known = self._heard.get(member.id)
        self._heard[member.id] = (member, known[1] if known else now, now)
        if known is None:
            log.info("member %s: member %s joins", self.me.id[:8], member.id[:8])
            self.changed.set()

    def _expire(self) -> None:
        now = self._clock()
        for member_id, (_, _, last) in list(self._heard.items()):
            if now - last > self.lease:
                self.drop(member_id, "not heard for %.1f s" % (now - last))

    def drop(self, member_id: str, why: str) -> None:
        """Forget a member (it is gone)."""
        if self._heard.pop(member_id, None) is not None:
            log.info("member %s: member %s is gone: %s", self.me.id[:8], member_id[:8], why)
            self.changed.set()

    def live(self) -> list[Member]:
        """This worker and the others heard within the lease."""
        now = self._clock()
        others = [m for m, _, last in self._heard.values() if now - last <= self.lease]
        return [self.me, *others]

    def age(self, member_id: str) -> float:
        """Seconds since `member_id` was first heard (0 if not heard)."""
        if member_id == self.me.id:
            return self._clock() - self._started
        known = self._heard.get(member_id)
        return self._clock() - known[1] if known else 0.0

    async def present(self, member_id: str) -> bool:
        """Whether the member's connection is still there (a broker away: assume so)."""
        try:
            return await self._roster.member_present(member_id)
        except Exception:
            return True

    def owners(self, partitions: int) -> dict[int, str]:
        """The assignment over the live members."""
        return assign(partitions, self.live())
