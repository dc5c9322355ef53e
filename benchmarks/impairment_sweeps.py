"""Physics sweeps of `deft6g link` and `deft6g design`: truncated inversion, transmit misalignment (amplitude
error, phase error, phase drift from a residual CFO/timing offset), pilot CSI, subcarrier power.

Every point is run for `num_seeds` seeds (a seed draws its own channels, pilots and errors) and plotted as the
mean over seeds with a 95% Student-t interval. SNR = P / sigma^2 per device (P = 1); for OFDM, P per
subcarrier on average (total budget F P per device). References: Zhu, Xu, Huang, "Broadband analog
aggregation for low-latency federated edge learning", IEEE TWC 2020 (truncated inversion, per-subcarrier
power); Cao, Zhu, Xu, Huang, IEEE TWC 2020 (the exact N = 1 optimum used as the strongest baseline).
"""

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from deft6g.deprecation import warn_renamed
from deft6g.experiment import Stage, line_plot, run_stages, summarise, to_db
from deft6g.optim import (allocate_subcarrier_power, best_truncation_threshold, closed_form_design,
                          design_aircomp, power_control, truncated_inversion, truncation_mse,
                          uniform_subcarrier_power)
from deft6g.phy import AirCompUplink, FadingChannel, PilotCsi, TransmitMisalignment, aircomp_mse, db_to_linear, \
    noise_var
from deft6g.rng import derive_seed

TRUNC_FIELDS = ["snr_db", "threshold", "seed", "peak_db", "peak_theory_db", "peak_median_db", "average_db",
                "average_theory_db", "participation", "optimal_db", "optimal_median_db", "full_median_db"]
# Transmit misalignment (phy/impairments.py), one sweep per error: {kind: (parameter of TransmitMisalignment,
# axis label, log x axis, file name part)}. Each sweep varies one error with the others at 0.
MISALIGN_KINDS = {
    "amplitude": ("amplitude_std", "amplitude-error std sigma_a (relative gain error 1 + eps)", False, "amplitude_error"),
    "phase": ("phase_std", "phase-error std sigma_phi [rad]", False, "phase_error"),
    "drift": ("drift_std", "phase-drift std sigma_delta [rad/symbol] (residual CFO or timing offset)", True,
              "phase_drift"),
}
MISALIGN_FIELDS = {kind: ["num_rx_ant", "num_devices", v[0], "seed", "mc_db", "theory_db"]
                   for kind, v in MISALIGN_KINDS.items()}
PILOT_FIELDS = ["pilot_snr_db", "seed", "zf_db", "mrc_db", "zf_perfect_db", "mrc_perfect_db", "error_var"]
DESIGN_PILOT_FIELDS = ["pilot_snr_db", "seed", "sdr_db", "mmse_db", "zf_db", "mrc_db", "mmse_perfect_db"]
DESIGN_MISALIGN_FIELDS = {kind: [v[0], "seed", "sdr_db", "mmse_db", "zf_db", "mrc_db"]
                          for kind, v in MISALIGN_KINDS.items()}
SUBCARRIER_FIELDS = ["num_rx_ant", "delay_spread_ns", "seed", "optimal_db", "uniform_db", "gain_db"]
DESIGN_METHODS = ("sdr", "mmse", "zf", "mrc")
# Sub-streams of a point's seed (`derive_seed(seed, sweep, draw)`), one per sweep, and within a sweep one per draw:
# 0 the channels, 1 the payload or the pilots' noise, 2 the uplink's noise and errors. The root seed itself only
# seeds the designs' randomisation, so no draw shares its random numbers with another.
TRUNCATION, MISALIGNMENT, PILOTS, DESIGN_CHANNELS, DESIGN_PILOTS, SUBCARRIERS = range(1, 7)
CHANNELS, PAYLOAD, NOISE = range(3)


def rayleigh_channels(n, k, count, seed):
    """[count, n, k] complex128 NumPy: `count` Rayleigh draws of n receive antennas and k devices, seeded."""
    return FadingChannel("rayleigh", n, k, precision="double")(count, seed=seed).numpy()


