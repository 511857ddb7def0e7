"""converter.stats against published values and scipy, its edge cases, and the three-way verdict."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from converter import stats


# ----------------------------------------------------------------------------- published values
@pytest.mark.parametrize("k, n, expected", [
    (0, 10, (0.0, 0.2775)),      # Newcombe 1998a (Stat Med 17:857), worked examples, method 3 (Wilson score)
    (81, 263, (0.2553, 0.3662)),
    (15, 148, (0.0624, 0.1605)),
    (1, 29, (0.0061, 0.1718)),
])
def test_wilson_matches_newcombe_1998_table(k, n, expected):
    assert stats.wilson(k, n) == pytest.approx(expected, abs=5e-5)


def test_newcombe_paired_matches_fagerland_worked_example():
    # Cavo et al. 2012 (complete response before/after consolidation): [[59, 6], [16, 80]], as worked in
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017), ch. 8 (and their R package
    # contingencytables' tests): -0.0621 (-0.1186 to -0.0046)
    lower, upper = stats.newcombe_paired(59, 6, 16, 80)
    assert (6 - 16) / 161 == pytest.approx(-0.0621, abs=5e-5)
    assert (lower, upper) == pytest.approx((-0.1186, -0.0046), abs=5e-5)


@pytest.mark.parametrize("k1, n1, k2, n2, expected", [
    (56, 70, 48, 80, (0.0524, 0.3339)),   # Newcombe 1998c (Stat Med 17:873), worked examples, method 10
    (9, 10, 3, 10, (0.1705, 0.8090)),     # same examples
    (7, 34, 1, 34, (0.0189, 0.3404)),     # Perondi et al. 2004, in Fagerland et al. (2017), ch. 4
])
def test_newcombe_unpaired_matches_published(k1, n1, k2, n2, expected):
    assert stats.newcombe_unpaired(k1, n1, k2, n2) == pytest.approx(expected, abs=5e-5)


@pytest.mark.parametrize("b, c", [(0, 1), (1, 7), (3, 0), (5, 5), (12, 30), (120, 95), (400, 1)])
def test_mcnemar_exact_is_the_binomial_test(b, c):
    assert stats.mcnemar_p(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-12)


def test_mcnemar_mid_p_matches_fagerland_2013():
    # Bentur et al. 2009 (b = 1, c = 7): exact conditional 0.070, mid-p 0.039 (Fagerland et al. 2013, BMC MRM 13:91)
    assert stats.mcnemar_p(1, 7) == pytest.approx(0.0703, abs=5e-5)
    assert stats.mcnemar_p(1, 7, mid_p=True) == pytest.approx(0.0391, abs=5e-5)


# ----------------------------------------------------------------------------- edge cases
def test_no_samples_gives_no_interval():
    assert stats.wilson(0, 0) is None
    assert stats.newcombe_paired(0, 0, 0, 0) is None
    assert stats.newcombe_unpaired(1, 2, 0, 0) is None
    assert stats.mcnemar_p(0, 0) == 1.0


def test_all_correct_and_no_discordance():
    everything = np.ones(50, bool)
    fields = stats.evaluation_stats(everything, everything, everything)
    assert fields["discordant"] == [0, 0] and fields["mcnemar_p"] == 1.0
    lower, upper = fields["top1_ci"]
    assert upper == 1.0 and lower == pytest.approx(stats.wilson(50, 50)[0]) and lower < 1.0
    drop_lower, drop_upper = fields["top1_drop_ci"]
    assert drop_lower < 0 < drop_upper  # zero discordance on 50 samples cannot rule out a small drop


def test_evaluation_stats_counts_the_paired_table():
    reference = np.array([1, 1, 1, 1, 0, 0, 1, 0], bool)
    artifact = np.array([1, 0, 0, 1, 1, 0, 1, 0], bool)
    agreement = np.array([1, 0, 0, 1, 0, 0, 1, 1], bool)
    fields = stats.evaluation_stats(reference, artifact, agreement)
    assert stats.paired_table(reference, artifact) == (3, 2, 1, 2)
    assert fields["discordant"] == [2, 1]
    assert fields["top1_ci"] == pytest.approx(list(stats.wilson(4, 8)))
    assert fields["top1_agreement_ci"] == pytest.approx(list(stats.wilson(4, 8)))
    assert fields["top1_drop_ci"] == pytest.approx(list(stats.newcombe_paired(3, 2, 1, 2)))
    assert fields["mcnemar_p"] == pytest.approx(binomtest(1, 3, 0.5).pvalue)
    with pytest.raises(ValueError, match="differ in length"):
        stats.paired_table(reference, artifact[:5])


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 359, 1000])
def test_per_sample_round_trip(n):
    vector = np.random.default_rng(n).random(n) < 0.7
    encoded = stats.encode_per_sample(vector)
    assert encoded["n"] == n and isinstance(encoded["correct"], str)
    assert np.array_equal(stats.decode_per_sample(encoded), vector)


@pytest.mark.parametrize("data, message", [
    ({"correct": "AAA=", "n": 40}, "cannot hold"),   # 2 bytes for 40 samples
    ({"correct": "not base64!", "n": 8}, "expected"),
    ({"n": 8}, "expected"),
])
def test_per_sample_rejects_malformed(data, message):
    with pytest.raises(ValueError, match=message):
        stats.decode_per_sample(data)


def test_table_from_counts_rebuilds_the_table():
    assert stats.table_from_counts(200, 0.9, [3, 0]) == (177, 3, 0, 20)
    with pytest.raises(ValueError, match="impossible"):
        stats.table_from_counts(10, 0.1, [5, 0])


# ----------------------------------------------------------------------------- verdict
@pytest.mark.parametrize("interval, limit, kind, expected", [
    ((0.001, 0.008), 0.01, "max", "pass"),
    ((-0.01, 0.01), 0.01, "max", "pass"),            # touching the budget keeps it
    ((0.011, 0.05), 0.01, "max", "fail"),
    ((0.002, 0.03), 0.01, "max", "within noise"),
    ((0.96, 0.99), 0.95, "min", "pass"),
    ((0.90, 0.94), 0.95, "min", "fail"),
    ((0.93, 0.97), 0.95, "min", "within noise"),
])
def test_three_way_verdict(interval, limit, kind, expected):
    assert stats.verdict(interval, limit, kind) == expected


def test_verdict_on_real_counts():
    # 200 samples, 3 lost, none gained: point drop 1.5 points against a 1-point budget is within noise;
    # 60 lost of 200 is a sure fail; 0 of 2000 lost is a sure pass
    assert stats.verdict(stats.newcombe_paired(177, 3, 0, 20), 0.01) == "within noise"
    assert stats.verdict(stats.newcombe_paired(120, 60, 0, 20), 0.01) == "fail"
    assert stats.verdict(stats.newcombe_paired(1800, 0, 0, 200), 0.01) == "pass"
    assert stats.verdict(None, 0.01) is None


@pytest.mark.parametrize("three_way, point, policy, expected", [
    ("pass", False, "fail", True), ("fail", True, "pass", False),
    ("within noise", False, "pass", True), ("within noise", True, "fail", False),
    ("within noise", True, "point", True), ("within noise", False, "point", False),
    (None, True, "fail", True),
])
def test_resolve_within_noise_by_policy(three_way, point, policy, expected):
    assert stats.resolve(three_way, point, policy) is expected


def test_samples_to_decide_decides_and_fewer_do_not():
    a, b, c, d = 177, 3, 0, 20
    m = stats.drop_samples_to_decide(a, b, c, d, 0.01)
    assert m is not None and m > 200

    def verdict_at(count: float) -> str:
        s = count / 200
        return stats.verdict(stats.newcombe_paired(a * s, b * s, c * s, d * s), 0.01)

    assert verdict_at(m) == "fail"            # at the observed rates (1.5 points lost), enough samples say fail
    assert verdict_at(0.9 * m) == "within noise"
    assert stats.drop_samples_to_decide(120, 60, 0, 20, 0.01) == 200   # already decided
    assert stats.drop_samples_to_decide(178, 2, 0, 20, 0.01) is None   # point exactly on the budget: never decided
    assert stats.proportion_samples_to_decide(194, 200, 0.95) > 200


# ----------------------------------------------------------------------------- two runs
def test_run_difference_paired_and_unpaired():
    rng = np.random.default_rng(3)
    base = rng.random(400) < 0.9
    new = base.copy()
    new[np.flatnonzero(base)[:30]] = False   # 30 samples lost, none gained
    paired = stats.run_difference({"top1": base.mean(), "n": 400, "correct": base}, {"top1": new.mean(), "n": 400, "correct": new})
    unpaired = stats.run_difference({"top1": base.mean(), "n": 400}, {"top1": new.mean(), "n": 400})
    assert paired["method"] == "paired" and unpaired["method"] == "unpaired" and unpaired["p"] is None
    assert paired["difference"] == pytest.approx(30 / 400) == unpaired["difference"]
    assert paired["discordant"] == [30, 0] and paired["p"] == pytest.approx(binomtest(0, 30, 0.5).pvalue)
    assert paired["ci"][0] > 0                                          # pairing sees the loss
    assert paired["ci"][1] - paired["ci"][0] < unpaired["ci"][1] - unpaired["ci"][0]
    assert stats.run_difference({"top1": 0.9, "n": 0}, {"top1": 0.8, "n": 10}) is None
