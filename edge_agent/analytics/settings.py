"""Analytics settings: one small pydantic model (``analytics:`` in the agent
config) plus the per-line overrides of the counting rules.

Defaults are chosen from principles, not fitted to a video (see
docs/analytics.md): the dead band is a tenth of a person's box height, the
cooldown one second (nobody walks through a door and back in less), held
crossings need a track the tracker confirmed and matched again (3 frames)
whose mean confidence is at least Ultralytics' own display threshold (0.25),
and an ID switch is looked for within the tracker's lost-track time plus the
cooldown (2 s), within one body height.

Kept free of imports from ``edge_agent.config`` so config can import it.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..counting import LineRules


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineRulesConfig(_Strict):
    """Counting rules of a line. In ``analytics.line_rules`` every field has a
    default; under a line's ``rules:`` only the fields given override them."""

    band_body: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    cooldown_seconds: Annotated[float, Field(ge=0.0, le=30.0)] | None = None
    min_track_frames: Annotated[int, Field(ge=1, le=100)] | None = None
    min_track_confidence: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    memory_seconds: Annotated[float, Field(ge=0.0, le=60.0)] | None = None
    memory_distance: Annotated[float, Field(ge=0.0, le=10.0)] | None = None


DEFAULT_LINE_RULES = LineRulesConfig(
    band_body=0.1,
    cooldown_seconds=1.0,
    min_track_frames=3,
    min_track_confidence=0.25,
    memory_seconds=2.0,
    memory_distance=1.0,
)


def _hhmm(value: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError(f"{value!r} is not a time of day; write it as HH:MM, e.g. 22:30")
    return value


class AnalyticsSettings(_Strict):
    line_rules: LineRulesConfig = Field(default_factory=lambda: DEFAULT_LINE_RULES.model_copy())
    # A track that stays this long is staff, not a visitor (None: only staff zones decide).
    staff_after_seconds: Annotated[float, Field(gt=0)] | None = 900.0
    # Store occupancy goes back to zero at this local time (the store's timezone).
    closing_time: str = "00:00"
    # Dwell split: < passing is passing, >= engaged is engaged, between is browsing.
    passing_max_seconds: Annotated[float, Field(gt=0)] = 5.0
    engaged_min_seconds: Annotated[float, Field(gt=0)] = 30.0
    # A shelf visit at least this long (or with a wrist reach) is a product interaction.
    interaction_min_seconds: Annotated[float, Field(ge=0)] = 5.0
    # A person outside a zone (or unseen) this long has left it; shorter gaps join visits.
    zone_exit_grace_seconds: Annotated[float, Field(ge=0, le=60)] = 1.0
    heatmap: bool = True
    heatmap_grid: tuple[Annotated[int, Field(ge=1, le=256)], Annotated[int, Field(ge=1, le=256)]] = (32, 18)
    # Optional pose model (an Ultralytics *-pose model file): wrists inside a shelf are reaches.
    pose_model: str | None = None
    pose_every_frames: Annotated[int, Field(ge=1, le=100)] = 1
    wrist_min_confidence: Annotated[float, Field(ge=0, le=1)] = 0.5

    @field_validator("closing_time")
    @classmethod
    def _closing_time(cls, value: str) -> str:
        return _hhmm(value)

    @field_validator("line_rules")
    @classmethod
    def _complete_rules(cls, rules: LineRulesConfig) -> LineRulesConfig:
        given = rules.model_dump(exclude_none=True)
        return DEFAULT_LINE_RULES.model_copy(update=given)

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> AnalyticsSettings:
        if self.engaged_min_seconds <= self.passing_max_seconds:
            raise ValueError(
                f"engaged_min_seconds ({self.engaged_min_seconds}) must be larger than "
                f"passing_max_seconds ({self.passing_max_seconds}); browsing is the time between them"
            )
        return self


def line_rules(settings: AnalyticsSettings, override: LineRulesConfig | None = None,
               hysteresis: float = 0.0, count_on_exit: bool = False) -> LineRules:
    """The pure rule set of one line: the line's overrides over the agent's defaults."""
    merged = settings.line_rules.model_dump()
    if override is not None:
        merged.update(override.model_dump(exclude_none=True))
    return LineRules(
        band=hysteresis,
        band_body=merged["band_body"],
        cooldown=merged["cooldown_seconds"],
        min_track_frames=merged["min_track_frames"],
        min_track_confidence=merged["min_track_confidence"],
        memory=merged["memory_seconds"],
        memory_distance=merged["memory_distance"],
        count_on_exit=count_on_exit,
    )


# No rules at all: every geometric crossing counts (what the first version did).
PLAIN_RULES = LineRulesConfig(band_body=0.0, cooldown_seconds=0.0, min_track_frames=1, min_track_confidence=0.0,
                              memory_seconds=0.0, memory_distance=1.0)
