#!/usr/bin/env bash
# One serving measurement: starts `BINARY serve --preset PRESET` on a free port, drives it with serve_load.py (one
# client, REQUESTS requests of TOKENS tokens × HIDDEN numbers), prints its summary line, stops the server.
#   usage: scripts/serve_bench.sh BINARY PRESET HIDDEN TOKENS REQUESTS
set -u
binary=$1 preset=$2 hidden=$3 tokens=$4 requests=$5
log=$(mktemp)
"$binary" serve --preset "$preset" --port 0 --log-level warning > "$log" 2>&1 &
server=$!
port=""
for _ in $(seq 150); do
    port=$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | grep -o '[0-9]*$' | head -1)
    [ -n "$port" ] && break
    sleep 0.2
done
if [ -z "$port" ]; then echo "the server did not start: $(cat "$log")" >&2; kill $server 2>/dev/null; exit 1; fi
python3 "$(dirname "$0")/serve_load.py" --port "$port" --hidden "$hidden" --clients 1 --requests "$requests" --tokens "$tokens" | tail -1
kill $server; wait $server 2>/dev/null
rm -f "$log"
