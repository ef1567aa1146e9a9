"""The two XML feeds, written as text one record a line (no pretty-printing: whitespace
between elements costs the parser as much as an element does)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from domain.catalog.platforms import disney_plus, hbo_max
from mgw.feedgen.listings import GenOffer, Listing
from mgw.feedgen.writers import Writer, iso_duration, locale


def _attrs(**kv: object) -> str:
    return "".join(f" {k}={quoteattr(str(v))}" for k, v in kv.items() if v is not None)


class DisneyPlusWriter(Writer):
    platform = "disney_plus"
    _OFFER = {"subscription": "subscription", "buy": "premier-access"}
    _QUALITY = {"SD": "SD", "HD": "HD", "UHD": "4K"}

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.fh.write(
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<dss:catalog xmlns:dss="{disney_plus.NS}" version="2">\n'
        )

    def _rights(self, offers: list[GenOffer]) -> str:
        fmt = "%Y-%m-%dT%H:%M:%S.000Z"
        return "".join(
            "<dss:rights"
            + _attrs(
                region=o.region,
                offer=self._OFFER[o.offer_type],
                quality=self._QUALITY[o.quality],
                start=self.date(o.start, fmt),
                end=self.date(o.end, fmt),
                price=o.price,
                currency=o.currency,
            )
            + "/>"
            for o in offers
        )

    def _write(self, t: Listing) -> None:
        tag = "dss:series" if t.kind == "series" else "dss:movie"
        runtime = t.runtime * 60_000 if t.kind == "movie" else None
        parts = [
            f"<{tag}",
            _attrs(
                id=t.platform_id, releaseYear=t.year, runtimeMillis=runtime, language=t.language
            ),
            f"><dss:title>{escape(t.title)}</dss:title>",
        ]
        if t.original_title:
            parts.append(f"<dss:originalTitle>{escape(t.original_title)}</dss:originalTitle>")
        parts.extend(f"<dss:genre>{escape(g)}</dss:genre>" for g in self.genres(t.genres))
        if t.overview:
            parts.append(f"<dss:description>{escape(t.overview)}</dss:description>")
        parts.append(self._rights(t.offers))
        parts.append(f"<dss:links{_attrs(web=t.web_url, app=t.app_url)}/>")
        season = None
        for e in t.episodes:
            if e.season != season:
                parts.append(
                    ("</dss:season>" if season else "") + f'<dss:season number="{e.season}">'
                )
                season = e.season
            parts.append(
                "<dss:episode"
                + _attrs(id=e.platform_id, number=e.episode, runtimeMillis=e.runtime * 60_000)
                + ">"
                f"<dss:title>{escape(e.title)}</dss:title>"
                f"<dss:links{_attrs(web=e.web_url, app=e.app_url)}/></dss:episode>"
            )
        if season:
            parts.append("</dss:season>")
        parts.append(f"</{tag}>\n")
        self.fh.write("".join(parts))

    def close(self) -> None:
        self.fh.write("</dss:catalog>\n")
        super().close()


class HboMaxWriter(Writer):
    platform = "hbo_max"
    _LICENSE = {"subscription": "SVOD", "ads": "AVOD", "free": "FVOD"}
    _FORMAT = {"SD": "SD", "HD": "HD", "UHD": "4K UHD"}
    # Windows are sent in US Eastern standard time, as the partner's scheduling system has it.
    _EASTERN = timedelta(hours=-5)

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.fh.write(
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Catalog xmlns="{hbo_max.NS}" xmlns:md="{hbo_max.MD}" version="1.0">\n'
        )

    def _eastern(self, dt: datetime | None) -> str | None:
        return self.date(None if dt is None else dt + self._EASTERN, "%Y-%m-%dT%H:%M:%S-05:00")

    def _info(self, t: Listing, genres: bool) -> str:
        parts = [
            f"<md:LocalizedInfo{_attrs(language=locale(t.language))}>",
            f"<md:TitleDisplay>{escape(t.title)}</md:TitleDisplay>",
        ]
        if t.overview:
            parts.append(f"<md:Summary>{escape(t.overview)}</md:Summary>")
        if genres:
            parts.extend(f"<md:Genre>{escape(g)}</md:Genre>" for g in self.genres(t.genres))
        parts.append("</md:LocalizedInfo>")
        return "".join(parts)

    def _links(self, t: Listing) -> str:
        return (
            f'<DeepLink platform="web">{escape(t.web_url)}</DeepLink>'
            f'<DeepLink platform="app">{escape(t.app_url)}</DeepLink>'
        )

    def _write(self, t: Listing) -> None:
        tag = "Series" if t.kind == "series" else "Feature"
        parts = [f"<{tag}{_attrs(contentId=t.platform_id)}>", self._info(t, genres=True)]
        if t.original_title:
            parts.append(f"<md:OriginalTitle>{escape(t.original_title)}</md:OriginalTitle>")
        if t.year:
            parts.append(f"<md:ReleaseYear>{t.year}</md:ReleaseYear>")
        if t.kind == "movie":
            parts.append(f"<md:RunLength>{iso_duration(t.runtime)}</md:RunLength>")
        if t.imdb:
            parts.append(f'<md:AltIdentifier namespace="IMDB">{t.imdb}</md:AltIdentifier>')
        for o in t.offers:
            parts.append(
                "<Availability"
                + _attrs(
                    territory=o.region,
                    license=self._LICENSE[o.offer_type],
                    format=self._FORMAT[o.quality],
                    start=self._eastern(o.start),
                    end=self._eastern(o.end),
                )
                + "/>"
            )
        parts.append(self._links(t))
        for e in t.episodes:
            parts.append(
                f"<Episode{_attrs(contentId=e.platform_id, season=e.season, number=e.episode)}>"
                f"{self._info(e, genres=False)}"
                f"<md:RunLength>{iso_duration(e.runtime)}</md:RunLength>{self._links(e)}</Episode>"
            )
        parts.append(f"</{tag}>\n")
        self.fh.write("".join(parts))

    def close(self) -> None:
        self.fh.write("</Catalog>\n")
        super().close()
