"""MU-MIMO scheduling of the digital uplink: channel-aware grouping and the outage-target scheduler."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

import deft6g.phy as phy

LORA_REALS = 13058          # the main study's payload per device: LoRA r = 8 on query/value of block 5 + the head


def flat(H):
    """[B, N, K] -> [B, 1, N, K] complex128, the scheduler's layout."""
    return np.asarray(H, np.complex128)[:, None]


def group_sinr(h, groups, noise_var):
    """LMMSE post-detection SINR [B, K] of every device with its group (groups: list of [B, S] index arrays)."""
    out = np.zeros((h.shape[0], h.shape[-1]))
    for members in groups:
        hg = np.take_along_axis(h[:, 0], members[:, None, :], -1)
        sinr = phy.post_detection_sinr(tf.constant(hg), noise_var, precision="double").numpy()
        np.put_along_axis(out, members, sinr, -1)
    return out


def link_adapt(up, h, members, noise_var, num_reals):
    """Independent re-derivation for flat channels: (devices without an MCS, channel uses, sum of block error
    probabilities) of groups `members` [B, S] transmitting together."""
    hg = np.take_along_axis(h[:, 0], members[:, None, :], -1)
    sinr = phy.post_detection_sinr(tf.constant(hg), noise_var, precision="double").numpy()
    mcs = phy.select_mcs(phy.effective_sinr(sinr[:, None]))
    sym = np.where(mcs >= 0, up.symbols(num_reals, np.maximum(mcs, 0)), 0)
    p = np.ones(mcs.shape)
    for j, e in enumerate(phy.MCS_TABLE):
        p = np.where(mcs == j, e.bler(10 * np.log10(sinr)), p)
    return (mcs < 0).sum(-1), sym.max(-1), p.sum(-1)


def test_channel_aware_groups_are_balanced_partitions(crandn, rng):
    """Every device in exactly one group per realisation, with the sizes of `balanced_groups` (K = 7, G = 1..7)."""
    h = crandn(rng, 20, 3, 2, 7)
    for g in range(1, 8):
        groups = phy.channel_aware_groups(h, g)
        assert [m.shape[-1] for m in groups] == [len(m) for m in phy.balanced_groups(7, g)]
        np.testing.assert_array_equal(np.sort(np.concatenate(groups, -1), -1), np.tile(np.arange(7), (20, 1)))


def test_channel_aware_groups_separate_collinear_devices(crandn, rng):
    """Devices 0 and 1 nearly collinear (h_1 = h_0 + 0.05 CN(0, I)), 200 flat channels N = 2, K = 8, 4 pairs at
    10 dB: contiguous grouping pairs them (their SINRs collapse), channel-aware grouping never does, and its
    mean LMMSE SINR of devices 0 and 1 is more than 10x the contiguous one's (seed 1234)."""
    h = crandn(rng, 200, 1, 2, 8)
    h[..., 1] = h[..., 0] + 0.05 * crandn(rng, 200, 1, 2)
    groups = phy.channel_aware_groups(h, 4)
    together = np.zeros(200, bool)
    for members in groups:
        together |= (members == 0).any(-1) & (members == 1).any(-1)
    assert not together.any()
    contiguous = [np.tile(m, (200, 1)) for m in phy.balanced_groups(8, 4)]
    aware, base = group_sinr(h, groups, 0.1), group_sinr(h, contiguous, 0.1)
    assert aware[:, :2].mean() > 10 * base[:, :2].mean()


def test_channel_aware_groups_beat_contiguous_on_correlated_channels():
    """Correlated Rayleigh (exponential correlation 0.9 at the server), N = 2, K = 8 in 4 pairs, 10 dB, 500
    channels (seed 0): the mean LMMSE post-detection SINR is 6.7 with channel-aware groups against 4.8 with
    contiguous ones (measured); asserted: more than 1.25x, and the channel-aware plan wins in most channels."""
    h = flat(phy.FadingChannel("correlated", 2, 8, correlation=0.9)(500, seed=0))
    aware = group_sinr(h, phy.channel_aware_groups(h, 4), 0.1)
    base = group_sinr(h, [np.tile(m, (500, 1)) for m in phy.balanced_groups(8, 4)], 0.1)
    assert aware.mean() > 1.25 * base.mean()
    assert np.mean(aware.mean(-1) > base.mean(-1)) > 0.7


