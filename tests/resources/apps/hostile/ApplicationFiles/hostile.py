"""argv[1] "work": replace the work folder with a link to the folder argv[2]; "output":
make the outputs links to the file argv[2]. Either way exit 0, so that a server following
links while collecting would take what they point to."""
import os
import sys

mode, target = sys.argv[1], sys.argv[2]
if mode == "work":
    os.chdir("..")
    os.rename("work", "work.gone")
    os.symlink(target, "work")
else:
    for name in ("report.json", "upper.txt"):
        os.symlink(target, name)