def _stage(file, fields, key_columns, points, run_point, group=None):
    """One sweep's stage (`deft6g.experiment.Stage`): the table `file`, keyed by its first `key_columns` columns
    (the point); seed, num_rx_ant and num_devices are ints, every other column a float. points(cfg) -> its points
    (none when cfg.impairments is None); run_point(sweep_points, point) -> its row, with setup["impairments"] as
    `sweep_points`; group: key columns whose points share a worker (and its caches)."""
    types = {f: int if f in ("seed", "num_rx_ant", "num_devices") else float for f in fields}
    return Stage(file, fields[:key_columns], types, lambda cfg, done: [] if cfg.impairments is None else points(cfg),
                 lambda setup, point: run_point(setup["impairments"], point), group=group)


def _seeds(cfg):
    """The sweeps' seeds: `num_seeds` from the study's seed on."""
    return [cfg.seed + i for i in range(cfg.impairments.num_seeds)]


class _Figures:
    """Plots described now and drawn later (`draw(out)`), so a study's summary and its plots come from one pass."""

    def __init__(self):
        self.specs = []

    def __call__(self, name, *args, **kwargs):
        self.specs.append((name, args, kwargs))

    def draw(self, out):
        for name, args, kwargs in self.specs:
            line_plot(out / name, *args, **kwargs)


