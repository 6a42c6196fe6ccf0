"""Sleep argv[1] seconds; a negative duration is an error (exit 1)."""
import sys
import time

duration = float(sys.argv[1])
if duration < 0:
    sys.stderr.write("duration must not be negative, got " + sys.argv[1] + "\n")
    sys.exit(1)
try:
    time.sleep(duration)
except KeyboardInterrupt:
    sys.stderr.write("interrupted\n")
    sys.exit(130)
