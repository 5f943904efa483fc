"""Distributed state: tasks count their lookups in a `ReferenceDataTrackerActor`.

    python examples/reference_tracker.py

From "The Ray API" (chapter 2, "From Classes to Ray Actors"). A plain class becomes an actor by
subclassing it under `@ray.remote`; its handle is passed to ten tasks, which call it without
waiting for the answer. Each of the 5 reference values is looked up twice, so the counts are
[2, 2, 2, 2, 2]; run again, they are 4, "because the tracker actor is still running".

Changed from the seed, besides `import actorhub as ray`: `reference_data` is repeated from
earlier in the chapter; the seed's code runs twice, as its text describes; the cluster is
given `num_cpus=8` like the seed's eight-worker machine; and the program checks its results.
"""

import time

import actorhub as ray

reference_data = ["Fast", "and", "Simple", "Distributed", "Computing"]


class ReferenceDataTracker:
    def __init__(self, reference_data_size):
        self.size = reference_data_size
        self.counts = [0 for _ in range(self.size)]

    def increment(self, ref):
        refmod = ref % self.size
        self.counts[refmod] += 1
        return (ref, self.counts[refmod])


@ray.remote
class ReferenceDataTrackerActor(ReferenceDataTracker):
    def get_counts(self):
        return self.counts


@ray.remote
def get_reference_datum_task(id, tracker):
    time.sleep(id / 10.0)  # Simulate an "expensive" operation
    foreign_key = 2 * id
    idmod = id % len(reference_data)
    value = reference_data[idmod]
    tracker.increment.remote(idmod)  # Ignore returned ref
    return (id, foreign_key, value)


def run(tracker):
    start = time.time()
    tuple_refs = [get_reference_datum_task.remote(i, tracker) for i in range(10)]
    data = ray.get(tuple_refs)
    counts = ray.get(tracker.get_counts.remote())
    duration = time.time() - start
    print(f"""
{duration:6.3f} secs:
data = {data}
counts = {counts}
""")
    return data, counts


def main():
    ray.init(num_cpus=8)
    tracker = ReferenceDataTrackerActor.remote(len(reference_data))
    expected = [(id, 2 * id, reference_data[id % 5]) for id in range(10)]

    data, counts = run(tracker)
    assert data == expected, data
    assert counts == [2, 2, 2, 2, 2], counts

    data, counts = run(tracker)
    assert data == expected, data
    assert counts == [4, 4, 4, 4, 4], counts

    print("each value was counted twice per run by the tracker actor, which kept its counts between runs")
    ray.shutdown()


if __name__ == "__main__":
    main()
