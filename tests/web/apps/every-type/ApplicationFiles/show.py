"""Prints its arguments back, so the web test sees the form's values reach the task."""

import sys

print(f"label={sys.argv[1]} count={sys.argv[2]}")
