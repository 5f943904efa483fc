"""The `Pan` actors of "Intro to Ray" (the Burrow): one boiling spell on ten pans, five on one.

    python examples/pans.py

Calls on different actors run in parallel; calls on the same actor run one after another and
share its state, so one pan heats up by 10 degrees per spell.

Changed from the seed, besides `import actorhub as ray`: the seed declares
`@ray.remote(num_gpus=1)`, but no machine here has a GPU (Ray would leave ten GPU pans pending
forever on such a machine, and so would actorhub), so the pans ask for no GPU; the
seed's second `ray.get([...]` lacks its closing parenthesis; and `ray.init()`, the prints and
`ray.shutdown()` are added.
"""

import actorhub as ray


@ray.remote
class Pan:
    def __init__(self):
        self.temperature = 0

    def fervere(self):
        self.temperature += 10
        return self.temperature


def main():
    ray.init()

    # create 10 Pan actors
    pans = [Pan.remote() for _ in range(10)]
    cast_fervere_on_all_pans = ray.get([pan.fervere.remote() for pan in pans])
    # prints [10,10,10,10,10,10,10,10,10,10]
    print(f"one boiling spell on each of the 10 pans: {cast_fervere_on_all_pans}")
    cast_ferevere_on_one_pan = ray.get([pans[0].fervere.remote() for _ in range(5)])
    # prints [10,20,30,40,50] in the seed; here pan 0 was already at 10 from the spell above
    print(f"five boiling spells on pan 0: {cast_ferevere_on_one_pan}")

    assert cast_fervere_on_all_pans == [10] * 10, cast_fervere_on_all_pans
    assert cast_ferevere_on_one_pan == [20, 30, 40, 50, 60], cast_ferevere_on_one_pan
    print("each pan kept its own temperature; spells on one pan ran in order")
    ray.shutdown()


if __name__ == "__main__":
    main()