def test_scheduler_meets_its_outage_target_on_1000_drops():
    """1,000 flat Rayleigh channels, N = 2, K = 8, 100 reals per device, at 6 dB above the lowest MCS threshold
    (devices fall into outage there: about 3 % alone), abstract link (seed 7). Where TDMA meets the 10 % target
    the chosen plan does too; elsewhere it drops no more devices than TDMA (the fewest possible: a device's
    SINR is highest alone). The realised fraction of undelivered entries (dropped devices, failed blocks,
    failed headers) over all drops is at most the target, and so is the mean expected outage. Measured with the
    MCS table of 2026-12 (-7.3 dB): 2.8 % of devices dropped, 4.5 % of entries undelivered, mean expected outage
    3.9 %, 40.1 k channel uses per drop against TDMA's 63.6 k."""
    snr_db = min(e.threshold_db for e in phy.MCS_TABLE) + 6.0
    H = phy.FadingChannel("rayleigh", 2, 8)(1000, seed=7)
    nv = 10 ** (-snr_db / 10)
    res = phy.DigitalUplink(8, link="abstract")(np.zeros((1000, 8, 100), np.float32), H, nv, seed=7)
    _, tdma_mcs, _, tdma_uses, tdma_outage = phy.DigitalUplink(8, streams=1).schedule(flat(H), nv, 100)
    meets = tdma_outage <= 0.1
    assert np.all(res.outage[meets] <= 0.1)
    np.testing.assert_array_equal((res.mcs < 0).sum(-1), (tdma_mcs < 0).sum(-1))
    assert np.mean(tdma_mcs < 0) > 0.005 and not meets.all()                     # outages do occur
    np.testing.assert_allclose(res.drop_rate, (res.mcs < 0).mean(-1))
    assert 1.0 - res.valid.numpy().mean() <= 0.1 and res.outage.mean() <= 0.1
    assert res.channel_uses.mean() < 0.85 * tdma_uses.mean()


def test_fewer_channel_uses_than_the_outage_first_rule():
    """The main study's digital point: N = 2, K = 8, 8-bit quantiser, 13,058 reals per device, flat Rayleigh,
    0 dB, 200 channels (seed 0). The previous rule (contiguous pairs or TDMA, the fewest devices in outage first,
    then the fewest channel uses), re-derived here, spent 1.43 M channel uses per round on average, the scheduler
    1.09 M (measured with the MCS table of 2026-12, which repeats MCS 2 down to -13.3 dB); asserted: at most
    0.85x, and never more devices dropped."""
    h = flat(phy.FadingChannel("rayleigh", 2, 8)(200, seed=0))
    up = phy.DigitalUplink(8, link="abstract")
    _, mcs, _, uses, _ = up.schedule(h, 1.0, LORA_REALS)
    old = []
    for g in (4, 8):
        parts = [link_adapt(up, h, np.tile(m, (200, 1)), 1.0, LORA_REALS) for m in phy.balanced_groups(8, g)]
        old.append((sum(p[0] for p in parts), sum(p[1] for p in parts)))
    drops, old_uses = np.array([d for d, _ in old]), np.array([u for _, u in old])
    best = np.lexsort((old_uses, drops), axis=0)[0]
    old_uses, old_drops = old_uses[best, np.arange(200)], drops[best, np.arange(200)]
    assert uses.mean() <= 0.85 * old_uses.mean()
    assert np.all((mcs < 0).sum(-1) <= old_drops)


def matchings(items):
    """Every partition of `items` into groups of one or two."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    yield from ([(first,)] + m for m in matchings(rest))
    for i, other in enumerate(rest):
        yield from ([(first, other)] + m for m in matchings(rest[:i] + rest[i + 1:]))


@pytest.mark.parametrize("snr_db", [0.0, 10.0])
def test_scheduler_against_brute_force(snr_db):
    """N = 2, K = 6, 2,000 reals per device, 60 flat Rayleigh channels (seed 3): brute force over all 76
    partitions into pairs and singles with the scheduler's rule (the fewest channel uses among plans whose
    expected outage is <= 0.1, else the fewest dropped devices, then the fewest uses). The scheduler's plan is
    one of them, so it can never beat the optimum; its mean channel uses stay within 5 % of it."""
    h = flat(phy.FadingChannel("rayleigh", 2, 6)(60, seed=3))
    nv = 10 ** (-snr_db / 10)
    up = phy.DigitalUplink(8, link="abstract")
    _, _, _, uses, outage = up.schedule(h, nv, 2000)
    cost = {grp: link_adapt(up, h, np.tile(grp, (60, 1)), nv, 2000)
            for grp in [(k,) for k in range(6)] + list(itertools.combinations(range(6), 2))}
    plans = np.array([[sum(cost[g][i] for g in m) for i in range(3)] for m in matchings(list(range(6)))])
    drops, plan_uses, fail = plans[:, 0], plans[:, 1], plans[:, 2] / 6                 # [P, B]
    meets = fail <= 0.1
    best = np.where(meets.any(0), np.where(meets, plan_uses, np.inf).min(0),
                    np.where(drops == drops.min(0), plan_uses, np.inf).min(0))
    assert np.all(uses >= best)
    assert uses.mean() <= 1.05 * best.mean()
    assert np.all((outage <= 0.1) == meets.any(0))


@pytest.mark.parametrize("target", [0.0, 1.0, -0.1, 1.5, float("nan"), "0.1", True, None])
def test_bad_outage_target_raises(target):
    with pytest.raises(ValueError, match="`outage_target` must be a number in \\(0, 1\\)"):
        phy.DigitalUplink(outage_target=target)


def test_channel_aware_groups_errors(crandn, rng):
    with pytest.raises(ValueError, match="`num_groups` must be an integer between 1 and K = 3"):
        phy.channel_aware_groups(crandn(rng, 2, 1, 2, 3), 4)
    with pytest.raises(ValueError, match="`h` must be a complex \\[B, F, N, K\\] array"):
        phy.channel_aware_groups(np.ones((2, 2, 3)), 1)
