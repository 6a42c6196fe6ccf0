"""Ignore SIGINT and SIGTERM; only SIGKILL ends this task."""
import os
import signal
import time

signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open("ready", "w") as f:
    f.write(str(os.getpid()))
while True:
    time.sleep(0.1)
