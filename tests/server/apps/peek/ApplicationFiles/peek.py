"""Try to read each path given (a file's first byte, a folder's listing) and report."""
import os
import sys

lines = []
for path in sys.argv[1:]:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
        lines.append(f"READ {path}")
    except FileNotFoundError:
        lines.append(f"MISSING {path}")
    except PermissionError:
        lines.append(f"DENIED {path}")
open("report.txt", "w").write("\n".join(lines) + "\n")
open("uid.txt", "w").write(str(os.getuid()))
