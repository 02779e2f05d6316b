"""CamProxy's load benchmark: one command, from the camera emulator to N viewers.

For each N it starts the camera emulator (``camemu.py``), the daemon
(``twistd -n camproxy`` on 127.0.0.1) and a viewer process (``viewerload.py``) with N
sockets logged in as browsers, warms up, measures for ``--duration`` seconds and stops
everything by PID. Then the same N against the bare relay (``relay.py``), the floor.
With ``--slow K`` it also runs N fast viewers plus K that never read; with ``--phones K``,
N fast viewers plus K "slow phones" that read at ``--phone-kbps``, and reports the age of
the frames those get. With ``--profile N`` it adds one run at N with py-spy attached to
the daemon in the steady state; ``--profile-join N``, one with py-spy attached during the
join. ``--storm`` opens all sockets at once (a reconnect storm) instead of 32 at a time;
every run reports how its join went. ``--tls on`` (or ``both``) serves the daemon and the
relay over TLS (a self-signed certificate made for the run) and the viewers use wss://.

Writes ``results.json`` and ``results.md`` (and ``plot.png`` when matplotlib is
installed) to ``--out``. Exits 0 whenever it measured something, however slow; 1 only
when no run produced numbers. ``--quick`` (N = 1 and 10, 3 s) is the CI smoke test.

    .venv/bin/python bench/run.py --viewers 1,10,50,100,200,500,1000 --slow 5 \\
        --slow-at 100 --profile 500
    .venv/bin/python bench/run.py --viewers 500,1000 --storm --no-relay --profile-join 1000
    .venv/bin/python bench/run.py --viewers 100 --phones 5 --no-relay
    .venv/bin/python bench/run.py --viewers 50,200 --tls both
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import secrets
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

import benchlib as wl
from processes import RunFailed, read_line, started, stop, tail

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent
PYTHON = sys.executable


class Plan(NamedTuple):
    """One configuration to measure; ``kind`` is ``camproxy`` or ``relay:LOOP``.

    ``n`` is the number of (fast) viewers in all. ``cameras`` 0 is the classic set-up: one
    camera given with ``--camera`` and the viewers on ``/ws``; K >= 1 registers K cameras
    in the daemon's database (``camproxy camera add``) and spreads the viewers over their
    ``/cam/NAME/ws``. ``camera_kind`` is what the emulator speaks: ``robocam`` (WebSocket)
    or ``esp32`` (the stock firmware's MJPEG stream).
    """

    kind: str
    n: int
    slow: int = 0
    phones: int = 0
    tls: bool = False
    cameras: int = 0
    camera_kind: str = "robocam"


# -- processes ----------------------------------------------------------------------------


def wait_ready(process: subprocess.Popen[str], timeout: float, what: str) -> int:
    return wait_ready_ports(process, timeout, what)[0]


def wait_ready_ports(process: subprocess.Popen[str], timeout: float, what: str) -> list[int]:
    """The ports of a ``READY port ...`` line."""
    line = read_line(process, time.monotonic() + timeout, what)
    if not line.startswith("READY "):
        raise RunFailed(f"{what} said {line!r}")
    return [int(word) for word in line.split()[1:]]


def health(port: int, tls: bool = False) -> dict[str, Any] | None:
    """The daemon's ``/health``, or None while it does not answer."""
    context = ssl._create_unverified_context() if tls else None
    try:
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/health"
        with urllib.request.urlopen(url, timeout=1.0, context=context) as response:
            found: dict[str, Any] = json.loads(response.read())
            return found
    except OSError:
        return None


def wait_camera_connected(
    port: int, daemon: subprocess.Popen[Any], timeout: float, tls: bool = False, cameras: int = 0
) -> None:
    """Until ``/health`` says the default camera (or all ``cameras``) are connected."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RunFailed(f"daemon exited with {daemon.returncode}")
        found = health(port, tls)
        if found is not None:
            if cameras and found.get("cameras", {}).get("connected", 0) >= cameras:
                return
            if not cameras and found.get("esp32_connected"):
                return
        time.sleep(0.1)
    raise RunFailed("daemon never reported the camera(s) connected on /health")


# -- one run ------------------------------------------------------------------------------


class Sampler:
    """CPU of the measured processes and of the machine, between two points in time."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.points: list[tuple[float, dict[str, float], tuple[float, float]]] = []

    def sample(self) -> None:
        cpu = {}
        for name, pid in self.pids.items():
            try:
                cpu[name], cpu[f"{name}_sys"] = wl.cpu_times(pid)
            except OSError:
                cpu[name] = cpu[f"{name}_sys"] = math.nan
            cpu[name] += cpu[f"{name}_sys"]
        self.points.append((time.monotonic(), cpu, wl.machine_cpu()))

    def rates(self) -> dict[str, float]:
        (t0, cpu0, m0), (t1, cpu1, m1) = self.points[0], self.points[-1]
        wall = t1 - t0
        found = {f"{name}_cpu_per_s": (cpu1[name] - cpu0[name]) / wall for name in self.pids}
        cores = os.cpu_count() or 1
        found["machine_busy_cores"] = (m1[0] - m0[0]) / max(1.0, m1[1] - m0[1]) * cores
        found["wall_s"] = wall
        for name in self.pids:
            found[f"{name}_cpu_s"] = cpu1[name] - cpu0[name]
            found[f"{name}_sys_per_s"] = (cpu1[f"{name}_sys"] - cpu0[f"{name}_sys"]) / wall
        return found


class CpuTrace(threading.Thread):
    """CPU seconds of some processes and of the machine every ``interval`` s, from when
    it starts until :meth:`finish`: readings to interpolate at times the viewers report
    (``time.monotonic`` is one clock for every process on Linux)."""

    def __init__(self, pids: dict[str, int], interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.interval = interval
        self.points: list[tuple[float, dict[str, float]]] = []
        self.done = threading.Event()

    def read(self) -> None:
        cpu = {}
        for name, pid in self.pids.items():
            try:
                cpu[name] = wl.cpu_seconds(pid)
            except OSError:
                cpu[name] = math.nan
        cpu["_busy"], cpu["_total"] = wl.machine_cpu()  # jiffies, all cores
        self.points.append((time.monotonic(), cpu))

    def run(self) -> None:
        while not self.done.is_set():
            self.read()
            self.done.wait(self.interval)
        self.read()

    def finish(self) -> None:
        self.done.set()
        self.join(timeout=5)

    def at(self, when: float, name: str) -> float:
        """The reading of ``name`` at ``when``, interpolated between samples."""
        points = self.points
        if not points:
            return math.nan
        if when <= points[0][0]:
            return points[0][1][name]
        for (t0, a), (t1, b) in itertools.pairwise(points):
            if t0 <= when <= t1:
                share = (when - t0) / (t1 - t0) if t1 > t0 else 1.0
                return a[name] + (b[name] - a[name]) * share
        return points[-1][1][name]

    def between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds of each process between two times, and the machine's busy cores."""
        found = {name: self.at(end, name) - self.at(start, name) for name in self.pids}
        busy = self.at(end, "_busy") - self.at(start, "_busy")
        total = self.at(end, "_total") - self.at(start, "_total")
        found["machine_busy_cores"] = busy / max(1.0, total) * (os.cpu_count() or 1)
        wall = max(1e-9, end - start)
        found["other_load"] = found["machine_busy_cores"] - sum(
            found[name] / wall for name in self.pids
        )
        return found


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed key and certificate for 127.0.0.1 (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "bench-key.pem", directory / "bench-cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def run_label(plan: Plan, profile: Path | None) -> str:
    return (
        f"{plan.kind.replace(':', '-')}-n{plan.n}"
        + (f"-cameras{plan.cameras}" if plan.cameras else "")
        + (f"-{plan.camera_kind}" if plan.camera_kind != "robocam" else "")
        + (f"-slow{plan.slow}" if plan.slow else "")
        + (f"-phones{plan.phones}" if plan.phones else "")
        + ("-tls" if plan.tls else "")
        + ("-profile" if profile else "")
    )


def run_one(
    args: argparse.Namespace,
    tmp: Path,
    plan: Plan,
    users: list[tuple[str, str]],
    profile: Path | None = None,
    profile_join: Path | None = None,
    perf: Path | None = None,
) -> dict[str, Any]:
    """Measure one configuration (with py-spy, or ``perf record``, in its window)."""
    kind, n, slow, phones = plan.kind, plan.n, plan.slow, plan.phones
    label = run_label(plan, profile or profile_join)
    log = tmp / f"{label}.log"
    cam_log = tmp / f"{label}-camera.json"
    viewer_out = tmp / f"{label}-viewers.json"
    warmup = max(args.warmup, args.phone_warmup) if phones else args.warmup
    budget = warmup + args.duration + 15 + 120 + n * 0.3
    result: dict[str, Any] = {
        "kind": kind,
        "n": n,
        "slow": slow,
        "phones": phones,
        "tls": plan.tls,
        "cameras": plan.cameras,
        "camera_kind": plan.camera_kind,
        "label": label,
        "concurrency": args.concurrency,
        "sessions": args.sessions if kind == "camproxy" else None,
        "warmup": warmup,
    }
    key, cert = make_certificate(tmp) if plan.tls else (None, None)
    with ExitStack() as stack:
        camera = stack.enter_context(
            started(
                [
                    PYTHON,
                    str(HERE / "camemu.py"),
                    "--fps",
                    str(args.fps),
                    "--frame-bytes",
                    str(int(args.frame_kb * 1024)),
                    "--mode",
                    args.camera_mode,
                    "--log",
                    str(cam_log),
                    "--max-seconds",
                    str(budget + 60),
                    "--kind",
                    plan.camera_kind,
                    "--cameras",
                    str(max(1, plan.cameras)),
                ],
                log,
            )
        )
        camera_ports = wait_ready_ports(camera, 60, "the camera emulator")
        camera_port = camera_ports[0]
        database = tmp / "bench.db"
        paths = ["/ws"]
        if plan.cameras:
            # A database of its own, so that the cameras of one run are not the next one's.
            database = tmp / f"{label}.db"
            shutil.copyfile(tmp / "bench.db", database)
            names = [f"cam{index}" for index in range(plan.cameras)]
            for name, cam_port in zip(names, camera_ports, strict=True):
                add_camera(tmp, database, name, camera_url(plan.camera_kind, cam_port))
            paths = [f"/cam/{name}/ws" for name in names]
        if kind == "camproxy":
            port = wl.free_port()
            env = {
                **os.environ,
                "SECRET_KEY": secrets.token_hex(32),
                "LOG_LEVEL": args.log_level,
            }
            env.pop("DATABASE_URL", None)
            listen = (
                f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
                if plan.tls
                else f"tcp:{port}:interface=127.0.0.1"
            )
            with open(log, "ab") as out:
                server = subprocess.Popen(
                    [
                        str(BIN / "twistd"),
                        "-n",
                        "--pidfile=",
                        "camproxy",
                        "--listen",
                        listen,
                        *(
                            []
                            if plan.cameras
                            else ["--camera", camera_url(plan.camera_kind, camera_port)]
                        ),
                        "--max-fps",
                        str(args.fps),
                        "--database",
                        str(database),
                        "--idle-close",
                        "0",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=tmp,  # no .env from the work tree
                )
            server_pid = server.pid
            stack.callback(stop, server)
            wait_camera_connected(port, server, 60, plan.tls, plan.cameras)
        else:
            relay = stack.enter_context(
                started(
                    [
                        PYTHON,
                        str(HERE / "relay.py"),
                        "--camera-port",
                        str(camera_port),
                        "--loop",
                        kind.split(":", 1)[1].split("+")[0],
                        "--max-seconds",
                        str(budget + 60),
                    ]
                    + (["--poll-fps", str(args.fps)] if args.camera_mode == "getframe" else [])
                    + (["--notsent-lowat", "65536"] if "+lowat" in kind else [])
                    + (["--nagle"] if "+nagle" in kind else [])
                    + (["--tls-key", str(key), "--tls-cert", str(cert)] if plan.tls else []),
                    log,
                )
            )
            port = wait_ready(relay, 30, "the relay")
            server_pid = relay.pid
        result["rss_idle_kb"] = wl.memory_kb(server_pid)["VmRSS"]
        viewers = stack.enter_context(
            started(
                [
                    PYTHON,
                    str(HERE / "viewerload.py"),
                    "--port",
                    str(port),
                    "--n",
                    str(n),
                    "--slow",
                    str(slow),
                    "--phones",
                    str(phones),
                    "--phone-rate",
                    str(args.phone_kbps * 1000),
                    "--phone-rcvbuf",
                    str(args.phone_rcvbuf),
                    "--users",
                    ",".join(f"{u}:{p}" for u, p in users) if kind == "camproxy" else "",
                    "--warmup",
                    str(warmup),
                    "--duration",
                    str(args.duration),
                    "--grace-max",
                    str(args.grace_max),
                    "--loop",
                    args.client_loop,
                    "--concurrency",
                    str(args.concurrency),
                    "--late-ms",
                    str(args.late_ms),
                    "--out",
                    str(viewer_out),
                    "--paths",
                    ",".join(paths),
                ]
                + (["--tls"] if plan.tls else [])
                + (["--wait-go"] if profile_join else [])
                + (
                    ["--mint-sessions", str(database)]
                    if kind == "camproxy" and args.sessions == "per-socket"
                    else []
                ),
                log,
                stdin=subprocess.PIPE,
            )
        )
        pids = {"server": server_pid, "client": viewers.pid, "camera": camera.pid}
        sampler = Sampler(pids)
        trace = CpuTrace(pids)
        deadline = time.monotonic() + budget
        profilers: list[subprocess.Popen[str]] = []
        if profile_join is not None:
            expect(viewers, deadline, "LOGGED_IN")
            profilers.append(
                stack.enter_context(
                    started(
                        py_spy(
                            server_pid,
                            args.profile_join_seconds,
                            "raw",
                            profile_join,
                            native=args.profile_native,
                        ),
                        log,
                    )
                )
            )
            time.sleep(1.5)  # py-spy attaches
            assert viewers.stdin is not None
            viewers.stdin.write("GO\n")
            viewers.stdin.flush()
        trace.start()
        stack.callback(trace.finish)
        expect(viewers, deadline, "JOIN_START")
        line = expect(viewers, deadline, "CONNECTED")
        _, ok, failed, seconds = line.split()
        result.update(connected=int(ok), failed=int(failed), setup_s=float(seconds))
        result["rss_connected_kb"] = wl.memory_kb(server_pid)["VmRSS"]
        expect(viewers, deadline, "SETTLED")
        expect(viewers, deadline, "WINDOW_START")
        trace.finish()
        sampler.sample()
        if profile is not None:
            for form, suffix in (("raw", ".collapsed"), ("flamegraph", ".svg")):
                profilers.append(
                    stack.enter_context(
                        started(
                            py_spy(
                                server_pid,
                                args.duration,
                                form,
                                profile.with_suffix(suffix),
                                native=args.profile_native,
                            ),
                            log,
                        )
                    )
                )
        if perf is not None:
            profilers.append(
                stack.enter_context(started(perf_record(server_pid, args.duration, perf), log))
            )
        expect(viewers, deadline, "WINDOW_END")
        sampler.sample()
        memory = wl.memory_kb(server_pid)
        result["rss_kb"], result["hwm_kb"] = memory["VmRSS"], memory["VmHWM"]
        result.update(sampler.rates())
        expect(viewers, deadline, "DONE")
        for profiler in profilers:
            try:
                profiler.wait(timeout=args.duration + args.profile_join_seconds + 30)
            except subprocess.TimeoutExpired:
                stop(profiler)
        viewers.wait(timeout=30)
    # Everything is stopped now; the camera wrote its log on SIGTERM.
    views = json.loads(viewer_out.read_text())
    camera_log = json.loads(cam_log.read_text())
    logs = camera_log.get("cameras", [camera_log])
    result.update(analyse(views, logs, n, slow))
    result["viewer_stats"] = {
        k: views[k] for k in ("texts", "pings", "loop", "login_seconds", "settle_s", "grace_s")
    }
    result["server_us_per_frame"] = (
        result["server_cpu_s"] / result["delivered"] * 1e6 if result["delivered"] else None
    )
    result["other_load"] = result["machine_busy_cores"] - sum(
        result[f"{name}_cpu_per_s"] for name in ("server", "client", "camera")
    )
    result["camera_getframes"] = sum(log["getframes"] for log in logs)
    result["camera_late_ticks"] = sum(log["late_ticks"] for log in logs)
    result["join"] = join_costs(views["join"], trace, n + slow + phones)
    # The join's CPU includes the frames sent meanwhile to the viewers already in: take
    # them off at this run's steady-state cost per frame, to leave the handshakes' own.
    in_join = views["join"].get("viewer_s_in_join")
    if in_join is not None and result["server_us_per_frame"] and n + slow + phones:
        frames_cpu = in_join * result["camera_fps"] * result["server_us_per_frame"] / 1e6
        result["join"]["frames_cpu_in_join_s"] = frames_cpu
        result["join"]["server_ms_per_join_net"] = (
            (result["join"]["server_cpu_join_s"] - frames_cpu) / (n + slow + phones) * 1e3
        )
    result["phones_seen"] = views["phones"]
    return result


def expect(process: subprocess.Popen[str], deadline: float, word: str) -> str:
    """The next status line of the viewer process, which must start with ``word``."""
    line = read_line(process, deadline, f"the viewers' {word}")
    if not line.startswith(word):
        raise RunFailed(f"viewers said {line!r} (waiting for {word})")
    return line


def perf_record(pid: int, seconds: float, output: Path) -> list[str]:
    """Linux perf, sampling the process's CPU (kernel included) with call graphs."""
    return [
        "perf",
        "record",
        "--quiet",
        "-F",
        "999",
        "-g",
        "-p",
        str(pid),
        "-o",
        str(output),
        "--",
        "sleep",
        str(max(1, round(seconds))),
    ]


def perf_summary(data: Path) -> str:
    """Where the process's CPU went: by library (the kernel, the interpreter, ...), then
    by function (own time)."""
    parts = []
    for sort, limit in (("dso", "0.1"), ("dso,sym", "0.3")):
        found = subprocess.run(
            [
                *("perf", "report", "-i", str(data), "--stdio", "--no-children"),
                *("--sort", sort, "--percent-limit", limit, "-g", "none"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = [
            line for line in found.stdout.splitlines() if line.strip() and not line.startswith("#")
        ]
        parts.append(f"by {sort}:\n" + "\n".join(lines))
    return "\n\n".join(parts) + "\n"


def py_spy(pid: int, seconds: float, form: str, output: Path, native: bool = False) -> list[str]:
    """py-spy at 200 Hz; ``native`` adds C frames (the garbage collector, OpenSSL, the
    kernel calls), which needs the daemon paused at each sample (no ``--nonblocking``)."""
    return [
        str(BIN / "py-spy"),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "200",
        *(["--native"] if native else ["--nonblocking"]),
        "--format",
        form,
        "--output",
        str(output),
    ]


def join_costs(join: dict[str, Any], trace: CpuTrace, sockets: int) -> dict[str, Any]:
    """The viewers' account of the join, with the daemon's CPU during it."""
    began, connected = join["began_mono"], join["connected_mono"]
    found = dict(join)
    during = trace.between(began, connected)
    found["server_cpu_join_s"] = during["server"]
    found["client_cpu_join_s"] = during["client"]
    found["server_ms_per_join"] = during["server"] / sockets * 1e3 if sockets else None
    found["join_busy_cores"] = during["machine_busy_cores"]
    found["join_other_load"] = during["other_load"]
    if join["settled_s_max"] is not None:
        settled = trace.between(began, began + join["settled_s_max"])
        found["server_cpu_settle_s"] = settled["server"]
        found["settle_other_load"] = settled["other_load"]
    return found


def analyse(
    views: dict[str, Any], cameras: list[dict[str, Any]], n: int, slow: int
) -> dict[str, Any]:
    """The run's numbers from the viewers' counts and the camera logs (one per camera:
    viewer i watched camera ``fast_cameras[i]``; each is judged against its own camera)."""
    t0, t1 = views["t0_ns"], views["t1_ns"]
    window = (t1 - t0) / 1e9
    produced_by = [[f for f in camera["frames"] if t0 <= f[1] < t1] for camera in cameras]
    expected_by = [len(produced) for produced in produced_by]
    fast = views["fast_frames"]
    watching = views.get("fast_cameras") or [0] * len(fast)
    # Viewers whose socket failed count as having received nothing.
    missing = max(0, n - len(fast))
    fast = fast + [0] * missing
    watching = watching + [index % len(cameras) for index in range(missing)]
    # The phones count the frames they received during the window, whatever the stamp.
    delivered = sum(fast) + sum(views["slow_frames"]) + sum(views["phones"]["frames"])
    expected_of = [expected_by[c] for c in watching]
    skipped = [want - got for got, want in zip(fast, expected_of, strict=True)]
    shares = [got / want for got, want in zip(fast, expected_of, strict=True) if want]
    by_camera = []
    for index, expected in enumerate(expected_by):
        got = [f for f, c in zip(fast, watching, strict=True) if c == index]
        by_camera.append(
            {
                "camera_frames": expected,
                "camera_fps": expected / window,
                "viewers": len(got),
                "fps_median": statistics.median(got) / window if got else None,
                "share_worst": min(got) / expected if got and expected else None,
                "latency_ms": (views.get("latency_ms_by_camera") or [None] * len(cameras))[index],
            }
        )
    mean_expected = sum(expected_by) / len(cameras)
    return {
        "window_s": window,
        # With several cameras, the mean of theirs.
        "camera_frames": mean_expected,
        "camera_fps": mean_expected / window,
        "by_camera": by_camera if len(cameras) > 1 else None,
        "camera_dropped": sum(1 for produced in produced_by for f in produced if f[3]),
        "fps_median": statistics.median(fast) / window if fast else None,
        "fps_worst": min(fast) / window if fast else None,
        "share_worst": min(shares) if shares else None,
        "share_median": statistics.median(shares) if shares else None,
        "skipped_median": statistics.median(skipped) if skipped else None,
        "skipped_max": max(skipped) if skipped else None,
        "slow_frames": views["slow_frames"],
        "delivered": delivered,
        "latency_ms": views["latency_ms"],
        "latency_first_s_ms": views["latency_first_s_ms"],
        "latency_last_s_ms": views["latency_last_s_ms"],
        "worst_viewer_p99_ms": views["worst_viewer_p99_ms"],
        "fast_closed": views["fast_closed"],
        "slow_closed": views["slow_closed"],
    }


# -- start-up with many cameras, and a camera's huge part ---------------------------------


def start_daemon(
    args: argparse.Namespace, tmp: Path, database: Path, log: Path, extra: list[str]
) -> tuple[subprocess.Popen[Any], int]:
    """``twistd -n camproxy`` on a free port with ``database``; returns it and the port."""
    port = wl.free_port()
    env = {**os.environ, "SECRET_KEY": secrets.token_hex(32), "LOG_LEVEL": args.log_level}
    env.pop("DATABASE_URL", None)
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [
                str(BIN / "twistd"),
                "-n",
                "--pidfile=",
                "camproxy",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--max-fps",
                str(args.fps),
                "--database",
                str(database),
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp,
        )
    return server, port


def get_timed(url: str, headers: dict[str, str]) -> tuple[float, int, bytes]:
    """One GET: seconds to the whole answer, the status and the body."""
    request = urllib.request.Request(url, headers=headers)
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
        return time.perf_counter() - began, response.status, body


def startup_run(
    args: argparse.Namespace, tmp: Path, count: int, user: str, attempts: int = 3
) -> dict[str, Any]:
    """Start-up time, ``/api/cameras`` and the idle daemon with ``count`` cameras in the
    table: ``jpeg`` cameras at a closed 127.0.0.1 port, added with ``camproxy camera add``
    (as they need not be reachable: nobody watches them)."""
    database = tmp / f"startup-{count}.db"
    shutil.copyfile(tmp / "bench.db", database)
    closed = wl.free_port()  # nothing listens there
    began = time.monotonic()
    for index in range(count):
        add_camera(
            tmp, database, f"cam{index:03d}", f"http://127.0.0.1:{closed}/snapshot.jpg", "jpeg"
        )
    adding = time.monotonic() - began
    made = subprocess.run(
        [
            str(BIN / "camproxy"),
            "token",
            "add",
            user,
            f"startup{count}",
            "--database",
            str(database),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp,
        timeout=60,
    )
    token = next(w for w in made.stdout.split() if w.startswith("cpx_"))
    found: dict[str, Any] = {"cameras": count, "add_s": adding, "attempts": []}
    for attempt in range(attempts):
        log = tmp / f"startup-{count}-{attempt}.log"
        if args.quiet_wait > 0:
            wait_quiet(args.noise, args.quiet_wait)
        machine_before = wl.machine_cpu()
        began = time.monotonic()
        server, port = start_daemon(args, tmp, database, log, [])
        try:
            while health(port) is None:
                if server.poll() is not None or time.monotonic() - began > 120:
                    raise RunFailed(f"daemon never answered /health: {tail(log)}")
                time.sleep(0.01)
            up = time.monotonic() - began
            machine_after = wl.machine_cpu()
            url = f"http://127.0.0.1:{port}/api/cameras"
            headers = {"Authorization": f"Bearer {token}"}
            times = []
            listed = 0
            size = 0
            for _ in range(20):
                seconds, status, body = get_timed(url, headers)
                if status != 200:
                    raise RunFailed(f"/api/cameras answered {status}")
                listed, size = len(json.loads(body)), len(body)
                times.append(seconds * 1e3)
            cpu0 = wl.cpu_seconds(server.pid)
            time.sleep(5)
            idle_cpu = (wl.cpu_seconds(server.pid) - cpu0) / 5
            memory = wl.memory_kb(server.pid)
            busy = (machine_after[0] - machine_before[0]) / max(
                1.0, machine_after[1] - machine_before[1]
            )
            found["attempts"].append(
                {
                    "startup_s": up,
                    "machine_busy_cores_during_startup": busy * (os.cpu_count() or 1),
                    "api_first_ms": times[0],
                    "api_median_ms": statistics.median(times[1:]),
                    "api_max_ms": max(times[1:]),
                    "api_cameras_listed": listed,
                    "api_bytes": size,
                    "idle_cpu_per_s": idle_cpu,
                    "rss_kb": memory["VmRSS"],
                    "cameras_on_health": (health(port) or {}).get("cameras"),
                }
            )
        finally:
            stop(server)
    for key in ("startup_s", "api_first_ms", "api_median_ms", "idle_cpu_per_s", "rss_kb"):
        found[key] = statistics.median(a[key] for a in found["attempts"])
    print(
        f"   {count} cameras: start-up {found['startup_s']:.2f} s, /api/cameras first "
        f"{found['api_first_ms']:.1f} ms, then {found['api_median_ms']:.1f} ms; idle CPU "
        f"{found['idle_cpu_per_s']:.3f} s/s, RSS {found['rss_kb'] / 1024:.1f} MB",
        flush=True,
    )
    return found


def huge_run(args: argparse.Namespace, tmp: Path, mode: str) -> dict[str, Any]:
    """The daemon's memory while its ESP32 camera sends one part far over the frame size
    limit (``length``: a ``Content-Length`` of ``--huge-mb``; ``endless``: none, never
    ending), after ``--huge-after`` s of normal frames; VmRSS sampled every 50 ms."""
    label = f"huge-{mode}"
    log, cam_log = tmp / f"{label}.log", tmp / f"{label}-camera.json"
    seconds = args.huge_seconds
    if args.quiet_wait > 0:
        wait_quiet(args.noise, args.quiet_wait)
    with ExitStack() as stack:
        camera = stack.enter_context(
            started(
                [
                    PYTHON,
                    str(HERE / "camemu.py"),
                    "--kind",
                    "esp32",
                    "--fps",
                    str(args.fps),
                    "--frame-bytes",
                    str(int(args.frame_kb * 1024)),
                    "--huge-part",
                    mode,
                    "--huge-bytes",
                    str(int(args.huge_mb * (1 << 20))),
                    "--huge-after",
                    str(round(args.huge_after * args.fps)),
                    "--log",
                    str(cam_log),
                    "--max-seconds",
                    str(seconds + 120),
                ],
                log,
            )
        )
        camera_port = wait_ready(camera, 60, "the camera emulator")
        server, port = start_daemon(
            args,
            tmp,
            tmp / "bench.db",
            log,
            ["--camera", camera_url("esp32", camera_port), "--idle-close", "0"],
        )
        stack.callback(stop, server)
        wait_camera_connected(port, server, 60)
        samples: list[tuple[int, int, float]] = []
        connected: list[tuple[int, bool]] = []
        began = time.monotonic()
        cpu0 = wl.cpu_seconds(server.pid)
        while time.monotonic() - began < seconds:
            memory = wl.memory_kb(server.pid)
            samples.append((time.time_ns(), memory["VmRSS"], wl.cpu_seconds(server.pid)))
            if len(samples) % 10 == 0:
                connected.append(
                    (time.time_ns(), bool((health(port) or {}).get("esp32_connected")))
                )
            time.sleep(0.05)
        cpu = wl.cpu_seconds(server.pid) - cpu0
        hwm = wl.memory_kb(server.pid)["VmHWM"]
    camera_log = json.loads(cam_log.read_text())
    events = camera_log["huge_events"]
    first = events[0][0] if events else samples[-1][0]
    before = [rss for t, rss, _ in samples if t < first]
    after = [rss for t, rss, _ in samples if t >= first]
    found = {
        "mode": mode,
        "huge_mb": args.huge_mb if mode == "length" else None,
        "seconds": seconds,
        "rss_before_kb": statistics.median(before) if before else None,
        "rss_peak_kb": max(after) if after else None,
        "rss_end_kb": samples[-1][1],
        "hwm_kb": hwm,
        "daemon_cpu_per_s": cpu / seconds,
        "huge_parts": len(events),
        "huge_bytes_sent": sum(e[2] for e in events),
        "huge_part_seconds": [((e[1] or time.time_ns()) - e[0]) / 1e9 for e in events],
        "stream_connects": camera_log["connects"],
        "frames_sent": len(camera_log["frames"]),
        "connected_share": (
            sum(1 for _, ok in connected if ok) / len(connected) if connected else None
        ),
        "rss_series": [(round((t - first) / 1e6), rss) for t, rss, _ in samples[::4]],
    }
    print(
        f"   huge part ({mode}): {found['huge_parts']} sent, "
        f"{found['huge_bytes_sent'] / (1 << 20):.0f} MiB in all; RSS before "
        f"{fmt(found['rss_before_kb'] and found['rss_before_kb'] / 1024)} MB, peak "
        f"{fmt(found['rss_peak_kb'] and found['rss_peak_kb'] / 1024)} MB, VmHWM "
        f"{hwm / 1024:.1f} MB; daemon CPU {found['daemon_cpu_per_s']:.2f} s/s",
        flush=True,
    )
    return found


# -- users, profile, report ---------------------------------------------------------------


def camera_url(kind: str, port: int) -> str:
    """The camera's URL for the daemon: a RoboCam's socket, or an ESP32's base URL."""
    return f"ws://127.0.0.1:{port}/ws" if kind == "robocam" else f"http://127.0.0.1:{port}"


def add_camera(tmp: Path, database: Path, name: str, url: str, kind: str | None = None) -> None:
    """``camproxy camera add``, as an administrator would before starting the daemon."""
    subprocess.run(
        [str(BIN / "camproxy"), "camera", "add", name, url, "--database", str(database)]
        + (["--kind", kind] if kind else []),
        check=True,
        capture_output=True,
        cwd=tmp,
        timeout=60,
    )


def create_users(tmp: Path, count: int) -> list[tuple[str, str]]:
    users = []
    for index in range(count):
        name, password = f"bench{index:02d}", secrets.token_urlsafe(12)
        subprocess.run(
            [
                str(BIN / "camproxy"),
                "user",
                "add",
                name,
                "--password-stdin",
                "--database",
                str(tmp / "bench.db"),
            ],
            input=password.encode(),
            check=True,
            capture_output=True,
            cwd=tmp,
            timeout=60,
        )
        users.append((name, password))
    return users


def summarize_profile(raw: Path, top: int = 25) -> str:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [short_frame(f) for f in stack.split(";")]
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return "no samples\n"
    lines = [f"{total} samples (200 Hz, daemon threads while on CPU)", "", "self (own time):"]
    lines += [f"  {c / total:6.1%}  {name}" for name, c in own.most_common(top)]
    lines += ["", "inclusive (time in the function and what it calls; the reactor's own frames"]
    lines += ["that every sample passes through are left out):"]
    lines += [
        f"  {c / total:6.1%}  {name}"
        for name, c in [i for i in inclusive.most_common() if i[1] < 0.9 * total][:top]
    ]
    return "\n".join(lines) + "\n"


#: Where a join's samples go, first match wins: (label, any of these in the stack).
JOIN_PHASES: list[tuple[str, tuple[str, ...]]] = [
    ("frame fan-out to the viewers (steady-state work, not the join)", ("frame_received",)),
    ("thread pool: database (session lookups), bcrypt", ("_worker (", "WorkerThread")),
    ("accept (Port.doRead, buildProtocol)", ("Port.doRead",)),
    ("onOpen: hello, hub attach, client_count", ("onOpen",)),
    ("connectionMade (Autobahn protocol set-up, its timers)", ("connectionMade",)),
    ("the gate: Origin check, session (memo), admission", ("onConnect",)),
    ("Autobahn's handshake (parse, validate, answer 101)", ("processHandshake",)),
    ("Twisted Web: request line, headers, resource lookup", ("HTTPChannel.dataReceived",)),
    ("folded client_count and other timed calls", ("runUntilCurrent",)),
    ("closing, pings, other socket reads", ("Connection.doRead",)),
    ("epoll and the reactor loop itself", ("doPoll",)),
]


def summarize_join_profile(raw: Path, top: int = 30) -> str:
    """py-spy's stacks of a join, grouped by phase, and the top functions outside the
    frame fan-out (which goes on for the viewers already watching)."""
    phases: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        phase = next((label for label, marks in JOIN_PHASES if any(m in stack for m in marks)), "")
        phases[phase or "other"] += count
        if not phase.startswith("frame"):
            own[short_frame(stack.split(";")[-1])] += count
    if not total:
        return "no samples\n"
    rest = total - phases[JOIN_PHASES[0][0]]
    lines = [f"{total} samples (200 Hz, daemon threads while on CPU); by phase:", ""]
    lines += [f"  {c / total:6.1%}  {label}" for label, c in phases.most_common()]
    lines += ["", f"self (own time) of the {rest} samples outside the frame fan-out:"]
    lines += [f"  {c / max(1, rest):6.1%}  {name}" for name, c in own.most_common(top)]
    return "\n".join(lines) + "\n"


def short_frame(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)`` so lines of one function merge."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{name} ({short})"


def fmt(value: Any, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def percent(share: float | None) -> float | None:
    return share * 100 if share is not None else None


def per_frame(run: dict[str, Any] | None) -> float | None:
    return run.get("server_us_per_frame") if run else None


def relay_kinds(results: list[dict[str, Any]]) -> list[str]:
    return sorted({r["kind"] for r in results if r["kind"].startswith("relay")})


def markdown(
    results: list[dict[str, Any]],
    settings: dict[str, Any],
    startup: list[dict[str, Any]] | None = None,
    huge: list[dict[str, Any]] | None = None,
) -> str:
    everything = [r for r in results if "error" not in r]
    # The main tables: plain TCP, no slow viewers or phones, no profiler attached.
    ok = [r for r in everything if not r.get("tls")]
    own = sorted(
        (
            r
            for r in ok
            if r["kind"] == "camproxy"
            and not r["slow"]
            and not r.get("phones")
            and not r.get("profile")
            and classic(r)
        ),
        key=lambda r: r["n"],
    )
    kinds = relay_kinds(ok)
    floors = {k: {r["n"]: r for r in ok if r["kind"] == k} for k in kinds}
    out = [
        f"Camera: {settings['fps']:g} fps, {settings['frame_kb']:g} KB JPEGs, "
        f"`{settings['camera_mode']}` mode; warm-up {settings['warmup']:g} s after the joins "
        f"settled, window {settings['duration']:g} s.",
        "",
        "| N | fps/viewer median | fps worst | worst viewer: % of camera frames"
        " | skipped/viewer median / max | latency p50 / p99 / max ms | daemon CPU s/s"
        " | daemon µs/frame | "
        + " | ".join(f"ratio to {k}" for k in kinds)
        + (" | " if kinds else "")
        + "daemon RSS MB | client CPU s/s | machine busy cores (other load)"
        " | joins s (settle s) |",
        "|" + "---:|" * (12 + len(kinds)),
    ]
    for r in own:
        lat = r["latency_ms"]
        ratios = []
        for k in kinds:
            floor = per_frame(floors[k].get(r["n"]))
            mine = per_frame(r)
            ratios.append(f"{fmt(mine / floor if mine and floor else None, '.2f')}x")
        out.append(
            f"| {r['n']} | {fmt(r['fps_median'], '.2f')} | {fmt(r['fps_worst'], '.2f')} "
            f"| {fmt(r['share_worst'] * 100 if r['share_worst'] is not None else None)} % "
            f"| {fmt(r['skipped_median'], 'g')} / {fmt(r['skipped_max'], 'g')} "
            f"| {fmt(lat['p50'], '.2f')} / {fmt(lat['p99'], '.2f')} / {fmt(lat['max'], '.1f')} "
            f"| {fmt(r['server_cpu_per_s'], '.3f')} | {fmt(per_frame(r), '.1f')} | "
            + " | ".join(ratios)
            + (" | " if kinds else "")
            + f"{fmt(r['rss_kb'] / 1024)} | {fmt(r['client_cpu_per_s'], '.3f')} "
            f"| {fmt(r['machine_busy_cores'], '.2f')} ({fmt(r['other_load'], '.2f')}) "
            f"| {fmt(r['setup_s'])} ({fmt(r['viewer_stats']['settle_s'])}) |"
        )
    if not own:
        del out[2:]  # no plain daemon run: no main table
    for k in kinds:
        loop = k.split(":", 1)[1]
        out += [
            "",
            f"Bare relay (the floor; {loop} event loop), same camera, same viewer client:",
            "",
            "| N | fps/viewer median | fps worst | latency p50 / p99 ms | relay CPU s/s"
            " | relay µs/frame | relay RSS MB | client CPU s/s | machine busy (other) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for n, r in sorted(floors[k].items()):
            out.append(
                f"| {n} | {fmt(r['fps_median'], '.2f')} | {fmt(r['fps_worst'], '.2f')} "
                f"| {fmt(r['latency_ms']['p50'], '.2f')} / {fmt(r['latency_ms']['p99'], '.2f')} "
                f"| {fmt(r['server_cpu_per_s'], '.3f')} | {fmt(per_frame(r), '.1f')} "
                f"| {fmt(r['rss_kb'] / 1024)} | {fmt(r['client_cpu_per_s'], '.3f')} "
                f"| {fmt(r['machine_busy_cores'], '.2f')} ({fmt(r['other_load'], '.2f')}) |"
            )
    slow_runs = [r for r in ok if r["slow"]]
    if slow_runs:
        out += [
            "",
            "Slow viewers (N fast viewers plus K that never read after the handshake):",
            "",
            "| N fast + K slow | fast fps median / worst | without the slow ones"
            " | change (worst) | fast latency p99 ms (without) | frames the slow ones got"
            " | daemon RSS MB | without | RSS growth MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in slow_runs:
            base = next((b for b in own if b["n"] == r["n"]), None)
            change = (
                (r["fps_worst"] / base["fps_worst"] - 1) * 100
                if base and base["fps_worst"]
                else None
            )
            out.append(
                f"| {r['n']} + {r['slow']} "
                f"| {fmt(r['fps_median'], '.2f')} / {fmt(r['fps_worst'], '.2f')} "
                f"| {fmt(base['fps_median'] if base else None, '.2f')} / "
                f"{fmt(base['fps_worst'] if base else None, '.2f')} "
                f"| {fmt(change, '+.1f')} % "
                f"| {fmt(r['latency_ms']['p99'], '.2f')} "
                f"({fmt(base['latency_ms']['p99'] if base else None, '.2f')}) "
                f"| {r['slow_frames']} "
                f"| {fmt(r['rss_kb'] / 1024)} | {fmt(base['rss_kb'] / 1024 if base else None)} "
                f"| {fmt((r['rss_kb'] - base['rss_kb']) / 1024 if base else None, '+.1f')} |"
            )
    out += join_table(everything) + phone_table(everything, own) + tls_table(everything)
    out += cameras_table(everything) + kind_table(everything)
    out += startup_table(startup or []) + huge_table(huge or [])
    failed = [r for r in results if "error" in r]
    if failed:
        out += ["", "Runs that failed:", ""]
        out += [f"- {r['label']}: {r['error']}" for r in failed]
    return "\n".join(out) + "\n"


def classic(run: dict[str, Any]) -> bool:
    """One RoboCam given with ``--camera``, viewers on ``/ws``: the main tables' set-up."""
    return not run.get("cameras") and run.get("camera_kind", "robocam") == "robocam"


def plain(run: dict[str, Any]) -> bool:
    """A daemon run without slow viewers, phones, TLS or profiler."""
    return (
        run["kind"] == "camproxy"
        and not run["slow"]
        and not run.get("phones")
        and not run.get("tls")
        and not run.get("profile")
    )


def cameras_table(runs: list[dict[str, Any]]) -> list[str]:
    """K cameras against one camera with the same number of viewers in all."""
    several = [r for r in runs if plain(r) and (r.get("cameras") or 0) > 1]
    if not several:
        return []
    out = [
        "",
        "Several cameras: K cameras registered in the daemon's database, each with its own"
        " emulated RoboCam, the viewers spread evenly over `/cam/NAME/ws`; against one"
        " camera registered the same way with the same number of viewers in all.",
        "",
        "| K cameras x viewers each | worst viewer: % of its camera's frames (worst camera)"
        " | camera fps (min) | latency p50 / p99 ms | daemon µs/frame | one camera, same N:"
        " µs/frame | ratio | daemon RSS MB | one camera: RSS MB | RSS per extra camera MB"
        " | other load (one camera) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    # Each K-camera run against the one-camera run made right after it (same total N).
    singles = [r for r in runs if plain(r) and r.get("cameras") == 1]
    partner = {}
    for n in {r["n"] for r in several}:
        ks = [r for r in several if r["n"] == n]
        ones = [r for r in singles if r["n"] == n]
        partner.update({id(a): b for a, b in zip(ks, ones, strict=False)})
    for r in sorted(several, key=lambda r: (r["cameras"], r["n"])):
        one = partner.get(id(r))
        mine, theirs = per_frame(r), per_frame(one)
        k = r["cameras"]
        by = r.get("by_camera") or []
        fps_min = min((c["camera_fps"] for c in by), default=None)
        rss_per = (r["rss_kb"] - one["rss_kb"]) / 1024 / (k - 1) if one else None
        out.append(
            f"| {k} x {r['n'] // k} | "
            f"{fmt(r['share_worst'] * 100 if r['share_worst'] is not None else None)} % "
            f"| {fmt(fps_min, '.2f')} "
            f"| {fmt(r['latency_ms']['p50'], '.2f')} / {fmt(r['latency_ms']['p99'], '.2f')} "
            f"| {fmt(mine, '.1f')} | {fmt(theirs, '.1f')} "
            f"| {fmt(mine / theirs if mine and theirs else None, '.2f')}x "
            f"| {fmt(r['rss_kb'] / 1024)} | {fmt(one['rss_kb'] / 1024 if one else None)} "
            f"| {fmt(rss_per, '+.2f')} "
            f"| {fmt(r['other_load'], '.2f')} ({fmt(one['other_load'] if one else None, '.2f')}) |"
        )
    for r in sorted(several, key=lambda r: (r["cameras"], r["n"])):
        out += [
            "",
            f"Per camera, {r['cameras']} cameras x {r['n'] // r['cameras']} viewers:",
            "",
            "| camera | viewers | camera fps | fps/viewer median | worst viewer: % of the"
            " camera's frames | latency p50 / p99 ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for index, c in enumerate(r.get("by_camera") or []):
            lat = c.get("latency_ms") or {}
            out.append(
                f"| cam{index} | {c['viewers']} | {fmt(c['camera_fps'], '.2f')} "
                f"| {fmt(c['fps_median'], '.2f')} "
                f"| {fmt(c['share_worst'] * 100 if c['share_worst'] is not None else None)} % "
                f"| {fmt(lat.get('p50'), '.2f')} / {fmt(lat.get('p99'), '.2f')} |"
            )
    return out


def kind_table(runs: list[dict[str, Any]]) -> list[str]:
    """The same viewers behind a RoboCam and behind an ESP32 (the MJPEG stream)."""
    kinds = [r for r in runs if plain(r) and not r.get("cameras")]
    if not any(r.get("camera_kind", "robocam") != "robocam" for r in kinds):
        return []
    out = [
        "",
        "Camera kinds: the same frames (stamped 30 KB JPEGs) from the RoboCam emulator"
        " (WebSocket) and from the stock ESP32 firmware's emulator (`/stream`, chunked"
        " MJPEG), to the same viewers on `/ws`.",
        "",
        "| N | camera kind | camera fps | fps worst | worst viewer: % of camera frames"
        " | latency p50 / p99 ms | daemon CPU s/s | daemon µs/frame | daemon RSS MB"
        " | other load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(kinds, key=lambda r: (r["n"], r.get("camera_kind", "robocam") != "robocam")):
        out.append(
            f"| {r['n']} | {r.get('camera_kind', 'robocam')} | {fmt(r['camera_fps'], '.2f')} "
            f"| {fmt(r['fps_worst'], '.2f')} "
            f"| {fmt(r['share_worst'] * 100 if r['share_worst'] is not None else None)} % "
            f"| {fmt(r['latency_ms']['p50'], '.2f')} / {fmt(r['latency_ms']['p99'], '.2f')} "
            f"| {fmt(r['server_cpu_per_s'], '.3f')} | {fmt(per_frame(r), '.1f')} "
            f"| {fmt(r['rss_kb'] / 1024)} | {fmt(r['other_load'], '.2f')} |"
        )
    return out


def startup_table(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return []
    out = [
        "",
        "Start-up and `/api/cameras` with M cameras in the database (`jpeg` cameras at a"
        " closed port, unwatched); medians of the attempts. Start-up: from starting"
        " `twistd` to the first answer of `/health` (the database is open and upgraded"
        " before the port is bound). `/api/cameras` with a Bearer token, 20 times in a row.",
        "",
        "| cameras | start-up s (each attempt) | `/api/cameras` first / then median / max ms"
        " | cameras listed (bytes) | idle daemon CPU s/s | RSS MB | adding them with the CLI s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        tries = r["attempts"]
        out.append(
            f"| {r['cameras']} | {fmt(r['startup_s'], '.2f')}"
            f" ({', '.join(fmt(a['startup_s'], '.2f') for a in tries)}) "
            f"| {fmt(r['api_first_ms'], '.1f')} / {fmt(r['api_median_ms'], '.1f')} / "
            f"{fmt(max(a['api_max_ms'] for a in tries), '.1f')} "
            f"| {tries[0]['api_cameras_listed']} ({tries[0]['api_bytes']:,}) "
            f"| {fmt(r['idle_cpu_per_s'], '.3f')} | {fmt(r['rss_kb'] / 1024)} "
            f"| {fmt(r['add_s'], '.0f')} |"
        )
    return out


def huge_table(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return []
    out = [
        "",
        "An ESP32 camera sending one part far over the daemon's frame limit (4 MiB): the"
        " daemon's memory, sampled every 50 ms.",
        "",
        "| huge part | parts sent (bytes in all) | part lasted s | RSS before MB"
        " | RSS peak MB | VmHWM MB | RSS at the end MB | stream connects | daemon CPU s/s"
        " | camera connected (share of the time) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        what = (
            f"Content-Length {r['huge_mb']:g} MiB"
            if r["mode"] == "length"
            else "endless, no length"
        )
        kb = 1 / 1024
        out.append(
            f"| {what} | {r['huge_parts']} ({r['huge_bytes_sent'] / (1 << 20):,.0f} MiB) "
            f"| {', '.join(fmt(x, '.1f') for x in r['huge_part_seconds'])} "
            f"| {fmt(r['rss_before_kb'] and r['rss_before_kb'] * kb)} "
            f"| {fmt(r['rss_peak_kb'] and r['rss_peak_kb'] * kb)} | {fmt(r['hwm_kb'] * kb)} "
            f"| {fmt(r['rss_end_kb'] * kb)} | {r['stream_connects']} "
            f"| {fmt(r['daemon_cpu_per_s'], '.2f')} "
            f"| {fmt(percent(r['connected_share']), '.0f')} % |"
        )
    return out


def join_table(runs: list[dict[str, Any]]) -> list[str]:
    """How each daemon run's join went (seconds from the first connect)."""
    joins = [r for r in runs if r["kind"] == "camproxy" and r.get("join")]
    if not joins:
        return []
    out = [
        "",
        "Joins: all sockets connecting at once (`--storm`) or 32 at a time; times in s from"
        " the first connect. Settled = the viewer got the final `client_count` and its"
        " frames are on time (none later than `--late-ms`) from then on.",
        "",
        "| N | at once | sessions | all connected s | TCP connect p50 / p99 / max ms"
        " | handshake p50 / p99 / max ms | TCP / handshake > 1 s | `client_count` msgs"
        " | counts final s | frames on time s (median / last) | settled s (median / last)"
        " | daemon CPU s during connect | ms per handshake (without the frames sent meanwhile)"
        " | daemon CPU s to settled"
        " | busy cores (other load) during connect |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(joins, key=lambda r: (r.get("tls", False), r["n"], r.get("concurrency", 32))):
        j = r["join"]
        tcp, hs = j["tcp_ms"], j["handshake_ms"]
        settled_max = (
            fmt(j["settled_s_max"], ".2f")
            if j["settled_s_max"] is not None
            else f"> {fmt(r['join']['counts_final_s'], '.1f')} ({j['settled_viewers']} of"
            f" {j['fast']} settled)"
        )
        label = f"{r['n']}" + (f" + {r['phones']} phones" if r.get("phones") else "")
        label += f" on {r['cameras']} camera(s)" if r.get("cameras") else ""
        label += f" ({r['camera_kind']})" if r.get("camera_kind", "robocam") != "robocam" else ""
        label += f" + {r['slow']} slow" if r["slow"] else ""
        label += " TLS" if r.get("tls") else ""
        label += " (py-spy)" if r.get("profile") else ""
        out.append(
            f"| {label} | {'all' if not r.get('concurrency') else r['concurrency']} "
            f"| {r.get('sessions') or '-'} "
            f"| {fmt(j['connect_all_s'], '.2f')} "
            f"| {fmt(tcp['p50'], '.1f')} / {fmt(tcp['p99'], '.0f')} / {fmt(tcp['max'], '.0f')} "
            f"| {fmt(hs['p50'], '.0f')} / {fmt(hs['p99'], '.0f')} / {fmt(hs['max'], '.0f')} "
            f"| {j['tcp_over_1s']} / {j['handshake_over_1s']} "
            f"| {j['count_messages']:,} "
            f"| {fmt(j['counts_final_s'], '.2f')} "
            f"| {fmt(j['frames_ok_s_median'], '.2f')} / {fmt(j['frames_ok_s_max'], '.2f')} "
            f"| {fmt(j['settled_s_median'], '.2f')} / {settled_max} "
            f"| {fmt(j['server_cpu_join_s'], '.2f')} | {fmt(j['server_ms_per_join'], '.2f')}"
            f" ({fmt(j.get('server_ms_per_join_net'), '.2f')}) "
            f"| {fmt(j.get('server_cpu_settle_s'), '.2f')} "
            f"| {fmt(j['join_busy_cores'], '.2f')} ({fmt(j['join_other_load'], '.2f')}) |"
        )
    return out


def phone_table(runs: list[dict[str, Any]], own: list[dict[str, Any]]) -> list[str]:
    """The frame age the slow phones saw, and what the fast viewers got meanwhile."""
    phoned = [r for r in runs if r.get("phones")]
    if not phoned:
        return []
    out = [
        "",
        "Slow phones (K viewers reading at a limited rate, small SO_RCVBUF, among N fast"
        " ones): the age (receive time - send stamp) of the frames they received during"
        " the window.",
        "",
        "| N fast + K phones | phone rate KB/s (SO_RCVBUF) | warm-up s | phone fps"
        " (min-max) | phone frame age p50 / p90 / p99 / max ms | worst phone p50 ms"
        " | fast fps median / worst | fast latency p50 / p99 ms (without phones)"
        " | daemon µs/frame | other load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in phoned:
        ph = r["phones_seen"]
        age = ph["age_ms"]
        base = next((b for b in own if b["n"] == r["n"]), None)
        fps = ph["fps"] or [0.0]
        out.append(
            f"| {r['n']} + {r['phones']}{' TLS' if r.get('tls') else ''} "
            f"| {ph['rate'] / 1000:g} ({ph['rcvbuf'] // 1024} KiB) | {fmt(r.get('warmup'), 'g')} "
            f"| {fmt(min(fps), '.1f')}-{fmt(max(fps), '.1f')} "
            f"| {fmt(age['p50'], '.0f')} / {fmt(age['p90'], '.0f')} / {fmt(age['p99'], '.0f')}"
            f" / {fmt(age['max'], '.0f')} "
            f"| {fmt(ph['worst_phone_p50_ms'], '.0f')} "
            f"| {fmt(r['fps_median'], '.2f')} / {fmt(r['fps_worst'], '.2f')} "
            f"| {fmt(r['latency_ms']['p50'], '.2f')} / {fmt(r['latency_ms']['p99'], '.2f')} "
            f"({fmt(base['latency_ms']['p99'] if base else None, '.2f')}) "
            f"| {fmt(per_frame(r), '.1f')} | {fmt(r['other_load'], '.2f')} |"
        )
    return out


def tls_table(runs: list[dict[str, Any]]) -> list[str]:
    """Daemon and relay CPU per delivered frame over TLS against plain TCP."""
    tls = [r for r in runs if r.get("tls") and not r.get("phones") and not r["slow"]]
    if not tls:
        return []

    def find(kind: str, n: int, secure: bool) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in runs
                if r["kind"] == kind
                and r["n"] == n
                and bool(r.get("tls")) == secure
                and not r["slow"]
                and not r.get("phones")
                and not r.get("profile")
            ),
            None,
        )

    out = [
        "",
        "TLS: the daemon on an `ssl:` endpoint, viewers over wss:// (TLS 1.3, the"
        " negotiated default), against plain TCP; the relay likewise (asyncio's TLS).",
        "",
        "| N | what | plain µs/frame | TLS µs/frame | TLS / plain | CPU s/s plain / TLS"
        " | fps worst plain / TLS | latency p99 ms plain / TLS | client CPU s/s plain / TLS"
        " | other load plain / TLS |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    pairs = sorted({(r["kind"], r["n"]) for r in tls}, key=lambda k: (k[1], k[0] != "camproxy"))
    for kind, n in pairs:
        plain, secure = find(kind, n, False), find(kind, n, True)
        mine, theirs = per_frame(secure), per_frame(plain)

        def both(key: str, spec: str, a: Any = plain, b: Any = secure) -> str:
            return f"{fmt(a[key] if a else None, spec)} / {fmt(b[key] if b else None, spec)}"

        out.append(
            f"| {n} | {'daemon' if kind == 'camproxy' else kind} | {fmt(theirs, '.1f')} "
            f"| {fmt(mine, '.1f')} | {fmt(mine / theirs if mine and theirs else None, '.2f')}x "
            f"| {both('server_cpu_per_s', '.3f')} | {both('fps_worst', '.2f')} "
            f"| {fmt(plain['latency_ms']['p99'] if plain else None, '.1f')} / "
            f"{fmt(secure['latency_ms']['p99'] if secure else None, '.1f')} "
            f"| {both('client_cpu_per_s', '.3f')} | {both('other_load', '.2f')} |"
        )
    return out


def plot(results: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ok = [
        r
        for r in results
        if "error" not in r
        and not r["slow"]
        and not r.get("phones")
        and not r.get("tls")
        and not r.get("profile")
    ]
    if not ok:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = ["o-", "s--", "^:"]
    for index, kind in enumerate(["camproxy", *relay_kinds(ok)]):
        runs = sorted((r for r in ok if r["kind"] == kind), key=lambda r: r["n"])
        if not runs:
            continue
        style = styles[index % len(styles)]
        ns = [r["n"] for r in runs]
        axes[0].plot(ns, [r["fps_median"] for r in runs], style, label=f"{kind} median")
        axes[0].plot(ns, [r["fps_worst"] for r in runs], style, alpha=0.5, label=f"{kind} worst")
        axes[1].plot(ns, [r["latency_ms"]["p50"] for r in runs], style, label=f"{kind} p50")
        axes[1].plot(
            ns, [r["latency_ms"]["p99"] for r in runs], style, alpha=0.5, label=f"{kind} p99"
        )
        axes[2].plot(ns, [per_frame(r) for r in runs], style, label=kind)
    titles = ("frames/s per viewer", "added latency (ms)", "server CPU µs per delivered frame")
    for axis, title in zip(axes, titles, strict=True):
        axis.set_xscale("log")
        axis.set_xlabel("viewers")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    top = max((r["fps_median"] or 0) for r in ok) if ok else 1
    axes[0].set_ylim(0, top * 1.15)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def machine() -> dict[str, Any]:
    import twisted

    return {
        "cpu": wl.cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "kernel": platform.release(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--viewers", default="1,10,50,100,200,500,1000", help="the Ns to run")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--frame-kb", type=float, default=30.0)
    parser.add_argument("--duration", type=float, default=10.0, help="measuring window, s")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--grace-max", type=float, default=15.0, help="s to wait for late frames after the window"
    )
    parser.add_argument("--slow", type=int, default=0, help="K viewers that never read")
    parser.add_argument("--slow-at", default="", help="Ns for the --slow runs (default: all)")
    parser.add_argument("--profile", type=int, default=0, help="an extra py-spy run at this N")
    parser.add_argument(
        "--profile-join", type=int, default=0, help="an extra run at this N, py-spy on the join"
    )
    parser.add_argument(
        "--perf",
        type=int,
        default=0,
        help="extra runs at this N, the daemon and each --relay-loop under Linux perf",
    )
    parser.add_argument(
        "--profile-join-seconds", type=float, default=6.0, help="how long py-spy samples the join"
    )
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="--profile and --profile-join with C frames (pauses the daemon at every sample)",
    )
    parser.add_argument(
        "--storm", action="store_true", help="all sockets connect at once (--concurrency 0)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="handshakes at once (0: all at once)"
    )
    parser.add_argument(
        "--sessions",
        choices=("per-user", "per-socket"),
        default="per-user",
        help="per-user: the sockets share one session per user (--users of them); "
        "per-socket: each its own (copies written into the daemon's database)",
    )
    parser.add_argument(
        "--late-ms", type=float, default=100.0, help="joins: a frame older than this is late"
    )
    parser.add_argument("--phones", type=int, default=0, help="K viewers that read slowly")
    parser.add_argument("--phones-at", default="", help="Ns for the --phones runs (default: all)")
    parser.add_argument("--phone-kbps", type=float, default=300.0, help="KB/s each phone reads")
    parser.add_argument("--phone-rcvbuf", type=int, default=65536, help="SO_RCVBUF of a phone")
    parser.add_argument(
        "--phone-warmup",
        type=float,
        default=20.0,
        help="warm-up of --phones runs: the time a slow reader takes to fill its buffers",
    )
    parser.add_argument(
        "--tls", choices=("off", "on", "both"), default="off", help="serve over TLS (wss://)"
    )
    parser.add_argument("--users", type=int, default=10, help="accounts the viewers share")
    parser.add_argument("--camera-mode", choices=("push", "getframe", "both"), default="push")
    parser.add_argument(
        "--camera-kind",
        default="robocam",
        help="robocam, esp32 or both: robocam,esp32 (the emulated firmware)",
    )
    parser.add_argument(
        "--cameras",
        type=int,
        default=0,
        help="K cameras with --viewers viewers each, and one camera with K times as many",
    )
    parser.add_argument(
        "--startup-cameras",
        type=int,
        default=0,
        help="also: start-up time and /api/cameras with 1 and with M cameras in the table",
    )
    parser.add_argument(
        "--huge-part",
        default="",
        help="also: the daemon's RSS while an ESP32 sends a huge part: length, endless or both",
    )
    parser.add_argument("--huge-mb", type=float, default=256.0, help="the length part's MiB")
    parser.add_argument("--huge-after", type=float, default=3.0, help="s of frames before it")
    parser.add_argument("--huge-seconds", type=float, default=30.0, help="s to watch the RSS")
    parser.add_argument("--no-relay", action="store_true", help="skip the bare relay runs")
    parser.add_argument(
        "--relay-loop",
        default="asyncio",
        help="asyncio, uvloop or both: asyncio,uvloop; +lowat and +nagle give the relay's viewer"
        " sockets the daemon's options (uvloop+lowat+nagle: TCP_NOTSENT_LOWAT 64 KiB, no"
        " TCP_NODELAY)",
    )
    parser.add_argument("--client-loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument(
        "--noise", type=float, default=0.25, help="cores used by others that make a run noisy"
    )
    parser.add_argument("--retries", type=int, default=1, help="reruns of a noisy run")
    parser.add_argument(
        "--quiet-wait", type=float, default=300.0, help="s to wait for an idle machine first"
    )
    parser.add_argument("--log-level", default="INFO", help="the daemon's LOG_LEVEL")
    parser.add_argument("--out", help="default: bench/results (bench/results/quick with --quick)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep logs and databases")
    parser.add_argument("--from-json", help="only redo results.md and plot.png from this JSON")
    parser.add_argument("--quick", action="store_true", help="N = 1, 10 for 3 s: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.viewers, args.duration, args.warmup, args.grace_max = "1,10", 3.0, 1.0, 5.0
        args.users, args.retries, args.quiet_wait = min(args.users, 2), 0, 0.0
    if args.out is None:
        args.out = str(HERE / "results" / "quick" if args.quick else HERE / "results")
    if args.storm:
        args.concurrency = 0
    ns = wl.parse_ns(args.viewers)
    slow_at = wl.parse_ns(args.slow_at) if args.slow_at else ns
    phones_at = wl.parse_ns(args.phones_at) if args.phones_at else ns
    plan: list[Plan] = []
    camera_kinds = args.camera_kind.split(",")
    for secure in {"off": [False], "on": [True], "both": [False, True]}[args.tls]:
        for n in ns:
            for camera_kind in camera_kinds:
                if args.cameras:
                    # N viewers on each of K cameras, and as many on one camera.
                    total = n * args.cameras
                    plan.append(Plan("camproxy", total, tls=secure, cameras=args.cameras))
                    if args.cameras > 1:
                        plan.append(Plan("camproxy", total, tls=secure, cameras=1))
                else:
                    plan.append(Plan("camproxy", n, tls=secure, camera_kind=camera_kind))
            if not args.no_relay and not args.cameras:
                plan += [
                    Plan(f"relay:{loop}", n, tls=secure) for loop in args.relay_loop.split(",")
                ]
        if args.slow:
            plan += [Plan("camproxy", n, slow=args.slow, tls=secure) for n in slow_at]
        if args.phones:
            plan += [Plan("camproxy", n, phones=args.phones, tls=secure) for n in phones_at]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
        (out / "results.md").write_text(
            markdown(report["runs"], report["settings"], report.get("startup"), report.get("huge"))
        )
        plot(report["runs"], out / "plot.png")
        print((out / "results.md").read_text())
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="camproxy-bench-"))
    wl.raise_nofile(4096)
    results: list[dict[str, Any]] = []
    startup: list[dict[str, Any]] = []
    huge: list[dict[str, Any]] = []
    started_at = time.monotonic()
    try:
        print(f"creating {args.users} users in {tmp}", flush=True)
        users = create_users(tmp, max(1, args.users))
        for step in plan:
            result = attempt(args, tmp, step, users)
            for _ in range(args.retries):
                if "error" in result or noise(result) <= args.noise:
                    break
                print(f"   {noise(result):.2f} cores of other load: once more", flush=True)
                again = attempt(args, tmp, step, users)
                if "error" not in again and noise(again) < noise(result):
                    result = again
            results.append(result)
        if args.startup_cameras:
            user = users[0][0]
            for count in (1, args.startup_cameras):
                print(f"-- start-up with {count} cameras", flush=True)
                startup.append(startup_run(args, tmp, count, user))
        huge_modes = args.huge_part.replace("both", "length,endless").split(",")
        for mode in [m for m in huge_modes if m]:
            print(f"-- huge part: {mode}", flush=True)
            try:
                huge.append(huge_run(args, tmp, mode))
            except (RunFailed, OSError, ValueError, KeyError) as error:
                print(f"   FAILED: {error}", flush=True)
        if args.profile:
            profile = out / f"profile-{args.profile}"
            plan_profiled = Plan("camproxy", args.profile, cameras=args.cameras)
            entry = attempt(args, tmp, plan_profiled, users, profile)
            entry["profile"] = True
            results.append(entry)
            raw = profile.with_suffix(".collapsed")
            if raw.exists():
                summary = summarize_profile(raw)
                (out / f"profile-{args.profile}-top.txt").write_text(summary)
                print(summary)
        if args.perf:
            relays = [] if args.no_relay else [f"relay:{k}" for k in args.relay_loop.split(",")]
            for kind in ["camproxy", *relays]:
                data = tmp / f"perf-{args.perf}-{kind.replace(':', '-')}.data"
                # With --cameras K the daemon's run has its K cameras (the relays have one).
                cameras = args.cameras if kind == "camproxy" else 0
                perf_plan = Plan(kind, args.perf, cameras=cameras)
                entry = attempt(args, tmp, perf_plan, users, perf=data)
                entry["profile"] = True
                results.append(entry)
                if data.exists():
                    summary = perf_summary(data)
                    (out / f"perf-{args.perf}-{kind.replace(':', '-')}.txt").write_text(summary)
                    print("\n".join(summary.splitlines()[:40]))
        if args.profile_join:
            profile = out / f"profile-join-{args.profile_join}.collapsed"
            entry = attempt(
                args, tmp, Plan("camproxy", args.profile_join), users, profile_join=profile
            )
            entry["profile"] = True
            results.append(entry)
            if profile.exists():
                summary = summarize_join_profile(profile) + "\n" + summarize_profile(profile)
                (out / f"profile-join-{args.profile_join}-top.txt").write_text(summary)
                print(summary)
    finally:
        if args.keep_tmp:
            print(f"logs and database kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "machine": machine(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {
            k: getattr(args, k)
            for k in (
                "fps",
                "frame_kb",
                "duration",
                "warmup",
                "camera_mode",
                "slow",
                "users",
                "concurrency",
                "sessions",
                "late_ms",
                "phones",
                "phone_kbps",
                "phone_rcvbuf",
                "tls",
            )
        },
        "elapsed_s": time.monotonic() - started_at,
        "runs": results,
        "startup": startup,
        "huge": huge,
    }
    (out / "results.json").write_text(json.dumps(report, indent=1))
    table = markdown(results, report["settings"], startup, huge)
    (out / "results.md").write_text(table)
    plotted = plot(results, out / "plot.png")
    print(table)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}" + (", plot.png" if plotted else ""))
    measured = any("error" not in r for r in results) or bool(startup or huge)
    return 0 if measured else 1


def wait_quiet(threshold: float, limit: float) -> float:
    """Wait (at most ``limit`` s) until the machine's busy cores stay below ``threshold``
    for 3 s: other people's processes share these 2 cores. Returns the last reading."""
    deadline = time.monotonic() + limit
    told = False
    while True:
        before = wl.machine_cpu()
        time.sleep(3)
        after = wl.machine_cpu()
        busy = (after[0] - before[0]) / max(1.0, after[1] - before[1]) * (os.cpu_count() or 1)
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        if not told:
            print(f"   machine busy ({busy:.2f} cores) with others' work: waiting", flush=True)
            told = True


def noise(result: dict[str, Any]) -> float:
    """The other load of a run: in its window, or during its join when that was worse."""
    join = result.get("join") or {}
    during = join.get("join_other_load")
    window = result["other_load"]
    return window if during is None or math.isnan(during) else max(window, during)


def attempt(
    args: argparse.Namespace,
    tmp: Path,
    plan: Plan,
    users: list[tuple[str, str]],
    profile: Path | None = None,
    profile_join: Path | None = None,
    perf: Path | None = None,
) -> dict[str, Any]:
    label = (
        f"{plan.kind} N={plan.n}"
        + (f" + {plan.slow} slow" if plan.slow else "")
        + (f" + {plan.phones} phones" if plan.phones else "")
        + (" TLS" if plan.tls else "")
    )
    print(f"-- {label}", flush=True)
    if args.quiet_wait > 0:
        wait_quiet(args.noise, args.quiet_wait)
    begun = time.monotonic()
    try:
        result = run_one(args, tmp, plan, users, profile, profile_join, perf)
    except (RunFailed, OSError, ValueError, KeyError, subprocess.SubprocessError) as error:
        log_tail = tail(tmp / f"{run_label(plan, profile or profile_join)}.log")
        print(f"   FAILED: {error}\n{log_tail}", flush=True)
        return {
            "kind": plan.kind,
            "n": plan.n,
            "slow": plan.slow,
            "phones": plan.phones,
            "tls": plan.tls,
            "label": label,
            "error": str(error),
            "log_tail": log_tail,
        }
    lat, first, last = (
        result["latency_ms"],
        result["latency_first_s_ms"],
        result["latency_last_s_ms"],
    )
    join = result["join"]
    print(
        f"   {result['connected']} connected in {join['connect_all_s']:.2f}s "
        f"({join['count_messages']} client_count msgs, {join['handshake_over_1s']} handshakes"
        f" > 1 s, daemon {fmt(join['server_ms_per_join'], '.2f')} ms CPU per join), settled"
        f" in {fmt(join['settled_s_median'], '.2f')}s median / "
        f"{fmt(join['settled_s_max'], '.2f')}s last viewer; "
        f"fps median {fmt(result['fps_median'], '.2f')}"
        f" worst {fmt(result['fps_worst'], '.2f')} (camera {result['camera_fps']:.2f}); "
        f"latency p50 {fmt(lat['p50'], '.2f')} p99 {fmt(lat['p99'], '.2f')} ms "
        f"(p50 first s {fmt(first['p50'], '.1f')}, last s {fmt(last['p50'], '.1f')}); "
        f"server {result['server_cpu_per_s']:.3f} CPU s/s, {fmt(per_frame(result), '.1f')} "
        f"us/frame; client {result['client_cpu_per_s']:.3f} CPU s/s; other load "
        f"{result['other_load']:.2f} (join {fmt(join['join_other_load'], '.2f')}); "
        f"RSS {result['rss_kb'] / 1024:.1f} MB; {time.monotonic() - begun:.0f}s",
        flush=True,
    )
    if plan.phones:
        phones = result["phones_seen"]
        age = phones["age_ms"]
        print(
            f"   phones: {[round(f, 1) for f in phones['fps']]} fps, frame age p50 "
            f"{fmt(age['p50'], '.0f')} p99 {fmt(age['p99'], '.0f')} max {fmt(age['max'], '.0f')}"
            " ms",
            flush=True,
        )
    return result


if __name__ == "__main__":
    sys.exit(main())
