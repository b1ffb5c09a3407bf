"""Reading Native DICOM Model documents (PS3.19 Annex A) back into DICOM JSON, to compare XML answers
with JSON ones attribute by attribute.

Independent of the code under test (ElementTree only): private tags are put back from the
`privateCreator` XML attribute and the Private Creator elements of the same data set, person names
are joined from their components.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Final

__all__ = ["NS", "comparable", "read_native_dicom_model", "schema_violations"]

NS: Final = "{http://dicom.nema.org/PS3.19/models/NativeDICOM}"
SCHEMA: Final = Path(__file__).parent / "storage" / "dicom" / "native_dicom_model.rnc"
_COMPONENTS: Final = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_GROUPS: Final = ("Alphabetic", "Ideographic", "Phonetic")
_INTEGER_VRS: Final = frozenset({"IS", "SL", "SS", "UL", "US", "SV", "UV"})
_DECIMAL_VRS: Final = frozenset({"DS", "FL", "FD"})
_XML_SPACE: Final = "{http://www.w3.org/XML/1998/namespace}space"


def read_native_dicom_model(document: bytes) -> dict[str, Any]:
    """The DICOM JSON object a Native DICOM Model document stands for (checks numbering as it goes)."""
    root = ET.fromstring(document)
    assert root.tag == f"{NS}NativeDicomModel", root.tag
    assert root.get(_XML_SPACE) == "preserve"
    return _data_set(root)


def comparable(dataset: dict[str, Any]) -> dict[str, Any]:
    """DICOM JSON in the one form both encodings can express.

    Numbers as numbers, null values as "", AT in upper case, person names without trailing
    empty components, empty Value arrays and Group Length attributes dropped.
    """
    result: dict[str, Any] = {}
    for key, element in dataset.items():
        if key.upper().endswith("0000"):
            continue
        vr = element.get("vr")
        converted: dict[str, Any] = {"vr": vr}
        for name in ("BulkDataURI", "InlineBinary"):
            if name in element:
                converted[name] = element[name]
        values = element.get("Value") or []
        if values:
            converted["Value"] = [_comparable_value(vr, value) for value in values]
        result[key.upper()] = converted
    return result


def schema_violations(document: bytes) -> list[str]:
    """What the PS3.19 §A.1.6 RELAX NG schema finds wrong with a document ([] when valid).

    The normative schema does not declare the xml:space attribute that Table A.1.5-1 makes
    mandatory, so it is taken off the root before validation.
    """
    import rnc2rng
    from lxml import etree

    schema = etree.RelaxNG(etree.fromstring(rnc2rng.dumps(rnc2rng.load(str(SCHEMA))).encode()))
    root = etree.fromstring(document)
    root.attrib.pop(_XML_SPACE, None)
    if schema.validate(root):
        return []
    return [str(error) for error in schema.error_log]


def _comparable_value(vr: str, value: Any) -> Any:
    if vr == "SQ":
        return comparable(value or {})
    if vr == "PN":
        groups = {"Alphabetic": value} if isinstance(value, str) else (value or {})
        return {name: groups[name].rstrip("^") for name in _GROUPS if groups.get(name, "").rstrip("^")}
    if value is None or value == "":
        return ""
    if vr in _INTEGER_VRS:
        return int(value)
    if vr in _DECIMAL_VRS:
        return float(value)
    if vr == "AT":
        return str(value).upper()
    return value


def _data_set(parent: ET.Element) -> dict[str, Any]:
    attributes = parent.findall(f"{NS}DicomAttribute")
    assert len(attributes) == len(list(parent)), "only DicomAttribute elements may hold a data set"
    blocks: dict[tuple[int, str], int] = {}
    for attribute in attributes:
        tag = int(attribute.get("tag", ""), 16)
        if attribute.get("privateCreator") is None and tag >> 16 & 1 and 0x10 <= tag & 0xFFFF <= 0xFF:
            creator = attribute.find(f"{NS}Value")
            if creator is not None and creator.text:
                blocks[(tag >> 16, creator.text.strip())] = tag & 0xFF
    result: dict[str, Any] = {}
    for attribute in attributes:
        tag_text = attribute.get("tag", "")
        assert len(tag_text) == 8 and tag_text == tag_text.upper(), tag_text
        tag = int(tag_text, 16)
        creator = attribute.get("privateCreator")
        if creator is not None:
            assert tag & 0xFF00 == 0, f"private tag {tag_text} must be gggg00ee (PS3.19 Table A.1.5-2)"
            tag = (tag & 0xFFFF00FF) | blocks[(tag >> 16, creator)] << 8
        key = f"{tag:08X}"
        assert key not in result, f"attribute {key} appears twice"
        result[key] = _attribute(attribute)
    return result


def _attribute(attribute: ET.Element) -> dict[str, Any]:
    vr = attribute.get("vr", "")
    element: dict[str, Any] = {"vr": vr}
    children = list(attribute)
    kinds = {child.tag.removeprefix(NS) for child in children}
    assert len(kinds) <= 1, f"{attribute.get('tag')} mixes {kinds}"
    if not children:
        return element
    kind = kinds.pop()
    if kind == "BulkData":
        element["BulkDataURI"] = children[0].get("uri")
        return element
    if kind == "InlineBinary":
        element["InlineBinary"] = children[0].text or ""
        return element
    numbers = [child.get("number") for child in children]
    assert numbers == [str(n) for n in range(1, len(children) + 1)], numbers
    if kind == "Item":
        element["Value"] = [_data_set(child) for child in children]
    elif kind == "PersonName":
        element["Value"] = [_person_name(child) for child in children]
    else:
        assert kind == "Value", kind
        element["Value"] = [child.text or "" for child in children]
    return element


def _person_name(person_name: ET.Element) -> dict[str, str]:
    result = {}
    for group in person_name:
        name = group.tag.removeprefix(NS)
        assert name in _GROUPS, name
        components = {child.tag.removeprefix(NS): child.text or "" for child in group}
        assert set(components) <= set(_COMPONENTS), components
        result[name] = "^".join(components.get(component, "") for component in _COMPONENTS).rstrip("^")
    return result
