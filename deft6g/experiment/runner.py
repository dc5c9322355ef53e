"""The one experiment runner: run independent points, store each as it finishes, skip finished ones.

A point is a dict of the store's key columns. `run_points` calls `fn(point)` for every point not yet in the
store, appends the row(s) it returns at once, and shows progress: a tqdm bar on a terminal, one line per
finished point otherwise. A point that raises is logged with its traceback and retried once; if it fails
again the others still run, and a PointsFailed error lists the failures at the end.

With `workers` > 1 (or a `ray_address`) the points run in parallel on Ray (an optional dependency:
``pip install 'deft6g[ray]'``): one actor per worker holds its own copy of `fn` (so `fn` must be
picklable, e.g. an instance of a top-level class that builds its heavy state lazily, once per process) and
runs one point per call; every point travels back and the driver writes it to the store as it finishes, so
the store stays the single source of truth and Ctrl-C or a crashed worker loses no finished point (a
crash fails only the point that was running; the rest of its group goes on on a fresh worker). Every point
seeds itself, so the rows do not depend on the number of workers. Each worker gets one CPU and limits
TensorFlow's intra/inter-op thread pools (and OpenMP) to it through its environment, set before TensorFlow
starts. The cluster is checked before any point runs (`check_cluster`): workers that cannot all be placed
(e.g. more GPU shares than GPUs) are an error, never a silent wait; a cluster that still makes no progress
(workers that never start) for `ray_timeout` seconds ends the run with RayClusterError. After points, each
process hands freed memory back to the system (`MemoryReleaser`: after every slow point, every few seconds of
fast ones), so a long serial study's resident memory does not creep up point by point.
"""

import os
import sys
import time
import traceback

from tqdm import tqdm

from deft6g.environment import MemoryReleaser, release_memory

RAY_HINT = "parallel runs need Ray: pip install 'deft6g[ray]' (or pip install 'ray>=2.9')"


class PointsFailed(RuntimeError):
    """Some points raised twice; `failures` is a list of (point, traceback text)."""

    def __init__(self, failures):
        self.failures = failures
        names = ", ".join(point_label(p) for p, _ in failures[:5])
        super().__init__(f"{len(failures)} point(s) failed twice: {names}; finished points are saved")


class RayUnavailable(ImportError):
    """`workers` > 1 or a `ray_address` was asked for and Ray is not installed."""


class RayClusterError(RuntimeError):
    """The Ray cluster cannot hold the workers asked for (too few GPUs for --worker-gpus), or made no progress
    (workers that never start) for `ray_timeout` seconds. Finished points are saved."""


