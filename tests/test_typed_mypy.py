"""mypy, with actorhub's plugin, sees a typed actor's handle: `handle.incr.remote(1)` is an
`ObjectRef[int]`, and a wrong argument or a wrong use of the result is a type error."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROGRAM = """
    import actorhub
    from actorhub import ObjectRef

    @actorhub.remote(typed=True)
    class Counter:
        def __init__(self, start: int) -> None:
            self.n = start

        def incr(self, by: int) -> int:
            self.n += by
            return self.n

        async def echo(self, text: str) -> str:
            return text

    counter = Counter.remote(0)
    ref: ObjectRef[int] = counter.incr.remote(1)
    reveal_type(counter.incr.remote(1))
    reveal_type(counter.echo.remote("a"))
    total: int = actorhub.get(counter.incr.remote(2))
    counter.incr.remote("one")  # line 21: a wrong argument
"""


def test_mypy_types_handles_of_typed_actors(tmp_path: Path) -> None:
    program = tmp_path / "program.py"
    program.write_text(textwrap.dedent(PROGRAM).lstrip())
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nplugins = actorhub.mypy_plugin\n[mypy-actorhub.*]\nfollow_imports = silent\n")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(tmp_path / "cache"),
         "--no-error-summary", program.name],
        capture_output=True, text=True, cwd=tmp_path, env={"MYPYPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    lines = [line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("program.py:")]
    assert lines == [
        'note: Revealed type is "actorhub.runtime.object_ref.ObjectRef[int]"',
        'note: Revealed type is "actorhub.runtime.object_ref.ObjectRef[str]"',
        'error: Argument 1 to "remote" of "TypedActorMethod" has incompatible type "str"; expected "int"  [arg-type]',
    ], result.stdout + result.stderr
    assert "program.py:21: error" in result.stdout
