#!/usr/bin/env python3
"""Closed-loop load on a running `moe serve` (127.0.0.1 only): C clients, each sending R requests of T tokens
back to back. Prints requests/s, tokens/s, latency percentiles and the server's forward passes (from /metrics).

    python3 scripts/serve_load.py --port 8000 --hidden 128 --clients 32 --requests 20 --tokens 4
"""
import argparse, http.client, json, random, threading, time

FORWARD_ROUTE = '{route="/v1/moe/forward"}'
COUNTERS = ["moe_forward_batches_total", "moe_forward_seconds_total",
            "moe_http_request_duration_seconds_sum" + FORWARD_ROUTE, "moe_http_request_duration_seconds_count" + FORWARD_ROUTE]

def metrics(port):
    """The counters above from /metrics (0 when absent)."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/metrics")
    values = dict.fromkeys(COUNTERS, 0.0)
    for line in conn.getresponse().read().decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name in values:
            values[name] = float(value)
    return values

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--hidden", type=int, required=True)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--tokens", type=int, default=4)
    a = p.parse_args()
    rng = random.Random(1)
    body = json.dumps({"hidden_states": [[round(rng.gauss(0, 1), 3) for _ in range(a.hidden)] for _ in range(a.tokens)]})
    latencies, errors, lock = [], [0], threading.Lock()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", a.port)
        for _ in range(a.requests):
            start = time.perf_counter()
            conn.request("POST", "/v1/moe/forward", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            with lock:
                latencies.append(time.perf_counter() - start)
                if response.status != 200:
                    errors[0] += 1

    before = metrics(a.port)
    threads = [threading.Thread(target=client) for _ in range(a.clients)]
    start = time.perf_counter()
    for t in threads: t.start()
    for t in threads: t.join()
    wall = time.perf_counter() - start
    after = metrics(a.port)
    delta = {k: after[k] - before[k] for k in COUNTERS}
    passes = delta["moe_forward_batches_total"]
    # Where a request's time goes: the engine's forward per pass, the server's head-to-response per request (so
    # the client's p50 minus it is the client and the loopback; it minus the engine is HTTP, JSON and batching).
    engine_ms = 1e3 * delta["moe_forward_seconds_total"] / max(passes, 1)
    server_ms = 1e3 * delta["moe_http_request_duration_seconds_sum" + FORWARD_ROUTE] / max(delta["moe_http_request_duration_seconds_count" + FORWARD_ROUTE], 1)
    n = len(latencies)
    latencies.sort()
    pct = lambda q: latencies[min(n - 1, int(q * n))] * 1e3
    print(f"clients={a.clients} requests={n} tokens/request={a.tokens} errors={errors[0]} wall={wall:.2f}s "
          f"req/s={n / wall:.1f} tokens/s={n * a.tokens / wall:.1f} p50={pct(0.5):.1f}ms p90={pct(0.9):.1f}ms "
          f"p99={pct(0.99):.1f}ms forward_passes={passes:.0f} requests/pass={n / max(passes, 1):.1f} "
          f"engine_ms/pass={engine_ms:.3f} server_ms/request={server_ms:.3f}")

if __name__ == "__main__":
    main()
