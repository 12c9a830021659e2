#!/usr/bin/env python3
# Usage: .venv/bin/python functions/efs-backup/scale.py 1000000 target/release/efs-backup
"""efs-backup at scale: a tree of N zero-byte files, a matching previous snapshot put straight
into moto, then the release binary run through a minimal Lambda Runtime API: a no-change run
and a one-percent-changed run. Prints peak RSS (VmHWM) and wall time."""
import datetime, gzip, hashlib, io, json, os, subprocess, sys, threading, time, socket
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
import boto3

N = int(sys.argv[1]); BIN = sys.argv[2]; ROOT = os.environ.get("SCALE_ROOT", f"/tmp/efs-backup-scale-{N}"); BUCKET = "scale"; PREFIX = "efs/"
EMPTY = hashlib.sha256(b"").hexdigest()

def gen():
    if os.path.exists(ROOT + "/done"):
        return
    for i in range(N):
        d = f"{ROOT}/{i % 16:x}/{i % 4096:03x}"
        if i < 4096: os.makedirs(d, exist_ok=True)
        open(f"{d}/File_{i}.png", "wb").close()
    open(ROOT + "/done", "wb").close()

def manifest():
    entries = []
    def go(d, rel):
        for e in os.scandir(d):
            r = f"{rel}{e.name}"; st = e.stat(follow_symlinks=False)
            isdir = e.is_dir(follow_symlinks=False)
            x = {"path": r, "type": "dir" if isdir else "file", "size": 0 if isdir else st.st_size,
                 "mtime_ns": st.st_mtime_ns, "mode": st.st_mode & 0o7777, "uid": st.st_uid, "gid": st.st_gid, "ino": st.st_ino}
            if not isdir: x["sha256"] = EMPTY; x["version_id"] = "v0"
            entries.append(x)
            if isdir: go(e.path, r + "/")
    go(ROOT, "")
    entries.sort(key=lambda e: e["path"])
    now = datetime.datetime.now(datetime.timezone.utc)
    sid = (now - datetime.timedelta(hours=1)).strftime("%Y%m%dT%H%M%S.000Z")
    files = sum(1 for e in entries if e["type"] == "file")
    h = {"format": "efs-backup/1", "snapshot_id": sid, "created_at": now.isoformat(), "completed_at": now.isoformat(),
         "source_dir": ROOT, "files": files, "dirs": len(entries) - files, "symlinks": 0, "bytes": 0, "exclude": [], "previous": None}
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6) as gz:
        gz.write((json.dumps(h) + "\n").encode())
        for e in entries: gz.write((json.dumps(e) + "\n").encode())
    return sid, buf.getvalue()

class Api(BaseHTTPRequestHandler):
    event = None; reply = None; served = False
    def log_message(self, *a): pass
    def do_GET(self):
        if Api.served: time.sleep(3600); return
        Api.served = True; Api.t0 = time.time()
        body = json.dumps(Api.event).encode()
        self.send_response(200)
        for k, v in [("Lambda-Runtime-Aws-Request-Id", "r1"), ("Lambda-Runtime-Deadline-Ms", str(int((time.time() + 900) * 1000))),
                     ("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:efs-backup"),
                     ("Lambda-Runtime-Trace-Id", "Root=1-0-0"), ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]:
            self.send_header(k, v)
        self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0)); Api.reply = self.rfile.read(n); Api.t1 = time.time()
        self.send_response(202); self.end_headers()

def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def run(endpoint, label):
    Api.served = False; Api.reply = None; Api.event = {"action": "backup"}
    srv = ThreadingHTTPServer(("127.0.0.1", free()), Api); threading.Thread(target=srv.serve_forever, daemon=True).start()
    env = {"PATH": os.environ["PATH"], "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{srv.server_address[1]}", "AWS_ENDPOINT_URL": endpoint,
           "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "S3_FORCE_PATH_STYLE": "true",
           "AWS_LAMBDA_FUNCTION_NAME": "efs-backup", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
           "AWS_LAMBDA_LOG_FORMAT": "JSON", "SOURCE_DIR": ROOT, "BACKUP_BUCKET": BUCKET, "BACKUP_PREFIX": PREFIX, "EXCLUDE": "done",
           "UPLOAD_CONCURRENCY": "32", "AWS_EC2_METADATA_DISABLED": "true"}
    p = subprocess.Popen([BIN], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hwm = 0
    while Api.reply is None and p.poll() is None:
        try:
            for l in open(f"/proc/{p.pid}/status"):
                if l.startswith("VmHWM"): hwm = int(l.split()[1])
        except OSError: pass
        time.sleep(0.2)
    try:
        for l in open(f"/proc/{p.pid}/status"):
            if l.startswith("VmHWM"): hwm = int(l.split()[1])
    except OSError: pass
    p.kill(); srv.shutdown()
    out = json.loads(Api.reply)
    print(f"{label}: wall {Api.t1 - Api.t0:.1f} s, peak RSS {hwm / 1024:.0f} MiB, status {out.get('status')}, uploaded {out.get('files_uploaded')}, total {out.get('files_total')}", flush=True)

t = time.time(); gen(); print(f"tree: {time.time() - t:.0f} s", flush=True)
port = free(); moto = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def wait_for(port, timeout=30.0):
    """Until moto accepts connections (it takes 1–5 s to import), or fails naming the port."""
    end = time.time() + timeout
    while time.time() < end:
        if moto.poll() is not None: sys.exit(f"moto_server exited ({moto.returncode}) before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close(); return
        except OSError: time.sleep(0.1)
    moto.kill(); sys.exit(f"moto_server did not listen on 127.0.0.1:{port} within {timeout:.0f} s")
wait_for(port); ep = f"http://127.0.0.1:{port}"
s3 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
s3.create_bucket(Bucket=BUCKET); s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
t = time.time(); sid, body = manifest(); print(f"manifest: {len(body) / 2**20:.0f} MiB gz, {time.time() - t:.0f} s", flush=True)
key = f"{PREFIX}snapshots/{sid}.jsonl.gz"
v = s3.put_object(Bucket=BUCKET, Key=key, Body=body)["VersionId"]
s3.put_object(Bucket=BUCKET, Key=PREFIX + "latest.json", Body=json.dumps({"snapshot_id": sid, "manifest_key": key, "manifest_version_id": v}))
run(ep, "no-change")
for i in range(0, N, 100):
    with open(f"{ROOT}/{i % 16:x}/{i % 4096:03x}/File_{i}.png", "wb") as f: f.write(b"changed")
run(ep, "one percent changed")
moto.kill()
