"""Where am I? Writes report.json (evidence of the resource), upper.txt, then sleeps.

Writes ``started`` once it can take a SIGINT, so tests know when to interrupt it."""
import json
import os
import socket
import sys
import time

seconds = float(sys.argv[1])
marker = os.path.expanduser("~/.everest-test-marker")
report = {
    "argv": sys.argv[2:], "uid": os.getuid(), "host": socket.gethostname(),
    "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    "marker": open(marker).read().strip() if os.path.exists(marker) else None,
    "has_token": bool(os.environ.get("EVEREST_TASK_TOKEN")),
    "started": time.time(),
}
if os.path.exists("data.txt"):
    with open("data.txt") as f, open("upper.txt", "w") as out:
        out.write(f.read().upper())
try:
    open("started", "w").close()
    time.sleep(seconds)
except KeyboardInterrupt:  # a cancel or time limit interrupts with SIGINT first
    report["interrupted"] = "SIGINT"
with open("report.json", "w") as f:
    json.dump(report, f)
sys.exit(130 if "interrupted" in report else 0)
