"""Transports: one protocol (`Transport`), one module per technology."""

from .base import Consumer, Delivery, Transport
from .inprocess import InProcessTransport

__all__ = ["Consumer", "Delivery", "InProcessTransport", "Transport"]
