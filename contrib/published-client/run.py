#!/usr/bin/env python3
"""Run the published downstream-farmer 0.1.8 client, unmodified, against this repository's daemon.

Needs PyPI (the client and its pure-Python dependencies are installed with pip into a throw-away
venv at run time; nothing of the client is kept in this repository), so it is not part of the test
suite.  Run it with an interpreter that has downstream-tx's dependencies (it starts the daemon
with ``sys.executable``)::

    /work/venv/bin/python contrib/published-client/run.py --seconds 180
    /work/venv/bin/python contrib/published-client/run.py --libs real --signed

See README.md beside this file.  Exit status 0 when every farmer made heartbeats, the node
counted the same number, no contract was dropped (other than at the end of its challenges)
and neither side logged an error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CLIENT = "downstream-farmer==0.1.8"
#: what the client imports besides the three Storj libraries (never pinned in its setup.py)
CLIENT_DEPS = ["six", "requests", "colorama"]
#: what our shims (downstream_tx.heartbeat / downstream_tx.bitcoin) import
SHIM_DEPS = ["cryptography", "coincurve", "base58"]
#: the original libraries (--libs real); pycoin 0.52 is the one whose pycoin.ecdsa exports the
#: ``intbytes`` that siggy 0.1.0 uses
REAL_SDISTS = ["storj-heartbeat==0.1.10", "RandomIO==0.2.1", "siggy==0.1.0"]
REAL_DEPS = ["pycryptodome", "pycoin==0.52"]

#: what each farmer signs with --signed: a message naming the node (docs/protocol-v1.md, Signatures)
SIGNED_MESSAGE = "downstream-tx token for {url}"

LISTENING = re.compile(r"listening on [0-9a-fA-F.:]*?:(\d+) ")
#: client log lines that mean "this contract was dropped", with the reason captured where there is one
DROP_PATTERNS = [
    re.compile(r"Couldn't update contract (\S+): (.*)"),
    re.compile(r"Error answering challenge for contract (\S+): (.*)"),
    re.compile(r"No status for contract (\S+)()"),
    re.compile(r"Proof for contract (\S+) (will not be submitted before expiration|was not available)"),
    re.compile(r"Unable to fulfill contract: (.*)()"),
]
#: the final "dropping" lines (one per dropped contract, whatever the reason)
DROPPED = re.compile(r"Contract (\S+) not (?:successfully submitted|updated), dropping"
                     r"|Proof for contract (\S+) will not be submitted before expiration")
RETRIED = re.compile(r"(Submission error|Update error|Get contracts failed): ")
EXPECTED_DROP = "no more challenges"  # end of a contract's challenges: the client drops it, as designed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], **kw) -> None:
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run(cmd, check=True, **kw)


# --------------------------------------------------------------------------- client venv


def make_client_venv(work: Path, base_python: str, libs: str) -> tuple[Path, dict[str, str]]:
    venv = work / "client-venv"
    run([base_python, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # the client itself, as published, without its declared dependencies (pycrypto-era libraries)
    run(pip + ["--no-deps", CLIENT])
    run(pip + CLIENT_DEPS)
    paths = [HERE / "compat"]
    env = {}
    if libs == "ours":
        run(pip + SHIM_DEPS)
        paths += [HERE / "shims", ROOT]
    else:
        run(pip + REAL_DEPS)
        dl = work / "sdists"
        run([str(py), "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--no-binary", ":all:", "-d", str(dl)] + REAL_SDISTS)
        # RandomIO and siggy are pure Python: install them as published, without pycrypto
        for name in ("RandomIO-", "siggy-"):
            (sdist,) = [p for p in dl.iterdir() if p.name.startswith(name)]
            run(pip + ["--no-deps", str(sdist)])
        # storj-heartbeat's setup.py also builds a C++/Crypto++ extension (heartbeat.Swizzle) that
        # the Merkle scheme does not use: put its unmodified Python packages on the path instead
        (hb,) = [p for p in dl.iterdir() if p.name.startswith("storj-heartbeat-")]
        libdir = work / "real-libs"
        unpack(hb, work / "unpacked")
        (src,) = (work / "unpacked").glob("storj-heartbeat-*/heartbeat")
        shutil.copytree(src, libdir / "heartbeat")
        paths.append(libdir)
        env["DTX_REAL_LIBS"] = "1"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    lines = [str(p) for p in paths] + ["import dtx_client_compat"]
    Path(site, "dtx_published_client.pth").write_text("\n".join(lines) + "\n")
    probe = ("import heartbeat, RandomIO, siggy, downstream_farmer.client as c; "
             "print(heartbeat.__file__); print(RandomIO.__file__); print(siggy.__file__); "
             "print(c.heartbeat_types['Merkle'])")
    out = subprocess.run([str(py), "-c", probe], check=True, capture_output=True, text=True,
                         env={**os.environ, **env}).stdout
    log("client venv ready; libraries in use:\n    " + out.strip().replace("\n", "\n    "))
    return venv, env


def unpack(archive: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
    else:
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")


# --------------------------------------------------------------------------- node


class Node:
    def __init__(self, work: Path, args: list[str]):
        self.dir = work / "node"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.log_path = self.dir / "daemon.log"
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    def start(self, port: int | None = None) -> None:
        listen = f"tcp:{port or 0}:interface=127.0.0.1"
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
                "downstream", "--listen", listen, "--data-dir", str(self.dir / "data")] + self.args
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNSTREAM_")}
        env["PYTHONPATH"] = str(ROOT)
        start_at = self.log_path.stat().st_size if self.log_path.exists() else 0
        logf = open(self.log_path, "ab")
        log("starting node: " + " ".join(argv[4:]))
        self.proc = subprocess.Popen(argv, cwd=self.dir, env=env, stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")[start_at:]
            m = LISTENING.search(text)
            if m:
                self.port = int(m.group(1))
                log(f"node listening on 127.0.0.1:{self.port}")
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"node exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.1)
        raise SystemExit("node did not start listening within 60 s")

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, route: str):
        try:
            with urllib.request.urlopen(f"{self.url}/api/downstream/v1/{route}", timeout=10) as r:
                return json.loads(r.read())
        except Exception as e:  # noqa: BLE001 - report whatever it was
            return {"error": repr(e)}


# --------------------------------------------------------------------------- farmers


class Farmer:
    def __init__(self, work: Path, index: int, address: str, identity: tuple[str, str] | None, size: int):
        """``identity``: the (message, signature) of the farmer's identity file, or none."""
        self.name = f"farmer{index}"
        self.dir = work / self.name
        (self.dir / "data").mkdir(parents=True, exist_ok=True)  # the client only mkdirs data/chunks
        self.address = address
        self.size = size
        if identity is not None:
            message, signature = identity
            (self.dir / "data" / "identities.json").write_text(json.dumps(
                {address: {"message": message, "signature": signature}}))
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "farmer.log"
        self.runs = 0

    def start(self, venv: Path, env: dict[str, str], url: str) -> None:
        argv = [str(venv / "bin" / "downstream"), url, "--size", str(self.size), "--quiet",
                "--history", "data/history.json", "--identity", "data/identities.json",
                "--data-directory", "data/chunks", "--log-path", "farmer.log"]
        if self.runs == 0:
            argv += ["--address", self.address]
        self.runs += 1
        out = open(self.dir / "stdout.log", "ab")
        log(f"{self.name}: " + " ".join(argv[1:]))
        self.proc = subprocess.Popen(argv, cwd=self.dir, env={**os.environ, **env}, stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()

    def stop(self) -> int | None:
        """SIGINT (the client's own clean shutdown); None if it had already exited."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def summary(self) -> dict:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        lines = text.splitlines()
        farmer_ids = re.findall(r"Farmer id: ([0-9a-f]+)", text)
        reasons = []
        for line in lines:
            for pat in DROP_PATTERNS:
                m = pat.search(line)
                if m:
                    reasons.append((m.group(1), m.group(2) or m.group(0)))
                    break
        dropped = [m.group(1) or m.group(2) for m in map(DROPPED.search, lines) if m]
        errors = [ln for ln in lines if ":ERROR:" in ln or " ERROR:" in ln]
        # a failed request is retried by the client (3 s later, while the contract can still make it)
        retried = [ln for ln in errors if RETRIED.search(ln)]
        unexpected_errors = [ln for ln in errors if ln not in retried and EXPECTED_DROP not in ln
                             and not DROPPED.search(ln)]
        fatal = [ln for ln in lines if re.search(r"INFO:storj\.downstream_farmer:[^:]*:(Error|Unexpected error): ", ln)]
        tracebacks = text.count("Traceback (most recent call last)")
        return {
            "farmer_ids": list(dict.fromkeys(farmer_ids)),
            "heartbeats": sum(int(n) for n in re.findall(r"Submitted (\d+) proofs successfully", text)),
            "contracts_obtained": sum(int(n) for n in re.findall(r"Obtained (\d+) contracts", text)),
            "dropped": dropped,
            "drop_reasons": reasons,
            "expected_drops": sum(1 for _, r in reasons if r == EXPECTED_DROP),
            "errors": unexpected_errors,
            "retried": retried,
            "fatal": fatal,
            "tracebacks": tracebacks,
        }


# --------------------------------------------------------------------------- host stalls


class StallWatch(threading.Thread):
    """Notes when this machine stops running us for a while (a loaded CI box can freeze every
    process for tens of seconds, which makes any farmer miss a due time); reported so that a drop
    at such a moment is not mistaken for an incompatibility."""

    def __init__(self, threshold: float = 2.0):
        super().__init__(daemon=True)
        self.threshold = threshold
        self.stalls: list[tuple[str, float]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        last = time.monotonic()
        while not self.stop_event.wait(0.25):
            now = time.monotonic()
            if now - last - 0.25 > self.threshold:
                self.stalls.append((time.strftime("%H:%M:%S"), round(now - last - 0.25, 1)))
            last = now


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=180, help="how long the farmers run (default 180)")
    ap.add_argument("--farmers", type=int, default=2, help="clients run at once, each with its own address")
    ap.add_argument("--libs", choices=["ours", "real"], default="ours",
                    help="'ours': heartbeat/RandomIO/siggy shims on downstream_tx (default); 'real': the "
                         "original storj-heartbeat 0.1.10, RandomIO 0.2.1 and siggy 0.1.0 on pycryptodome")
    ap.add_argument("--interval", type=int, default=30,
                    help="node --seeded-interval (default 30; the client needs well over 10 s)")
    ap.add_argument("--pool", default="65536:12,1048576:4", help="node --seeded-pool")
    ap.add_argument("--challenges", type=int, default=64, help="node --seeded-challenges")
    ap.add_argument("--size", type=int, default=1179648, help="each client's --size (bytes to farm)")
    ap.add_argument("--signed", action="store_true",
                    help="node requires signatures (naming the node, the default); each farmer's identity file "
                         "holds a message naming the node's URL, signed with its own key")
    ap.add_argument("--restart-client", action="store_true",
                    help="stop the clients half way and start them again (token from history.json, "
                         "GET /heartbeat/<token>)")
    ap.add_argument("--restart-node", action="store_true",
                    help="restart the node (same port and database) half way")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the client venv")
    ap.add_argument("--workdir", help="keep everything here (default: a temporary directory, removed "
                                      "unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--node-arg", action="append", default=[], help="extra daemon option (repeatable)")
    args = ap.parse_args(argv)

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="published-client-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"work directory {work}")
    keep = args.keep or bool(args.workdir)
    node = None
    farmers: list[Farmer] = []
    try:
        venv, env = make_client_venv(work, args.python, args.libs)
        node_args = ["--seeded-interval", str(args.interval), "--seeded-pool", args.pool,
                     "--seeded-challenges", str(args.challenges), "--tick", "0.5"]
        port = None
        if args.signed:  # the signed messages name the node's public URL, so its port is chosen first
            port = free_port()
            node_args += ["--require-signature", "true", "--public-url", f"http://127.0.0.1:{port}"]
        node = Node(work, node_args + args.node_arg)
        node.start(port)
        sys.path.insert(0, str(ROOT))
        from downstream_tx.bitcoin import sign_message
        message = SIGNED_MESSAGE.format(url=node.url)
        for i in range(args.farmers):  # each farmer its own key (and so its own address)
            address, signature = sign_message(bytes([i + 1]) * 32, message)
            farmers.append(Farmer(work, i, address, (message, signature) if args.signed else None, args.size))
        watch = StallWatch()
        watch.start()
        for f in farmers:
            f.start(venv, env, node.url)
        half = args.seconds / 2
        deadline = time.monotonic() + args.seconds
        did_restart = False
        while time.monotonic() < deadline:
            time.sleep(1)
            if not did_restart and time.monotonic() > deadline - half:
                did_restart = True
                if args.restart_node:
                    log("restarting the node")
                    node.stop()
                    node.start(node.port)
                if args.restart_client:
                    for f in farmers:
                        log(f"restarting {f.name}")
                        f.stop()
                        f.start(venv, env, node.url)
            for f in farmers:
                if f.proc is not None and f.proc.poll() is not None and not getattr(f, "_exit_noted", False):
                    f._exit_noted = True
                    log(f"{f.name} exited early with status {f.proc.returncode}")
        exits = {f.name: f.stop() for f in farmers}
        watch.stop_event.set()
        return report(node, farmers, exits, watch, args)
    finally:
        if node is not None:
            node.stop()
        for f in farmers:
            if f.proc is not None and f.proc.poll() is None:
                f.proc.kill()
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(node: Node, farmers: list[Farmer], exits: dict, watch: StallWatch, args) -> int:
    text = node.log_path.read_text(errors="replace")
    node_problems = [ln for ln in text.splitlines()
                     if re.search(r"#(error|critical|warn)\]|Traceback| [45]\d\d \d+(\.\d+)?ms", ln)
                     and "/heartbeat/<token> 404" not in ln]
    ok = True
    print()
    print(f"=== published downstream-farmer 0.1.8 against downstream-tx ({args.libs} libraries"
          f"{', signed' if args.signed else ''}), {args.seconds:.0f} s, interval {args.interval:g} s ===")
    for f in farmers:
        s = f.summary()
        node_hb = 0
        shown = []
        for fid in s["farmer_ids"]:
            st = node.get(f"status/show/{fid}")
            node_hb += int(st.get("heartbeats", 0) or 0)
            shown.append(st)
        unexpected_drops = len(s["dropped"]) - s["expected_drops"]
        print(f"{f.name} ({f.address}):")
        print(f"  farmer ids          : {', '.join(s['farmer_ids']) or '-'}")
        print(f"  contracts obtained  : {s['contracts_obtained']}")
        print(f"  heartbeats (client) : {s['heartbeats']}")
        print(f"  heartbeats (node)   : {node_hb}  (status/show)")
        print(f"  contracts dropped   : {len(s['dropped'])} ({s['expected_drops']} at the end of their challenges)")
        for cid, reason in s["drop_reasons"]:
            print(f"      contract {cid}: {reason}")
        state = "still running, stopped with SIGINT" if exits[f.name] is not None else "EXITED EARLY"
        print(f"  client exit         : {state} ; fatal lines: {len(s['fatal'])} ; tracebacks: {s['tracebacks']}")
        print(f"  failed requests     : {len(s['retried'])} (retried by the client) ; other errors: {len(s['errors'])}")
        for line in (s["fatal"] + s["errors"] + s["retried"])[:10]:
            print(f"      {line}")
        for st in shown:
            print(f"  node status/show    : {json.dumps(st, sort_keys=True)}")
        if (s["heartbeats"] == 0 or node_hb != s["heartbeats"] or unexpected_drops or s["errors"] or s["fatal"]
                or exits[f.name] is None):
            ok = False
    print(f"node log: {len(node_problems)} warning/error/4xx/5xx lines (404s for unknown tokens excluded)")
    for line in node_problems[:15]:
        print(f"    {line}")
    if node_problems:
        ok = False
    if watch.stalls:
        print(f"host stalls (this machine did not run us for a while): {watch.stalls}")
    print("RESULT:", "OK" if ok else "PROBLEMS FOUND")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
