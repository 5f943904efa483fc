"""The seeds' Job API example ("Deploying Ray Applications with the Ray Job API"): submit
script_with_parameters.py, in this directory, as a job; poll its status until it ends; print its
logs.

    actorhub start --head
    cd examples/job_submission && python submit.py

Changed from the seed: the import; the client's address, a placeholder there ("<your Ray URL>"),
is left to JobSubmissionClient (ACTORHUB_API_SERVER_ADDRESS, else this machine's cluster); and the
pip list, whose qiskit 0.34.2 cannot be installed on Python 3.11, keeps only requests.
"""

import time

from actorhub.job_submission import JobStatus, JobSubmissionClient

client = JobSubmissionClient()

job_id = client.submit_job(
   # Entrypoint shell command to execute
   entrypoint="python script_with_parameters.py --kwargs iterations=7",
   # Working dir
   runtime_env={
       "working_dir": ".",
       "pip": ["requests==2.26.0"],
       "env_vars": {"MY_VARIABLE": "foo"}
   }
)

print(f"Submitted job with ID : {job_id}")

while True:
   status = client.get_job_status(job_id)
   print(f"status: {status}")
   if status in {JobStatus.SUCCEEDED, JobStatus.STOPPED, JobStatus.FAILED}:
       break
   time.sleep(5)

logs = client.get_job_logs(job_id)
print(f"logs: {logs}")
