"""Geographic boxes in the S,N,W,E order that ISCE2 and the .env use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class BBox:
    """A latitude/longitude box in degrees, south < north, west < east (no antimeridian wrap)."""

    south: float
    north: float
    west: float
    east: float

    def __post_init__(self) -> None:
        if not (-90 <= self.south < self.north <= 90):
            raise ValueError(
                f"south must be below north, both within ±90 (got {self.south}, {self.north})"
            )
        if not (-180 <= self.west < self.east <= 180):
            raise ValueError(
                f"west must be below east, both within ±180 (got {self.west}, {self.east})"
            )

    @classmethod
    def parse(cls, text: str) -> BBox:
        """Parse "S,N,W,E" (commas and/or spaces, optional brackets)."""
        cleaned = text.strip().strip("[]()").replace(",", " ").split()
        if len(cleaned) != 4:
            raise ValueError(f"expected four numbers S,N,W,E, got {text!r}")
        try:
            south, north, west, east = (float(value) for value in cleaned)
        except ValueError as err:
            raise ValueError(f"expected four numbers S,N,W,E, got {text!r}") from err
        return cls(south, north, west, east)

    @classmethod
    def around(cls, points: list[tuple[float, float]]) -> BBox:
        """The smallest box holding every (lat, lon) point."""
        lats = [lat for lat, _ in points]
        lons = [lon for _, lon in points]
        return cls(min(lats), max(lats), min(lons), max(lons))

    def snwe(self) -> list[float]:
        return [self.south, self.north, self.west, self.east]

    def contains(self, other: BBox) -> bool:
        return (
            self.south <= other.south
            and other.north <= self.north
            and self.west <= other.west
            and other.east <= self.east
        )

    def intersects(self, other: BBox) -> bool:
        return (
            self.south < other.north
            and other.south < self.north
            and self.west < other.east
            and other.west < self.east
        )

    def union(self, other: BBox) -> BBox:
        return BBox(
            min(self.south, other.south),
            max(self.north, other.north),
            min(self.west, other.west),
            max(self.east, other.east),
        )

    def buffered(self, degrees: float) -> BBox:
        return BBox(
            max(-90.0, self.south - degrees),
            min(90.0, self.north + degrees),
            max(-180.0, self.west - degrees),
            min(180.0, self.east + degrees),
        )

    def __str__(self) -> str:
        return f"{self.south:g},{self.north:g},{self.west:g},{self.east:g} (S,N,W,E)"
