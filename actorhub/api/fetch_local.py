"""wait(fetch_local=True): a ready object counts once its value is on this process's node.

A result that an actor on another node stored in its node's store is ready as soon as the
call returns, but reading it would first copy it here. As Ray does, `wait` with fetch_local
copies such objects to this node before it reports them ready, so a `get` that follows maps
the local copy. Borrowed objects need nothing: their fetch pulls them here before they are
ready at all.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import TYPE_CHECKING, Any

from actorhub.exceptions import ObjectLostError, RpcFailedError
from actorhub.runtime.ids import split_store_id

if TYPE_CHECKING:
    from actorhub.runtime.object_ref import ObjectRef
    from actorhub.runtime.runtime import Runtime

_PULL_THREADS = 4


def elsewhere(runtime: Runtime, refs: list[ObjectRef[Any]]) -> list[tuple[ObjectRef[Any], str, str]]:
    """(ref, store id, node address) of the ready refs whose value is in another node's store."""
    found = []
    for ref in refs:
        recorded = runtime.objects.store_id_of(ref.hex())
        if recorded:
            store_id, node = split_store_id(recorded)
            if node and node != runtime.node_address:
                found.append((ref, store_id, node))
    return found


def pull_here(
    runtime: Runtime, remote: list[tuple[ObjectRef[Any], str, str]], deadline: float | None
) -> set[ObjectRef[Any]]:
    """Copy the objects to this node's store, at most until `deadline`; returns the refs whose
    copy is not here by then. An object that cannot be copied (its node died) counts as done:
    reading it raises the loss, which is what being ready means for it."""
    store = runtime.store_client()
    if store is None:
        return set()

    def pull(store_id: str, node: str) -> None:
        try:
            store.pull(store_id, node, runtime.address)
        except (ObjectLostError, RpcFailedError):
            pass

    pool = concurrent.futures.ThreadPoolExecutor(min(_PULL_THREADS, len(remote)), "actorhub-wait-pull")
    try:
        futures = {pool.submit(pull, store_id, node): ref for ref, store_id, node in remote}
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        _, pending = concurrent.futures.wait(futures, timeout=left)
        return {futures[f] for f in pending}
    finally:
        pool.shutdown(wait=False)
