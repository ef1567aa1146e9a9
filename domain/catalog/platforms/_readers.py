"""Splitting a feed file into raw records, per container format.

A record that cannot be parsed is yielded as (locator, FeedError) and reading goes on; a file
that cannot be read at all raises FeedError("file", ...). The same readers take a webhook body:
a document holding one record, or a few.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Generator, Iterator, Sequence
from typing import Any, BinaryIO
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from domain.catalog import FeedError

Raw = dict[str, Any]
Item = tuple[str, Raw | FeedError]

_local_names: dict[str, str] = {}


def read_ndjson(stream: BinaryIO) -> Iterator[Item]:
    for n, line in enumerate(stream, 1):
        if not line.strip():
            continue
        loc = f"line {n}"
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            yield loc, FeedError("line", f"not valid JSON: {e}")
            continue
        if not isinstance(obj, dict):
            yield loc, FeedError("line", f"must be a JSON object, got {type(obj).__name__}")
            continue
        yield loc, obj


def read_json_array(stream: BinaryIO, array: str, id_key: str) -> Iterator[Item]:
    """Records of {array: [...], ...}; a webhook may also send one record or a bare list.

    The array is decoded one element at a time: decoding a whole 100k-record document at
    once keeps millions of objects alive, and the garbage collector then rescans them all
    while the records are normalized (half the throughput, twice the memory)."""
    try:
        text = stream.read().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FeedError("file", f"not UTF-8: {e}") from None
    try:
        top = _ws(text, 0)
        if text.startswith("[", top):
            yield from _elements(text, top, array, id_key)
            return
        if not text.startswith("{", top):
            raise ValueError("expected a JSON object")
        head: dict[str, Any] = {}
        i = _ws(text, top + 1)
        found = False
        while not text.startswith("}", i):
            key, i = _decode(text, i)
            i = _ws(text, i)
            if not isinstance(key, str) or not text.startswith(":", i):
                raise ValueError(f"expected a key and ':' at char {i}")
            i = _ws(text, i + 1)
            if key == array and text.startswith("[", i):
                found = True
                i = yield from _elements(text, i, array, id_key)
            else:
                head[key], i = _decode(text, i)
            i = _ws(text, i)
            if text.startswith(",", i):
                i = _ws(text, i + 1)
            elif not text.startswith("}", i):
                raise ValueError(f"expected ',' or '}}' at char {i}")
        if _ws(text, i + 1) != len(text):
            raise ValueError(f"extra data after the document at char {i + 1}")
    except ValueError as e:
        raise FeedError("file", f"not a valid JSON document: {e}") from None
    if not found:
        if id_key not in head:
            raise FeedError("file", f'expected a JSON object with a "{array}" array')
        yield f"{array}[0] id={head.get(id_key)}", head  # one record: a webhook body


_decode = json.JSONDecoder().raw_decode
_WS = re.compile(r"[ \t\n\r]*")


def _ws(text: str, i: int) -> int:
    m = _WS.match(text, i)
    return m.end() if m else i


def _elements(text: str, i: int, array: str, id_key: str) -> Generator[Item, None, int]:
    """The elements of the array starting at text[i] == '['; returns the index after ']'."""
    i = _ws(text, i + 1)
    n = 0
    while not text.startswith("]", i):
        item, i = _decode(text, i)
        if isinstance(item, dict):
            yield f"{array}[{n}] id={item.get(id_key)}", item
        else:
            yield f"{array}[{n}]", FeedError(array, f"must be an object, got {type(item).__name__}")
        n += 1
        i = _ws(text, i)
        if text.startswith(",", i):
            i = _ws(text, i + 1)
        elif not text.startswith("]", i):
            raise ValueError(f"expected ',' or ']' at char {i}")
    return i + 1


def read_delimited(
    stream: BinaryIO, columns: Sequence[str], delimiter: str, required: Sequence[str]
) -> Iterator[Item]:
    """Rows as {column: text}; the header must name every required column, in any order.
    Locators count lines as a spreadsheet does: the header is row 1."""
    fh = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    sep = "tab" if delimiter == "\t" else repr(delimiter)
    try:
        reader = csv.reader(fh, delimiter=delimiter, strict=True)
        try:
            header = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as e:
            raise FeedError("file", f"unreadable header: {e}") from None
        header = [h.strip() for h in header or ()]
        missing = [c for c in required if c not in header]
        if missing:
            raise FeedError(
                "file",
                f"header lacks {', '.join(missing)}; expected a {sep}-separated header: "
                f"{delimiter.join(columns)}",
            )
        width = len(header)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as e:
                yield f"row {reader.line_num}", FeedError("row", f"unreadable: {e}")
                continue
            if not row:
                continue
            loc = f"row {reader.line_num}"
            if len(row) != width:
                yield loc, FeedError("row", f"has {len(row)} columns, the header has {width}")
                continue
            yield loc, dict(zip(header, row, strict=True))
    finally:
        # The caller owns the binary stream: do not let the wrapper close it.
        fh.detach()


def _local(tag: str) -> str:
    name = _local_names.get(tag)
    if name is None:
        name = _local_names[tag] = tag.rpartition("}")[2]
    return name


def element_dict(elem: Element, lists: frozenset[str]) -> Raw:
    """An element as a plain dict: attributes and child elements by local name; a child
    with neither attributes nor children becomes its text; one with them becomes a dict
    whose text, if any, is under "#text". Children named in `lists` always form a list,
    so one occurrence and several have the same shape."""
    names = _local_names
    attrib = elem.attrib
    d: Raw = {(names.get(k) or _local(k)): v for k, v in attrib.items()} if attrib else {}
    for child in elem:
        tag = child.tag
        name = names.get(tag) or _local(tag)
        value: Any
        if child.attrib or len(child):
            value = element_dict(child, lists)
            text = child.text
            if text and not text.isspace():
                value["#text"] = text
        else:
            value = child.text or ""
        if name in lists:
            if name in d:
                d[name].append(value)
            else:
                d[name] = [value]
        else:
            d[name] = value
    return d


def read_xml(
    stream: BinaryIO, root: str, records: frozenset[str], lists: frozenset[str], id_attr: str
) -> Iterator[Item]:
    """Each record element (by qualified tag) under the root element, streamed. The root may
    also be a single record (a webhook body)."""
    n = 0
    top: Element | None = None
    try:
        for event, elem in iterparse(stream, events=("start", "end"), forbid_dtd=True):
            if top is None:
                top = elem
                if elem.tag != root and elem.tag not in records:
                    raise FeedError("file", f"root element is {elem.tag}; expected {root}")
                continue
            if event != "end" or elem.tag not in records:
                continue
            n += 1
            raw = element_dict(elem, lists)
            yield f"element {n} id={raw.get(id_attr)}", raw
            # Records are converted as they end; dropping them keeps a large feed cheap.
            top.clear()
    except ParseError as e:
        line, col = e.position
        raise FeedError("file", f"malformed XML at line {line}, column {col}: {e}") from None
    except DefusedXmlException as e:
        raise FeedError("file", f"XML with a DTD or entities is not accepted: {e!r}") from None
