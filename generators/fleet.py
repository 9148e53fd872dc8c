"""The simulated fleet: sites in real-looking cities, and devices with an identity, a site, a type
and per-device signal traits, all reproducible from a seed.

Faker runs only here, once per fleet and a bounded number of times: it fills small pools (cities,
manufacturers, models, install dates) and each device derives its identity from the pools and its
index. Faker costs about half a millisecond a call, so calling it per device would take minutes
at 100,000 devices; readings never touch it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from faker import Faker

from generators.devicetypes import DEVICE_TYPES, DeviceType

#: Countries the sites are drawn from (Faker's local_latlng knows real towns in each).
SITE_COUNTRIES = ("US", "DE", "GB", "FR", "NL", "ES", "IT", "SE", "CA", "JP", "AU", "BR")
MANUFACTURERS = 24
MODELS_PER_MANUFACTURER = 4
INSTALL_DATES = 365
#: Devices sit within about 2 km of their site.
SITE_RADIUS_DEG = 0.02


@dataclass(frozen=True, slots=True)
class Site:
    site_id: str
    city: str
    country: str
    lat: float
    lon: float

    @property
    def solar_offset_h(self) -> float:
        # The daily cycle follows the sun, not the time zone: local mean solar time is UTC + lon/15 h.
        return self.lon / 15.0


@dataclass(frozen=True, slots=True)
class Identity:
    serial: str
    manufacturer: str
    model: str
    firmware: str
    installed: str


@dataclass(slots=True, eq=False)
class Device:
    """One device: fixed traits from the fleet build, plus the state its readings advance.

    Slots and shared objects (site, type, pools) keep a device near 0.5 kB, so 100,000 fit easily.
    """

    index: int
    device_id: str
    site: Site
    kind: DeviceType
    lat: float
    lon: float
    #: per metric of ``kind``, in its order: a constant offset and a slow drift per hour
    bias: tuple[float, ...]
    drift_per_h: tuple[float, ...]
    #: shifts the daily cycle by up to an hour either way, so devices of a site are not in lockstep
    phase_h: float
    power_factor: float
    battery: float | None
    skew_ms: int = 0
    boot: int = 0
    seq: int = 0
    # Fault state (generators.faults), None while the device is healthy and online.
    anomaly: Any = None
    offline_until_ms: int | None = None
    backlog: list | None = None

    @property
    def type(self) -> str:
        return self.kind.name


@dataclass
class Fleet:
    seed: int
    sites: list[Site]
    devices: list[Device]
    manufacturers: tuple[str, ...]
    models: tuple[tuple[str, ...], ...]
    install_dates: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self) -> Iterator[Device]:
        return iter(self.devices)

    def __getitem__(self, i: int) -> Device:
        return self.devices[i]

    def part(self, k: int, n: int) -> Fleet:
        """The sites whose number is ``k`` modulo ``n`` and their devices: a worker process's share."""
        sites = self.sites[k::n]
        ids = {id(s) for s in sites}
        return replace(self, sites=sites, devices=[d for d in self.devices if id(d.site) in ids])

    def identity(self, device: Device) -> Identity:
        """The device's identity, derived from the Faker pools and its index (same seed, same identity)."""
        # A string seed goes through SHA-512, so it is stable across processes (hash() is salted).
        rng = random.Random(f"{self.seed}:{device.index}")
        m = rng.randrange(len(self.manufacturers))
        manufacturer = self.manufacturers[m]
        prefix = "".join(c for c in manufacturer.upper() if c.isalpha())[:3] or "DEV"
        # Multiplying by an odd constant is a bijection mod 2**32: serials never collide.
        number = (device.index * 0x9E3779B1 + self.seed) & 0xFFFFFFFF
        return Identity(
            serial=f"{prefix}-{number:08X}",
            manufacturer=manufacturer,
            model=rng.choice(self.models[m]),
            firmware=f"{rng.randint(1, 4)}.{rng.randint(0, 9)}.{rng.randint(0, 20)}",
            installed=rng.choice(self.install_dates),
        )

    def manifest(self) -> Iterator[dict[str, Any]]:
        """One JSON-ready record per device: identity, location and its metrics with units."""
        for d in self.devices:
            ident = self.identity(d)
            yield {
                "device_id": d.device_id, "site": d.site.site_id, "city": d.site.city, "country": d.site.country,
                "type": d.type, "serial": ident.serial, "manufacturer": ident.manufacturer, "model": ident.model,
                "firmware": ident.firmware, "installed": ident.installed, "lat": d.lat, "lon": d.lon,
                "metrics": {m.name: m.unit for m in d.kind.metrics}, "battery": d.battery is not None,
            }


def build_sites(fake: Faker, rng: random.Random, sites: int) -> list[Site]:
    result = []
    for i in range(sites):
        lat, lon, city, country, _tz = fake.local_latlng(country_code=rng.choice(SITE_COUNTRIES))
        slug = "".join(c for c in city.lower() if c.isalnum())[:12] or "site"
        result.append(Site(f"{slug}-{i:02d}", city, country, float(lat), float(lon)))
    return result


def build_fleet(devices: int, sites: int, seed: int, prefix: str = "dev") -> Fleet:
    """N devices (``<prefix>-<number>``) spread round-robin over S sites and over the device types; same seed,
    same fleet."""
    if devices < 1 or sites < 1:
        raise ValueError("a fleet needs at least one device and one site")
    fake = Faker()
    fake.seed_instance(seed)
    rng = random.Random(seed)
    site_list = build_sites(fake, rng, sites)
    manufacturers = tuple(fake.unique.company() for _ in range(min(MANUFACTURERS, devices)))
    models = tuple(
        tuple(fake.bothify("??-###").upper() for _ in range(MODELS_PER_MANUFACTURER)) for _ in manufacturers
    )
    install_dates = tuple(fake.date_between("-5y", "-30d").isoformat() for _ in range(INSTALL_DATES))
    types = [DEVICE_TYPES[name] for name in sorted(DEVICE_TYPES)]
    width = max(4, len(str(devices - 1)))
    fleet = []
    gauss, uniform = rng.gauss, rng.uniform
    for i in range(devices):
        site = site_list[i % sites]
        kind = types[(i // sites) % len(types)]
        fleet.append(
            Device(
                index=i,
                device_id=f"{prefix}-{i:0{width}d}",
                site=site,
                kind=kind,
                lat=round(site.lat + uniform(-SITE_RADIUS_DEG, SITE_RADIUS_DEG), 5),
                lon=round(site.lon + uniform(-SITE_RADIUS_DEG, SITE_RADIUS_DEG), 5),
                bias=tuple(gauss(0, m.noise * 3) for m in kind.metrics),
                drift_per_h=tuple(gauss(0, m.noise * 0.05) for m in kind.metrics),
                phase_h=uniform(-1.0, 1.0),
                power_factor=uniform(0.85, 0.99),
                battery=round(uniform(40.0, 100.0), 2) if kind.battery_drain else None,
            )
        )
    return Fleet(seed, site_list, fleet, manufacturers, models, install_dates)
