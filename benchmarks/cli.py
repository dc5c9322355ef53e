"""The `deft6g` command line: one subcommand per study or benchmark."""

import argparse
import sys


def _link(args):
    from .link import run_link, summary
    cfg, air, dig, speed = run_link(args.out, quick=args.quick, seed=args.seed)
    print(summary(cfg, air, dig, speed))
    print(f"results in {args.out}")


def _design(args):
    from .design import run_design, summary
    print(summary(run_design(args.out, quick=args.quick, seed=args.seed)))
    print(f"results in {args.out}")


def build_parser():
    parser = argparse.ArgumentParser(prog="deft6g", description="DEFT studies and benchmarks over simulated 6G links")
    sub = parser.add_subparsers(dest="command", required=True)
    link = sub.add_parser("link", help="AirComp vs digital link-level benchmark (MSE vs SNR, speed ratio)")
    link.add_argument("--out", default="results/link", help="output folder (CSV, JSON, PNG); re-runs resume")
    link.add_argument("--quick", action="store_true", help="a small grid for smoke tests")
    link.add_argument("--seed", type=int, default=0)
    link.set_defaults(func=_link)
    design = sub.add_parser("design", help="AirComp beamforming / power control: gap to the SDR bound, speed-up")
    design.add_argument("--out", default="results/design", help="output folder; re-runs resume")
    design.add_argument("--quick", action="store_true", help="a small grid for smoke tests")
    design.add_argument("--seed", type=int, default=0)
    design.set_defaults(func=_design)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
