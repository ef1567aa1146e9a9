"""Parsing shared by the platform normalizers: values in, canonical values out.

Every function raises FeedError naming the feed's own field path, so a partner can find the
value in their file. Parsed dates and prices are memoized: a feed repeats a few hundred
distinct dates thousands of times, and the parse is most of the per-offer cost.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import isodate

from domain.catalog import MAX_YEAR, MIN_YEAR, OFFER_TYPES, QUALITIES, FeedError, Offer
from domain.catalog.platforms._genres import GENRES as GENRES  # re-exported
from domain.catalog.platforms._genres import genre_table as genre_table

Raw = dict[str, Any]

# ISO 3166-1 alpha-2, officially assigned codes.
_REGIONS = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO
    BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK
    DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR
    GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM
    KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP
    MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL
    PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST
    SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG
    VI VN VU WF WS YE YT ZA ZM ZW""".split()  # noqa: SIM905 - a list literal is 250 lines
)
# Codes partners send that are not ISO but whose meaning is not in doubt.
_REGION_ALIASES = {"UK": "GB", "EL": "GR"}
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# ISO 4217 currencies without minor units; every other price gets two decimals.
_ZERO_DECIMAL = frozenset({"JPY", "KRW", "CLP", "ISK", "VND", "UGX", "PYG", "XAF", "XOF"})
_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_HMS = re.compile(r"^(\d{1,3}):([0-5]\d):([0-5]\d)$")
_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_IMDB = re.compile(r"^(?:tt)?0*(\d{1,10})$")
_TMDB = re.compile(r"^\d{1,10}$")

_dt_cache: dict[tuple[str, object], datetime] = {}
_CACHE_SIZE = 100_000
_price_cache: dict[tuple[object, str], tuple[str, str]] = {}


def _remember(key: tuple[str, object], dt: datetime) -> None:
    # Bounded: a feed has a few hundred distinct dates, a hostile one could have millions.
    if len(_dt_cache) >= _CACHE_SIZE:
        _dt_cache.clear()
    _dt_cache[key] = dt


# -- scalars -------------------------------------------------------------------------------


def text(raw: Mapping[str, Any], key: str, path: str | None = None) -> str | None:
    """A stripped string, or None when absent or blank."""
    return string(raw.get(key), path or key)


def string(v: Any, path: str) -> str | None:
    if v is None:
        return None
    if isinstance(v, dict) and "#text" in v:  # an XML element with attributes
        v = v["#text"]
    if not isinstance(v, str):
        raise FeedError(path, f"must be a string, got {type(v).__name__}")
    v = v.strip()
    return v or None


def title(raw: Mapping[str, Any], key: str, path: str | None = None) -> str:
    v = text(raw, key, path)
    if v is None:
        raise FeedError(path or key, "title is missing or empty")
    return v


def integer(value: Any, path: str) -> int | None:
    """An int from a JSON number or from XML/CSV text; None when absent or blank."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FeedError(path, "must be an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        s = value.strip()
        if s.isdigit() or (s[:1] == "-" and s[1:].isdigit()):
            return int(s)
    raise FeedError(path, f"must be an integer, got {value!r}")


def number(value: Any, path: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FeedError(path, "must be a number, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise FeedError(path, f"must be a number, got {value!r}")


def year(value: Any, path: str) -> int | None:
    y = integer(value, path)
    if y is not None and not MIN_YEAR <= y <= MAX_YEAR:
        raise FeedError(path, f"year {y} is outside {MIN_YEAR}..{MAX_YEAR}")
    return y


def year_of_date(value: Any, path: str) -> int | None:
    """The year of '1995-11-22', '1995-11' or '1995'."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) < 4 or not value[:4].isdigit():
        raise FeedError(path, f"must be a date like 1995-11-22, got {value!r}")
    return year(value[:4], path)


