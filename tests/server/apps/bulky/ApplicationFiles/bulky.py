"""Write argv[1] megabytes (real bytes, not a sparse file) to out.bin."""
import sys

size = int(float(sys.argv[1]) * 1_000_000)
block = b"x" * 1_000_000
with open("out.bin", "wb") as f:
    while size > 0:
        f.write(block[:size])
        size -= len(block)
