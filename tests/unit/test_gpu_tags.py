"""The GPU tag ladders: memory sizes as sold, memory floors, compute capability floors."""

from __future__ import annotations

import pytest

from autogit.agent.model import Gpu
from autogit.agent.tags import CC_FLOORS, VRAM_FLOORS_GIB, compute_capability_tags, gpu_tags, memory_gib, memory_tags


@pytest.mark.parametrize(
    ("what", "reported_mib", "gib"),
    [
        ("H100 80GB", 81559, 80),
        ("H100 MIG 7g.80gb", 81152, 80),  # 79.25 GiB: rounding to the nearest would say 79
        ("H100 MIG 1g.10gb", 9984, 10),
        ("A100 40GB MIG 1g.5gb", 4864, 5),
        ("H200 141GB", 143771, 141),
        ("RTX 4090 24GB", 24564, 24),
        ("L4 24GB, ECC on", 23034, 23),  # ECC takes its share: honestly under 24
        ("exactly 24 GiB", 24576, 24),
        ("unknown", 0, None),
    ],
)
def test_memory_is_counted_as_sold_rounded_up_to_whole_gib(what: str, reported_mib: int, gib: int | None) -> None:
    assert memory_gib(reported_mib) == gib, what


def test_an_h200_carries_every_floor_up_to_141_and_none_above() -> None:
    assert memory_tags(143771) == {"vram-141g", *(f"vram-ge-{n}g" for n in (4, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 141))}


def test_an_l4_reaches_the_20_gib_floor_but_not_24() -> None:
    tags = memory_tags(23034)
    assert "vram-ge-20g" in tags and "vram-ge-24g" not in tags and "vram-23g" in tags


def test_ladders_are_ascending_without_repeats() -> None:
    assert list(VRAM_FLOORS_GIB) == sorted(set(VRAM_FLOORS_GIB))
    assert list(CC_FLOORS) == sorted(set(CC_FLOORS))


@pytest.mark.parametrize(
    ("capability", "exact", "highest_floor", "next_floor"),
    [
        ("9.0", "cc-9.0", "cc-ge-9.0", "cc-ge-10.0"),
        ("8.9", "cc-8.9", "cc-ge-8.9", "cc-ge-9.0"),
        ("8.7", "cc-8.7", "cc-ge-8.6", "cc-ge-8.9"),
        ("12.0", "cc-12.0", "cc-ge-12.0", None),
    ],
)
def test_compute_capability_floors_are_numeric(capability: str, exact: str, highest_floor: str, next_floor: str | None) -> None:
    tags = compute_capability_tags(capability)
    assert exact in tags and highest_floor in tags and "cc-ge-6.0" in tags
    assert next_floor is None or next_floor not in tags
    if capability == "12.0":
        assert "cc-ge-10.0" in tags  # 12.0 > 10.0 as numbers, as __CUDA_ARCH__ comparisons go


def test_an_unparsable_compute_capability_yields_no_tag() -> None:
    assert compute_capability_tags("unknown") == frozenset()


def test_integrated_gpus_carry_no_memory_tags() -> None:
    igpu = Gpu(id="0000:00:02.0", vendor="intel", model="Intel GPU 0xa7a0", memory_mb=0, integrated=True)
    assert not any(t.startswith("vram-") for t in gpu_tags(igpu))
