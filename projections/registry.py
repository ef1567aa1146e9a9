"""The one list of projectors both runtimes read."""

from __future__ import annotations

from projections.availability import AvailabilityProjector
from projections.base import Projector
from projections.catalog import CatalogProjector
from projections.dead_letters import DeadLettersProjector
from projections.device_commands import DeviceCommandsProjector
from projections.experiments import ExperimentsProjector
from projections.identity.accounts import IdentityProjector
from projections.identity.rate_limits import RateLimitsProjector
from projections.interactions import InteractionsProjector
from projections.library import LibraryProjector
from projections.moderation import ModerationProjector
from projections.notifications import NotificationsProjector
from projections.playback import PlaybackProjector
from projections.playback_sessions import SessionsProjector
from projections.ranking import RankingProjector
from projections.resolution import ResolutionProjector
from projections.search_analytics import SearchAnalyticsProjector
from projections.search_index import SearchProjector

PROJECTORS: tuple[Projector, ...] = (
    CatalogProjector(),
    ResolutionProjector(),
    AvailabilityProjector(),
    SearchProjector(),
    ModerationProjector(),
    PlaybackProjector(),
    SessionsProjector(),
    DeviceCommandsProjector(),
    LibraryProjector(),
    InteractionsProjector(),
    RankingProjector(),
    ExperimentsProjector(),
    SearchAnalyticsProjector(),
    IdentityProjector(),
    RateLimitsProjector(),
    NotificationsProjector(),
    DeadLettersProjector(),
)


def by_name(name: str) -> Projector:
    for p in PROJECTORS:
        if p.name == name:
            return p
    known = ", ".join(p.name for p in PROJECTORS)
    raise KeyError(f"unknown projector {name!r} (known: {known})")


def serving(topic: str) -> list[Projector]:
    return [p for p in PROJECTORS if topic in p.topics]