def point_label(point):
    """A point as its run_points label: "key=value" pairs."""
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
               workers=1, ray_address=None, worker_gpus=0.0, ray_timeout=600.0):
    """Run `fn` on every point of `points` (dicts of `store`'s key columns) not yet done in `store`.

    fn(point) -> dict or list of dicts: the finished row(s), each holding the store's fields (or, with
    `write`, anything picklable). write(point, result) -> row(s): called in this (the driver) process with
    what fn returned, before the rows go to `store`; use it to write side files (default: result is the
    row(s)). describe(point, rows) -> str: the line printed per finished point when stdout is not a
    terminal (default: the point's key).
    group: key columns whose equal values send points to the same worker, one after the other (for a `fn`
    that caches work shared by those points, e.g. all methods of one channel draw); each point still comes
    back and is stored as it finishes, and fails alone; ignored serially.
    workers: 1 runs here, in order; N > 1 runs N Ray workers (0: one per available core, or per CPU of the
    cluster at `ray_address`); ray_address: "auto" or "host:port" of a running Ray cluster to attach to
    (otherwise a local Ray instance with `workers` CPUs is started, once per process). worker_gpus: the
    GPU share of each worker (e.g. 0.25: four workers per GPU; 0: workers see no GPU; above 1 a whole number).
    ray_timeout: seconds [s] the Ray run may go without progress (a worker starting, a point finishing or
    failing) while no started worker is running a point, before RayClusterError ends it.
    Returns the number of points run now.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"`workers` must be an integer >= 0 (0: all cores), got {workers!r}")
    if not (worker_gpus >= 0 and (worker_gpus <= 1 or float(worker_gpus).is_integer())):
        raise ValueError(f"`worker_gpus` must be a share in [0, 1] or a whole number of GPUs, got {worker_gpus!r}")
    if not ray_timeout > 0:
        raise ValueError(f"`ray_timeout` must be > 0 seconds, got {ray_timeout!r}")
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
        store.add(rows)                                   # a point's rows in one write: all of them or none
        count[0] += 1
        if not tty:
            text = describe(point, rows) if describe else point_label(point)
            log(f"[{count[0]}/{len(todo)}] {desc}: {text} ({seconds:.1f} s)")
        bar.update(1)

    failures = []

    def failed(point, text, attempt):
        """Report a failed attempt; True: retry the point, False: given up (listed in PointsFailed)."""
        log(f"{desc}: point {point_label(point)} failed (attempt {attempt + 1}):\n{text}")
        if attempt < retries:
            return True
        failures.append((point, text))
        bar.update(1)
        return False

    try:
        if workers == 1 and ray_address is None:
            _run_serial(todo, fn, finished, failed)
        else:
            _run_ray(todo, fn, finished, failed, group, workers, ray_address, worker_gpus, ray_timeout, log, desc)
    finally:
        bar.close()
    if failures:
        raise PointsFailed(failures)
    return len(todo)


def _run_serial(todo, fn, finished, failed):
    release = MemoryReleaser(release_memory)
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
            release()
            finished(point, result, time.time() - t0)
            break


def _worker_class():
    """A Ray actor's body, defined in a function so that Ray ships it by value: a worker imports only what
    its `fn` needs (not deft6g.experiment and its matplotlib)."""

    class Worker:
        """Holds `fn` (its heavy state built once per process) and runs one point per call."""

        def __init__(self, fn):
            self.fn = fn
            self.release = MemoryReleaser(release_memory)

        def ready(self):
            """Answers once the worker has started (its placement on the cluster and `fn` unpickled)."""
            return True

        def run(self, point):
            """-> (True, row(s), seconds) or (False, traceback text, seconds)."""
            t0 = time.time()
            try:
                return True, self.fn(point), time.time() - t0
            except Exception:                                     # noqa: BLE001 -- sent back to the driver
                return False, traceback.format_exc(), time.time() - t0
            finally:
                self.release()

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


def worker_capacity(ray, worker_gpus):
    """How many workers of 1 CPU and `worker_gpus` GPU each the cluster's live nodes hold at once (Ray places a
    share <= 1 within one GPU: floor(1 / share) workers per GPU)."""
    total = 0
    for node in ray.nodes():
        res = node.get("Resources", {}) if node.get("Alive") else {}
        fit = int(res.get("CPU", 0))
        if worker_gpus > 0:
            gpus = int(res.get("GPU", 0))
            fit = min(fit, gpus * int(1 / worker_gpus + 1e-9) if worker_gpus <= 1 else int(gpus // worker_gpus))
        total += fit
    return total


def check_cluster(workers=0, ray_address=None, worker_gpus=0.0):
    """Start or attach to Ray (`start_ray`) and check, before any work, that it can hold the workers asked
    for: `workers` (0: one per CPU of the cluster) of 1 CPU and `worker_gpus` GPU each. Returns (ray module,
    number of workers to start: `workers` capped at the cluster's CPUs, with 0 at what it holds). Raises
    RayClusterError naming --worker-gpus and what the cluster has when not all of them (or not one) fit."""
    ray, cpus = start_ray(workers, ray_address)
    n = min(workers or cpus, cpus)
    if worker_gpus > 0:
        fit = worker_capacity(ray, worker_gpus)
        if fit == 0 or (workers and n > fit):
            raise RayClusterError(
                f"--worker-gpus {worker_gpus:g}: {n if workers else 1} worker(s) of {worker_gpus:g} GPU each do not "
                f"fit on the Ray cluster, which has {ray.cluster_resources().get('GPU', 0):g} GPU(s) and {cpus} "
                f"CPU(s), room for {fit} such worker(s); use fewer --workers, a smaller --worker-gpus, or "
                "--worker-gpus 0 (CPU only)")
        n = min(n, fit)
    return ray, n


def _run_ray(todo, fn, finished, failed, group, workers, ray_address, worker_gpus, ray_timeout, log, desc):
    ray, n = check_cluster(workers, ray_address, worker_gpus)
    groups = {}
    for p in todo:                                    # a group: the points one worker runs one after the other
        groups.setdefault(tuple(p[c] for c in group) if group else len(groups), []).append((p, 0))
    queue = list(groups.values())                     # groups waiting for a worker: lists of (point, attempt)
    n = max(1, min(n, len(queue)))
    job_env = (ray.get_runtime_context().runtime_env or {}).get("env_vars") or {}
    own_env = {} if job_env == _worker_env() else {"runtime_env": {"env_vars": _worker_env()}}  # Ray not ours
    actor_cls = ray.remote(_worker_class()).options(num_cpus=1, num_gpus=worker_gpus, **own_env)
    fn_ref = ray.put(fn)
    log(f"{desc}: {len(todo)} points on {n} Ray workers ({int(ray.cluster_resources().get('CPU', 1))} CPUs in the "
        "cluster)")
    actors = {}                                       # actor -> its (point, attempt) still to run, the first running
    calls = {}                                        # ObjectRef -> (actor, point or None for its start, attempt)
    started = set()

    def submit(actor):
        if not actors[actor] and queue:
            actors[actor].extend(queue.pop(0))
        if actors[actor]:
            point, attempt = actors[actor][0]
            calls[actor.run.remote(point)] = (actor, point, attempt)

    def spawn(items):
        actor = actor_cls.remote(fn_ref)
        actors[actor] = items
        calls[actor.ready.remote()] = (actor, None, 0)
        submit(actor)

    try:
        for _ in range(n):
            spawn(queue.pop(0))
        last = time.monotonic()
        while any(actors.values()):
            busy = any(items and a in started for a, items in actors.items())   # a point is running: wait for it
            wait = None if busy else max(0.0, last + ray_timeout - time.monotonic())
            done, _ = ray.wait(list(calls), num_returns=1, timeout=wait)
            if not done:
                waiting = sum(1 for a, items in actors.items() if items and a not in started)
                has, free = ray.cluster_resources(), ray.available_resources()
                raise RayClusterError(
                    f"{desc}: no progress for {ray_timeout:g} s (--ray-timeout): {waiting} Ray worker(s) with points "
                    f"to run never started; the cluster has " + " and ".join(
                        f"{has.get(r, 0):g} {r}(s) ({free.get(r, 0):g} free)" for r in ("CPU", "GPU")) +
                    "; finished points are saved")
            last = time.monotonic()
            actor, point, attempt = calls.pop(done[0])
            if point is None:                         # the worker started (or died starting: its point says so)
                try:
                    ray.get(done[0])
                    started.add(actor)
                except ray.exceptions.RayError:
                    pass
                continue
            items = actors[actor]
            items.pop(0)
            try:
                ok, value, seconds = ray.get(done[0])
            except ray.exceptions.RayError as err:    # the worker died (crash, out of memory, lost node)
                ok, value, seconds = False, f"worker died: {err}", 0.0
                ray.kill(actor)                       # only this point fails this attempt
                del actors[actor]
                started.discard(actor)
            if ok:
                finished(point, value, seconds)
            elif failed(point, value, attempt):
                items.append((point, attempt + 1))
            if actor in actors:
                submit(actor)
            elif items or queue:                      # the rest of its group goes on on a fresh worker
                spawn(items)
    finally:
        for actor in actors:
            ray.kill(actor)
