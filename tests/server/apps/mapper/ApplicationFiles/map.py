"""Echo argv as JSON to stdout; compute from staged input files."""
import json
import os
import sys

print(json.dumps(sys.argv[1:]))
x = float(open("x.txt").read())
nums = open("nums.txt").read().split() if os.path.exists("nums.txt") else []
docs = sorted(os.listdir("docs")) if os.path.isdir("docs") else []
with open("out.txt", "w") as f:
    f.write(f"double={2 * x}\ncount={len(nums)}\n")
with open("report.txt", "w") as f:
    f.write(json.dumps({"docs": docs, "nums": nums}))
for i in range(2):
    with open(f"part-{i}.txt", "w") as f:
        f.write(str(i))
