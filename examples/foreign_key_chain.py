"""Task dependencies: look a record up, then follow its foreign key, passing ObjectRefs along.

    python examples/foreign_key_chain.py

From "The Ray API" (chapter 2, "Task Dependencies"). `get_ref_datum_task2` takes the tuple that
`get_ref_datum_task` returns; it is given the ObjectRef instead, is submitted at once, and
runs when that tuple is ready, receiving the tuple itself.

Changed from the seed, besides `import actorhub as ray`: the definitions it relies on from
earlier in the chapter (`reference_data`, `get_ref_datum`, `get_ref_datum_task` and its
`ray.put`) are repeated here so the program stands alone; the driver code is in `main()`,
which therefore declares `ref_data_object_ref` global; and the program checks its results.
"""

import time

import actorhub as ray

reference_data = ["Fast", "and", "Simple", "Distributed", "Computing"]


def get_ref_datum(id):
    time.sleep(id / 10.0)  # Simulate an "expensive" operation
    foreign_key = 2 * id
    value = reference_data[id % len(reference_data)]
    return (id, foreign_key, value)


ref_data_object_ref = None  # set by main() with ray.put(reference_data)


@ray.remote
def get_ref_datum_task(id):
    time.sleep(id / 10.0)  # Simulate an "expensive" operation
    foreign_key = 2 * id
    ref_data = ray.get(ref_data_object_ref)
    value = ref_data[id % len(ref_data)]
    return (id, foreign_key, value)


@ray.remote
def get_ref_datum_task2(tuple):
    original_id, foreign_key, value = tuple  # noqa: RUF059
    return tuple, get_ref_datum(foreign_key)


def main():
    global ref_data_object_ref
    ray.init(num_cpus=4)
    ref_data_object_ref = ray.put(reference_data)

    start = time.time()
    refs1 = [get_ref_datum_task.remote(i) for i in [2, 4, 6]]
    refs2 = [get_ref_datum_task2.remote(i) for i in refs1]
    submitted = time.time() - start
    print(f"submitted 3 lookups and the 3 foreign-key lookups that depend on them in {submitted:.3f} s")
    results = ray.get(refs2)
    for tuple in results:
        print(tuple)
    duration = time.time() - start

    assert results == [
        ((2, 4, "Simple"), (4, 8, "Computing")),
        ((4, 8, "Computing"), (8, 16, "Distributed")),
        ((6, 12, "and"), (12, 24, "Simple")),
    ], results
    # The longest chain sleeps 0.6 s then 1.2 s; the chains ran side by side, not one after another.
    assert duration < 0.6 + 1.2 + 1.5, f"the chains took {duration:.2f} s"
    print(f"each foreign-key lookup received its record, not an ObjectRef; all done in {duration:.2f} s")
    ray.shutdown()


if __name__ == "__main__":
    main()