def check_grids(cfg):
    """Refuse sweep grids that would run nothing (ValueError naming the `impairments` key): an empty list, or
    fewer than one seed or realisation."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, list) and not value:
            raise ValueError(f"`impairments.{f.name}` must not be empty (impairments = None leaves the sweeps out)")
        if f.type in (int, "int") and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"`impairments.{f.name}` must be an int >= 1, got {value!r}")


@dataclass
class LinkSweeps:
    """Grids of the link-level sweeps (truncation at N = 1; misalignment and pilot CSI with aligned designs)."""
    num_seeds: int = 3
    trunc_devices: int = 20
    trunc_snr_db: list = field(default_factory=lambda: [0.0, 10.0, 20.0])
    thresholds: list = field(default_factory=lambda: [1e-4, 3e-4, 0.001, 0.003, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
                                                      1.0, 2.0])
    trunc_realisations: int = 20000
    misalign_settings: list = field(default_factory=lambda: [[8, 4], [16, 8]])
    amplitude_std: list = field(default_factory=lambda: [0.0, 0.03, 0.1, 0.2, 0.3, 0.5])
    phase_std: list = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0])
    drift_std: list = field(default_factory=lambda: [0.0, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03])    # L = 500 symbols
    misalign_realisations: int = 400
    payload_reals: int = 1000
    pilot_setting: list = field(default_factory=lambda: [8, 4])
    pilot_snr_db: list = field(default_factory=lambda: [-10.0, -5.0, 0.0, 5.0, 10.0, 20.0, 30.0])
    pilot_realisations: int = 2000
    snr_db: float = 10.0

    def __post_init__(self):
        check_grids(self)

    @classmethod
    def quick(cls):
        return cls(trunc_snr_db=[10.0], thresholds=[0.003, 0.03, 0.3, 1.0], trunc_realisations=2000,
                   misalign_settings=[[8, 4]], amplitude_std=[0.0, 0.2, 0.5], phase_std=[0.0, 0.3, 0.7],
                   drift_std=[0.0, 3e-3, 0.03], misalign_realisations=50, payload_reals=200,
                   pilot_snr_db=[-10.0, 10.0, 30.0], pilot_realisations=200)


def truncation_point(cfg, p, references):
    """One (SNR, threshold, seed); `references` caches the threshold-free baselines per (SNR, seed)."""
    K, snr = cfg.trunc_devices, db_to_linear(p["snr_db"])
    h = rayleigh_channels(1, K, cfg.trunc_realisations, derive_seed(p["seed"], TRUNCATION, CHANNELS))
    peak = truncated_inversion(h, 1.0, 1 / snr, p["threshold"], "peak")
    avg = truncated_inversion(h, 1.0, 1 / snr, p["threshold"], "average")
    key = (p["snr_db"], p["seed"])
    if key not in references:
        optimal = power_control(h[:, 0, :], 1.0, 1 / snr).mse
        references[key] = dict(optimal_db=to_db(np.mean(optimal)), optimal_median_db=to_db(np.median(optimal)),
                               full_median_db=to_db(np.median(truncated_inversion(h, 1.0, 1 / snr, 0.0).mse)))
    return p | references[key] | dict(
        peak_db=to_db(np.mean(peak.mse)), peak_theory_db=to_db(truncation_mse(K, snr, p["threshold"])),
        peak_median_db=to_db(np.median(peak.mse)),
        average_db=to_db(np.mean(avg.mse)), average_theory_db=to_db(truncation_mse(K, snr, p["threshold"], "average")),
        participation=float(np.mean(peak.b != 0)))


def misalign_point(cfg, p):
    """One (N, K, error std, seed) of the misalignment sweep whose parameter (amplitude_std, phase_std or
    drift_std) `p` names: ZF design, `misalign_realisations` channels x `payload_reals` reals through the uplink
    (Monte Carlo) and the closed form `expected_mse`. Channels, payload and noise depend on the seed only, so
    the points of one seed are paired across error values and kinds."""
    param = next(v[0] for v in MISALIGN_KINDS.values() if v[0] in p)
    n, k, seed = p["num_rx_ant"], p["num_devices"], p["seed"]
    H = rayleigh_channels(n, k, cfg.misalign_realisations, derive_seed(seed, MISALIGNMENT, CHANNELS))
    a, b = closed_form_design(H, 1.0, "zf")
    nv = noise_var(cfg.snr_db)
    x = np.random.default_rng(derive_seed(seed, MISALIGNMENT, PAYLOAD)).normal(size=(len(H), k, cfg.payload_reals))
    x = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)             # unit std: error = MSE per real
    mis = TransmitMisalignment(**{param: p[param]}, precision="double")
    f_hat = AirCompUplink(precision="double")(x, H, a, b, nv, seed=derive_seed(seed, MISALIGNMENT, NOISE),
                                              misalignment=mis).numpy()
    theory = mis.expected_mse(H, a, b, nv, num_symbols=(cfg.payload_reals + 1) // 2)
    return p | dict(mc_db=to_db(np.mean((f_hat - x.sum(1)) ** 2)), theory_db=to_db(np.mean(theory)))


def _pilot_point(cfg, p):
    n, k = cfg.pilot_setting
    seed, nv = p["seed"], noise_var(cfg.snr_db)
    H = rayleigh_channels(n, k, cfg.pilot_realisations, derive_seed(seed, PILOTS, CHANNELS))
    H_hat, ev = PilotCsi(num_pilots=k, precision="double")(H, p["pilot_snr_db"],
                                                           seed=derive_seed(seed, PILOTS, PAYLOAD))
    row = dict(p, error_var=float(ev))
    for method in ("zf", "mrc"):
        a, b = closed_form_design(H_hat, 1.0, method)
        row[f"{method}_db"] = to_db(np.median(aircomp_mse(H, a, b, nv)))
        a, b = closed_form_design(H, 1.0, method)
        row[f"{method}_perfect_db"] = to_db(np.median(aircomp_mse(H, a, b, nv)))
    return row


def _curve(rows, by, x, col):
    """Mean and 95% CI over seeds of column `col`, grouped by `by` + [x]: a list of (x, mean, ci) in increasing x
    (whatever order the rows finished in, e.g. on workers)."""
    out = summarise(rows, by + [x], [col])
    return sorted(((s[x], s[f"{col}_mean"], s[f"{col}_ci"]) for s in out), key=lambda pt: pt[0])


class LinkSweepPoints:
    """A process's point functions of the link sweeps (`cfg`: LinkSweeps); the truncation sweep's
    threshold-free baselines are computed once per (SNR, seed)."""

    def __init__(self, cfg):
        self.cfg, self.references = cfg, {}

    def truncation(self, p):
        return truncation_point(self.cfg, p, self.references)

    def misalignment(self, p):
        return misalign_point(self.cfg, p)

    def pilots(self, p):
        return _pilot_point(self.cfg, p)


def link_sweep_stages():
    """The link sweeps as stages of `deft6g link` (its cfg.impairments: LinkSweeps, cfg.seed; its setup's
    "impairments": a LinkSweepPoints): truncation.csv, misalignment_<kind>.csv, pilot_csi.csv."""
    def misalignment(param):
        return lambda cfg: [{"num_rx_ant": n, "num_devices": k, param: s, "seed": r}
                            for n, k in cfg.impairments.misalign_settings
                            for s in getattr(cfg.impairments, param) for r in _seeds(cfg)]

    return [_stage("truncation.csv", TRUNC_FIELDS, 3, lambda cfg: [
                dict(snr_db=s, threshold=g, seed=r) for s in cfg.impairments.trunc_snr_db
                for g in cfg.impairments.thresholds for r in _seeds(cfg)], LinkSweepPoints.truncation,
                group=["snr_db", "seed"]),                                 # the threshold-free baselines, once
            *(_stage(f"misalignment_{kind}.csv", MISALIGN_FIELDS[kind], 4, misalignment(param),
                     LinkSweepPoints.misalignment) for kind, (param, *_) in MISALIGN_KINDS.items()),
            _stage("pilot_csi.csv", PILOT_FIELDS, 2, lambda cfg: [
                dict(pilot_snr_db=s, seed=r) for s in cfg.impairments.pilot_snr_db for r in _seeds(cfg)],
                LinkSweepPoints.pilots)]


def link_sweep_report(cfg, rows):
    """(summary text, _Figures) of the link sweeps, from `rows` {file: rows} (cfg: LinkSweeps)."""
    return _link_plots(cfg, rows["truncation.csv"], {kind: rows[f"misalignment_{kind}.csv"] for kind in MISALIGN_KINDS},
                       rows["pilot_csi.csv"])


def _link_plots(cfg, trunc, mis, pilot):
    plot = _Figures()
    note = f"mean over {cfg.num_seeds} seeds, 95% CI; SNR = P / sigma^2 per device"
    lines = ["Truncated channel inversion, N = 1, K = %d Rayleigh (mean MSE of the sum [dB]):" % cfg.trunc_devices]
    for snr in cfg.trunc_snr_db:
        rows = [r for r in trunc if r["snr_db"] == snr]
        share = {s["threshold"]: s["participation_mean"] for s in summarise(rows, ["threshold"], ["participation"])}
        dense = np.logspace(np.log10(min(cfg.thresholds)), np.log10(max(cfg.thresholds)), 40)
        curves = {}
        for b in ("peak", "average"):
            curves[f"{b} budget, Monte Carlo"] = [pt + ((f"{share[pt[0]]:.0%} send",) if b == "peak" else ())
                                                  for pt in _curve(rows, [], "threshold", f"{b}_db")]
            curves[f"{b} budget, closed form"] = [(g, to_db(truncation_mse(cfg.trunc_devices, db_to_linear(snr), g, b)))
                                                  for g in dense]
        medians = _curve(rows, [], "threshold", "peak_median_db")
        curves["peak budget, Monte Carlo median"] = medians
        best_g, best = best_truncation_threshold(cfg.trunc_devices, db_to_linear(snr))
        opt = summarise(rows, [], ["optimal_db", "optimal_median_db", "full_median_db"])[0]
        plot(f"truncation_mse_vs_threshold_{snr:g}db.png", curves, "truncation threshold g_th on |h|^2",
             "MSE of the sum [dB] (mean unless named)",
             f"Truncated inversion, N=1, K={cfg.trunc_devices}, SNR {snr:g} dB",
             logx=True, note=note + "; peak: |b|^2 <= P per realisation, average: E|b|^2 <= P",
             hlines={"optimal power control, peak budget (Cao et al.), mean": (opt["optimal_db_mean"], opt["optimal_db_ci"]),
                     "full inversion, median (its mean is infinite)": (opt["full_median_db_mean"],
                                                                       opt["full_median_db_ci"])})
        g_med, m_med, _ = min(medians, key=lambda c: c[1])
        lines.append(f"  {snr:g} dB: best peak threshold {best_g:.3f} (participation {np.exp(-best_g):.2f}) -> mean "
                     f"{to_db(best):.2f} dB; best median {m_med:.2f} dB (g = {g_med:g}); full inversion median "
                     f"{opt['full_median_db_mean']:.2f} dB; optimal power control mean {opt['optimal_db_mean']:.2f} dB, "
                     f"median {opt['optimal_median_db_mean']:.2f} dB")
    num_symbols = (cfg.payload_reals + 1) // 2
    theory = {"amplitude": "closed form: E|1 + eps|^2 = 1 + sigma_a^2",
              "phase": "closed form uses E[exp(j phi)] = exp(-sigma^2/2)",
              "drift": f"closed form: mean over l < L = {num_symbols} symbols of exp(-l^2 sigma_delta^2 / 2)"}
    for kind, (param, label, logx, name) in MISALIGN_KINDS.items():
        curves, hlines = {}, {}
        for n, k in cfg.misalign_settings:
            rows = [r for r in mis[kind] if r["num_rx_ant"] == n and r["num_devices"] == k]
            mc = curves[f"ZF N={n} K={k}, uplink Monte Carlo"] = _curve(rows, [], param, "mc_db")
            curves[f"ZF N={n} K={k}, closed form"] = _curve(rows, [], param, "theory_db")
            lines.append(f"Misalignment, ZF N={n} K={k}, {cfg.snr_db:g} dB: mean MSE [dB] vs {name.replace('_', ' ')} "
                         f"std: " + ", ".join(f"{x:g}: {m:.2f}" for x, m, _ in mc))
            if logx:                  # error-free points (x = 0) as reference lines; the axis starts above 0
                zero = [pt for pt in mc if pt[0] == 0]
                for key in (f"ZF N={n} K={k}, uplink Monte Carlo", f"ZF N={n} K={k}, closed form"):
                    curves[key] = [pt for pt in curves[key] if pt[0] > 0]
                if zero:
                    hlines[f"ZF N={n} K={k}, no misalignment"] = (*zero[0][1:3], f"ZF N={n} K={k}, uplink Monte Carlo")
        plot(f"mse_vs_{name}.png", curves, label, "mean MSE of the sum [dB]",
             f"Transmit {name.replace('_', ' ')}, aligned ZF design, SNR {cfg.snr_db:g} dB", logx=logx,
             hlines=hlines or None, note=note + "; " + theory[kind])
    n, k = cfg.pilot_setting
    curves = {f"{m.upper()} designed on pilot estimate": _curve(pilot, [], "pilot_snr_db", f"{m}_db")
              for m in ("zf", "mrc")}
    ref = summarise(pilot, [], ["zf_perfect_db", "mrc_perfect_db"])[0]
    plot("mse_vs_pilot_snr.png", curves, f"pilot SNR [dB] (tau = {k} pilots per device, LMMSE)",
         "median MSE of the sum [dB]", f"CSI from pilots, N={n} K={k}, data SNR {cfg.snr_db:g} dB",
         note=f"median over channels, mean over {cfg.num_seeds} seeds, 95% CI; error variance 1/(1 + tau rho)",
         hlines={"ZF, perfect CSI": (ref["zf_perfect_db_mean"], ref["zf_perfect_db_ci"]),
                 "MRC, perfect CSI": (ref["mrc_perfect_db_mean"], ref["mrc_perfect_db_ci"])})
    zf = {x: m for x, m, _ in curves["ZF designed on pilot estimate"]}
    lines.append(f"Pilot CSI, ZF N={n} K={k}: median MSE [dB] vs pilot SNR " +
                 ", ".join(f"{x:g} dB: {m:.2f}" for x, m in sorted(zf.items()))
                 + f"; perfect CSI {ref['zf_perfect_db_mean']:.2f}")
    return "\n".join(lines), plot


@dataclass
class DesignSweeps:
    """Grids of the design sweeps; N, K and the SNR come from `deft6g design`'s configuration."""
    num_seeds: int = 3
    realisations: int = 20
    pilot_snr_db: list = field(default_factory=lambda: [-10.0, 0.0, 10.0, 20.0, 30.0])
    amplitude_std: list = field(default_factory=lambda: [0.0, 0.03, 0.1, 0.2, 0.3, 0.5])
    phase_std: list = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0])
    drift_std: list = field(default_factory=lambda: [0.0, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03])
    misalign_symbols: int = 500       # L, symbols per round over which the drift grows (1000 reals per device)
    subcarrier_model: str = "tdl-c"
    subcarrier_rx_ant: list = field(default_factory=lambda: [1, 4])
    subcarrier_devices: int = 8
    num_subcarriers: int = 16
    subcarrier_spacing: float = 120e3
    delay_spread_ns: list = field(default_factory=lambda: [10.0, 30.0, 100.0, 300.0, 1000.0])
    subcarrier_draws: int = 100

    def __post_init__(self):
        check_grids(self)

    @classmethod
    def quick(cls):
        return cls(realisations=4, pilot_snr_db=[-10.0, 10.0, 30.0], amplitude_std=[0.0, 0.2, 0.5],
                   phase_std=[0.0, 0.5, 1.0], drift_std=[0.0, 3e-3, 0.03],
                   subcarrier_rx_ant=[4], delay_spread_ns=[10.0, 300.0], subcarrier_draws=10)


