"""Quick start: a named, detached service that a second application finds by name.

    make run

The script starts an embedded local cluster, then runs two separate applications against it:
the first starts a `Counter` service named "counter" in the namespace "quickstart" and exits;
the second, a different process, looks the service up by name and calls it.
"""

from __future__ import annotations

import subprocess
import sys

import actorhub

NAMESPACE = "quickstart"


@actorhub.remote
class Counter:
    def __init__(self) -> None:
        self.count = 0

    def increment(self, by: int = 1) -> int:
        self.count += by
        return self.count


def service_app() -> None:
    """Application 1: start the service and leave it running."""
    actorhub.init(address="auto", namespace=NAMESPACE)
    counter = Counter.options(name="counter", lifetime="detached").remote()
    value = actorhub.get(counter.increment.remote())
    print(f"[app 1] started the detached Counter service 'counter' in namespace '{NAMESPACE}'; count is {value}")
    print("[app 1] exiting; the service keeps running because it is detached")


def client_app() -> None:
    """Application 2: find the service by (namespace, name) and use it."""
    actorhub.init(address="auto", namespace=NAMESPACE)
    counter = actorhub.get_actor("counter")
    values = actorhub.get([counter.increment.remote() for _ in range(3)])
    print(f"[app 2] found 'counter' by name in namespace '{NAMESPACE}' and incremented it: count went {values}")


def main() -> None:
    context = actorhub.init()
    print(f"started a local cluster: hub at {context.address}")
    for app in ("service", "client"):
        subprocess.run([sys.executable, __file__, app], check=True)
    counter = actorhub.get_actor("counter", namespace=NAMESPACE)
    print(f"the launcher sees the same service: count is {actorhub.get(counter.increment.remote(0))}")
    actorhub.kill(counter)
    actorhub.shutdown()
    print("killed the service and shut the cluster down; no process is left behind")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        {"service": service_app, "client": client_app}[sys.argv[1]]()
    else:
        main()
