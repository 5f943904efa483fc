"""Ray's log deduplication at the driver (RAY_DEDUP_LOGS; here ACTORHUB_DEDUP_LOGS).

A line is compared by its pattern: its words without those that hold a digit (pids, counters,
addresses and timings differ between workers). The first line of a pattern prints at once. A
line of a pattern already seen within the window prints at once too when it comes from the
same worker as every earlier one (a worker repeating itself is not noise across a cluster);
from a second worker on, it is counted instead. When the window (5 s) has passed since a
pattern's first line, a count of more than one prints as the last such line followed by
`[repeated Nx across cluster]` and counting starts again; a count of one prints that line
as it was; a pattern with nothing counted is forgotten. What is still counted when the driver
stops is printed then. Lines that match the allow regex are never deduplicated; lines that
match the skip regex are not printed.

No threads, no clock of its own (`clock` is injected), so it is tested without a cluster.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_HAS_DIGIT = re.compile(r"\d")
_NOTE = " (actorhub deduplicates logs by default; set ACTORHUB_DEDUP_LOGS=0 to print every line)"

Source = tuple[str, int]  # (node, pid)
Printed = tuple[str, str]  # (prefix, line)


def pattern_of(line: str) -> str:
    return " ".join(word for word in line.split() if not _HAS_DIGIT.search(word))


@dataclass
class _Pattern:
    since: float
    line: str
    prefix: str
    sources: set[Source] = field(default_factory=set)
    count: int = 0


class LogDeduplicator:
    def __init__(
        self, window_s: float, allow_regex: str | None = None, skip_regex: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_s = window_s
        self._allow = re.compile(allow_regex) if allow_regex else None
        self._skip = re.compile(skip_regex) if skip_regex else None
        self._clock = clock
        self._patterns: dict[str, _Pattern] = {}  # in order of `since`, oldest first
        self._noted = False

    def feed(self, source: Source, prefix: str, lines: tuple[str, ...] | list[str]) -> list[Printed]:
        """What to print now of `lines` (from `source`, shown with `prefix`), and of patterns whose
        window ended."""
        now = self._clock()
        printed: list[Printed] = []
        for line in lines:
            if self._allow is not None and self._allow.search(line):
                printed.append((prefix, line))
                continue
            if self._skip is not None and self._skip.search(line):
                continue
            key = pattern_of(line)
            if not key:
                printed.append((prefix, line))  # nothing left to compare: numbers are the message
                continue
            seen = self._patterns.get(key)
            if seen is None:
                self._patterns[key] = _Pattern(now, line, prefix, {source})
                printed.append((prefix, line))
                continue
            seen.sources.add(source)
            if len(seen.sources) == 1:
                printed.append((prefix, line))
            else:
                seen.count += 1
                seen.line, seen.prefix = line, prefix
        printed += self.expired(now)
        return printed

    def expired(self, now: float | None = None) -> list[Printed]:
        """What patterns whose window ended have to print."""
        now = self._clock() if now is None else now
        printed: list[Printed] = []
        while self._patterns:
            key, seen = next(iter(self._patterns.items()))
            if now - seen.since < self._window_s:
                break
            del self._patterns[key]
            if seen.count > 1:
                printed.append((seen.prefix, self._repeated(seen)))
                seen.since, seen.count = now, 0
                self._patterns[key] = seen  # counting goes on, at the end of the order
            elif seen.count == 1:
                printed.append((seen.prefix, seen.line))
        return printed

    def flush(self) -> list[Printed]:
        """Everything still counted (the driver stops)."""
        printed: list[Printed] = []
        for seen in self._patterns.values():
            if seen.count > 1:
                printed.append((seen.prefix, self._repeated(seen)))
            elif seen.count == 1:
                printed.append((seen.prefix, seen.line))
        self._patterns.clear()
        return printed

    def _repeated(self, seen: _Pattern) -> str:
        note = "" if self._noted else _NOTE
        self._noted = True
        return f"{seen.line} [repeated {seen.count}x across cluster]{note}"
