"""Identifiers. Ids are hex strings: cheap to compare, to log and to put in protobuf."""

from __future__ import annotations

import os


def new_id(nbytes: int = 14) -> str:
    return os.urandom(nbytes).hex()


# A caller's record of a value stored in another node's store (a large result of a call to
# an actor there) is "<store id>@<that node's address>"; one in its own node's store is the
# bare store id. Store ids never hold "@" themselves.
_ELSEWHERE = "@"


def stored_elsewhere(store_id: str, node_address: str) -> str:
    return f"{store_id}{_ELSEWHERE}{node_address}"


def split_store_id(recorded: str) -> tuple[str, str]:
    """(the id in the store, the address of the node whose store has it, or "" for one's own)."""
    store_id, _, node_address = recorded.partition(_ELSEWHERE)
    return store_id, node_address
