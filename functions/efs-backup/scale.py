#!/usr/bin/env python3
# Usage: .venv/bin/python functions/efs-backup/scale.py 1000000 target/release/efs-backup
#        PHASES=restore,verify .venv/bin/python functions/efs-backup/scale.py 1000000 target/release/efs-backup
"""efs-backup at scale: a tree of N zero-byte files, a matching previous snapshot put straight
into moto, then the release binary run through a minimal Lambda Runtime API, once per phase:
- no-change: a backup that finds nothing to upload;
- changed: a backup after one file in a hundred changed;
- resume: a backup resuming from a checkpoint (put straight into moto) that lists every file
  as stored, as a run killed just before its manifest leaves it;
- prune: the retention rule with KEEP_SNAPSHOTS=1 (two snapshots to delete);
- restore: the tree's snapshot restored into an empty folder, from s3s-fs (target/tools/bin,
  installed by scripts/bench-efs-backup; moto takes hours for a million GETs), whose bucket
  is laid out on disk directly (hard links to the tree's files);
- verify: 1,000 sampled files of that snapshot re-read and checked.
PHASES (comma-separated, default all) picks some. Prints each phase's peak RSS (VmHWM) and wall
time."""
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

def scan(version, files_only=False):
    """The tree's entries as a manifest holds them (files stored at `version`), sorted."""
    entries = []
    def go(d, rel):
        for e in os.scandir(d):
            r = f"{rel}{e.name}"; st = e.stat(follow_symlinks=False)
            isdir = e.is_dir(follow_symlinks=False)
            if r == "done": continue
            x = {"path": r, "type": "dir" if isdir else "file", "size": 0 if isdir else st.st_size,
                 "mtime_ns": st.st_mtime_ns, "mode": st.st_mode & 0o7777, "uid": st.st_uid, "gid": st.st_gid, "ino": st.st_ino}
            if not isdir:
                x["sha256"] = EMPTY if st.st_size == 0 else hashlib.sha256(open(e.path, "rb").read()).hexdigest()
                x["version_id"] = version
            if not (files_only and isdir): entries.append(x)
            if isdir: go(e.path, r + "/")
    go(ROOT, "")
    entries.sort(key=lambda e: e["path"].encode())
    return entries

def gz(header, entries):
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6) as g:
        g.write((json.dumps(header) + "\n").encode())
        for e in entries: g.write((json.dumps(e) + "\n").encode())
    return buf.getvalue()

def manifest(version="v0", hours_ago=1):
    entries = scan(version)
    now = datetime.datetime.now(datetime.timezone.utc)
    sid = (now - datetime.timedelta(hours=hours_ago)).strftime("%Y%m%dT%H%M%S.000Z")
    files = sum(1 for e in entries if e["type"] == "file")
    h = {"format": "efs-backup/1", "snapshot_id": sid, "created_at": now.isoformat(), "completed_at": now.isoformat(),
         "source_dir": ROOT, "files": files, "dirs": len(entries) - files, "symlinks": 0, "bytes": sum(e["size"] for e in entries),
         "exclude": [], "previous": None}
    return sid, gz(h, entries)

class Api(BaseHTTPRequestHandler):
    event = None; reply = None; served = False; seconds = 900
    def log_message(self, *a): pass
    def do_GET(self):
        if Api.served: time.sleep(3600); return
        Api.served = True; Api.t0 = time.time()
        body = json.dumps(Api.event).encode()
        self.send_response(200)
        for k, v in [("Lambda-Runtime-Aws-Request-Id", "r1"), ("Lambda-Runtime-Deadline-Ms", str(int((time.time() + Api.seconds) * 1000))),
                     ("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:efs-backup"),
                     ("Lambda-Runtime-Trace-Id", "Root=1-0-0"), ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]:
            self.send_header(k, v)
        self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0)); Api.reply = self.rfile.read(n); Api.t1 = time.time()
        self.send_response(202); self.end_headers()

def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def run(endpoint, label, event=None, env_extra=None, seconds=900):
    Api.served = False; Api.reply = None; Api.event = event or {"action": "backup"}; Api.seconds = seconds
    srv = ThreadingHTTPServer(("127.0.0.1", free()), Api); threading.Thread(target=srv.serve_forever, daemon=True).start()
    env = {"PATH": os.environ["PATH"], "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{srv.server_address[1]}", "AWS_ENDPOINT_URL": endpoint,
           "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "S3_FORCE_PATH_STYLE": "true",
           "AWS_LAMBDA_FUNCTION_NAME": "efs-backup", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
           "AWS_LAMBDA_LOG_FORMAT": "JSON", "SOURCE_DIR": ROOT, "BACKUP_BUCKET": BUCKET, "BACKUP_PREFIX": PREFIX, "EXCLUDE": "done",
           "UPLOAD_CONCURRENCY": os.environ.get("UPLOAD_CONCURRENCY", "32"), "AWS_EC2_METADATA_DISABLED": "true", **(env_extra or {})}
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
    if Api.reply is None: sys.exit(f"{label}: the binary exited ({p.returncode}) without answering")
    out = json.loads(Api.reply)
    keys = ["status", "files_uploaded", "files_total", "files_restored", "files_remaining", "checked", "delete", "errorType", "errorMessage"]
    shown = ", ".join(f"{k} {out[k]}" for k in keys if k in out)
    print(f"{label}: wall {Api.t1 - Api.t0:.1f} s, peak RSS {hwm / 1024:.0f} MiB, {shown}", flush=True)
    return out