def language(value: Any, path: str) -> str | None:
    """ISO 639-1 from 'en', 'en-US' or 'en_GB'."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) < 2 or not value[:2].isalpha():
        raise FeedError(path, f"must be a language code like en or en-US, got {value!r}")
    return value[:2].lower()


# -- runtimes ------------------------------------------------------------------------------


def _positive(minutes: int, path: str) -> int:
    if minutes <= 0:
        raise FeedError(path, f"runtime must be positive, got {minutes} minutes")
    return minutes


def minutes(value: Any, path: str) -> int | None:
    m = integer(value, path)
    return None if m is None else _positive(m, path)


def minutes_from_seconds(value: Any, path: str, per_minute: int = 60) -> int | None:
    """Rounded to the nearest minute; `per_minute` is 60_000 for milliseconds."""
    s = number(value, path)
    if s is None:
        return None
    if s <= 0:
        raise FeedError(path, f"runtime must be positive, got {value!r}")
    return _positive(round(s / per_minute), path)


def minutes_from_iso(value: Any, path: str) -> int | None:
    """'PT1H52M' -> 112. Weeks and other rare forms go through isodate."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise FeedError(path, f"must be an ISO 8601 duration like PT1H52M, got {value!r}")
    m = _DURATION.match(value.strip())
    if m and value.strip() not in ("P", "PT"):
        secs = (
            int(m["d"] or 0) * 86400
            + int(m["h"] or 0) * 3600
            + int(m["m"] or 0) * 60
            + float(m["s"] or 0)
        )
    else:
        try:
            d = isodate.parse_duration(value.strip())
        except (isodate.ISO8601Error, ValueError):
            raise FeedError(
                path, f"must be an ISO 8601 duration like PT1H52M, got {value!r}"
            ) from None
        if not isinstance(d, timedelta):
            raise FeedError(path, f"a runtime cannot be given in months or years: {value!r}")
        secs = d.total_seconds()
    return _positive(round(secs / 60), path)


def minutes_from_hms(value: Any, path: str) -> int | None:
    """'1:52:00' -> 112."""
    if value is None or value == "":
        return None
    m = _HMS.match(value.strip()) if isinstance(value, str) else None
    if not m:
        raise FeedError(path, f"must be a duration like 1:52:00, got {value!r}")
    return _positive(round((int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3])) / 60), path)


# -- dates: all returned aware, in UTC -----------------------------------------------------


def timestamp(value: Any, path: str, naive_is_utc: bool = False) -> datetime | None:
    """RFC 3339 ('2024-01-01T00:00:00Z', '...-05:00'); with naive_is_utc also
    '2024-01-01 00:00:00' without an offset."""
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise FeedError(path, f"must be an RFC 3339 timestamp, got {value!r}")
    key = (value, naive_is_utc)
    hit = _dt_cache.get(key)
    if hit is not None:
        return hit
    try:
        dt = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise FeedError(path, f"must be an RFC 3339 timestamp, got {value!r}") from None
    if dt.tzinfo is None:
        if not naive_is_utc:
            raise FeedError(path, f"timestamp needs a UTC offset (Z or +hh:mm): {value!r}")
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    _remember(key, dt)
    return dt


def iso_date(value: Any, path: str) -> datetime | None:
    """'2024-01-01' -> 2024-01-01T00:00Z."""
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise FeedError(path, f"must be a date like 2024-01-31, got {value!r}")
    key = (value, "date")
    hit = _dt_cache.get(key)
    if hit is not None:
        return hit
    if not isinstance(value, str) or len(value) != 10:
        raise FeedError(path, f"must be a date like 2024-01-31, got {value!r}")
    try:
        dt = datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError:
        raise FeedError(path, f"must be a date like 2024-01-31, got {value!r}") from None
    _remember(key, dt)
    return dt


