#!/usr/bin/env python3
"""Load generator and report for bench/saga.

  saga_load.py prepare PORT ORDERS CONNS IDS   products and draft orders (two lines each); ids to IDS
  saga_load.py place   PORT ORDERS CONNS IDS   POST /orders/{id}/place for every id, CONNS at a time
  saga_load.py report  ORDERS BASE_S PLACE_S HWM_KB CPU_S BASE_HWM_KB WORKERS CONNS   (one SQL row on stdin)
"""
import http.client
import json
import sys
import threading

PRODUCTS = 8


def client(port):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=60)


def call(conn, method, path, body=None):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    for attempt in range(50):
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        r = conn.getresponse()
        data = r.read()
        if r.status != 503:
            break
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
    return json.loads(data) if data else None


def split(n, k):
    return [range(i, n, k) for i in range(k)]


def prepare(port, orders, conns, ids_file):
    c = client(port)
    for p in range(PRODUCTS):
        call(c, "POST", "/products", {"product_id": f"sku-{p}", "name": f"Product {p}", "stock": 1_000_000_000})
    ids = [None] * orders

    def work(part):
        cc = client(port)
        for n in part:
            oid = call(cc, "POST", "/orders", {"customer_id": f"c-{n % 97}"})["order_id"]
            for line in range(2):
                call(cc, "POST", f"/orders/{oid}/lines",
                     {"product_id": f"sku-{(n + line) % PRODUCTS}", "quantity": 1 + line, "unit_price_cents": 250 + n % 100})
            ids[n] = oid

    threads = [threading.Thread(target=work, args=(part,)) for part in split(orders, conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any(i is None for i in ids):
        raise SystemExit("prepare: some orders were not created")
    with open(ids_file, "w") as f:
        f.write("\n".join(ids) + "\n")


def place(port, orders, conns, ids_file):
    ids = open(ids_file).read().split()
    errors = []

    def work(part):
        cc = client(port)
        try:
            for n in part:
                call(cc, "POST", f"/orders/{ids[n]}/place")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(str(e))

    threads = [threading.Thread(target=work, args=(part,)) for part in split(len(ids), conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"place: {errors[0]}")


def report(args):
    orders, base_s, place_s, hwm, cpu, base_hwm, workers, conns = args
    orders = int(orders)
    row = sys.stdin.read().split()
    confirmed, compensated, failed, span, p50, p99, worst, events = row
    span = float(span)
    print(f"saga bench: {orders} orders (2 lines each), {conns} clients placing, {workers} saga workers, fsync on")
    print(f"  baseline (sagas off): placing took {float(base_s):.2f} s = {orders / float(base_s):,.0f} places/s")
    print(f"  with sagas:           placing took {float(place_s):.2f} s = {orders / float(place_s):,.0f} places/s")
    print(f"  sagas: {confirmed} confirmed, {compensated} compensated, {failed} failed; {events} events in all")
    print(f"  completed: {int(confirmed) / span:,.0f} sagas/s (first OrderPlaced to last OrderConfirmed {span:.2f} s),"
          f" {int(confirmed) / span / (orders / float(base_s)):.2f} x the baseline's places/s")
    print(f"  OrderPlaced -> OrderConfirmed: p50 {float(p50):.1f} ms, p99 {float(p99):.1f} ms, max {float(worst):.1f} ms")
    print(f"  factd: peak RSS {int(hwm) / 1024:.1f} MiB (baseline {int(base_hwm) / 1024:.1f} MiB), CPU {float(cpu):.1f} s")
    print(f"BENCH sagas_per_s={int(confirmed) / span:.0f} p50_ms={float(p50):.1f} p99_ms={float(p99):.1f}"
          f" rss_mib={int(hwm) / 1024:.1f} cpu_s={float(cpu):.1f} span_s={span:.2f} base_places_per_s={orders / float(base_s):.0f}"
          f" compensated={compensated} failed={failed}")
    if int(confirmed) != orders:
        raise SystemExit("saga bench: not every order was confirmed")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "report":
        report(sys.argv[2:])
    else:
        port, orders, conns, ids = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        (prepare if cmd == "prepare" else place)(port, orders, conns, ids)
