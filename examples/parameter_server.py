"""A sharded parameter server: 4 actors hold the parameters, 8 worker tasks train against them.

    python examples/parameter_server.py

"The Ray API" (chapter 2) names the parameter server as the typical use of actors for
distributed state: "Beyond a certain size, it's best to shard the parameter set, one shard per
actor". Here 4 `ParameterShard` actors each hold 250,000 float32 parameters (1 MB). Each of 8
worker tasks, for 20 rounds, pulls every shard (`ray.get` of the shards' `get` calls),
computes a gradient with numpy and pushes each piece of it to its shard
(`shard.apply.remote(grad_shard)`).

The gradient is fake and deterministic: 0.01 for every parameter, every round, from every
worker. A shard applies one push at a time, and every push subtracts the same float32 array,
so the result does not depend on the order of the pushes: the program computes the expected
parameters locally and checks that the cluster's are equal to them, bit for bit. Each worker
also checks what it pulls: the right shapes and dtype, and parameters that never go up.
"""

import time

import numpy as np

import actorhub as ray

NUM_SHARDS = 4
SHARD_SIZE = 250_000
NUM_WORKERS = 8
NUM_ROUNDS = 20
LEARNING_RATE = np.float32(0.01)


def initial_parameters():
    """All parameters, before training: distinct values in [0, 1)."""
    total = NUM_SHARDS * SHARD_SIZE
    return np.arange(total, dtype=np.float32) / np.float32(total)


@ray.remote
class ParameterShard:
    def __init__(self, values):
        self.params = np.array(values, dtype=np.float32)  # a private, writable copy
        self.updates = 0

    def get(self):
        return self.params

    def apply(self, grad):
        self.params -= grad
        self.updates += 1
        return self.updates

    def num_updates(self):
        return self.updates


def fake_gradient(params):
    """What a worker computes from the parameters it pulled: here, a constant step."""
    return np.full_like(params, LEARNING_RATE)


@ray.remote
def worker(worker_index, shards, num_rounds):
    previous = None
    for _ in range(num_rounds):
        pulled = ray.get([shard.get.remote() for shard in shards])
        assert all(p.dtype == np.float32 and p.shape == (SHARD_SIZE,) for p in pulled)
        params = np.concatenate(pulled)
        if previous is not None:
            # Other workers push too, so the parameters may have moved by any number of steps,
            # but every step goes down.
            assert np.all(params <= previous), f"worker {worker_index} saw parameters go up"
        previous = params
        grads = [fake_gradient(p) for p in pulled]
        ray.get([shard.apply.remote(g) for shard, g in zip(shards, grads, strict=True)])
    return worker_index, num_rounds


def main():
    ray.init(num_cpus=NUM_WORKERS)
    start = time.time()
    init = initial_parameters()
    shards = [ParameterShard.remote(part) for part in np.split(init, NUM_SHARDS)]
    print(
        f"{NUM_SHARDS} parameter shards of {SHARD_SIZE:,} float32 each "
        f"({NUM_SHARDS * SHARD_SIZE * 4 / 1e6:.0f} MB in all) started"
    )

    finished = ray.get([worker.remote(i, shards, NUM_ROUNDS) for i in range(NUM_WORKERS)])
    duration = time.time() - start
    assert sorted(finished) == [(i, NUM_ROUNDS) for i in range(NUM_WORKERS)], finished
    updates = ray.get([shard.num_updates.remote() for shard in shards])
    final = np.concatenate(ray.get([shard.get.remote() for shard in shards]))

    expected = init.copy()
    for _ in range(NUM_WORKERS * NUM_ROUNDS):
        expected -= np.full_like(expected, LEARNING_RATE)

    moved = NUM_WORKERS * NUM_ROUNDS * NUM_SHARDS * SHARD_SIZE * 4 * 2 / 1e9
    print(
        f"{NUM_WORKERS} workers x {NUM_ROUNDS} rounds: every shard applied {updates} pushes; "
        f"{moved:.2f} GB pulled and pushed in {duration:.2f} s"
    )
    assert updates == [NUM_WORKERS * NUM_ROUNDS] * NUM_SHARDS, updates
    assert final.dtype == np.float32 and final.shape == init.shape
    assert np.array_equal(final, expected), f"largest difference {np.max(np.abs(final - expected))}"
    print(
        f"the final parameters equal the expected ones exactly: each moved by "
        f"{float(init[0] - final[0]):.4f} (= {NUM_WORKERS * NUM_ROUNDS} steps of {float(LEARNING_RATE):g})"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
