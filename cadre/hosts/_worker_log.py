"""What `cadre worker` says about itself: one line when it starts (what it serves), one
when it stops (what it finished), and one each when its broker connection is lost, when it
retries, and when the connection is restored. The broker client's own records (aio-pika,
aiormq: tracebacks, a line per closed channel) are kept below CRITICAL: these lines say the
same once."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from ..stores._postgres_admin import safe_dsn
from ..transports.rabbitmq import RECONNECT_FIRST, RECONNECT_MAX

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("cadre.worker")

BROKER_LOGGERS = ("aio_pika", "aiormq")


def configure_logging() -> None:
    """INFO lines on stderr unless the app configured logging itself; the broker client's
    own records only when CRITICAL."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    for name in BROKER_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _ranges(numbers: list[int]) -> str:
    return ",".join(map(str, numbers)) if numbers else "none"


def started(worker: Worker) -> None:
    """The start line: partitions, queues, store, broker, concurrency."""
    cfg = worker.config
    own = worker.own_partitions()
    others = [p for p in range(cfg.partitions) if p not in own]
    first, last = (worker.transport.queue_name(p) for p in (0, cfg.partitions - 1))
    queues = first if first == last else f"{first} .. {last}"
    standby = f" (standby for {_ranges(others)})" if others else ""
    log.info(
        "cadre worker %d of %d started (pid %d): partitions %s of %d%s, queues %s; store "
        "%s (tables %s*); broker %s; concurrency %d",
        cfg.worker_index,
        cfg.worker_count,
        os.getpid(),
        _ranges(own),
        cfg.partitions,
        standby,
        queues,
        safe_dsn(cfg.postgres_dsn),
        cfg.table_prefix,
        _safe_url(cfg.rabbitmq_url),
        cfg.concurrency,
    )


def stopped(worker: Worker, seconds: float) -> None:
    """The stop line: what the worker finished, and in how long."""
    log.info(
        "cadre worker %d of %d stopped after %.1f s: %d messages handled (%d delivered "
        "locally, %d in shared steps), %d outboxes relayed",
        worker.config.worker_index,
        worker.config.worker_count,
        seconds,
        worker.handled,
        worker.handled_local,
        worker.handled_together,
        worker.relayed,
    )


def _safe_url(url: str) -> str:
    return safe_dsn(url)


class ConnectionWatch:
    """Logs the broker connection's loss, the retrying and the restore, once each."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.lost_at: float | None = None

    def attach(self) -> None:
        """Listen to the transport's connection losses and restores."""
        self.worker.transport.watch(self.on_close, self.on_reconnect)

    def on_close(self, exc: BaseException | None = None) -> None:
        """The connection closed: lost (unless we are stopping), and retrying."""
        if self.worker.stopping or self.lost_at is not None:
            return
        self.lost_at = time.monotonic()
        reason = _reason(exc)
        url = _safe_url(self.worker.config.rabbitmq_url)
        log.warning("lost the connection to RabbitMQ at %s: %s", url, reason)
        log.warning(
            "retrying the connection to RabbitMQ every %.1f s at first, backing off to %.0f s; "
            "unacknowledged messages go back to their queues and are redelivered",
            RECONNECT_FIRST,
            RECONNECT_MAX,
        )

    def on_reconnect(self) -> None:
        """The connection is back (aio-pika restored the channels and the consumers)."""
        lost_at, self.lost_at = self.lost_at, None
        took = f" after {time.monotonic() - lost_at:.1f} s" if lost_at is not None else ""
        log.info("restored the connection to RabbitMQ%s; consuming again", took)


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "closed"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


async def logged(worker: Worker) -> None:
    """`worker.run()`, with the start line once it is connected and the connection watched."""
    await worker.run(on_connected=lambda: _connected(worker))


def _connected(worker: Worker) -> None:
    ConnectionWatch(worker).attach()
    started(worker)