def _designs(H_design, nv, seed):
    """The design methods of `DESIGN_METHODS` on the channels the designer knows: {method: AirCompDesign}."""
    sdr = design_aircomp(H_design, 1.0, nv, "sdr", seed=seed, progress=False)
    out = dict(sdr=sdr, mmse=design_aircomp(H_design, 1.0, nv, "mmse", seed=seed, progress=False, init=sdr))
    return out | {m: design_aircomp(H_design, 1.0, nv, m, progress=False) for m in ("zf", "mrc")}


def design_misalign_point(designs, H, nv, p, num_symbols):
    """Median over the channels H of the closed-form MSE (`TransmitMisalignment.expected_mse`, averaged over
    the errors and `num_symbols` symbols) of each design {method: AirCompDesign} under the one error std that
    `p` names (amplitude_std, phase_std or drift_std): `p` plus {method}_db."""
    param = next(v[0] for v in MISALIGN_KINDS.values() if v[0] in p)
    mis = TransmitMisalignment(**{param: p[param]}, precision="double")
    return p | {f"{m}_db": to_db(np.median(mis.expected_mse(H, d.a, d.b, nv, num_symbols=num_symbols)))
                for m, d in designs.items()}


class DesignSweepPoints:
    """A process's point functions of the design sweeps (`cfg`: DesignSweeps; N = n, K = k, SNR `snr_db`); the
    true channels of a seed and the designs on them are computed once per seed."""

    def __init__(self, cfg, n, k, snr_db):
        self.cfg, self.n, self.k, self.nv = cfg, n, k, noise_var(snr_db)
        self.channels, self.perfect = {}, {}

    def true_channels(self, r):
        if r not in self.channels:
            self.channels[r] = rayleigh_channels(self.n, self.k, self.cfg.realisations,
                                                 derive_seed(r, DESIGN_CHANNELS, CHANNELS))
            self.perfect[r] = _designs(self.channels[r], self.nv, r)
        return self.channels[r], self.perfect[r]

    def pilots(self, p):
        H, ideal = self.true_channels(p["seed"])
        H_hat, _ = PilotCsi(num_pilots=self.k, precision="double")(H, p["pilot_snr_db"],
                                                                   seed=derive_seed(p["seed"], DESIGN_PILOTS, PAYLOAD))
        row = {f"{m}_db": to_db(np.median(aircomp_mse(H, d.a, d.b, self.nv)))
               for m, d in _designs(H_hat, self.nv, p["seed"]).items()}
        return p | row | dict(mmse_perfect_db=to_db(np.median(ideal["mmse"].mse)))

    def misalignment(self, p):
        H, ideal = self.true_channels(p["seed"])
        return design_misalign_point(ideal, H, self.nv, p, self.cfg.misalign_symbols)

    def subcarriers(self, p):
        cfg = self.cfg
        ch = FadingChannel(cfg.subcarrier_model, p["num_rx_ant"], cfg.subcarrier_devices,
                           num_subcarriers=cfg.num_subcarriers, subcarrier_spacing=cfg.subcarrier_spacing,
                           delay_spread=p["delay_spread_ns"] * 1e-9, precision="double")
        H = ch(cfg.subcarrier_draws, seed=derive_seed(p["seed"], SUBCARRIERS, CHANNELS)).numpy()   # [draws, F, N, K]
        F = cfg.num_subcarriers
        opt, uni = (fn(H, float(F), self.nv) for fn in (allocate_subcarrier_power, uniform_subcarrier_power))
        if not np.all(opt.ok):          # an inaccurate solve is accepted and reported (optim.solver_status)
            raise RuntimeError(f"subcarrier allocation failed: {opt.status[~opt.ok][0]}")
        return p | dict(optimal_db=to_db(np.median(opt.mse / F)), uniform_db=to_db(np.median(uni.mse / F)),
                        gain_db=float(np.median(10 * np.log10(uni.mse / opt.mse))))


