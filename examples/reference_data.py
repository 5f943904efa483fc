"""Reference-data lookups: a slow function, the same as tasks, then results taken as they finish.

    python examples/reference_data.py

From "The Ray API" (chapter 2): `get_ref_datum` sleeps id/10 s to stand in for a database
query. Run ten times in a row it takes about 4.5 s; as tasks that read the reference data from
the object store (`ray.put`) it takes about as long as the slowest one, 0.9 s; and with
`ray.wait(..., timeout=5.0)` each result is handled as soon as its task finishes.

Changed from the seed, besides `import actorhub as ray`: the seed's machine had eight workers,
so the cluster is given `num_cpus=8` to match it on any machine; the driver code is in `main()`,
which therefore declares `ref_data_object_ref` global (the task reads it as a global, as in the
seed); and the program checks its results.
"""

import time

import actorhub as ray

reference_data = ["Fast", "and", "Simple", "Distributed", "Computing"]


def get_ref_datum(id):
    time.sleep(id / 10.0)  # Simulate an "expensive" operation
    foreign_key = 2 * id
    value = reference_data[id % len(reference_data)]
    return (id, foreign_key, value)


@ray.remote
def get_ref_datum_task_first_attempt(id):
    return get_ref_datum(id)


ref_data_object_ref = None  # set by main() with ray.put(reference_data)


@ray.remote
def get_ref_datum_task(id):
    time.sleep(id / 10.0)  # Simulate an "expensive" operation
    foreign_key = 2 * id
    ref_data = ray.get(ref_data_object_ref)
    value = ref_data[id % len(ref_data)]
    return (id, foreign_key, value)


def main():
    global ref_data_object_ref
    ray.init(num_cpus=8)
    expected = [(id, 2 * id, reference_data[id % 5]) for id in range(10)]

    # 1. The plain function, one call after another.
    start = time.time()
    data = [get_ref_datum(id) for id in range(10)]
    duration = time.time() - start
    serial_duration = duration
    print(f"{duration:6.3f} secs, data = {data}   (plain Python, one call after another)")
    assert data == expected, data

    # 2. The first attempt at a task: the function called remotely as it is.
    start = time.time()
    data = ray.get([get_ref_datum_task_first_attempt.remote(id) for id in range(10)])
    duration = time.time() - start
    print(f"{duration:6.3f} secs, data = {data}   (get_ref_datum_task_first_attempt)")
    assert data == expected, data

    # 3. Tasks that read the reference data from the object store.
    ref_data_object_ref = ray.put(reference_data)

    start = time.time()
    data_refs = [get_ref_datum_task.remote(id) for id in range(10)]
    data = ray.get(data_refs)
    duration = time.time() - start
    print(f"{duration:6.3f} secs, data = {data}   (get_ref_datum_task, reference data from ray.put)")
    assert data == expected, data
    assert duration < serial_duration, f"the tasks took {duration:.2f} s, no faster than one by one"

    # 4. Take each result as soon as its task finishes, never blocking more than 5 s.
    start = time.time()
    data_refs = [get_ref_datum_task.remote(id) for id in range(10)]
    data = []
    rounds = 0
    while len(data_refs) > 0:
        finished, data_refs = ray.wait(data_refs, timeout=5.0)
        d = ray.get(finished)
        duration = time.time() - start
        print(f"  {duration:6.3f} secs, finished data = {d}")
        data.extend(d)
        rounds += 1
    duration = time.time() - start
    print(f"{duration:6.3f} secs, data = {data}")
    assert sorted(data) == expected, data
    assert rounds > 1, "ray.wait should hand results back as they finish, not all at once"

    print(
        f"ten lookups took {serial_duration:.2f} s one by one and {duration:.2f} s as tasks; "
        f"ray.wait handed them back in {rounds} batches as they finished"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
