"""``StorageHandle``: the one indirection through which a server reaches its database.

A supervised storage child (``web.supervision.StorageChild``) opens a backend and attaches it
here; when the child crashes and is restarted it closes that backend and attaches a new one.
Everyone else (the engine's actors, the web layer, mail, webhooks, housekeeping) holds this
handle, never a backend, so nobody keeps calling a backend that was closed under them. Between
a close and the next open a call raises ``StorageUnavailable``, exactly like a database outage,
which every caller already handles.

A method looked up through the handle is cached on it until the backend changes, so the hot
path pays one dictionary lookup, not a ``__getattr__`` per call.
"""

from __future__ import annotations

from typing import Any, cast

from storage.api import Storage
from storage.errors import StorageUnavailable


class StorageHandle:
    """Forwards every ``Storage`` call to the backend attached now; see the module docstring."""

    def __init__(self, backend_name: str) -> None:
        self.backend_name = backend_name  # "sqlite" or "postgresql", attached or not
        self.generation = 0  # backends attached so far: 1 after the first open
        self._backend: Storage | None = None
        self._cached: list[str] = []

    @property
    def storage(self) -> Storage:
        """This handle, typed as the protocol it forwards (what the rest of the server takes)."""
        return cast(Storage, self)

    @property
    def attached(self) -> bool:
        return self._backend is not None

    def attach(self, backend: Storage) -> None:
        """Route calls to ``backend`` from now on (it was just opened)."""
        self.detach()
        self._backend = backend
        self.generation += 1

    def detach(self) -> None:
        """Stop routing calls to the backend (it is about to close, or has crashed)."""
        self._backend = None
        for name in self._cached:
            self.__dict__.pop(name, None)
        self._cached.clear()

    def __getattr__(self, name: str) -> Any:
        # Only reached when the attribute is not on the handle itself (nor cached on it).
        if name.startswith("__"):
            raise AttributeError(name)
        backend = self.__dict__.get("_backend")
        if backend is None:
            raise StorageUnavailable("the database is being reopened")
        value = getattr(backend, name)
        if callable(value):
            self.__dict__[name] = value
            self._cached.append(name)
        return value
