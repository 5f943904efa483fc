"""A typed service for callers in any language: an inventory actor that the gateway exposes.

    actorhub start --head --gateway-port 8080        # prints the gateway's HTTP and gRPC addresses
    python examples/typed_service/service.py         # deploys the actor (detached) and exits

Then call it with curl or from Node.js: see README.md beside this file. The type hints are the
interface: the gateway converts JSON arguments to them (an object to an `Item`), refuses what
does not fit with 400 and pydantic's message, and documents them at /v1/openapi.json.
"""

from __future__ import annotations

import sys

import pydantic

import actorhub


class Item(pydantic.BaseModel):
    name: str
    qty: int = pydantic.Field(ge=1)


class OutOfStockError(Exception):
    pass


@actorhub.remote(typed=True)
class Inventory:
    def __init__(self) -> None:
        self.stock: dict[str, int] = {}

    def put(self, item: Item) -> Item:
        """Add to the stock; returns the item's new total."""
        self.stock[item.name] = self.stock.get(item.name, 0) + item.qty
        return Item(name=item.name, qty=self.stock[item.name])

    def take(self, name: str, qty: int = 1) -> Item:
        have = self.stock.get(name, 0)
        if have < qty:
            raise OutOfStockError(f"{qty} {name} wanted, {have} in stock")
        self.stock[name] = have - qty
        return Item(name=name, qty=qty)

    def count(self) -> dict[str, int]:
        return dict(self.stock)


def main() -> None:
    actorhub.init(address=sys.argv[1] if len(sys.argv) > 1 else "auto", namespace="shop")
    # Detached and named: it outlives this script, and the gateway finds it as shop/inventory.
    inventory = Inventory.options(name="inventory", lifetime="detached", get_if_exists=True).remote()
    print("shop/inventory is up; stock:", actorhub.get(inventory.count.remote()))


if __name__ == "__main__":
    main()
