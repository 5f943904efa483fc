"""Parallel computing: one-second `some_work` calls, run locally one by one, then as tasks.

    python examples/parallel_sleeps.py

From "Ray: A Framework for Scaling Python Applications" (parallel_computing.py). Changed from
the seed, besides `import actorhub as ray`: the seed runs `os.cpu_count()` calls on a cluster
with that many CPUs; here the count is fixed at 4 (`init(num_cpus=4)`) so the program behaves
the same on any machine, and it checks that the remote run took about one second.
"""

import logging
import os
import time

import actorhub as ray

NUM_CPUS = 4


def some_work():
    time.sleep(1)
    return "some_result"


@ray.remote
def distributed_some_work():
    return some_work()


def run_local():
    results = [some_work() for _ in range(NUM_CPUS)]
    return results


def run_remote():
    results = ray.get([distributed_some_work.remote() for _ in range(NUM_CPUS)])
    return results


def main():
    ray.init(
        ignore_reinit_error=True,
        logging_level=logging.ERROR,
        include_dashboard=False,
        num_cpus=NUM_CPUS,
    )

    print(f"Number of CPUs: {os.cpu_count()} on this machine, {NUM_CPUS} given to the cluster")

    start_time = time.time()
    print(f"result from local: {run_local()}")
    end_time = time.time()
    local_elapsed = end_time - start_time
    print(f"elapsed time (s): {local_elapsed}")

    start_time = time.time()
    remote_results = run_remote()
    print(f"result from Ray: {remote_results}")
    end_time = time.time()
    remote_elapsed = end_time - start_time
    print(f"elapsed time (s): {remote_elapsed}")

    assert remote_results == ["some_result"] * NUM_CPUS, remote_results
    assert remote_elapsed < 2.5, f"{NUM_CPUS} one-second tasks on {NUM_CPUS} CPUs took {remote_elapsed:.2f} s"
    print(
        f"{NUM_CPUS} one-second calls took {local_elapsed:.2f} s one by one "
        f"and {remote_elapsed:.2f} s as parallel tasks"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
