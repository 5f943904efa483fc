"""`@remote(typed=True)`: calls are checked against the type hints at the caller (pydantic,
strict), returns in the actor, on every handle however it was obtained."""

from __future__ import annotations

import pydantic
import pytest
from _drivers import run_driver

import actorhub
from actorhub.exceptions import ArgumentValidationError, ReturnValidationError


class Item(pydantic.BaseModel):
    name: str
    qty: int


@actorhub.remote(typed=True)
class Inventory:
    def __init__(self, start: int) -> None:
        self.count = start

    def add(self, n: int, *, note: str = "") -> int:
        self.count += n
        return self.count

    def store(self, item: Item) -> Item:
        return item

    def broken(self) -> int:
        return "not an int"  # type: ignore[return-value]

    async def later(self, n: int) -> int:
        return n


@actorhub.remote
class Loose:
    def add(self, n: int) -> int:
        return n


def test_arguments_are_checked_at_the_caller_and_nothing_bad_is_sent(shared_cluster: actorhub.ClusterContext) -> None:
    with pytest.raises(ArgumentValidationError, match="valid integer"):
        Inventory.remote("zero")
    inv = Inventory.options(name="inventory", lifetime="detached").remote(0)
    assert actorhub.get(inv.add.remote(2, note="first")) == 2
    for args, kwargs, message in [
        (("3",), {}, "valid integer"),  # strict: no coercion
        ((1.5,), {}, "valid integer"),
        ((), {}, "missing a required argument"),
        ((1,), {"note": 5}, "valid string"),
        ((1, 2), {}, "too many positional arguments"),
    ]:
        with pytest.raises(ArgumentValidationError, match=message) as caught:
            inv.add.remote(*args, **kwargs)
        assert isinstance(caught.value, TypeError) and "Inventory.add" in str(caught.value)
    assert actorhub.get(inv.add.remote(0)) == 2  # none of the refused calls ran
    # A ref stands for its value, which the caller does not have: not checked here.
    assert actorhub.get(inv.add.remote(actorhub.put(3))) == 5
    with pytest.raises(ArgumentValidationError, match=r"qty\s+Input should be a valid integer"):
        inv.store.remote({"name": "bolt", "qty": "1"})  # field by field, strictly
    assert actorhub.get(inv.store.remote(Item(name="bolt", qty=1))) == Item(name="bolt", qty=1)
    assert actorhub.get(inv.later.remote(4)) == 4
    with pytest.raises(ArgumentValidationError):
        inv.later.remote("4")
    # What a method returns is checked in the actor: the caller gets the error, the actor lives.
    with pytest.raises(ReturnValidationError, match=r"Inventory\.broken returned"):
        actorhub.get(inv.broken.remote())
    assert actorhub.get(inv.add.remote(0)) == 5
    # Untyped actors are as before: only that the arguments bind.
    assert actorhub.get(Loose.remote().add.remote("anything")) == "anything"
    # Another process's handle, from get_actor, checks the same way.
    out = run_driver(f"""
        import actorhub
        actorhub.init(address={shared_cluster["address"]!r})
        inv = actorhub.get_actor("inventory", namespace={shared_cluster.namespace!r})
        try:
            inv.add.remote("x")
        except actorhub.exceptions.ArgumentValidationError as e:
            print("refused", "valid integer" in str(e))
        print(actorhub.get(inv.add.remote(1)))
    """)
    assert out.stdout.split() == ["refused", "True", "6"]
    actorhub.kill(inv)


def test_unreadable_hints_are_refused_when_the_class_is_made_remote() -> None:
    class Bad:
        def m(self, x: NoSuchType) -> int:  # type: ignore[name-defined]  # noqa: F821
            return 1

    with pytest.raises(TypeError, match="type hints of m cannot be read"):
        actorhub.remote(typed=True)(Bad)
