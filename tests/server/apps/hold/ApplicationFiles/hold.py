"""Write argv[1] to text.txt and copy.txt at once, then wait (at most 120 s) until a file
named release appears next to them: a job whose outputs sit in its folder while it runs."""
import os
import sys
import time

for name in ("text.txt", "copy.txt"):
    with open(name, "w") as f:
        f.write(sys.argv[1])
deadline = time.time() + 120
while not os.path.exists("release") and time.time() < deadline:
    time.sleep(0.1)
