"""Start-to-ready time: spawn the service, poll /readyz on the ops port every 0.5 ms, and
report the time from spawn to the first 200. Repeats N times; prints one line per run and a
RESULT line with the median, min and max in milliseconds.

usage: python3 ready_time.py N OPS_PORT FRESH|EXISTING DB_DIR -- COMMAND...
The service's environment is inherited (run.sh sets APP_*); APP_DATABASE__URL is set here.
"""

import http.client
import os
import signal
import statistics
import subprocess
import sys
import time


def ready(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def once(cmd, port, db_url, log):
    env = dict(os.environ, APP_DATABASE__URL=db_url)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = start + 10
        while time.perf_counter() < deadline:
            if ready(port):
                return (time.perf_counter() - start) * 1000
            if proc.poll() is not None:
                raise SystemExit(f"service exited with {proc.returncode} before ready")
            time.sleep(0.0005)
        raise SystemExit("not ready within 10 s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    n, port, mode, db_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    cmd = sys.argv[sys.argv.index("--") + 1:]
    times = []
    with open(os.path.join(db_dir, "ready.log"), "ab") as log:
        for i in range(n):
            name = f"ready-{i}.db" if mode == "FRESH" else "ready-existing.db"
            url = f"sqlite://{os.path.join(db_dir, name)}"
            if mode == "EXISTING" and i == 0:
                once(cmd, port, url, log)  # create and migrate it once, not timed
            ms = once(cmd, port, url, log)
            times.append(ms)
            print(f"  {mode.lower():8} run {i + 1:2}: {ms:7.1f} ms")
    print(f"RESULT median_ms={statistics.median(times):.1f} "
          f"min_ms={min(times):.1f} max_ms={max(times):.1f}")


if __name__ == "__main__":
    main()
