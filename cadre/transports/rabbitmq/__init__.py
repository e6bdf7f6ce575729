"""The RabbitMQ transport (aio-pika): partitioned durable queues for self-hosted workers.

Topology, all durable, named after `name` (so apps and tests can share one broker):

    <name>              topic exchange for timers that are due: routing key ``d<ms>.p<i>``
    <name>.p<i>         partition queue i (i < partitions), bound with ``#.p<i>``,
                        x-single-active-consumer: one consumer at a time, others stand
                        by; with a delivery limit a quorum queue with x-delivery-limit
                        (then to <name>.dlq)
    <name>.delay        topic exchange for timers
    <name>.delay.<ms>   delay bucket (quorum with a delivery limit): x-message-ttl=<ms>,
                        dead-letters back to <name>
    <name>.dlq          poison messages, with the reason in headers
    <name>.migrating    exclusive, while a process migrates older queues (`_migrate`)

An agent id maps to one partition by a stable hash (CRC-32) of its key's first segment
(``manager/t1``, ``writer/t1`` and ``manager/t1/nested`` all hash ``t1``), so every
envelope for one agent goes through one queue, whose single active consumer runs the
agent's messages one at a time, in order, however many workers run; and the agents of
one conversation or task (which share its key) share a partition, so the worker that owns
it can hand their messages to each other without the broker (see `cadre.hosts.worker`).

Timers: an envelope whose ``not_before`` is in the future goes to the largest delay bucket
(a power of two of milliseconds) not longer than what is left, so it never arrives early;
when it arrives with time still left, `RabbitMQTransport.until_due` sends it on to the next
bucket (or sleeps the last few milliseconds). No plugin is needed (Debian's RabbitMQ has
no delayed-message exchange). Every message is persistent and every publish waits for the
broker's confirm.
Envelopes that are due go straight to their partition queue through the default exchange
(the broker's cheapest route); only timers pass through the two topic exchanges.

Due envelopes for one partition travel together as one AMQP message (content type
``application/x-ndjson``: one envelope's JSON per line, in send order; up to `MAX_BATCH`
envelopes or `MAX_BATCH_BYTES`): those of one `send`, and those of every other `send` made
in the same iteration of the event loop (`_outgoing`), so a fan-out to agents of one task,
and many publishes under way at once, cost one publish, one confirm and one ack instead of
one each. A lone envelope is sent as its own JSON (``application/json``). `split_body` gives
back the envelopes' bytes.

Consuming (`RabbitMQTransport.consume`): each partition queue on its own channel; every AMQP
message becomes a `Delivery` of its envelopes, settled once: acknowledged (in runs of
``multiple=True`` acks, see `_acks`) or returned to the head of its queue. Modules:
`_topology` (names, arguments, declaration), `_connection` (aio-pika, reconnects),
`_transport` (publish and consume), `_consume` (deliveries), `_acks`, `_consumer` (the
one-envelope-at-a-time `Consumer` of `cadre.transports.base`).
"""

from ._acks import AckRuns
from ._connection import (
    RECONNECT_FIRST,
    RECONNECT_MAX,
    aio_pika,
    backoff_connection,
    reconnect_delay,
)
from ._consume import Delivery
from ._consumer import RabbitMQConsumer
from ._outgoing import MAX_BATCH, MAX_BATCH_BYTES
from ._topology import (
    BATCH_CONTENT_TYPE,
    DELIVERY_LIMIT,
    MAX_BUCKET_MS,
    MIN_BUCKET_MS,
    Topology,
    delay_bucket,
    partition_of,
    split_body,
)
from ._transport import RabbitMQTransport

__all__ = [
    "BATCH_CONTENT_TYPE",
    "DELIVERY_LIMIT",
    "MAX_BATCH",
    "MAX_BATCH_BYTES",
    "MAX_BUCKET_MS",
    "MIN_BUCKET_MS",
    "RECONNECT_FIRST",
    "RECONNECT_MAX",
    "AckRuns",
    "Delivery",
    "RabbitMQConsumer",
    "RabbitMQTransport",
    "Topology",
    "aio_pika",
    "backoff_connection",
    "delay_bucket",
    "partition_of",
    "reconnect_delay",
    "split_body",
]
