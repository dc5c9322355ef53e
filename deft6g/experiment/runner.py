"""The one experiment runner: run independent points, store each as it finishes, skip finished ones.

A point is a dict of the store's key columns. `run_points` calls `fn(point)` for every point not yet in the
store, appends the row(s) it returns at once, and shows progress: a tqdm bar on a terminal, one line per
finished point otherwise. A point that raises is logged with its traceback and retried once; if it fails
again the others still run, and a PointsFailed error lists the failures at the end.

With `workers` > 1 (or a `ray_address`) the points run in parallel on Ray (an optional dependency:
``pip install 'deft6g[ray]'``): one actor per worker holds its own copy of `fn` (so `fn` must be
picklable, e.g. an instance of a top-level class that builds its heavy state lazily, once per process) and
runs a point at a time; the driver writes every result to the store as it arrives, so the store stays the
single source of truth and Ctrl-C or a crashed worker loses no finished point. Every point seeds itself,
so the rows do not depend on the number of workers. Each worker gets one CPU and limits TensorFlow's
intra/inter-op thread pools (and OpenMP) to it through its environment, set before TensorFlow starts.
"""

import os
import sys
import time
import traceback

from tqdm import tqdm

RAY_HINT = "parallel runs need Ray: pip install 'deft6g[ray]' (or pip install 'ray>=2.9')"


class PointsFailed(RuntimeError):
    """Some points raised twice; `failures` is a list of (point, traceback text)."""

    def __init__(self, failures):
        self.failures = failures
        names = ", ".join(_label(p) for p, _ in failures[:5])
        super().__init__(f"{len(failures)} point(s) failed twice: {names}; finished points are saved")


class RayUnavailable(ImportError):
    """`workers` > 1 or a `ray_address` was asked for and Ray is not installed."""


def _label(point):
    return " ".join(f"{k}={v}" for k, v in point.items())


def require_ray():
    """The `ray` module, or RayUnavailable saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise RayUnavailable(RAY_HINT) from err
    return ray


def available_cores():
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_points(points, fn, store, desc="points", log=print, retries=1, describe=None, write=None, group=None,
               workers=1, ray_address=None, worker_gpus=0.0):
    """Run `fn` on every point of `points` (dicts of `store`'s key columns) not yet done in `store`.

    fn(point) -> dict or list of dicts: the finished row(s), each holding the store's fields (or, with
    `write`, anything picklable). write(point, result) -> row(s): called in this (the driver) process with
    what fn returned, before the rows go to `store`; use it to write side files (default: result is the
    row(s)). describe(point, rows) -> str: the line printed per finished point when stdout is not a
    terminal (default: the point's key).
    group: key columns whose equal values send points to the same worker, one after the other (for a `fn`
    that caches work shared by those points, e.g. all methods of one channel draw); ignored serially.
    workers: 1 runs here, in order; N > 1 runs N Ray workers (0: one per available core, or per CPU of the
    cluster at `ray_address`); ray_address: "auto" or "host:port" of a running Ray cluster to attach to
    (otherwise a local Ray instance with `workers` CPUs is started, once per process). worker_gpus: the
    GPU share of each worker (e.g. 0.25: four workers per GPU; 0: workers see no GPU).
    Returns the number of points run now.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"`workers` must be an integer >= 0 (0: all cores), got {workers!r}")
    if not worker_gpus >= 0:
        raise ValueError(f"`worker_gpus` must be >= 0, got {worker_gpus!r}")
    todo = [p for p in points if not store.done(p)]
    if len(todo) < len(points):
        log(f"{desc}: {len(points) - len(todo)} of {len(points)} already finished, skipped")
    if not todo:
        return 0
    tty = sys.stdout.isatty()
    bar = tqdm(total=len(todo), desc=desc, unit="pt", disable=not tty)
    count = [0]

    def finished(point, result, seconds):
        rows = write(point, result) if write else result
        for row in rows if isinstance(rows, list) else [rows]:
            store.add(row)
        count[0] += 1
        if not tty:
            text = describe(point, rows) if describe else _label(point)
            log(f"[{count[0]}/{len(todo)}] {desc}: {text} ({seconds:.1f} s)")
        bar.update(1)

    failures = []

    def failed(point, text, attempt):
        """Report a failed attempt; True: retry the point, False: given up (listed in PointsFailed)."""
        log(f"{desc}: point {_label(point)} failed (attempt {attempt + 1}):\n{text}")
        if attempt < retries:
            return True
        failures.append((point, text))
        bar.update(1)
        return False

    try:
        if workers == 1 and ray_address is None:
            _run_serial(todo, fn, finished, failed)
        else:
            _run_ray(todo, fn, finished, failed, group, workers, ray_address, worker_gpus, log, desc)
    finally:
        bar.close()
    if failures:
        raise PointsFailed(failures)
    return len(todo)


