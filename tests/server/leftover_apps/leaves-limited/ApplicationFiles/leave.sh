# Leaves a setsid daemon and a double-forked nohup sleep behind, writes their pids to
# pids.txt, then ends as told by $1: an exit status once a file "go" appears (the test
# makes it), N-now (exit status N at once), or "wait" (sleeps until stopped).
setsid -f sh -c 'echo $$ > daemon.pid; exec sleep 300' </dev/null >/dev/null 2>&1
( nohup sh -c 'echo $$ > nohup.pid; exec sleep 300' >/dev/null 2>&1 & )
while [ ! -s daemon.pid ] || [ ! -s nohup.pid ]; do sleep 0.01; done
cat daemon.pid nohup.pid > pids.txt
if [ "$1" = wait ]; then exec sleep 300; fi
case "$1" in *-now) exit "${1%-now}";; esac
while [ ! -e go ]; do sleep 0.02; done
exit "$1"
