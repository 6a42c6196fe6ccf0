"""Write this machine's host name to hostname.txt (the `hostname` output)."""
import socket

with open("hostname.txt", "w", encoding="utf-8") as f:
    f.write(socket.gethostname())
