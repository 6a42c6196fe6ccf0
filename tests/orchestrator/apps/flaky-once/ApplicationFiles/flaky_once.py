"""Fail (exit 3) and create argv[1] if it does not exist; else write attempt.txt."""
import os
import sys

marker = sys.argv[1]
if not os.path.exists(marker):
    open(marker, "w").close()
    sys.stderr.write("first attempt fails on purpose\n")
    sys.exit(3)
with open("attempt.txt", "w") as f:
    f.write("second")
