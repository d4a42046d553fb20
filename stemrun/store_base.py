"""What every store shares: its constructor, its identity in messages, and capability checks.

A store is one class per technology and role (`SqliteBroker`, `RedisBackend`, ...). Its role's
contract (`Broker`, `ResultBackend`, `ScheduleStore`) derives from `Store`; optional behaviour is
a `Capability` the class also derives from, so mypy refuses to build a store that forgets one of
a capability's methods, and callers ask for a capability once with `require`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Self, TypedDict, TypeVar, Unpack

from stemrun.clock import Clock, SystemClock
from stemrun.errors import StemrunError
from stemrun.url import mask_url

if TYPE_CHECKING:
    from stemrun.config.model import TlsConfig


class StoreOptions(TypedDict, total=False):
    """What every store is opened with besides its URL (all optional)."""

    namespace: str  # prefix of keys and tables (default "stem")
    base_dir: Path | None  # what relative sqlite:/// paths resolve against
    tls: TlsConfig | None  # the stem.yaml tls section, for rediss:// and Postgres
    clock: Clock | None  # tests pass a ManualClock


class Store(ABC):
    """A connection to one store in one role; every method raises the role's `error`.

    Subclasses that need more set-up extend `__init__`; `open` is how the registry makes one
    (a store shared inside the process, like memory://, overrides it).
    """

    #: How messages name the role: "broker", "result backend", "schedule store".
    role: ClassVar[str]
    #: The error every failure of this role is raised as (BrokerError, BackendError, ...).
    error: ClassVar[type[StemrunError]]
    #: The kind of `error` raised when the server cannot be reached (BrokerUnavailable, ...);
    #: `error` itself for a role that does not tell the two apart.
    unavailable: ClassVar[type[StemrunError]]

    def __init__(self, url: str, **options: Unpack[StoreOptions]) -> None:
        self.url = url
        self.namespace = options.get("namespace", "stem")
        self.base_dir = options.get("base_dir")
        self.tls = options.get("tls")
        self.clock: Clock = options.get("clock") or SystemClock()

    @classmethod
    def open(cls, url: str, **options: Unpack[StoreOptions]) -> Self:
        """A handle on the store at `url`. Raises the role's error when it cannot be opened."""
        return cls(url, **options)

    @property
    def label(self) -> str:
        """`role url` with the password masked, for messages."""
        return f"{self.role} {mask_url(self.url)}"

    @abstractmethod
    def ping(self) -> None:
        """Check the store answers; raises the role's error when it does not."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


class InProcessStore(Store):
    """A store living in this process's memory: one instance per (class, URL, namespace), so
    the producers and workers of one process meet in it."""

    _instances: ClassVar[dict[tuple[type, str, str], Store]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, url: str = "memory://", **options: Unpack[StoreOptions]) -> None:
        super().__init__(url, **options)

    @classmethod
    def open(cls, url: str, **options: Unpack[StoreOptions]) -> Self:
        """The process-wide instance for (url, namespace), made on first use."""
        key = (cls, url, options.get("namespace", "stem"))
        with InProcessStore._instances_lock:
            store = InProcessStore._instances.get(key)
            if not isinstance(store, cls):
                store = InProcessStore._instances[key] = cls(url, **options)
            return store

    @staticmethod
    def reset_all() -> None:
        """Forget every in-process store (test isolation)."""
        with InProcessStore._instances_lock:
            InProcessStore._instances.clear()


class Capability(ABC):
    """Optional behaviour a store may have beyond its role's contract."""

    #: What the capability lets callers do, for the error when a store lacks it.
    purpose: ClassVar[str]


CapabilityT = TypeVar("CapabilityT", bound=Capability)


def require(store: Store, capability: type[CapabilityT]) -> CapabilityT:
    """`store` as `capability`. Raises the store's role error naming both when it lacks it."""
    if isinstance(store, capability):
        return store
    raise store.error(
        f"{store.label} cannot {capability.purpose} ({type(store).__name__} has no "
        f"{capability.__name__} capability); use a store that has it "
        "(docs/architecture.md, 'Stores and capabilities')"
    )