def design_sweep_stages():
    """The design sweeps as stages of `deft6g design` (its cfg.impairments: DesignSweeps, cfg.seed; its setup's
    "impairments": a DesignSweepPoints): the design methods vs pilot SNR (design_pilot_csi.csv) and vs transmit
    amplitude error, phase error and phase drift (design_<error>.csv), subcarrier power allocation vs delay
    spread (subcarrier_power.csv)."""
    def misalignment(param):
        return lambda cfg: [{param: s, "seed": r} for r in _seeds(cfg) for s in getattr(cfg.impairments, param)]

    return [_stage("design_pilot_csi.csv", DESIGN_PILOT_FIELDS, 2, lambda cfg: [
                dict(pilot_snr_db=s, seed=r) for r in _seeds(cfg) for s in cfg.impairments.pilot_snr_db],
                DesignSweepPoints.pilots, group=["seed"]),                 # a seed's channels and designs, once
            *(_stage(f"design_{name}.csv", DESIGN_MISALIGN_FIELDS[kind], 2, misalignment(param),
                     DesignSweepPoints.misalignment, group=["seed"])
              for kind, (param, _, _, name) in MISALIGN_KINDS.items()),
            _stage("subcarrier_power.csv", SUBCARRIER_FIELDS, 3, lambda cfg: [
                dict(num_rx_ant=a, delay_spread_ns=d, seed=r) for a in cfg.impairments.subcarrier_rx_ant
                for d in cfg.impairments.delay_spread_ns for r in _seeds(cfg)], DesignSweepPoints.subcarriers)]


