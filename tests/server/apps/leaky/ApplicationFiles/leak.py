"""Try to publish a file outside the work dir through a symlink."""
import os

os.symlink("/etc/passwd", "out.txt")
