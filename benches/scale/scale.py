#!/usr/bin/env python3
"""pixdex at scale: a synthetic library of N tiny images in F folders, the daemon on it (SQLite
by default, or PostgreSQL with --catalog-url), and the control plane timed as the web app and
the API use it. Prints one markdown table (one column per N) and the growth factor per 10x.

  benches/scale/run 10000 100000 1000000            # SQLite, 1,000 folders
  benches/scale/run --catalog-url postgres://... 1000000

Not part of CI (1M takes ~10 minutes on 2 cores); `benches/scale/run --smoke` runs 10k.
No model is loaded: this measures cataloguing, listings and session starts, not embedding.
"""
import argparse, http.client, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0000003010100c9fe92ef0000000049454e44ae426082")


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=3600)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


class Daemon:
    def __init__(self, binary, workdir, lib, catalog_url):
        self.binary, self.workdir, self.lib = binary, workdir, lib
        self.sock = os.path.join(workdir, "ctl.sock")
        self.cfg = os.path.join(workdir, "pixdex.toml")
        with open(self.cfg, "w") as f:
            f.write(f"""[daemon]
data_dir = "{workdir}/data"
socket = "{self.sock}"
request_timeout_secs = 600
log = "warn"

[catalog]
url = "{catalog_url}"

[library]
roots = ["{lib}"]
settle_ms = 0
rescan_interval_secs = 86400

[model]
weights = "{workdir}/no-model.pth"
""")
        self.proc = None

    def start(self):
        log = open(os.path.join(self.workdir, "daemon.log"), "a")
        self.proc = subprocess.Popen([self.binary, "daemon", "--config", self.cfg], stdout=log, stderr=log)
        t = time.time()
        while time.time() - t < 120:
            try:
                if self.call("GET", "/api/v1/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit("daemon did not answer within 120 s; see " + self.workdir + "/daemon.log")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)

    def call(self, method, path, body=None):
        c = UnixHTTP(self.sock)
        c.request(method, path, body=None if body is None else json.dumps(body), headers={"content-type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        try:
            return r.status, json.loads(data or b"null")
        except ValueError:
            return r.status, None

    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def hwm_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0


def make_library(lib, n, folders, seed=PNG):
    """N images in `folders` folders: hard links of a tiny PNG, one seed file per folder
    (a file has at most 65,000 links on ext4); ~100k files/s."""
    seeds = os.path.join(os.path.dirname(lib), "seeds")
    os.makedirs(seeds, exist_ok=True)
    per = max(1, -(-n // folders))
    made = 0
    for d in range(folders):
        if made >= n:
            break
        dd = os.path.join(lib, f"folder{d:04d}")
        os.makedirs(dd, exist_ok=True)
        src = os.path.join(seeds, f"seed{d:04d}.png")
        with open(src, "wb") as f:
            f.write(seed)
        for i in range(min(per, n - made)):
            os.link(src, os.path.join(dd, f"img{i:06d}.png"))
            made += 1
    return made


def median_time(fn, k=10):
    ts = []
    for _ in range(k):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def wait_for(pred, limit, every=0.2):
    t = time.time()
    while time.time() - t < limit:
        if pred():
            return time.time() - t
        time.sleep(every)
    return None


def ok(r, what):
    if r[0] >= 400:
        raise SystemExit(f"{what}: HTTP {r[0]}: {r[1]}")
    return r[1]


def measure(binary, n, folders, catalog_url, keep):
    work = tempfile.mkdtemp(prefix=f"pixdex-scale-{n}-", dir=os.environ.get("SCALE_DIR", "/tmp"))
    lib = os.path.join(work, "lib")
    os.makedirs(lib)
    t = time.time()
    n = make_library(lib, n, folders)
    print(f"[{n}] library made in {time.time() - t:.1f} s", file=sys.stderr)
    url = catalog_url or f"sqlite://{work}/catalog.db"
    d = Daemon(binary, work, lib, url)
    row = {}
    t0 = time.time()
    d.start()
    rss_max = 0.0

    def known():
        nonlocal rss_max
        rss_max = max(rss_max, d.rss_mb())
        w = d.call("GET", "/api/v1/training/watcher")[1] or {}
        return (w.get("reconciles") or 0) >= 1 and w.get("assetsKnown") == n
    secs = wait_for(known, 3600, 0.5)
    row["cold catalogue (files/s)"] = f"{n / secs:,.0f}" if secs else "timeout"
    row["RSS after cold catalogue (MB)"] = f"{d.rss_mb():.0f} (peak {d.hwm_mb():.0f})"
    root = lib
    q = lambda p: p.replace(" ", "%20")
    row["library tree (s)"] = median_time(lambda: ok(d.call("GET", "/api/v1/library"), "library"))
    row["directories listing (s)"] = median_time(lambda: ok(d.call("GET", q(f"/api/v1/training/directories?path={root}")), "dirs"))
    row["directory scan of the root (s)"] = median_time(lambda: ok(d.call("POST", "/api/v1/training/directories/scan", {"rootPath": root}), "scan"))
    subs = [f"folder{i:04d}" for i in range(folders)]
    row["admission of every folder (s)"] = median_time(lambda: ok(d.call("POST", "/api/v1/training/admission", {"rootPath": root, "subdirectories": subs}), "admission"))
    k = [0]

    def create():
        k[0] += 1
        return ok(d.call("POST", "/api/v1/training/sessions", {"name": f"scale-{k[0]}", "rootPath": root}), "create")
    row["session create over the root (s)"] = median_time(create)
    sid = create()["id"]
    t = time.perf_counter()
    r = ok(d.call("POST", f"/api/v1/training/sessions/{sid}/start"), "start")
    row["session start answered (s)"] = time.perf_counter() - t
    def running():
        return (d.call("GET", f"/api/v1/training/sessions/{sid}")[1] or {}).get("status") == "running"
    q_secs = wait_for(running, 3600, 0.1)
    row["all jobs queued (s)"] = (time.perf_counter() - t) if q_secs is not None else "timeout"
    prog = ok(d.call("GET", f"/api/v1/training/sessions/{sid}/progress"), "progress")
    assert prog["jobsSummary"]["pending"] == n, prog
    ok(d.call("POST", f"/api/v1/training/sessions/{sid}/pause"), "pause")
    # No model runs here: mark every job completed in the catalog, as a finished session's would
    # be, so the restart below resets a million completed jobs (not pending ones).
    sql = f"UPDATE training_jobs SET status = 'completed', completed_at = 1 WHERE session_id = {sid}"
    if url.startswith("sqlite:"):
        import sqlite3
        db = sqlite3.connect(url.split("://", 1)[1], timeout=600)
        db.execute(sql)
        db.commit()
        db.close()
    else:
        subprocess.run(["psql", url, "-qc", sql], check=True)
    t = time.perf_counter()
    ok(d.call("POST", f"/api/v1/training/sessions/{sid}/restart"), "restart")
    wait_for(running, 3600, 0.1)
    row["session restart, all jobs pending again (s)"] = time.perf_counter() - t
    row["session progress (s)"] = median_time(lambda: ok(d.call("GET", f"/api/v1/training/sessions/{sid}/progress"), "progress"))
    last_page = max(1, n // 50)
    row["assets page deep in the list (s)"] = median_time(lambda: ok(d.call("GET", f"/api/v1/assets?page={last_page}&page_size=50"), "assets"))
    # The same depth by keyset cursor (the web app's way): the id just before the last page.
    deep = ok(d.call("GET", f"/api/v1/assets?page={last_page}&page_size=1"), "assets")["items"]
    cur = deep[0]["id"] if deep else 0
    row["assets page deep, by cursor (s)"] = median_time(lambda: ok(d.call("GET", f"/api/v1/assets?cursor={cur}&page_size=50"), "assets"))
    row["RSS serving these (MB)"] = f"{d.rss_mb():.0f} (peak {d.hwm_mb():.0f})"
    d.stop()
    # Warm restart: the reconcile of an unchanged library.
    d.start()
    w0 = time.time()
    def reconciled():
        w = d.call("GET", "/api/v1/training/watcher")[1] or {}
        return (w.get("reconciles") or 0) >= 1
    wait_for(reconciled, 3600, 0.2)
    w = d.call("GET", "/api/v1/training/watcher")[1]
    row["warm reconcile (s)"] = (w.get("lastReconcileMs") or 0) / 1000
    row["RSS after warm restart (MB)"] = f"{d.rss_mb():.0f} (peak {d.hwm_mb():.0f})"
    d.stop()
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return n, row


def fmt(v):
    if isinstance(v, float):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return str(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="*", type=int, default=[10000, 100000, 1000000])
    ap.add_argument("--folders", type=int, default=1000)
    ap.add_argument("--binary", default=os.environ.get("PIXDEX_BIN", "target/release/pixdex"))
    ap.add_argument("--catalog-url", default=None, help="a PostgreSQL URL (a fresh database per size is created from it)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    cols = []
    for n in a.sizes:
        url = None
        if a.catalog_url:
            db = f"pixdex_scale_{n}_{os.getpid()}"
            subprocess.run(["psql", a.catalog_url.rsplit("/", 1)[0] + "/postgres", "-qc", f"CREATE DATABASE {db}"], check=True)
            url = a.catalog_url.rsplit("/", 1)[0] + "/" + db
        cols.append(measure(a.binary, n, a.folders, url, a.keep))
    keys = list(cols[0][1].keys())
    print("| call | " + " | ".join(f"{n:,}" for n, _ in cols) + (" | growth per 10× |" if len(cols) > 1 else " |"))
    print("|---" * (len(cols) + 1 + (len(cols) > 1)) + "|")
    for k in keys:
        vals = [c[1][k] for c in cols]
        growth = ""
        if len(cols) > 1:
            nums = [v for v in vals if isinstance(v, float)]
            if len(nums) == len(vals) and nums[0] > 0:
                import math
                decades = math.log10(cols[-1][0] / cols[0][0])
                growth = f" | {(nums[-1] / nums[0]) ** (1 / decades):.1f}×" if decades > 0 else " | "
            else:
                growth = " | "
        print(f"| {k} | " + " | ".join(fmt(v) for v in vals) + growth + " |")


if __name__ == "__main__":
    main()