def design_sweep_report(cfg, n, k, snr_db, rows):
    """(summary text, _Figures) of the design sweeps, from `rows` {file: rows} (cfg: DesignSweeps)."""
    return _design_plots(cfg, n, k, snr_db, rows["design_pilot_csi.csv"],
                         {kind: rows[f"design_{v[3]}.csv"] for kind, v in MISALIGN_KINDS.items()},
                         rows["subcarrier_power.csv"])


def _design_plots(cfg, n, k, snr_db, pilot, mis, sub):
    plot = _Figures()
    note = f"median over {cfg.realisations} channels per seed, mean over {cfg.num_seeds} seeds, 95% CI"
    curves = {m: _curve(pilot, [], "pilot_snr_db", f"{m}_db") for m in DESIGN_METHODS}
    ref = summarise(pilot, [], ["mmse_perfect_db"])[0]
    plot("design_mse_vs_pilot_snr.png", curves, f"pilot SNR [dB] (tau = K = {k} pilots, LMMSE)",
         "median MSE of the sum [dB]", f"Designs on pilot CSI, N={n} K={k}, SNR {snr_db:g} dB", note=note,
         hlines={"mmse, perfect CSI": (ref["mmse_perfect_db_mean"], ref["mmse_perfect_db_ci"])})
    lines = [f"Designs on pilot CSI (N={n} K={k}, {snr_db:g} dB), median MSE [dB] by pilot SNR:"]
    for m, pts in curves.items():
        lines.append(f"  {m:<5}" + "".join(f"{x:>8g} dB: {y:6.2f}" for x, y, _ in pts))
    lines.append(f"  mmse with perfect CSI: {ref['mmse_perfect_db_mean']:.2f}")
    for kind, (param, label, logx, name) in MISALIGN_KINDS.items():
        curves = {m: _curve(mis[kind], [], param, f"{m}_db") for m in DESIGN_METHODS}
        hlines = None
        if logx:                      # error-free values (x = 0) as reference lines; the axis starts above 0
            hlines = {f"{m}, no misalignment": (*pts[0][1:3], m) for m, pts in curves.items() if pts and pts[0][0] == 0}
            curves = {m: [pt for pt in pts if pt[0] > 0] for m, pts in curves.items()}
        extra = f", L = {cfg.misalign_symbols} symbols" if kind == "drift" else ""
        plot(f"design_mse_vs_{name}.png", curves, "transmit " + label, "median MSE of the sum [dB]",
             f"Designs under transmit {name.replace('_', ' ')}, N={n} K={k}, SNR {snr_db:g} dB", logx=logx,
             hlines=hlines, note=note + "; closed-form expectation over the error" + extra)
        lines.append(f"Designs under {name.replace('_', ' ')}{extra}, median MSE [dB] by {param}:")
        for m in DESIGN_METHODS:
            pts = _curve(mis[kind], [], param, f"{m}_db")
            lines.append(f"  {m:<5}" + "".join(f"{x:>8g}: {y:6.2f}" for x, y, _ in pts))
    curves, gain_curves = {}, {}
    for a in cfg.subcarrier_rx_ant:
        rows = [r for r in sub if r["num_rx_ant"] == a]
        for col, name in (("optimal_db", "optimal allocation"), ("uniform_db", "uniform power")):
            curves[f"{name}, N={a}"] = _curve(rows, [], "delay_spread_ns", col)
        gains = gain_curves[f"N={a}"] = _curve(rows, [], "delay_spread_ns", "gain_db")
        lines.append(f"Subcarrier power ({cfg.subcarrier_model.upper()}, N={a} K={cfg.subcarrier_devices}, "
                     f"F={cfg.num_subcarriers}, {snr_db:g} dB), median gain over uniform [dB] by delay spread [ns]: "
                     + ", ".join(f"{x:g}: {g:.2f} +- {c:.2f}" for x, g, c in gains))
    title = (f"Power across {cfg.num_subcarriers} subcarriers ({cfg.subcarrier_spacing / 1e3:g} kHz apart), "
             f"{cfg.subcarrier_model.upper()}, K={cfg.subcarrier_devices}, SNR {snr_db:g} dB")
    note = (f"budget F P per device, MRC per subcarrier; median over {cfg.subcarrier_draws} draws/seed, "
            f"mean over {cfg.num_seeds} seeds, 95% CI")
    plot("subcarrier_mse_vs_delay_spread.png", curves, "RMS delay spread [ns]",
         "median MSE per subcarrier [dB]", title, logx=True, note=note)
    plot("subcarrier_gain_vs_delay_spread.png", gain_curves, "RMS delay spread [ns]",
         "median gain of the allocation over uniform power [dB]", title, logx=True,
         note=note.replace("median over", "median paired MSE ratio over"), hlines={"no gain": 0.0})
    return "\n".join(lines), plot


