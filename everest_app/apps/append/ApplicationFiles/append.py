"""Copy input.txt to output.txt and append argv[1] as a line."""
import sys

with open("input.txt", "rb") as f:
    data = f.read()
if data and not data.endswith(b"\n"):
    data += b"\n"
with open("output.txt", "wb") as f:
    f.write(data + sys.argv[1].encode("utf-8") + b"\n")
