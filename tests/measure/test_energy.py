import math

import pytest

from edge_opt.measure.energy import RaplReader, measure_energy, proxy_energy


def _zone(root, name, energy, max_range=1_000_000):
    z = root / name
    z.mkdir(parents=True)
    (z / "energy_uj").write_text(str(energy))
    (z / "max_energy_range_uj").write_text(str(max_range))
    return z


def test_no_powercap_means_proxy(tmp_path):
    r = RaplReader(tmp_path / "absent")
    assert not r.available
    e, _, n = measure_energy(lambda: 10, power_watts=5.0, reader=r)
    assert e.source == "proxy" and n == 10 and e.joules >= 0


def test_rapl_delta_and_wraparound(tmp_path):
    z = _zone(tmp_path, "intel-rapl:0", 900_000)
    _zone(tmp_path, "intel-rapl:0:0", 5)  # sub-zone: not counted twice
    r = RaplReader(tmp_path)
    assert r.available and len(r.zones) == 1
    start = r.read_uj()
    (z / "energy_uj").write_text("100000")  # wrapped past 1,000,000
    assert r.delta_j(start, r.read_uj()) == pytest.approx(0.2)


def test_measure_energy_uses_rapl(tmp_path):
    z = _zone(tmp_path, "intel-rapl:0", 0, 10**12)

    def work():
        (z / "energy_uj").write_text("3000000")  # 3 J during the window
        return 3

    e, _, n = measure_energy(work, power_watts=100.0, reader=RaplReader(tmp_path), min_window_s=0.0)
    assert e.source == "rapl" and e.joules == pytest.approx(1.0) and "package" in e.detail


def test_proxy_nan_not_zero():
    assert math.isnan(proxy_energy(5.0, float("nan")).joules)