def link_sweeps(out, quick=False, seed=0, log=print):
    """Deprecated (removed in 0.2.0): the link sweeps alone into `out` (tables and plots); returns the summary.
    `deft6g link` (`LinkStudy`) runs them as its stages."""
    warn_renamed("deft6g.benchmarks.impairment_sweeps.link_sweeps(out, quick, seed)", "run_link (the sweeps are "
                 "stages of LinkStudy)")
    from .link import LinkConfig, LinkStudy               # (link imports this module)
    cfg = LinkConfig(impairments=LinkSweeps.quick() if quick else LinkSweeps(), seed=seed)
    files = [stage.file for stage in link_sweep_stages()]
    text, figures = link_sweep_report(cfg.impairments, run_stages(LinkStudy(), out, files, cfg, log=log))
    figures.draw(Path(out))
    return text


def design_sweeps(out, n, k, snr_db, quick=False, seed=0, log=print):
    """Deprecated (removed in 0.2.0): the design sweeps (N = n, K = k, SNR `snr_db`) alone into `out` (tables and
    plots); returns the summary. `deft6g design` (`DesignStudy`) runs them as its stages."""
    warn_renamed("deft6g.benchmarks.impairment_sweeps.design_sweeps(out, n, k, snr_db, quick, seed)", "run_design "
                 "(the sweeps are stages of DesignStudy)")
    from .beamforming import DesignConfig, DesignStudy    # (beamforming imports this module)
    cfg = DesignConfig(num_rx_ant=n, num_devices=k, snr_db=snr_db, seed=seed,
                       impairments=DesignSweeps.quick() if quick else DesignSweeps())
    files = [stage.file for stage in design_sweep_stages()]
    text, figures = design_sweep_report(cfg.impairments, n, k, snr_db, run_stages(DesignStudy(), out, files, cfg,
                                                                                  log=log))
    figures.draw(Path(out))
    return text