def us_date(value: Any, path: str) -> datetime | None:
    """'01/31/2024' (MM/DD/YYYY) -> 2024-01-31T00:00Z."""
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise FeedError(path, f"must be a date like 01/31/2024 (MM/DD/YYYY), got {value!r}")
    key = (value, "us")
    hit = _dt_cache.get(key)
    if hit is not None:
        return hit
    m = _US_DATE.match(value) if isinstance(value, str) else None
    try:
        if not m:
            raise ValueError
        dt = datetime(int(m[3]), int(m[1]), int(m[2]), tzinfo=UTC)
    except ValueError:
        raise FeedError(
            path, f"must be a date like 01/31/2024 (MM/DD/YYYY), got {value!r}"
        ) from None
    _remember(key, dt)
    return dt


def epoch_ms(value: Any, path: str) -> datetime | None:
    ms = integer(value, path)
    if ms is None:
        return None
    key = (str(ms), "ms")
    hit = _dt_cache.get(key)
    if hit is not None:
        return hit
    try:
        dt = datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise FeedError(path, f"epoch milliseconds out of range: {value!r}") from None
    _remember(key, dt)
    return dt


# -- ids, regions, money, vocabularies -----------------------------------------------------


def imdb(value: Any, path: str) -> str | None:
    """'tt0114709', '0114709', '114709' or 114709 -> 'tt0114709'."""
    if value is None or value == "":
        return None
    m = _IMDB.match(str(value).strip()) if isinstance(value, str | int) else None
    if not m or isinstance(value, bool):
        raise FeedError(path, f"must be an IMDb id like tt0114709, got {value!r}")
    return f"tt{int(m[1]):07d}"


def tmdb(value: Any, path: str) -> str | None:
    if value is None or value == "":
        return None
    s = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if not _TMDB.match(s):
        raise FeedError(path, f"must be a numeric TMDB id, got {value!r}")
    return str(int(s))


def region(value: Any, path: str) -> str:
    if type(value) is str and value in _REGIONS:
        return value
    code = value.strip().upper() if isinstance(value, str) else ""
    code = _REGION_ALIASES.get(code, code)
    if code not in _REGIONS:
        raise FeedError(path, f"must be an ISO 3166-1 alpha-2 region like US, got {value!r}")
    return code


def currency(value: Any, path: str) -> str:
    code = value.strip().upper() if isinstance(value, str) else ""
    if not _CURRENCY.match(code):
        raise FeedError(path, f"must be an ISO 4217 currency like USD, got {value!r}")
    return code


def price(value: Any, cur: Any, path: str, cur_path: str) -> tuple[str | None, str | None]:
    """(decimal text, currency) in the currency's minor units: (3.99, 'usd') -> ('3.99', 'USD')."""
    key = (value, cur) if type(value) in (str, int, float) and type(cur) is str else None
    hit = _price_cache.get(key) if key else None
    if hit is not None:
        return hit
    if value is None or value == "":
        if cur not in (None, ""):
            return None, currency(cur, cur_path)
        return None, None
    if cur is None or cur == "":
        raise FeedError(cur_path, "a price needs a currency")
    code = currency(cur, cur_path)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FeedError(path, f"must be a decimal price like 3.99, got {value!r}")
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise FeedError(path, f"must be a decimal price like 3.99, got {value!r}") from None
    if not d.is_finite() or d < 0:
        raise FeedError(path, f"must be a non-negative price, got {value!r}")
    out = str(d.quantize(Decimal(1) if code in _ZERO_DECIMAL else Decimal("0.01"))), code
    if key:
        if len(_price_cache) >= _CACHE_SIZE:
            _price_cache.clear()
        _price_cache[key] = out
    return out


