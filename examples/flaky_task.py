"""Fault tolerance: a task whose worker process exits is run again, and `get` still succeeds.

    python examples/flaky_task.py

From "Ray: A Framework for Scaling Python Applications" (fault-tolerance.py): `some_work` calls
`sys.exit(0)` one time in three, killing the worker that runs it; the task is retried on
another worker and `ray.get` returns "some_result".

Changed from the seed, besides `import actorhub as ray`:
- `some_work` is declared `@ray.remote(max_retries=10)` (the other seed, "Ray Design Details",
  sets the retries in the decorator this way): with the default 3 retries, all 4 attempts die
  once in 81 runs, and this program runs in the test suite;
- since a random task may well succeed at once, a second task shows a retry for certain: it
  exits on its first two attempts and succeeds on the third, within the default 3 retries,
  counting its attempts in files, since a task keeps no state between attempts.
"""

import logging
import os
import random
import sys
import tempfile

import actorhub as ray


@ray.remote(max_retries=10)
def some_work():
    if random.randint(0, 2) == 1:
        sys.exit(0)
    return "some_result"


@ray.remote
def exits_twice_then_works(attempts_dir):
    attempt = len(os.listdir(attempts_dir)) + 1
    open(os.path.join(attempts_dir, f"attempt-{attempt}"), "w").close()
    if attempt < 3:
        sys.exit(0)
    return f"some_result, on attempt {attempt}"


def main():
    ray.init(
        ignore_reinit_error=True,
        logging_level=logging.WARNING,
        include_dashboard=False,
    )

    print(f"result from Ray: {ray.get(some_work.remote())}")

    with tempfile.TemporaryDirectory() as attempts_dir:
        result = ray.get(exits_twice_then_works.remote(attempts_dir))
        attempts = sorted(os.listdir(attempts_dir))
    print(f"result from the task that exits twice: {result}")
    assert result == "some_result, on attempt 3", result
    assert attempts == ["attempt-1", "attempt-2", "attempt-3"], attempts
    print("the task's worker exited 2 times; the task was retried each time and succeeded on attempt 3")
    ray.shutdown()


if __name__ == "__main__":
    main()
