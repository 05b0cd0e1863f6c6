"""How big each figure is at each ``--size``: ``tiny`` proves the bench works (``make test``),
``small`` gives usable figures in a few minutes, ``full`` is the size the goals are stated at."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class Size:
    name: str
    onehop_messages: int
    msgrate_messages: int
    managers: tuple[int, ...]
    jobs_per_manager_round: int
    idle_jobs: int
    idle_rate: float
    doorbell_jobs: int
    doorbell_rate: float
    #: devices the fleet connects (hello + attributes), per broker kind
    fleet_devices: dict[str, int]
    fleet_jobs: int
    fleet_active: int
    big_bytes: int
    ipp_jobs: int
    submit_concurrency: int
    #: pages of the PDF the transform figure turns into PWG raster (ours and Ghostscript's)
    transform_pages: int
    #: fleet jobs whose instructions the service's callgrind counts (after as many uncounted)
    instruction_jobs: int


SIZES = {
    "tiny": Size("tiny", onehop_messages=100, msgrate_messages=500, managers=(1,), jobs_per_manager_round=6,
                 idle_jobs=3, idle_rate=4.0, doorbell_jobs=10, doorbell_rate=50.0,
                 fleet_devices={"embedded": 20, "mosquitto": 20}, fleet_jobs=16, fleet_active=16,
                 big_bytes=8 * MiB, ipp_jobs=2, submit_concurrency=8, transform_pages=3,
                 instruction_jobs=16),
    "small": Size("small", onehop_messages=500, msgrate_messages=5000, managers=(1, 4, 16), jobs_per_manager_round=40,
                  idle_jobs=10, idle_rate=1.0, doorbell_jobs=100, doorbell_rate=50.0,
                  fleet_devices={"embedded": 200, "mosquitto": 1000}, fleet_jobs=300, fleet_active=16,
                  big_bytes=128 * MiB, ipp_jobs=5, submit_concurrency=32, transform_pages=20,
                  instruction_jobs=200),
    "full": Size("full", onehop_messages=2000, msgrate_messages=20000, managers=(1, 4, 16), jobs_per_manager_round=200,
                 idle_jobs=30, idle_rate=1.0, doorbell_jobs=500, doorbell_rate=50.0,
                 fleet_devices={"embedded": 2000, "mosquitto": 10000}, fleet_jobs=3000, fleet_active=16,
                 big_bytes=1024 * MiB, ipp_jobs=100, submit_concurrency=32, transform_pages=50,
                 instruction_jobs=1000),
}

#: Figure groups, in the order they run (``--only`` takes these names).
GROUPS = ("onehop", "msgrate", "connect", "doorbell", "fleet", "managers", "idle", "big", "ipp", "transform",
          "instructions")

#: Groups that run only alone and only when named: ``instructions`` runs the service under
#: valgrind, which every other figure of its run would measure instead of the service.
ALONE = ("instructions",)

#: What a run without ``--only`` measures.
DEFAULT_GROUPS = tuple(g for g in GROUPS if g not in ALONE)

STACKS = ("embedded", "mosquitto-pg")
