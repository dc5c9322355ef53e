"""The library's `deft6g` subcommands: a table of Commands (`BUILTIN`), registered on import, each run by the one
handler `_runs`; the command line itself (`main`, `build_parser`) is the engine's (`deft6g.experiment.command_line`).

A handler imports its study when it runs, so `deft6g --help` and argument errors answer at once, without
loading TensorFlow."""

import sys
from importlib import import_module

from deft6g.deprecation import module_aliases
from deft6g.experiment import ConfigError
from deft6g.experiment.command_line import add_log_dir, build_parser, main  # noqa: F401 (the `deft6g` entry point)
from deft6g.experiment.protocol import COMMANDS, Command, parallel_options, print_summary, register_command

__getattr__ = module_aliases(__name__, {"quiet_stack": "deft6g.environment.quiet_stack"})   # moved before 0.1.0


def _runs(module, run):
    """The handler of a study module: `module.run(args.out, quick=..., the options the command has: seed, config,
    log_dir, workers, and the parallel ones)`, then what the run wrote printed (`print_summary`: summary.txt and
    its time). A ConfigError (raised before the output folder is touched) is printed naming the command: exit
    status 2."""
    def handler(args):
        mod = import_module(f"{__package__}.{module}")
        options = {name: getattr(args, name) for name in ("seed", "config", "log_dir", "workers")
                   if hasattr(args, name)}
        if COMMANDS[args.command].parallel:
            options |= parallel_options(args)
        try:
            getattr(mod, run)(args.out, quick=args.quick, **options)
        except ConfigError as err:
            print(f"deft6g {args.command}: configuration error: {err}", file=sys.stderr)
            return 2
        print_summary(args.out)
    return handler


_TINY = "a random small model and a tiny grid for smoke tests"


def _study_options(parser):
    parser.add_argument("--config", default=None, help="TOML file overriding the embedded default configuration")
    add_log_dir(parser, "the numeric columns of rounds.csv and the cumulative uplink uses", "points finished in "
                 "an earlier run write nothing, a point re-run after an interruption replaces its events; no "
                 "result changes")


def _config_option(parser, example):
    parser.add_argument("--config", default=None, help="TOML file of top-level keys overriding the default "
                        f"configuration (e.g. {example})")


def _connect_options(parser):
    _config_option(parser, "configs/connect_paper.toml: both training views on the full grid")


def _emulator_options(parser):
    _config_option(parser, "configs/emulator_paper.toml: 10 seeds")
    add_log_dir(parser, "training loss, training examples, devices heard of each federated training run",
                 "points finished in an earlier run write nothing, a point re-run after an interruption replaces "
                 "its events; no result changes")


def _scale_options(parser):
    add_log_dir(parser, "training loss, seconds per round, training examples, devices heard", "written after each "
                 "round's timing; a re-run replaces each run's events")


def _speedup_options(parser):
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="Ray workers (>= 2; default 2)")


# The library's own subcommands, in `deft6g --help` order; studies registered later (register_study, or the
# entry-point group deft6g.studies) follow them.
BUILTIN = [
    Command("study", "the main job: federated DEFT accuracy vs SNR (ideal, AirComp, digital)",
            _runs("study", "run_study"), _study_options, outputs="CSV, JSON, PNG", quick="a small run for smoke tests"),
    Command("finetune", "PEFT methods on Rotten Tomatoes (accuracy, speed, memory); block allocator vs uniform "
            "ranks", _runs("peft_methods", "run_finetune"), quick="a random small model for smoke tests", seed=True,
            parallel_note="Only the budget sweep (accuracy per allocation) runs on workers; the methods table "
            "measures samples/s, so its methods always run one at a time, each in a fresh subprocess of its own "
            "(for its own peak memory)"),
    Command("ensemble", "on-the-fly prompt ensembles on a stream (DEFT technique 4): ensemble vs single prompts, "
            "pool size, batched inference speed", _runs("ensemble", "run_ensemble"),
            quick="a random small model for smoke tests", parallel_note="The streams and joint references run on "
            "workers; the inference-speed table is timed, so it always runs here, after them"),
    Command("link", "AirComp vs digital link-level benchmark (MSE vs SNR, speed ratio)", _runs("link", "run_link"),
            outputs="CSV, JSON, PNG", seed=True),
    Command("design", "AirComp beamforming / power control: gap to the SDR bound, speed-up",
            _runs("beamforming", "run_design"), seed=True),
    Command("connect", "AirComp neural connections: multi-view split model trained through the channel vs naive, "
            "ideal, single view, digital; task-oriented design", _runs("connect", "run_connect"), _connect_options,
            outputs="CSV, PNG", quick=_TINY),
    Command("transfer", "D2D prompt transfer (SPoT): steps to a target accuracy from a neighbour's prompt vs "
            "random/vocabulary init, vs D2D SNR and quantiser bits", _runs("transfer", "run_transfer"),
            outputs="CSV, PNG", quick=_TINY,
            parallel_note="Each stage (neighbour prompts, source choice, fine-tuning runs) runs on workers"),
    Command("emulator", "FoMo emulator (offsite-tuning): download size vs plug-in accuracy for layer drop, "
            "vocabulary pruning, int8, low rank, with/without distillation", _runs("emulator_study",
            "run_emulator_study"), _emulator_options, outputs="CSV, PNG", quick=_TINY, parallel_note="The training "
            "runs go to workers, all points of one seed to one worker (it distils that seed's emulators once); the "
            "distillation grid and the emulators' sizes and step times run here, one at a time"),
    Command("scale", "federated DEFT at scale: time per round and peak RSS against the number of devices at fixed "
            "participation; padded float32 vs ragged float16 activations", _runs("scale", "run_scale"),
            _scale_options, outputs="CSV, PNG", quick="a small grid on 1,024 texts", parallel=False),
    Command("parallel", "speed-up of a study and a design sweep on N Ray workers against the serial run, and "
            "whether the rows are identical", _runs("ray_speedup", "run_speedup"), _speedup_options, outputs="CSV",
            quick=_TINY, parallel=False),
]
for _command in BUILTIN:
    register_command(_command, replace=True)


if __name__ == "__main__":
    sys.exit(main())
