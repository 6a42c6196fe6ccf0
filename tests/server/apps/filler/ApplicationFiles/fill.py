"""Write zeros into big.bin until the disk is full (or 64 MiB are written), then fail the
way dd does: a task that filled its server's data disk."""
import sys

written = 0
try:
    with open("big.bin", "wb") as f:
        while written < 64 << 20:
            f.write(b"\0" * (256 << 10))
            f.flush()
            written += 256 << 10
except OSError as exc:
    sys.exit(f"fill.py: {exc}")
with open("written.txt", "w") as f:
    f.write(str(written))
