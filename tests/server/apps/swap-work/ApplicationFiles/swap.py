"""A hostile task: replace its own work folder with a link to argv[1], then exit 0, so that
a server reading outputs by path after the run would read (and move) files from there."""
import os
import sys

os.chdir("..")
os.rename("work", "work.gone")
os.symlink(sys.argv[1], "work")
