"""Identifiers. Ids are hex strings: cheap to compare, to log and to put in protobuf."""

from __future__ import annotations

import os


def new_id(nbytes: int = 14) -> str:
    return os.urandom(nbytes).hex()


# Every object id a process makes starts with the job the making code works for, as a Ray
# ObjectID holds its JobID: `ObjectRef.job_id()` reads it back wherever the ref travels, with no
# call to the owner. Job ids are the hub's 8 hex digits; a runtime with no job tags "00000000".
JOB_TAG_LEN = 8


def job_tag(job_id: str) -> str:
    return job_id[-JOB_TAG_LEN:].rjust(JOB_TAG_LEN, "0")


def job_of(object_id: str) -> str:
    """The job an object id was made for ("" for an id that carries none: nil, or not ours)."""
    tag = object_id[:JOB_TAG_LEN]
    if len(object_id) <= JOB_TAG_LEN or not all(c in "0123456789abcdef" for c in tag):
        return ""
    return tag


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
