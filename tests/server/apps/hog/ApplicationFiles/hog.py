"""Write zeros into big.bin until the disk is full (or 64 MiB are written), then stay
running for five minutes holding the space: a task that keeps its server's disk full."""
import time

written = 0
try:
    with open("big.bin", "wb") as f:
        while written < 64 << 20:
            f.write(b"\0" * (256 << 10))
            f.flush()
            written += 256 << 10
except OSError:
    pass
time.sleep(300)
