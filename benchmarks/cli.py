"""The `deft6g` command line: one subcommand per study or benchmark.

Each handler imports its study when it runs, so `deft6g --help` and argument errors answer at once, without
loading TensorFlow."""

import argparse
import math
import os
import sys
from pathlib import Path

from deft6g import __version__
from deft6g.experiment import OutputFolderError, PointsFailed, RayUnavailable, ResultStore, require_ray
from deft6g.experiment.protocol import COMMANDS, Command, load_entry_points, parallel_options, register_command
from deft6g.experiment.runner import RayClusterError, check_cluster

from .study_config import MAX_SEED, ConfigError


def _link(args):
    from .link import run_link, summary
    cfg, air, dig, speed = run_link(args.out, quick=args.quick, seed=args.seed, **parallel_options(args))
    print(summary(cfg, air, dig, speed))
    print(f"results in {args.out}")


def _design(args):
    from .beamforming import run_design, summary
    print(summary(run_design(args.out, quick=args.quick, seed=args.seed, **parallel_options(args))))
    print(f"results in {args.out}")


def _study(args):
    from .study import POINT_KEY, ROUND_FIELDS, ROUND_TYPES, run_study, summary
    result = _configured(args, run_study, log_dir=args.log_dir)
    if result is None:
        return 2
    cfg, rows = result
    print(summary(cfg, rows, ResultStore(Path(args.out) / "rounds.csv", ROUND_FIELDS, POINT_KEY + ["round"],
                                         types=ROUND_TYPES).rows()))
    print(f"results in {args.out}")
    return 0


def _configured(args, run, **options):
    """run(args.out, args.config, quick=..., parallel options, **options); a ConfigError (raised before the
    output folder is touched) is printed naming the command, and None returned."""
    try:
        return run(args.out, args.config, quick=args.quick, **options, **parallel_options(args))
    except ConfigError as err:
        print(f"deft6g {args.command}: configuration error: {err}", file=sys.stderr)
        return None


def _finetune(args):
    from .peft_methods import run_finetune, summary
    print(summary(*run_finetune(args.out, quick=args.quick, seed=args.seed, **parallel_options(args))))
    print(f"results in {args.out}")


def _ensemble(args):
    from .ensemble import run_ensemble, summary
    print(summary(*run_ensemble(args.out, quick=args.quick, **parallel_options(args))))
    print(f"results in {args.out}")


def _connect(args):
    from .connect import run_connect, summary
    result = _configured(args, run_connect)
    if result is None:
        return 2
    print(summary(*result))
    print(f"results in {args.out}")
    return 0


def _transfer(args):
    from .transfer import run_transfer, summary
    print(summary(*run_transfer(args.out, quick=args.quick, **parallel_options(args))))
    print(f"results in {args.out}")


def _emulator(args):
    from .emulator_study import run_emulator_study, summary
    result = _configured(args, run_emulator_study, log_dir=args.log_dir)
    if result is None:
        return 2
    print(summary(*result))
    print(f"results in {args.out}")
    return 0


def _speedup(args):
    from .ray_speedup import run_speedup, summary
    if args.workers < 2:
        print(f"deft6g parallel: error: --workers must be >= 2 to compare with the serial run, got {args.workers}",
              file=sys.stderr)
        return 2
    print(summary(run_speedup(args.out, workers=args.workers, quick=args.quick), args.quick))
    print(f"results in {args.out}")


def _scale(args):
    from .scale import run_scale, summary
    print(summary(*run_scale(args.out, quick=args.quick, log_dir=args.log_dir)))
    print(f"results in {args.out}")


def _worker_count(text):
    """--workers N: a whole number >= 1 (0 is what a bare --workers means internally: all cores)."""
    try:
        n = int(text)
    except ValueError:
        n = None
    if n is None or n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, or given alone for one worker per core; "
                                         f"got {text!r}")
    return n


def _seed(text):
    """--seed N: a whole number in [0, MAX_SEED] (checked here, before any work)."""
    try:
        n = int(text)
    except ValueError:
        n = None
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
    try:
        f = float(text)
    except ValueError:
        f = math.nan
    if not (0 <= f <= 1 or (f > 1 and f.is_integer() and math.isfinite(f))):
        raise argparse.ArgumentTypeError(f"must be a GPU share in [0, 1] (e.g. 0.25: four workers per GPU) or a "
                                         f"whole number of GPUs, got {text!r}")
    return f


def _seconds(text):
    """--ray-timeout S: a number of seconds > 0."""
    try:
        f = float(text)
    except ValueError:
        f = math.nan
    if not 0 < f < math.inf:
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


def _add_log_dir(parser, what, reruns):
    """--log-dir DIR: live TensorBoard scalars of every federated round (`what`), one run per point; `reruns`:
    what a re-run writes."""
    parser.add_argument("--log-dir", type=_out_folder, default=None, metavar="DIR",
                        help=f"write each round's scalars ({what}) as TensorBoard events into DIR as the rounds "
                             f"run, one run (subfolder) per point, named by its key (view: tensorboard --logdir "
                             f"DIR); {reruns}")


_TINY = "a random small model and a tiny grid for smoke tests"


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


