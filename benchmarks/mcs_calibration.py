"""Calibrate MCS entries bit-true over AWGN (`calibrate_mcs`) and write their 10 %-BLER thresholds and slopes.

`python -m deft6g.benchmarks.mcs_calibration` measures NR MCS 2 (QPSK, R = 308/1024) without repetition and
repeated 2, 4, 8 and 16 times (the low-SNR rows of `MCS_TABLE`) with the table's settings: 300 blocks per
SNR point, a 0.25 dB grid, seed 0. It prints one line per entry and writes the rows, the settings and the
wall time as JSON (`--out`).
"""

import argparse
import json
import platform
import time

import deft6g.phy  # noqa: F401  (sets the TensorFlow environment before TensorFlow is imported)
from deft6g.phy.mcs import NR_MCS_TABLE_INDEX, Mcs, calibrate_mcs
from sionna.phy.nr.utils import decode_mcs_index


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deft6g.benchmarks.mcs_calibration", description=__doc__)
    parser.add_argument("--index", type=int, default=2, help="row of NR MCS table 2 (default 2: QPSK 308/1024)")
    parser.add_argument("--repetitions", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--num-blocks", type=int, default=300)
    parser.add_argument("--step-db", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="mcs_calibration.json")
    args = parser.parse_args(argv)
    m, rate = decode_mcs_index(args.index, NR_MCS_TABLE_INDEX, is_pusch=True)
    entries = [Mcs(args.index, int(m), round(float(rate) * 1024, 1), 0.0, 0.0, r) for r in args.repetitions]
    start = time.perf_counter()
    rows = calibrate_mcs(entries, num_blocks=args.num_blocks, step_db=args.step_db, seed=args.seed,
                         log=lambda row: print(f"MCS {row['index']} x{row['repetition']}: threshold "
                                               f"{row['threshold_db']} dB, slope {row['slope_db']} dB "
                                               f"({len(row['snr_db'])} points, {time.perf_counter() - start:.0f} s)",
                                               flush=True))
    wall = time.perf_counter() - start
    with open(args.out, "w") as f:
        json.dump(dict(rows=rows, num_blocks=args.num_blocks, step_db=args.step_db, seed=args.seed,
                       wall_s=wall, machine=f"{platform.machine()}, {platform.processor() or 'cpu'}"), f, indent=1)
    print(f"{len(rows)} entries in {wall:.0f} s; rows in {args.out}")


if __name__ == "__main__":
    main()