class Vocabulary(dict[str, str]):
    """A platform's terms -> ours, matched exactly first, then case-insensitively."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        super().__init__(mapping)
        self.names = tuple(mapping)
        self.update({k.lower(): v for k, v in mapping.items()})
        assert all(v in OFFER_TYPES or v in QUALITIES for v in self.values()), mapping


def kind(value: Any, kinds: Mapping[str, str], path: str) -> str:
    """The record's kind from the platform's word for it."""
    hit = None
    if isinstance(value, str):
        v = value.strip()
        hit = kinds.get(v) or kinds.get(v.lower()) or kinds.get(v.upper())
    if hit is None:
        raise FeedError(path, f"must be one of {', '.join(kinds)}, got {value!r}")
    return hit


def vocabulary(mapping: Mapping[str, str]) -> Vocabulary:
    return Vocabulary(mapping)


def term(value: Any, vocabulary: Vocabulary, path: str, what: str) -> str:
    """A platform's word for an offer type or quality -> ours."""
    hit = vocabulary.get(value) if type(value) is str else None
    if hit is None:
        hit = vocabulary.get(value.strip().lower()) if isinstance(value, str) else None
        if hit is None:
            known = ", ".join(vocabulary.names)
            raise FeedError(path, f"unknown {what} {value!r}; expected one of: {known}")
    return hit


def at(prefix: str, e: FeedError) -> FeedError:
    """The error of a nested item, its field path prefixed with where the item is."""
    if not e.field:
        return FeedError(prefix, e.message)
    return FeedError(prefix + ("" if e.field[0] in "@[" else ".") + e.field, e.message)


def genres(values: Any, table: Mapping[str, tuple[str, ...]], path: str) -> tuple[str, ...]:
    """The platform's genre names -> MovieLens names, order kept, duplicates and genres we
    have no name for dropped (a partner's 'Holiday' or 'Staff Picks' is not a genre to us)."""
    if values is None or values == "":
        return ()
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        raise FeedError(path, f"must be a list of genre names, got {type(values).__name__}")
    out: list[str] = []
    for v in values:
        if isinstance(v, dict):
            v = v.get("name")
        if not isinstance(v, str):
            raise FeedError(path, f"genre names must be strings, got {v!r}")
        for g in table.get(v.strip().lower(), ()):
            if g not in out:
                out.append(g)
    return tuple(out)


def offer(
    reg: Any,
    offer_type: str,
    quality: str,
    starts: datetime | None,
    ends: datetime | None,
    paths: tuple[str, str, str],
    price_text: str | None = None,
    cur: str | None = None,
) -> Offer:
    """`paths` names the feed's region, end and price fields, for the errors."""
    if offer_type in ("rent", "buy") and price_text is None:
        raise FeedError(paths[2], f"a {offer_type} offer needs a price")
    if starts is not None and ends is not None and ends <= starts:
        raise FeedError(paths[1], "availability ends before it starts")
    return Offer(region(reg, paths[0]), offer_type, quality, price_text, cur, starts, ends)


def offers(items: list[Any], parse: Callable[[Any], Offer], path: str) -> tuple[Offer, ...]:
    """Each item parsed into an Offer. Offers are most of a feed, so an item's error path
    ("availability[3].startDate") is only built when it fails."""
    out: list[Offer] = []
    try:
        for item in items:
            out.append(parse(item))
    except FeedError as e:
        raise at(f"{path}[{len(out)}]", e) from None
    return tuple(out)


def as_list(value: Any, path: str) -> list[Any]:
    """A JSON array or a repeated XML element (one occurrence arrives as a single dict)."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    raise FeedError(path, f"must be a list, got {type(value).__name__}")


def as_dict(value: Any, path: str) -> Raw:
    if isinstance(value, dict):
        return value
    raise FeedError(path, f"must be an object, got {type(value).__name__}")


def split(value: Any, sep: str) -> list[str]:
    if not value:
        return []
    return [p.strip() for p in str(value).split(sep) if p.strip()]


def link(value: Any, path: str, web: bool) -> str | None:
    """A deep link: web links are http(s) URLs, app links any URI with a scheme."""
    if value is None or value == "":
        return None
    v = value.strip() if isinstance(value, str) else ""
    ok = v.startswith(("https://", "http://")) if web else (":" in v and v[0].isalpha())
    if not ok:
        want = "an https URL" if web else "an app URI like nflx://title/80012345"
        raise FeedError(path, f"must be {want}, got {value!r}")
    return v