def _study_options(parser):
    parser.add_argument("--config", default=None, help="TOML file overriding the embedded default configuration")
    _add_log_dir(parser, "the numeric columns of rounds.csv and the cumulative uplink uses", "points finished in "
                 "an earlier run write nothing, a point re-run after an interruption replaces its events; no "
                 "result changes")


def _config_option(parser, example):
    parser.add_argument("--config", default=None, help="TOML file of top-level keys overriding the default "
                        f"configuration (e.g. {example})")


def _connect_options(parser):
    _config_option(parser, "configs/connect_paper.toml: both training views on the full grid")


def _emulator_options(parser):
    _config_option(parser, "configs/emulator_paper.toml: 10 seeds")
    _add_log_dir(parser, "training loss, training examples, devices heard of each federated training run",
                 "points finished in an earlier run write nothing, a point re-run after an interruption replaces "
                 "its events; no result changes")


def _scale_options(parser):
    _add_log_dir(parser, "training loss, seconds per round, training examples, devices heard", "written after each "
                 "round's timing; a re-run replaces each run's events")


def _speedup_options(parser):
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="Ray workers (>= 2; default 2)")


# The library's own subcommands, in `deft6g --help` order; studies registered later (register_study, or the
# entry-point group deft6g.studies) follow them.
BUILTIN = [
    Command("study", "the main job: federated DEFT accuracy vs SNR (ideal, AirComp, digital)", _study,
            _study_options, outputs="CSV, JSON, PNG", quick="a small run for smoke tests"),
    Command("finetune", "PEFT methods on Rotten Tomatoes (accuracy, speed, memory); block allocator vs uniform "
            "ranks", _finetune, quick="a random small model for smoke tests", seed=True,
            parallel_note="Only the budget sweep (accuracy per allocation) runs on workers; the methods table "
            "measures samples/s, so its methods always run one at a time, each in a fresh subprocess of its own "
            "(for its own peak memory)"),
    Command("ensemble", "on-the-fly prompt ensembles on a stream (DEFT technique 4): ensemble vs single prompts, "
            "pool size, batched inference speed", _ensemble, quick="a random small model for smoke tests",
            parallel_note="The streams and joint references run on workers; the inference-speed table is timed, "
            "so it always runs here, after them"),
    Command("link", "AirComp vs digital link-level benchmark (MSE vs SNR, speed ratio)", _link,
            outputs="CSV, JSON, PNG", seed=True),
    Command("design", "AirComp beamforming / power control: gap to the SDR bound, speed-up", _design, seed=True),
    Command("connect", "AirComp neural connections: multi-view split model trained through the channel vs naive, "
            "ideal, single view, digital; task-oriented design", _connect, _connect_options, outputs="CSV, PNG",
            quick=_TINY),
    Command("transfer", "D2D prompt transfer (SPoT): steps to a target accuracy from a neighbour's prompt vs "
            "random/vocabulary init, vs D2D SNR and quantiser bits", _transfer, outputs="CSV, PNG", quick=_TINY,
            parallel_note="Each stage (neighbour prompts, source choice, fine-tuning runs) runs on workers"),
    Command("emulator", "FoMo emulator (offsite-tuning): download size vs plug-in accuracy for layer drop, "
            "vocabulary pruning, int8, low rank, with/without distillation", _emulator, _emulator_options,
            outputs="CSV, PNG", quick=_TINY, parallel_note="The training runs go to workers, all points of one "
            "seed to one worker (it distils that seed's emulators once); the distillation grid and the "
            "emulators' sizes and step times run here, one at a time"),
    Command("scale", "federated DEFT at scale: time per round and peak RSS against the number of devices at fixed "
            "participation; padded float32 vs ragged float16 activations", _scale, _scale_options,
            outputs="CSV, PNG", quick="a small grid on 1,024 texts", parallel=False),
    Command("parallel", "speed-up of a study and a design sweep on N Ray workers against the serial run, and "
            "whether the rows are identical", _speedup, _speedup_options, outputs="CSV", quick=_TINY,
            parallel=False),
]
for _command in BUILTIN:
    register_command(_command, replace=True)


def build_parser():
    """The `deft6g` parser: one subcommand per registered Command (the built-in ones, then those of
    `register_study` and of installed packages' entry points)."""
    load_entry_points()
    parser = argparse.ArgumentParser(prog="deft6g", description="DEFT studies and benchmarks over simulated 6G links")
    parser.add_argument("--version", action="version", version=f"deft6g {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        _add_command(sub, command)
    return parser


def quiet_stack():
    """Import TensorFlow, Sionna and transformers' TF classes and start TensorFlow's runtime with the
    process's stderr (fd 2) sent to /dev/null: their C++ code prints CUDA, oneDNN and absl notices before
    any log level applies. Python warnings raised later still show."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import deft6g  # noqa: F401  (the TensorFlow environment first)
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import sionna.phy  # noqa: F401
        import tensorflow as tf
        import transformers  # noqa: F401
        from transformers import TFBertModel  # noqa: F401
        tf.config.list_physical_devices()
        tf.constant(0.0) + 1.0
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def main(argv=None):
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


if __name__ == "__main__":
    sys.exit(main())
