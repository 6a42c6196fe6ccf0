"""A program that runs eight jobs with a journal; the journal test runs it twice.

    python journal_run.py URL JOURNAL KILL_AFTER     (token in EVEREST_TOKEN)

With KILL_AFTER > 0 it SIGKILLs itself once that many jobs have ids (a kernel dying);
with 0 it waits for every result and prints the orchestrator's stats and the job ids as JSON.
"""

import json
import os
import signal
import sys
import time

import orchestrator

url, journal, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
orch = orchestrator.connect(url, journal=journal, max_in_flight=4, progress=False)
futures = [orch.submit("sleep", {"duration": 1}, name=f"journal-job-{i}") for i in range(8)]
if kill_after:
    while sum(f.job_id is not None for f in futures) < kill_after:
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)
results = [f.result(120) for f in futures]
print(json.dumps({"stats": orch.stats, "ids": [f.job_id for f in futures],
                  "results": results}))
orch.close()
