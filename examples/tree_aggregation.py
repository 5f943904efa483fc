"""Aggregating 8 values: a chain of additions (depth 7) against a tree of them (depth 3).

    python examples/tree_aggregation.py

From "Modern Parallel and Distributed Python: A Quick Tutorial on Ray". The seed shows the code
only as pictures; it is the tutorial's well-known `add` task, written out first explicitly and
then with the concise while loops, where the only difference is whether the new `add.remote`
goes to the front or the back of the list.

Changed from the seed, besides `import actorhub as ray`: each addition sleeps 0.2 s instead of
1 s, so the chain takes about 1.4 s and the tree about 0.6 s; the cluster has 4 CPUs, enough
for the 4 additions of the tree's first level; and the program checks its results.
"""

import time

import actorhub as ray

DELAY_S = 0.2


@ray.remote
def add(x, y):
    time.sleep(DELAY_S)
    return x + y


def linear_explicit():
    # Aggregate the values slowly. This approach takes O(n) where n is the
    # number of values being aggregated. In this case, 7 additions one after another.
    id1 = add.remote(1, 2)
    id2 = add.remote(id1, 3)
    id3 = add.remote(id2, 4)
    id4 = add.remote(id3, 5)
    id5 = add.remote(id4, 6)
    id6 = add.remote(id5, 7)
    id7 = add.remote(id6, 8)
    result = ray.get(id7)
    return result


def tree_explicit():
    # Aggregate the values in a tree-structured pattern. This approach
    # takes O(log(n)). In this case, 3 levels of additions.
    id1 = add.remote(1, 2)
    id2 = add.remote(3, 4)
    id3 = add.remote(5, 6)
    id4 = add.remote(7, 8)
    id5 = add.remote(id1, id2)
    id6 = add.remote(id3, id4)
    id7 = add.remote(id5, id6)
    result = ray.get(id7)
    return result


def linear_concise():
    # Slow approach.
    values = [1, 2, 3, 4, 5, 6, 7, 8]
    while len(values) > 1:
        values = [add.remote(values[0], values[1])] + values[2:]  # noqa: RUF005
    result = ray.get(values[0])
    return result


def tree_concise():
    # Fast approach.
    values = [1, 2, 3, 4, 5, 6, 7, 8]
    while len(values) > 1:
        values = values[2:] + [add.remote(values[0], values[1])]  # noqa: RUF005
    result = ray.get(values[0])
    return result


def timed(aggregate):
    start = time.time()
    result = aggregate()
    return result, time.time() - start


def main():
    ray.init(num_cpus=4)
    timings = {}
    for name, aggregate in [
        ("linear, explicit", linear_explicit),
        ("tree, explicit", tree_explicit),
        ("linear, while loop", linear_concise),
        ("tree, while loop", tree_concise),
    ]:
        result, duration = timed(aggregate)
        timings[name] = duration
        print(f"{name:>18}: the sum of 1..8 is {result}, in {duration:.2f} s")
        assert result == 36, f"{name} gave {result}"

    for style in ("explicit", "while loop"):
        linear, tree = timings[f"linear, {style}"], timings[f"tree, {style}"]
        assert tree < linear, f"the tree ({tree:.2f} s) was not faster than the chain ({linear:.2f} s)"
    print("the sum is 36 every way; the tree of depth 3 beat the chain of depth 7 both times")
    ray.shutdown()


if __name__ == "__main__":
    main()
