"""The `deft6g` command line: one subcommand per registered `Command` (`deft6g.experiment.protocol`), each with
the options every command takes (--out, --quick, --seed where it takes one, the parallel options) and its own.
Argument errors answer before any work and without loading TensorFlow; `main` loads it quietly (`quiet_stack`),
runs the handler and turns the engine's errors into exit codes (2: refused input, 1: failed points, 130:
interrupted, finished points saved)."""

import argparse
import math
import sys
from pathlib import Path

from deft6g import __version__
from deft6g.environment import quiet_stack

from .config import MAX_SEED
from .protocol import COMMANDS, load_entry_points, parallel_options
from .runner import PointsFailed, RayClusterError, RayUnavailable, check_cluster, require_ray
from .store import OutputFolderError


def _number(text, kind):
    """`kind(text)` (int or float), or None where `text` is not one."""
    try:
        return kind(text)
    except ValueError:
        return None


def _worker_count(text):
    """--workers N: a whole number >= 1 (0 is what a bare --workers means internally: all cores)."""
    n = _number(text, int)
    if n is None or n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, or given alone for one worker per core; "
                                         f"got {text!r}")
    return n


def _seed(text):
    """--seed N: a whole number in [0, MAX_SEED] (checked here, before any work)."""
    n = _number(text, int)
    if n is None or not 0 <= n <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be a whole number in [0, {MAX_SEED}], got {text!r}")
    return n


def _out_folder(text):
    """--out PATH: a folder that exists or can be made; neither PATH nor its nearest existing parent may be a file."""
    path = Path(text)
    first = next(p for p in (path, *path.parents) if p.exists())
    if not first.is_dir():
        raise argparse.ArgumentTypeError(f"must be a folder, but {str(first)!r} is an existing file; name a folder")
    return text


def _gpu_share(text):
    """--worker-gpus F: a GPU share in [0, 1] or a whole number of GPUs (what Ray can place)."""
    f = _number(text, float)
    if f is None or not (0 <= f <= 1 or (f > 1 and f.is_integer() and math.isfinite(f))):
        raise argparse.ArgumentTypeError(f"must be a GPU share in [0, 1] (e.g. 0.25: four workers per GPU) or a "
                                         f"whole number of GPUs, got {text!r}")
    return f


def _seconds(text):
    """--ray-timeout S: a number of seconds > 0."""
    f = _number(text, float)
    if f is None or not 0 < f < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return f


def _add_parallel(parser, note=""):
    """--workers [N], --ray-address, --worker-gpus, --ray-timeout: the parallel options every command on the shared
    experiment runner takes (deft6g.experiment.run_points); `note` adds what runs in parallel for this command."""
    parser.add_argument("--workers", type=_worker_count, nargs="?", const=0, default=None, metavar="N",
                        help="run the points on N Ray workers (--workers alone: one per available core, or per CPU "
                             "of the cluster at --ray-address; default: serially here, without Ray); results do "
                             "not depend on N; needs pip install 'deft6g[ray]'" + (f". {note}" if note else ""))
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="attach to a running Ray cluster ('auto' or host:port) instead of starting one "
                             "(workers: its CPUs unless --workers N)")
    parser.add_argument("--worker-gpus", type=_gpu_share, default=0.0, metavar="F",
                        help="GPU share of each Ray worker (e.g. 0.25: four workers per GPU; default 0: CPU only); "
                             "checked against the cluster's GPUs before any work")
    parser.add_argument("--ray-timeout", type=_seconds, default=600.0, metavar="SECONDS",
                        help="end the run with an error when the Ray cluster makes no progress (workers that never "
                             "start) for this long (default 600); finished points are saved")


def add_log_dir(parser, what, reruns):
    """--log-dir DIR: live TensorBoard scalars of every federated round (`what`), one run per point; `reruns`:
    what a re-run writes."""
    parser.add_argument("--log-dir", type=_out_folder, default=None, metavar="DIR",
                        help=f"write each round's scalars ({what}) as TensorBoard events into DIR as the rounds "
                             f"run, one run (subfolder) per point, named by its key (view: tensorboard --logdir "
                             f"DIR); {reruns}")


def _add_command(sub, command):
    """Add the subcommand of `command` (a Command; its description is its line in `deft6g --help` and the head
    of `deft6g <name> --help`) with the options every command takes: --out (default results/<name>; its
    outputs listed), --quick, --seed when it takes one, the parallel options of `_add_parallel` when it takes
    them, then its own (`add_options`)."""
    name = command.name
    parser = sub.add_parser(name, help=command.description, description=command.description)
    parser.add_argument("--out", type=_out_folder, default=f"results/{name}",
                        help=f"output folder{f' ({command.outputs})' if command.outputs else ''}; re-runs resume "
                             f"(default results/{name})")
    parser.add_argument("--quick", action="store_true", help=command.quick)
    if command.seed:
        parser.add_argument("--seed", type=_seed, default=0, help=f"seed of the run, in [0, {MAX_SEED}] (default 0)")
    if command.parallel:
        _add_parallel(parser, command.parallel_note)
    if command.add_options:
        command.add_options(parser)
    parser.set_defaults(func=command.handler)


def build_parser():
    """The `deft6g` parser: one subcommand per registered Command (those of `register_command` and
    `register_study`, then installed packages' entry points). The built-in commands are registered by importing
    `deft6g.benchmarks.cli`, whose `main` (this one) is the `deft6g` entry point."""
    load_entry_points()
    parser = argparse.ArgumentParser(prog="deft6g", description="DEFT studies and benchmarks over simulated 6G links")
    parser.add_argument("--version", action="version", version=f"deft6g {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        _add_command(sub, command)
    return parser


def main(argv=None):
    """Run `deft6g` with the arguments `argv` (None: the process's); returns the exit status (0 done, 2 refused
    input or Ray not available, 1 failed points, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "workers", None) not in (None, 1) or getattr(args, "ray_address", None):
        try:
            require_ray()
            if getattr(args, "worker_gpus", 0) > 0:      # the cluster has the GPUs asked for: checked before work
                opts = parallel_options(args)
                check_cluster(opts["workers"], opts["ray_address"], opts["worker_gpus"])
        except (RayUnavailable, RayClusterError) as err:
            print(f"deft6g {args.command}: error: {err}", file=sys.stderr)
            return 2
    quiet_stack()
    try:
        return args.func(args) or 0
    except OutputFolderError as err:
        print(f"deft6g {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (PointsFailed, RayClusterError) as err:
        print(f"deft6g {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: finished points are saved; run the same command to resume", file=sys.stderr)
        return 130