PHASES = set(os.environ.get("PHASES", "no-change,changed,resume,prune,restore,verify").split(","))
t = time.time(); gen(); print(f"tree: {time.time() - t:.0f} s", flush=True)
def start(cmd, port, name):
    """Starts a server and waits until it accepts connections, or fails naming it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time() + 30
    while time.time() < end:
        if proc.poll() is not None: sys.exit(f"{name} exited ({proc.returncode}) before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close(); return proc
        except OSError: time.sleep(0.1)
    proc.kill(); sys.exit(f"{name} did not listen on 127.0.0.1:{port} within 30 s")
def client(ep, key="t", secret="t"):
    return boto3.client("s3", endpoint_url=ep, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret)

if PHASES & {"no-change", "changed", "resume", "prune"}:
    port = free(); moto = start([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, "moto_server")
    ep = f"http://127.0.0.1:{port}"; s3 = client(ep)
    s3.create_bucket(Bucket=BUCKET); s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    t = time.time(); sid, body = manifest(); print(f"manifest: {len(body) / 2**20:.0f} MiB gz, {time.time() - t:.0f} s", flush=True)
    key = f"{PREFIX}snapshots/{sid}.jsonl.gz"
    v = s3.put_object(Bucket=BUCKET, Key=key, Body=body)["VersionId"]
    s3.put_object(Bucket=BUCKET, Key=PREFIX + "latest.json", Body=json.dumps({"snapshot_id": sid, "manifest_key": key, "manifest_version_id": v}))
    if "no-change" in PHASES: run(ep, "no-change")
    if "changed" in PHASES:
        for i in range(0, N, 100):
            with open(f"{ROOT}/{i % 16:x}/{i % 4096:03x}/File_{i}.png", "wb") as f: f.write(b"changed")
        run(ep, "one percent changed")
    if "resume" in PHASES:
        # What a run killed just before its manifest leaves: every file stored, in its checkpoint.
        latest = json.loads(s3.get_object(Bucket=BUCKET, Key=PREFIX + "latest.json")["Body"].read())
        now = datetime.datetime.now(datetime.timezone.utc)
        h = {"format": "efs-backup/1", "snapshot_id": now.strftime("%Y%m%dT%H%M%S.000Z"), "created_at": now.isoformat(),
             "previous": latest["snapshot_id"]}
        t = time.time(); body = gz(h, scan("v1", files_only=True))
        s3.put_object(Bucket=BUCKET, Key=PREFIX + "checkpoint.jsonl.gz", Body=body)
        print(f"checkpoint: {len(body) / 2**20:.0f} MiB gz, {time.time() - t:.0f} s", flush=True)
        run(ep, "resume")
    if "prune" in PHASES: run(ep, "prune", {"action": "prune"}, {"KEEP_SNAPSHOTS": "1"})
    moto.kill()

if PHASES & {"restore", "verify"}:
    s3s_bin = os.environ.get("S3S_FS", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../target/tools/bin/s3s-fs"))
    if not os.path.exists(s3s_bin): sys.exit(f"{s3s_bin} is missing: scripts/bench-efs-backup installs it")
    data = ROOT + "-s3"; subprocess.run(["rm", "-rf", data], check=True); os.makedirs(data)
    port = free(); s3s = start([s3s_bin, "--host", "127.0.0.1", "--port", str(port), "--access-key", "t", "--secret-key", "t", data], port, "s3s-fs")
    ep = f"http://127.0.0.1:{port}"; s3 = client(ep)
    s3.create_bucket(Bucket=BUCKET)
    t = time.time(); sid, body = manifest("null")
    # The bucket as a backup leaves it: files/<path> for every file (s3s-fs keeps objects as files).
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel = os.path.relpath(dirpath, ROOT)
        dest = os.path.normpath(os.path.join(data, BUCKET, PREFIX + "files", rel))
        os.makedirs(dest, exist_ok=True)
        for name in filenames:
            if rel == "." and name == "done": continue
            os.link(os.path.join(dirpath, name), os.path.join(dest, name))
    key = f"{PREFIX}snapshots/{sid}.jsonl.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    s3.put_object(Bucket=BUCKET, Key=PREFIX + "latest.json", Body=json.dumps({"snapshot_id": sid, "manifest_key": key, "manifest_version_id": None}))
    print(f"s3s-fs bucket: {time.time() - t:.0f} s", flush=True)
    env = {"ALLOW_UNVERSIONED_BUCKET": "true"}
    if "restore" in PHASES:
        target = ROOT + "-restore"; subprocess.run(["rm", "-rf", target], check=True)
        out = run(ep, "restore", {"action": "restore", "target_dir": target}, env, seconds=3600)
        restored = sum(len(f) for _, _, f in os.walk(target))
        print(f"restore: {restored} files in {target}", flush=True)
        subprocess.run(["rm", "-rf", target], check=True)
    if "verify" in PHASES: run(ep, "verify", {"action": "verify", "sample": 1000}, env)
    s3s.kill(); subprocess.run(["rm", "-rf", data], check=True)