def _run_serial(todo, fn, finished, failed):
    for point in todo:
        t0, attempt = time.time(), 0
        while True:
            try:
                result = fn(point)
            except Exception:                                     # noqa: BLE001 -- reported, retried
                if failed(point, traceback.format_exc(), attempt):
                    attempt += 1
                    continue
                break
            finished(point, result, time.time() - t0)
            break


def _worker_class():
    """A Ray actor's body, defined in a function so that Ray ships it by value: a worker imports only what
    its `fn` needs (not deft6g.experiment and its matplotlib)."""

    class Worker:
        """Holds `fn` (its heavy state built once per process) and runs batches of points on it."""

        def __init__(self, fn):
            self.fn = fn

        def run(self, points):
            """-> list of (point, ok, row(s) or traceback text, seconds)."""
            out = []
            for p in points:
                t0 = time.time()
                try:
                    out.append((p, True, self.fn(p), time.time() - t0))
                except Exception:                                 # noqa: BLE001 -- sent back to the driver
                    out.append((p, False, traceback.format_exc(), time.time() - t0))
            return out

    return Worker


# Every worker: one thread in TensorFlow's pools and in OpenMP (read when TensorFlow starts in the worker),
# no TensorFlow log noise, GPU memory grown on demand (workers with a GPU share share one device).
WORKER_ENV = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
              "TF_CPP_MIN_LOG_LEVEL": "2", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}


def _worker_env():
    """WORKER_ENV and the deft6g cache folder of this process (a folder every node sees, on a cluster)."""
    return WORKER_ENV | {k: os.environ[k] for k in ("DEFT6G_CACHE",) if k in os.environ}


def start_ray(workers=0, ray_address=None):
    """Attach to `ray_address` ("auto" or "host:port"), or start a local Ray instance with `workers` CPUs (0:
    all cores) unless this process already has one; the job's workers get WORKER_ENV. Returns (ray module,
    CPUs of the cluster)."""
    ray = require_ray()
    if not ray.is_initialized():
        import logging
        quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     configure_logging=True, runtime_env={"env_vars": _worker_env()})
        if ray_address:
            ray.init(address=ray_address, **{k: v for k, v in quiet.items() if k != "include_dashboard"})
        else:
            ray.init(num_cpus=workers or available_cores(), object_store_memory=256 * 2**20, **quiet)
    return ray, int(ray.cluster_resources().get("CPU", 1))


def _run_ray(todo, fn, finished, failed, group, workers, ray_address, worker_gpus, log, desc):
    ray, cpus = start_ray(workers, ray_address)
    batches = {}
    for p in todo:                                    # a batch: the points one worker runs in one call
        batches.setdefault(tuple(p[c] for c in group) if group else len(batches), []).append(p)
    queue = [(b, 0) for b in batches.values()]        # (points, attempt)
    n = max(1, min(workers or cpus, cpus, len(queue)))
    job_env = (ray.get_runtime_context().runtime_env or {}).get("env_vars") or {}
    own_env = {} if job_env == _worker_env() else {"runtime_env": {"env_vars": _worker_env()}}  # Ray not ours
    actor_cls = ray.remote(_worker_class()).options(num_cpus=1, num_gpus=worker_gpus, **own_env)
    fn_ref = ray.put(fn)
    log(f"{desc}: {len(todo)} points on {n} Ray workers ({cpus} CPUs in the cluster)")
    idle = [actor_cls.remote(fn_ref) for _ in range(n)]
    running = {}                                      # ObjectRef -> (actor, points, attempt)
    try:
        while queue or running:
            while queue and idle:
                actor = idle.pop()
                points, attempt = queue.pop(0)
                running[actor.run.remote(points)] = (actor, points, attempt)
            done, _ = ray.wait(list(running), num_returns=1)
            actor, points, attempt = running.pop(done[0])
            try:
                results = ray.get(done[0])
                idle.append(actor)
            except ray.exceptions.RayError as err:    # the worker died (crash, out of memory, lost node)
                ray.kill(actor)                       # its points fail this attempt
                idle.append(actor_cls.remote(fn_ref))
                results = [(p, False, f"worker died: {err}", 0.0) for p in points]
            again = []
            for point, ok, value, seconds in results:
                if ok:
                    finished(point, value, seconds)
                elif failed(point, value, attempt):
                    again.append(point)
            if again:
                queue.append((again, attempt + 1))
    finally:
        for actor in idle + [actor for actor, *_ in running.values()]:
            ray.kill(actor)
