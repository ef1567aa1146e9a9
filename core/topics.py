"""Topic specs in code: the one place that says which events live where."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    #: -1 keeps events forever: the log is the source of truth, projections are derived
    retention_ms: int = -1
    event_types: tuple[str, ...] = ()

    @property
    def dead_letter(self) -> TopicSpec:
        return TopicSpec(f"{self.name}.dlq", 1, -1, ())


CATALOG = TopicSpec("catalog.content", 4, event_types=("ContentUpserted",))
#: platform records as ingested, keyed by the resolution blocking key
OBSERVATIONS = TopicSpec("catalog.observations", 4, event_types=("PlatformTitleObserved",))
#: offers per platform record and region, keyed by platform:platform_id
AVAILABILITY = TopicSpec(
    "catalog.availability", 4, event_types=("AvailabilityChanged", "AvailabilityEnded")
)
#: entity resolution's output, keyed by content id
RESOLUTION = TopicSpec("catalog.resolution", 4, event_types=("ContentResolved", "ContentMerged"))
#: reports and admin decisions on titles, keyed by content id: one title's history in order
MODERATION = TopicSpec("catalog.moderation", 2, event_types=("TitleReported", "ModerationDecided"))
PLAYBACK = TopicSpec(
    "playback.events",
    8,
    event_types=("PlaybackStarted", "PlaybackProgressed", "PlaybackStopped"),
)
#: streaming sessions (start, heartbeat, end) and per-account stream limits, keyed by user
#: id: one account's sessions in one partition, so the limit is decided in log order
SESSIONS = TopicSpec(
    "playback.sessions",
    4,
    event_types=(
        "PlaybackSessionStarted",
        "PlaybackSessionHeartbeat",
        "PlaybackSessionEnded",
        "StreamLimitSet",
    ),
)

#: a user's library (watchlist, history, ratings, services, settings, up next), keyed by
#: user id: one user's changes stay in order in one partition, so a replay folds them alike
LIBRARY = TopicSpec(
    "library.events",
    8,
    event_types=(
        "WatchlistItemAdded",
        "WatchlistItemRemoved",
        "WatchRecorded",
        "WatchesRemoved",
        "RatingSet",
        "RatingRemoved",
        "ServicesSet",
        "LibrarySettingsSet",
        "UpNextHidden",
    ),
)

#: ranking profile versions, keyed by profile name; one partition keeps versions in order
RANKING = TopicSpec("discovery.ranking", 1, event_types=("RankingProfileSet",))
#: searches and the clicks on their results, both keyed by search_id: a click follows its
#: search in one partition
SEARCHES = TopicSpec(
    "discovery.searches", 4, event_types=("SearchPerformed", "SearchResultClicked")
)

#: every identity event, keyed by user id (device grants by their id). One partition: the
#: projector decides rules that span keys (one account per email, single-use codes and
#: refresh tokens) in log order, so a replay decides every one of them the same way.
IDENTITY = TopicSpec(
    "identity.accounts",
    1,
    event_types=(
        "UserRegistered",
        "EmailVerificationRequested",
        "EmailVerified",
        "PasswordChanged",
        "PasswordResetRequested",
        "PasswordResetCompleted",
        "MfaEnabled",
        "MfaDisabled",
        "BackupCodesRegenerated",
        "BackupCodeUsed",
        "SessionStarted",
        "RefreshTokenRotated",
        "SessionRevoked",
        "SessionsRevoked",
        "LoginSucceeded",
        "LoginFailed",
        "UserLocked",
        "UserUnlocked",
        "RoleGranted",
        "RoleRevoked",
        "ApiKeyIssued",
        "ApiKeyRevoked",
        "ProfileCreated",
        "ProfileUpdated",
        "ProfileDeleted",
        "ParentalControlsSet",
        "ParentalPinSet",
        "AuthorizationCodeIssued",
        "DeviceAuthorizationStarted",
        "DeviceAuthorizationApproved",
        "DeviceAuthorizationDenied",
        "ExternalIdentityLinked",
        "DeviceRenamed",
        "RateLimitRuleSet",
    ),
)

#: what people do with titles in the apps (impression, click, detail view, trailer, share,
#: not interested, more like this), keyed by user id: the recommender's implicit feedback,
#: and an analytics consumer's raw stream (docs/recommendations.md)
ACTIVITY = TopicSpec("activity", 8, event_types=("ActivityRecorded",))

#: A/B experiments: definitions, start and stop keyed by experiment key (one experiment's
#: story in one partition), exposures keyed by user id
EXPERIMENTS = TopicSpec(
    "experiments",
    4,
    event_types=("ExperimentSet", "ExperimentStarted", "ExperimentStopped", "ExperimentExposed"),
)

#: remote commands to a user's devices and what became of them, keyed by user id: a
#: command's issue, delivery, acknowledgement and expiry stay in order in one partition
REALTIME = TopicSpec(
    "realtime.commands",
    4,
    event_types=(
        "DeviceCommandIssued",
        "DeviceCommandDelivered",
        "DeviceCommandAcked",
        "DeviceCommandExpired",
    ),
)

#: notifications and what users and admins do with them, keyed by user id (broadcasts by
#: "broadcasts", in the order sent): a user's notifications, reads and preferences stay in
#: order in one partition, so a replay folds the same list
NOTIFICATIONS = TopicSpec(
    "notifications",
    4,
    event_types=(
        "NotificationCreated",
        "NotificationBroadcast",
        "NotificationsRead",
        "NotificationPreferencesSet",
        "NotificationDigestSent",
        "NotificationDigestUnsubscribed",
    ),
)

#: operators' decisions on dead letters (retried, skipped, purged from view), keyed by the
#: dead letter's id; one partition, so every decision has one place in one order and a
#: replay folds the same state (docs/operations/dead-letters.md)
OPS_DEAD_LETTERS = TopicSpec(
    "ops.dead_letters",
    1,
    event_types=("DeadLetterRetried", "DeadLetterSkipped", "DeadLettersPurged"),
)

EVENT_TOPICS: tuple[TopicSpec, ...] = (
    CATALOG,
    OBSERVATIONS,
    AVAILABILITY,
    RESOLUTION,
    MODERATION,
    PLAYBACK,
    SESSIONS,
    LIBRARY,
    RANKING,
    SEARCHES,
    IDENTITY,
    ACTIVITY,
    EXPERIMENTS,
    REALTIME,
    NOTIFICATIONS,
    OPS_DEAD_LETTERS,
)
ALL_TOPICS: tuple[TopicSpec, ...] = EVENT_TOPICS + tuple(t.dead_letter for t in EVENT_TOPICS)

_BY_EVENT = {et: t for t in EVENT_TOPICS for et in t.event_types}
_BY_NAME = {t.name: t for t in ALL_TOPICS}


def topic_for(event_type: str) -> TopicSpec:
    try:
        return _BY_EVENT[event_type]
    except KeyError:
        raise KeyError(f"no topic carries event type {event_type!r}") from None


def spec(name: str) -> TopicSpec:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}") from None
