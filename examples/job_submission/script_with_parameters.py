"""The job the seeds' Job API example submits ("Deploying Ray Applications with the Ray Job API"),
with only the import changed. It reads its iterations from the command line and MY_VARIABLE from
its environment (both given at submission), counts with an actor, and prints the version of
requests, which the job's runtime_env installs.

The seed's program also imports qiskit 0.34.2, which has no wheel for the Python 3.11 this
project runs on (it would need a Rust toolchain to build); that import and its line are left out.
"""

import argparse
import os

import requests

import actorhub as ray


class ParseKwargs(argparse.Action):
   def __call__(self, parser, namespace, values, option_string=None):
       setattr(namespace, self.dest, dict())
       for value in values:
           key, value = value.split('=')
           getattr(namespace, self.dest)[key] = value

parser = argparse.ArgumentParser()
parser.add_argument('-k', '--kwargs', nargs='*', action=ParseKwargs)
args = parser.parse_args()

numberOfIterations = int(args.kwargs["iterations"])
print(f"Requested number of iterations is: {numberOfIterations}")

print(f'Environment variable MY_VARIABLE has a value of {os.getenv("MY_VARIABLE")}')

ray.init()

@ray.remote
class Counter:
   def __init__(self):
       self.counter = 0

   def inc(self):
       self.counter += 1

   def get_counter(self):
       return self.counter

counter = Counter.remote()

for _ in range(numberOfIterations):
   ray.get(counter.inc.remote())
   print(ray.get(counter.get_counter.remote()))

print("Requests", requests.__version__)
