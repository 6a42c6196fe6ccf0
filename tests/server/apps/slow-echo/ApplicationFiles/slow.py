"""Sleep argv[1] seconds, then write argv[2] to text.txt and copy.txt."""
import sys
import time

time.sleep(float(sys.argv[1]))
for name in ("text.txt", "copy.txt"):
    with open(name, "w") as f:
        f.write(sys.argv[2])
