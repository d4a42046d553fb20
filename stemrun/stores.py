"""Open the stores a Config names, with its namespace, base directory and tls section."""

from __future__ import annotations

from stemrun.backends.base import Backend, open_backend
from stemrun.brokers.base import Broker, open_broker
from stemrun.config.model import Config


def broker_for(config: Config) -> Broker:
    """The configured broker. Raises BrokerError."""
    return open_broker(
        config.broker, namespace=config.namespace, base_dir=config.root_dir, tls=config.tls
    )


def backend_for(config: Config) -> Backend:
    """The configured result backend. Raises BackendError."""
    return open_backend(
        config.result_backend, namespace=config.namespace, base_dir=config.root_dir, tls=config.tls
    )
