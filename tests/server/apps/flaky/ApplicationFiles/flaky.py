"""Fail on the first attempt (task id ...-0-0), succeed on a later one."""
import os
import sys

task = os.environ["EVEREST_TASK_ID"]
if task.endswith("-0"):
    sys.stderr.write("first attempt fails on purpose\n")
    sys.exit(3)
with open("attempt.txt", "w") as f:
    f.write(task.rsplit("-", 1)[1])
