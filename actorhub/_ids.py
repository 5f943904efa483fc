"""Identifiers. Ids are hex strings: cheap to compare, to log and to put in protobuf."""

from __future__ import annotations

import os


def new_id(nbytes: int = 14) -> str:
    return os.urandom(nbytes).hex()
