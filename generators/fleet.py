"""The simulated fleet: devices with an identity, a site, a type and per-device signal traits.

Faker runs once here, when the fleet is built; readings never touch it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from faker import Faker


@dataclass(frozen=True)
class MetricSpec:
    """A metric's physically plausible signal: base level, daily swing, noise and hard limits."""

    name: str
    unit: str
    base: float
    daily_amplitude: float
    noise: float
    low: float
    high: float


DEVICE_TYPES: dict[str, tuple[MetricSpec, ...]] = {
    "environment": (
        MetricSpec("temperature", "degC", 21.0, 4.0, 0.2, -40.0, 85.0),
        MetricSpec("humidity", "%RH", 45.0, 10.0, 1.0, 0.0, 100.0),
        MetricSpec("pressure", "hPa", 1013.0, 2.0, 0.3, 870.0, 1085.0),
    ),
    "power_meter": (
        MetricSpec("voltage", "V", 230.0, 3.0, 0.8, 180.0, 260.0),
        MetricSpec("current", "A", 8.0, 5.0, 0.4, 0.0, 63.0),
        MetricSpec("power", "W", 1800.0, 1100.0, 60.0, 0.0, 15000.0),
    ),
    "air_quality": (
        MetricSpec("pm2_5", "ug/m3", 12.0, 6.0, 1.5, 0.0, 500.0),
        MetricSpec("co2", "ppm", 600.0, 250.0, 15.0, 350.0, 5000.0),
    ),
    "vibration": (
        MetricSpec("rms", "mm/s", 2.0, 0.8, 0.15, 0.0, 50.0),
        MetricSpec("peak", "mm/s", 6.0, 2.0, 0.5, 0.0, 150.0),
    ),
}


@dataclass(frozen=True)
class Site:
    site_id: str
    city: str
    lat: float
    lon: float
    utc_offset_h: float


@dataclass
class Device:
    device_id: str
    site: Site
    type: str
    serial: str
    manufacturer: str
    model: str
    firmware: str
    installed: str
    lat: float
    lon: float
    bias: dict[str, float]
    drift_per_h: dict[str, float]
    phase: float
    boot: int = 0
    seq: int = 0
    battery: float = 100.0
    metrics: tuple[MetricSpec, ...] = field(default=())


def build_fleet(devices: int, sites: int, seed: int) -> list[Device]:
    """N devices spread round-robin over S sites and over the device types; same seed, same fleet."""
    if devices < 1 or sites < 1:
        raise ValueError("a fleet needs at least one device and one site")
    fake = Faker()
    fake.seed_instance(seed)
    rng = random.Random(seed)
    site_list = []
    for i in range(sites):
        lat, lon, city, _country, tz = fake.local_latlng(country_code=rng.choice(["US", "DE", "GB", "FR", "NL"]))
        slug = "".join(c for c in city.lower() if c.isalnum())[:12] or "site"
        site_list.append(Site(f"{slug}-{i:02d}", city, float(lat), float(lon), _tz_offset(tz)))
    types = sorted(DEVICE_TYPES)
    fleet = []
    width = max(4, len(str(devices - 1)))
    for i in range(devices):
        site = site_list[i % sites]
        dtype = types[(i // sites) % len(types)]
        specs = DEVICE_TYPES[dtype]
        fleet.append(
            Device(
                device_id=f"dev-{i:0{width}d}",
                site=site,
                type=dtype,
                serial=fake.bothify("SN-####-????").upper(),
                manufacturer=fake.company(),
                model=fake.bothify("M-##?").upper(),
                firmware=f"{rng.randint(1, 4)}.{rng.randint(0, 9)}.{rng.randint(0, 20)}",
                installed=fake.date_between("-5y", "-30d").isoformat(),
                # Devices sit within ~2 km of their site.
                lat=round(site.lat + rng.uniform(-0.02, 0.02), 5),
                lon=round(site.lon + rng.uniform(-0.02, 0.02), 5),
                bias={m.name: rng.gauss(0, m.noise * 3) for m in specs},
                drift_per_h={m.name: rng.gauss(0, m.noise * 0.05) for m in specs},
                phase=rng.uniform(-0.5, 0.5),
                metrics=specs,
            )
        )
    return fleet


def _tz_offset(tz: str) -> float:
    # Good enough for a daily cycle that peaks in the local afternoon; no tz database needed.
    return {"America": -6.0, "Europe": 1.0}.get(tz.split("/")[0], 0.0)


def sample(device: Device, spec: MetricSpec, ts_ms: int, started_ms: int, rng: random.Random) -> float:
    """A plausible value: daily cycle peaking mid-afternoon local time, bias, slow drift, noise."""
    hours = ts_ms / 3_600_000 + device.site.utc_offset_h
    daily = math.sin(2 * math.pi * ((hours - 9.0) / 24.0 + device.phase / 24.0))
    drift = device.drift_per_h[spec.name] * (ts_ms - started_ms) / 3_600_000
    value = spec.base + spec.daily_amplitude * daily + device.bias[spec.name] + drift + rng.gauss(0, spec.noise)
    return round(min(spec.high, max(spec.low, value)), 3)
