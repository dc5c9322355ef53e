"""The app through Flower's Python simulation API (no SuperLink, a run config passed as a dict), and the paired
comparison with `deft6g study` at one point over seeds:

    python -m flower_minilm.simulate --scheme aircomp --snr-db 0 --seeds 0 1 2 3 4 --out DIR

runs the study (its --quick settings, `--rounds` rounds, the configured learning rate: no tuning stage) and the
app per seed, prints both sides' test accuracy per seed, the TOST of their paired difference at +-1 point
(`deft6g.experiment.tost`) and each side's wall time, and writes DIR/compare.json."""

import argparse
import json
import os
import time
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

HERE = Path(__file__).resolve().parents[1]          # the app's folder (workers import flower_minilm from it)
DEFAULTS = {"study-config": "", "quick": True, "scheme": "aircomp", "snr-db": 0.0, "num-rx-ant": 2,
            "link": "counted", "num-bits": 8, "lora-aggregation": "", "seed": 0, "lr": 0.0, "log-dir": "",
            "out-file": ""}                           # pyproject.toml's [tool.flwr.app.config]


def apps(run_config):
    """(ServerApp, ClientApp) of this app with `run_config` (`flwr run` reads it from pyproject.toml; the
    Python API passes none): closures, pickled by value into Flower's Ray workers."""
    server, client = ServerApp(), ClientApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        from flower_minilm.server_app import serve
        serve(grid, run_config)

    @client.train()
    def _train(msg: Message, context: Context):
        from flower_minilm.client_app import train_device
        return train_device(msg, context, run_config)

    return server, client


def simulate(run_config, num_supernodes, num_cpus=2):
    """Run the app once (`run_config`: DEFAULTS updated, "out-file" required) on Flower's Ray simulation engine,
    one client process of `num_cpus` cores; -> the server's JSON (per-round log, test accuracy)."""
    rc = {**DEFAULTS, **run_config}
    if not rc["out-file"]:
        raise ValueError("`out-file` must name the JSON file the ServerApp writes")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    run_simulation(*apps(rc), num_supernodes=num_supernodes,
                   backend_config={"client_resources": {"num_cpus": num_cpus}, "init_args": {"num_cpus": num_cpus}})
    return json.loads(Path(rc["out-file"]).read_text())


def compare(out, scheme, snr_db, num_rx_ant, seeds, rounds, link="counted"):
    """The study and the app at one point over `seeds` (module docstring) -> the dict written to out/compare.json."""
    import csv

    from deft6g.benchmarks.study import run_study
    from deft6g.experiment import tost
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = out / "study.toml"
    config.write_text(f'schemes = ["{scheme}"]\nseeds = {list(seeds)}\n[federated]\nrounds = {rounds}\n'
                      f'[channel]\nsnr_db = [{float(snr_db)}]\nnum_rx_ant = [{num_rx_ant}]\nlinks = ["{link}"]\n'
                      f'[digital]\nsnr_db = [{float(snr_db)}]\n[tuning]\nlr = []\ncentralised_lr = []\n')
    t0 = time.time()
    run_study(out / "study", str(config), quick=True, log=print)
    study_s = time.time() - t0
    with open(out / "study" / "results.csv") as f:
        study = {int(r["seed"]): r for r in csv.DictReader(f)}
    app, app_s = {}, {}
    for seed in seeds:
        t0 = time.time()
        app[seed] = simulate({"study-config": str(config), "scheme": scheme, "snr-db": float(snr_db),
                              "num-rx-ant": num_rx_ant, "link": link, "seed": seed,
                              "out-file": str(out / f"app-{seed}.json")}, num_supernodes=4)
        app_s[seed] = time.time() - t0
    ours, theirs = [app[s]["accuracy"] for s in seeds], [float(study[s]["accuracy"]) for s in seeds]
    test = tost(ours, theirs, margin=0.01)
    result = {"scheme": scheme, "snr_db": snr_db, "num_rx_ant": num_rx_ant, "link": link, "rounds": rounds,
              "seeds": list(seeds), "app_accuracy": ours, "study_accuracy": theirs,
              "app_uses": [app[s]["channel_uses"] for s in seeds],
              "study_uses": [int(study[s]["channel_uses"]) for s in seeds], "tost": test,
              "app_wall_s": [round(app_s[s], 1) for s in seeds], "study_wall_s": round(study_s, 1),
              "study_point_wall_s": [float(study[s]["wall_s"]) for s in seeds]}
    (out / "compare.json").write_text(json.dumps(result, indent=1, default=float))
    for s, a, b in zip(seeds, ours, theirs):
        print(f"seed {s}: app {a:.4f}, study {b:.4f}, app {app_s[s]:.1f} s")
    print(f"TOST +-1 point: {test['verdict']} (90% interval [{test['low']:+.4f}, {test['high']:+.4f}]); study "
          f"{study_s:.1f} s for {len(seeds)} seeds")
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scheme", default="aircomp")
    p.add_argument("--snr-db", type=float, default=0.0)
    p.add_argument("--num-rx-ant", type=int, default=2)
    p.add_argument("--link", default="counted")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    compare(a.out, a.scheme, a.snr_db, a.num_rx_ant, a.seeds, a.rounds, a.link)
