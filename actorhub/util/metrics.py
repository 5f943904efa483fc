"""Ray's `ray.util.metrics`: Counter, Gauge and Histogram that user code exports with its node's.

Same signatures and the same checks as Ray's. Each metric is a prometheus_client metric in the
node's multiprocess directory (`metrics/node_dir.py`), so the node's endpoint shows it, summed
over the processes that record it (a Gauge shows the value set most recently by a live process).
Ray exports a user metric `foo` as `ray_foo`; here it is `actorhub_foo`. Actors and tasks write
to their node's directory from the start; a driver does once init() connected it to a node of
this host, from its first record on. A driver on a host without its node records into its own
process only (nothing serves those values).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PREFIX = "actorhub_"
# Prometheus' own rules for names and label names (Ray checks names with the same expression).
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_TAG_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_backend_lock = threading.Lock()


class Metric:
    """What Counter, Gauge and Histogram share: a name, a description, tag keys and default tags."""

    def __init__(self, name: str, description: str = "", tag_keys: tuple[str, ...] | None = None) -> None:
        if len(name) == 0:
            raise ValueError("Empty name is not allowed. Please provide a metric name.")
        if not _NAME.match(name):
            raise ValueError(
                f"Invalid metric name: {name}. Metric names can only contain letters, numbers, _, and :. "
                "Metric names cannot start with numbers."
            )
        tag_keys = tag_keys or ()
        if not isinstance(tag_keys, tuple):
            raise TypeError(f"tag_keys should be a tuple type, got: {type(tag_keys)}")
        for key in tag_keys:
            if not isinstance(key, str):
                raise TypeError(f"Tag keys must be str, got {type(key)}.")
            if not _TAG_KEY.match(key) or key.startswith("__"):
                raise ValueError(f"Invalid tag key: {key}. Tag keys can only contain letters, numbers and _, "
                                 "cannot start with a number or with __.")
        self._name = name
        self._description = description
        self._tag_keys = tag_keys
        self._default_tags: dict[str, str] = {}
        self._backend: Any = None

    @property
    def info(self) -> dict[str, Any]:
        return {"name": self._name, "description": self._description, "tag_keys": self._tag_keys,
                "default_tags": dict(self._default_tags)}

    def set_default_tags(self, default_tags: dict[str, str]) -> Metric:
        """Tags used when a record gives none for these keys; returns the metric, as Ray's."""
        for key, value in default_tags.items():
            if key not in self._tag_keys:
                raise ValueError(f"Unrecognized tag key {key}.")
            if not isinstance(value, str):
                raise TypeError(f"Tag values must be str, got {type(value)}.")
        self._default_tags = dict(default_tags)
        return self

    def _series(self, tags: Mapping[str, str] | None) -> Any:
        """The labelled child of the backend metric for these tags (checked as Ray checks them)."""
        final = dict(self._default_tags)
        if tags:
            for key, value in tags.items():
                if key not in self._tag_keys:
                    raise ValueError(f"Unrecognized tag key {key}.")
                if not isinstance(value, str):
                    raise TypeError(f"Tag values must be str, got {type(value)}.")
            final.update(tags)
        missing = [key for key in self._tag_keys if key not in final]
        if missing:
            raise ValueError(f"Missing value for tag key(s): {','.join(missing)}.")
        backend = self._backend
        if backend is None:
            with _backend_lock:
                if self._backend is None:
                    _use_node_directory()
                    self._backend = self._make_backend(PREFIX + self._name, self._description or self._name,
                                                       list(self._tag_keys))
                backend = self._backend
        return backend.labels(*(final[k] for k in self._tag_keys)) if self._tag_keys else backend

    def _make_backend(self, name: str, documentation: str, labels: list[str]) -> Any:
        raise NotImplementedError


class Counter(Metric):
    """A count that only goes up (`inc`)."""

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        if value <= 0:
            raise ValueError(f"value must be >0, got {value}")
        self._series(tags).inc(value)

    def _make_backend(self, name: str, documentation: str, labels: list[str]) -> Any:
        from prometheus_client import Counter as PromCounter

        # registry=None: the node's endpoint reads the files; a process may make the same metric twice.
        return PromCounter(name, documentation, labels, registry=None)


class Gauge(Metric):
    """A value that is set (`set`); the node shows the one set last by a live process."""

    def set(self, value: float | None, tags: dict[str, str] | None = None) -> None:
        if value is None:
            return  # as Ray: nothing to record
        self._series(tags).set(value)

    def _make_backend(self, name: str, documentation: str, labels: list[str]) -> Any:
        from prometheus_client import Gauge as PromGauge

        return PromGauge(name, documentation, labels, registry=None, multiprocess_mode="livemostrecent")


class Histogram(Metric):
    """Observations counted into buckets with these upper `boundaries` (and +Inf)."""

    def __init__(
        self, name: str, description: str = "", boundaries: Sequence[float] | None = None,
        tag_keys: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(name, description, tag_keys)
        if boundaries is None or len(boundaries) == 0:
            raise ValueError(
                "boundaries argument should be provided when using the Histogram class. "
                "e.g., Histogram(boundaries=[1.0, 2.0])"
            )
        for i, boundary in enumerate(boundaries):
            if boundary <= 0:
                raise ValueError(f"Invalid `boundaries` argument at index {i}, {boundaries}. "
                                 "Use positive values for the arguments.")
        self.boundaries = list(boundaries)

    @property
    def info(self) -> dict[str, Any]:
        return {**super().info, "boundaries": self.boundaries}

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        self._series(tags).observe(value)

    def _make_backend(self, name: str, documentation: str, labels: list[str]) -> Any:
        from prometheus_client import Histogram as PromHistogram

        return PromHistogram(name, documentation, labels, registry=None, buckets=sorted(self.boundaries))


def _use_node_directory() -> None:
    """In a driver connected to a node of this host: record into that node's directory."""
    from actorhub.metrics.node_dir import MULTIPROC_ENV, dir_for

    if os.environ.get(MULTIPROC_ENV):
        return  # a worker: its node agent set it before the zygote started
    from actorhub.api.cluster import driver_context

    context = driver_context()
    if context is None or not context.session_dir or not context.node_id:
        return
    path = dir_for(Path(context.session_dir), context.node_id)
    if not path.is_dir():
        return  # the driver's node runs on another host
    os.environ[MULTIPROC_ENV] = str(path)
    from prometheus_client import values

    # prometheus_client picks its value class when imported; this process may have imported it
    # before it knew its node. Values made from now on go to the node's files.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


__all__ = ["Counter", "Gauge", "Histogram", "Metric"]
