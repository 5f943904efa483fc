"""Identifiers. Ids are hex strings: cheap to compare, to log and to put in protobuf."""

from __future__ import annotations

import os


def new_id(nbytes: int = 14) -> str:
    return os.urandom(nbytes).hex()


def object_id_for_call(caller_id: str, seq: int, index: int) -> str:
    """The id of return value `index` of call `seq` made by `caller_id`: derivable, not random."""
    return f"{caller_id}.{seq:x}.{index}"
