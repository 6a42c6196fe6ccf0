"""Use EVEREST_URL + EVEREST_TASK_TOKEN to ask the server who we are."""
import json
import os
import urllib.request

url, token = os.environ["EVEREST_URL"], os.environ["EVEREST_TASK_TOKEN"]
req = urllib.request.Request(url + "/api/auth/access_token",
                             headers={"Authorization": "Bearer " + token})
with urllib.request.urlopen(req, timeout=10) as r:
    info = json.load(r)
open("whoami.txt", "w").write(info["username"])
open("url.txt", "w").write(url)
open("token.txt", "w").write(token)
open("leaked.txt", "w").write(os.environ.get("EVEREST_TOKEN", ""))
