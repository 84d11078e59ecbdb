"""Detection settings: one table of name, default and help, and the typed record built from it.

Settings are data so that the docs, the CLI and a configuration file all read the same
table, and a test keeps `docs/detection.md` in step with it. Every number a detector
compares against lives here; none is buried in a detector's code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from sentinelle.errors import ConfigError

__all__ = ["SETTINGS", "Setting", "Settings", "load_settings"]


class Setting(msgspec.Struct, frozen=True):
    """One row of the settings table."""

    name: str
    default: float | int | str | bool
    help: str


#: The table. Times are in the unit their name says; counts are patients unless stated.
SETTINGS: tuple[Setting, ...] = (
    # engine
    Setting("learning_days", 10, "Days at the start of a trail that only serve as history: no alert "
            "depends on history before they have passed (decoys and post-employment use still alert)."),
    Setting("min_history_days", 5, "Active days an account needs before it is judged against its own "
            "history; before that, its peers judge it."),
    Setting("history_days", 28, "Active days of an account's own history kept for its baselines."),
    Setting("peer_reservoir", 1500, "Account-days kept per peer group (role and department) for peer baselines."),
    Setting("min_peer_days", 30, "Account-days a peer group needs before its baseline is used; smaller "
            "groups fall back to the role, then to the actor kind."),
    Setting("visit_gap_s", 300, "Seconds after which the same account reading the same patient again "
            "starts a new visit (a burst of reads of one chart counts as one visit)."),
    Setting("reopen_hours", 24, "Hours after the last access before a patient counts again as newly "
            "opened by an account; windows count newly opened patients."),
    Setting("utc_offset_mode", "paris", "How local hours are computed: 'paris' (Europe/Paris rules, "
            "UTC+1 winter and UTC+2 summer), or a fixed offset in hours such as '1'."),
    # combining
    Setting("alert_threshold", 0.8, "Combined score (noisy-OR of the best signal of each kind) at which "
            "an account's episode becomes an alert."),
    Setting("signal_ttl_hours", 12, "Hours a signal keeps contributing to the combined score."),
    Setting("episode_gap_hours", 24, "Hours without a new signal after which an episode closes; the "
            "next alert opens a new episode."),
    Setting("severity_high", 0.9, "Combined score from which an alert is high severity."),
    Setting("severity_critical", 0.97, "Combined score from which an alert is critical."),
    Setting("max_alert_patients", 50, "Patient references listed in an alert; the total is given beside."),
    Setting("language", "fr", "Language of an alert's summary and evidence fields ('fr' or 'en'); "
            "both are always in its lang field."),
    # volume
    Setting("volume_own_factor", 2.0, "An account's window count must exceed its own robust maximum "
            "(95th percentile of its daily maxima) times this factor."),
    Setting("volume_peer_factor", 1.5, "An account without its own history must exceed its peers' 99th "
            "percentile times this factor."),
    Setting("volume_floor_10min", 25, "Fewest newly opened patients in 10 minutes that can be a volume signal."),
    Setting("volume_floor_hour", 40, "Fewest newly opened patients in 1 hour that can be a volume signal."),
    Setting("volume_floor_day", 60, "Fewest newly opened patients in 24 hours that can be a volume signal."),
    Setting("volume_floor_week", 150, "Fewest newly opened patients in 7 days that can be a volume signal."),
    Setting("volume_unexplained_floor_hour", 15, "Fewest unexplained patients in 1 hour for an "
            "unexplained-volume signal."),
    Setting("volume_unexplained_floor_day", 25, "Fewest unexplained patients in 24 hours for an "
            "unexplained-volume signal."),
    Setting("volume_unexplained_floor_week", 40, "Fewest unexplained patients in 7 days for an "
            "unexplained-volume signal."),
    Setting("volume_alone_max", 0.7, "Highest score a volume signal reaches when most of the window is "
            "explained by care relationships (a surge of care is not a theft)."),
    # care relationship
    Setting("care_alt_rate", 0.6, "Unexplained share the care detector's CUSUM tests against the "
            "account's own rate."),
    Setting("care_cusum_alert", 9.0, "CUSUM level (natural log likelihood ratio) at which a run of "
            "unexplained accesses becomes a signal."),
    Setting("care_prior_weight", 40, "Weight, in openings, of the peers' unexplained rate in an "
            "account's own rate (a new account starts at its peers' rate)."),
    Setting("care_week_llr", 8.0, "Likelihood ratio (natural log) of the last 7 days' unexplained "
            "openings against the account's usual rate at which an excess becomes a signal (low and slow)."),
    Setting("care_in_care_weight", 0.5, "Weight of an unexplained access to a patient who is being "
            "treated elsewhere in the hospital at that time (covering, consults) against 1 for a "
            "patient nobody treats then."),
    Setting("rare_min_days", 7, "Days since an account's first activity before its own record can say it "
            "almost never opens patient records."),
    Setting("rare_min_peer_days", 14, "Account-days (since each member's first activity) a peer group needs "
            "before it can say its members almost never open patient records."),
    Setting("rare_max_rate", 0.5, "Most patients an account (and its peers) open per calendar day, on "
            "average, for it to count as one that almost never opens patient records (IT support, management)."),
    Setting("rare_max_day", 2, "Most patients such an account ever opened on one ordinary day."),
    Setting("rare_min_unexplained", 3, "Unexplained patients opened in one hour by an account that almost "
            "never opens patient records that make a signal."),
    Setting("rare_score", 0.75, "Score of such an account opening several unexplained patients in an hour "
            "(under an alert alone: with another indication, such as identifiers in sequence, it alerts)."),
    # context
    Setting("address_hint_score", 0.25, "Score of a new network range for a human account (a hint)."),
    Setting("address_service_score", 0.85, "Score of a new network address for an application or API "
            "client account that has used only a few fixed addresses."),
    Setting("service_max_addresses", 6, "Most distinct addresses an application or API client may have "
            "used for a new one to be decisive."),
    Setting("offhours_min_share", 0.01, "An hour of the day (with its neighbours) holding less than this "
            "share of an account's past activity is outside its hours."),
    Setting("offhours_score", 0.3, "Score of activity outside the account's own hours (a hint)."),
    Setting("dormant_days", 30, "Days without activity after which an account waking up is a signal."),
    Setting("dormant_score", 0.5, "Score of a dormant account waking up."),
    Setting("after_end_grace_hours", 24, "Hours after the recorded employment end before use counts as "
            "use after departure."),
    Setting("after_end_score", 0.9, "Score of an account used after its holder's employment ended."),
    Setting("interactive_score", 0.6, "Score of an application or API client account used "
            "interactively (interactive login, new client software)."),
    # automation
    Setting("cadence_min_intervals", 20, "Intervals between opened patients needed to judge timing."),
    Setting("cadence_max_cv", 0.25, "Coefficient of variation of those intervals under which timing is "
            "machine-regular."),
    Setting("continuous_hours", 12, "Consecutive hours with newly opened patients, for a human account, "
            "that no shift explains."),
    Setting("sequence_min_run", 8, "Consecutive opened patients whose identifiers follow each other "
            "(step of 1 to 3) that make an enumeration."),
    Setting("sequence_hint_run", 3, "Consecutive opened patients whose identifiers follow each other that "
            "make a hint of enumeration (under an alert alone)."),
    Setting("sequence_hint_score", 0.3, "Score of a short run of identifiers in sequence (a hint)."),
    Setting("identity_min_visits", 30, "Visits in a row needed to judge identity-only reading."),
    Setting("identity_max_share", 0.9, "Share of recent visits reading only identity, contact or "
            "national identifier data above which reading is identity harvesting."),
    Setting("paging_min_pages", 5, "Successive search pages (offset or page parameter growing) that make "
            "search-then-read paging."),
    # API clients
    Setting("api_min_served", 50, "Opened patients an application or API client must have served "
            "before its scope is judged."),
    Setting("api_out_of_scope_run", 10, "Out-of-scope accesses (department or data type never served) "
            "among the last 20 that make an API-scope signal."),
    # snooping
    Setting("snoop_restricted_score", 0.62, "Score of an unexplained access to a restricted (VIP) record "
            "(under an alert: with a break-the-glass or another strong hint it alerts)."),
    Setting("snoop_coworker_score", 0.8, "Score of an unexplained access to a coworker's record."),
    Setting("snoop_relative_score", 0.85, "Score of an unexplained access to a relative's record."),
    Setting("snoop_own_score", 0.8, "Score of an account opening its holder's own record."),
    Setting("snoop_not_in_care_factor", 0.6, "Factor applied to the snooping scores when nobody treats the "
            "patient at the time (a former patient opened by batch work rather than curiosity)."),
    Setting("break_glass_score", 0.5, "Score of a break-the-glass access to a record without a care "
            "relationship (to be justified; a hint)."),
)

_DEFAULTS = {s.name: s.default for s in SETTINGS}


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Typed detection settings; defaults come from `SETTINGS`.

    Built with `Settings()` or from a mapping with `load_settings`; unknown names are
    errors, because a misspelt threshold silently ignored is a detection gap.
    """

    learning_days: float = float(_DEFAULTS["learning_days"])
    min_history_days: int = int(_DEFAULTS["min_history_days"])
    history_days: int = int(_DEFAULTS["history_days"])
    peer_reservoir: int = int(_DEFAULTS["peer_reservoir"])
    min_peer_days: int = int(_DEFAULTS["min_peer_days"])
    visit_gap_s: float = float(_DEFAULTS["visit_gap_s"])
    reopen_hours: float = float(_DEFAULTS["reopen_hours"])
    utc_offset_mode: str = str(_DEFAULTS["utc_offset_mode"])
    alert_threshold: float = float(_DEFAULTS["alert_threshold"])
    signal_ttl_hours: float = float(_DEFAULTS["signal_ttl_hours"])
    episode_gap_hours: float = float(_DEFAULTS["episode_gap_hours"])
    severity_high: float = float(_DEFAULTS["severity_high"])
    severity_critical: float = float(_DEFAULTS["severity_critical"])
    max_alert_patients: int = int(_DEFAULTS["max_alert_patients"])
    language: str = str(_DEFAULTS["language"])
    volume_own_factor: float = float(_DEFAULTS["volume_own_factor"])
    volume_peer_factor: float = float(_DEFAULTS["volume_peer_factor"])
    volume_floor_10min: int = int(_DEFAULTS["volume_floor_10min"])
    volume_floor_hour: int = int(_DEFAULTS["volume_floor_hour"])
    volume_floor_day: int = int(_DEFAULTS["volume_floor_day"])
    volume_floor_week: int = int(_DEFAULTS["volume_floor_week"])
    volume_unexplained_floor_hour: int = int(_DEFAULTS["volume_unexplained_floor_hour"])
    volume_unexplained_floor_day: int = int(_DEFAULTS["volume_unexplained_floor_day"])
    volume_unexplained_floor_week: int = int(_DEFAULTS["volume_unexplained_floor_week"])
    volume_alone_max: float = float(_DEFAULTS["volume_alone_max"])
    care_alt_rate: float = float(_DEFAULTS["care_alt_rate"])
    care_cusum_alert: float = float(_DEFAULTS["care_cusum_alert"])
    care_prior_weight: float = float(_DEFAULTS["care_prior_weight"])
    care_week_llr: float = float(_DEFAULTS["care_week_llr"])
    care_in_care_weight: float = float(_DEFAULTS["care_in_care_weight"])
    rare_min_days: int = int(_DEFAULTS["rare_min_days"])
    rare_min_peer_days: int = int(_DEFAULTS["rare_min_peer_days"])
    rare_max_rate: float = float(_DEFAULTS["rare_max_rate"])
    rare_max_day: int = int(_DEFAULTS["rare_max_day"])
    rare_min_unexplained: int = int(_DEFAULTS["rare_min_unexplained"])
    rare_score: float = float(_DEFAULTS["rare_score"])
    address_hint_score: float = float(_DEFAULTS["address_hint_score"])
    address_service_score: float = float(_DEFAULTS["address_service_score"])
    service_max_addresses: int = int(_DEFAULTS["service_max_addresses"])
    offhours_min_share: float = float(_DEFAULTS["offhours_min_share"])
    offhours_score: float = float(_DEFAULTS["offhours_score"])
    dormant_days: float = float(_DEFAULTS["dormant_days"])
    dormant_score: float = float(_DEFAULTS["dormant_score"])
    after_end_grace_hours: float = float(_DEFAULTS["after_end_grace_hours"])
    after_end_score: float = float(_DEFAULTS["after_end_score"])
    interactive_score: float = float(_DEFAULTS["interactive_score"])
    cadence_min_intervals: int = int(_DEFAULTS["cadence_min_intervals"])
    cadence_max_cv: float = float(_DEFAULTS["cadence_max_cv"])
    continuous_hours: int = int(_DEFAULTS["continuous_hours"])
    sequence_min_run: int = int(_DEFAULTS["sequence_min_run"])
    sequence_hint_run: int = int(_DEFAULTS["sequence_hint_run"])
    sequence_hint_score: float = float(_DEFAULTS["sequence_hint_score"])
    identity_min_visits: int = int(_DEFAULTS["identity_min_visits"])
    identity_max_share: float = float(_DEFAULTS["identity_max_share"])
    paging_min_pages: int = int(_DEFAULTS["paging_min_pages"])
    api_min_served: int = int(_DEFAULTS["api_min_served"])
    api_out_of_scope_run: int = int(_DEFAULTS["api_out_of_scope_run"])
    snoop_restricted_score: float = float(_DEFAULTS["snoop_restricted_score"])
    snoop_coworker_score: float = float(_DEFAULTS["snoop_coworker_score"])
    snoop_relative_score: float = float(_DEFAULTS["snoop_relative_score"])
    snoop_own_score: float = float(_DEFAULTS["snoop_own_score"])
    snoop_not_in_care_factor: float = float(_DEFAULTS["snoop_not_in_care_factor"])
    break_glass_score: float = float(_DEFAULTS["break_glass_score"])


def load_settings(values: Mapping[str, Any] | None = None) -> Settings:
    """Settings from a mapping of name to value (e.g. a parsed TOML table); missing names keep defaults.

    >>> load_settings({"learning_days": 3}).learning_days
    3.0
    """
    if not values:
        return Settings()
    unknown = sorted(set(values) - set(_DEFAULTS))
    if unknown:
        raise ConfigError(f"detection settings: unknown setting(s) {', '.join(unknown)}")
    try:
        return msgspec.convert(dict(values), Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"detection settings: {exc}") from exc
