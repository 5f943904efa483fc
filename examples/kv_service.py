"""A key-value service actor: concurrency groups, its logs at the driver, and a clean exit.

    .venv/bin/python examples/kv_service.py

- `concurrency_groups` keep the service's health check answering while every slot of its
  "data" group is busy with slow requests.
- What the service prints appears here, at the driver, prefixed `(KeyValueService pid=...)`.
- `exit_actor()` ends the service from inside, as a planned stop: it is not restarted, even
  with `max_restarts`, and later calls fail with `ActorDiedError`.
"""

from __future__ import annotations

import threading
import time

import actorhub
from actorhub.actor import exit_actor
from actorhub.exceptions import ActorDiedError


@actorhub.remote(concurrency_groups={"data": 2, "health": 1}, max_restarts=3)
class KeyValueService:
    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._lock = threading.Lock()  # the "data" group runs two requests at once
        print("service started")

    @actorhub.method(concurrency_group="data")
    def put(self, key: str, value: str, work_s: float = 0.0) -> None:
        time.sleep(work_s)  # a slow backend
        with self._lock:
            self._data[key] = value
        print(f"stored {key!r}")

    @actorhub.method(concurrency_group="data")
    def get(self, key: str) -> str | None:
        with self._lock:
            return self._data.get(key)

    @actorhub.method(concurrency_group="health")
    def health(self) -> dict[str, int]:
        with self._lock:
            return {"keys": len(self._data)}

    @actorhub.method(concurrency_group="health")
    def stop(self) -> None:
        print("service stopping")
        exit_actor()


def main() -> None:
    actorhub.init(namespace="kv-example")
    service = KeyValueService.options(name="kv").remote()
    actorhub.get(service.put.remote("greeting", "hello"))

    # Both "data" slots busy for 2 s; the health check has a group of its own.
    slow = [service.put.remote(f"slow-{i}", "x", work_s=2.0) for i in range(2)]
    start = time.perf_counter()
    status = actorhub.get(service.health.remote())
    print(f"health answered in {(time.perf_counter() - start) * 1000:.0f} ms while the data group was busy: {status}")
    actorhub.get(slow)
    print(f"greeting = {actorhub.get(service.get.remote('greeting'))}")

    stopping = service.stop.remote()
    try:
        actorhub.get([stopping, service.health.remote()])
    except ActorDiedError as e:
        print(f"after stop(): ActorDiedError: {str(e).splitlines()[0]}")
    time.sleep(0.5)  # the service's last lines reach the driver
    actorhub.shutdown()


if __name__ == "__main__":
    main()
