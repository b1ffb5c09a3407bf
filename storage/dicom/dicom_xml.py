"""DICOM JSON (PS3.18 §F.2) to the Native DICOM Model XML of PS3.19 Annex A (`application/dicom+xml`).

pydicom has no Native DICOM Model writer, so the document is built here with the standard library's
ElementTree, which does the escaping; this module only maps the JSON model onto the XML one.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any, Final

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.valuerep import AMBIGUOUS_VR, BYTES_VR, VR

__all__ = ["NATIVE_DICOM_MODEL_NAMESPACE", "native_dicom_model"]

# PS3.19 §A.1.6: the default namespace of the normative schema.
NATIVE_DICOM_MODEL_NAMESPACE: Final = "http://dicom.nema.org/PS3.19/models/NativeDICOM"

_DECLARATION: Final = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_XML_SPACE: Final = "{http://www.w3.org/XML/1998/namespace}space"
# PS3.19 Table 10.2-1: the five components of a name group, in the order PS3.5 §6.2 writes them.
_NAME_COMPONENTS: Final = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_NAME_GROUPS: Final = ("Alphabetic", "Ideographic", "Phonetic")
_TAG: Final = re.compile(r"[0-9A-Fa-f]{8}")
_VRS: Final = frozenset(str(vr) for vr in VR if vr not in AMBIGUOUS_VR)  # the schema's VR choice
_BINARY_VRS: Final = frozenset(str(vr) for vr in BYTES_VR)
# XML 1.0 §2.2: characters a document cannot hold even escaped (C0 controls other than tab, LF, CR;
# lone surrogates; U+FFFE/U+FFFF). A DICOM value holding one gets U+FFFD instead of a broken document.
_NOT_XML_CHAR: Final = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def native_dicom_model(dataset: Mapping[str, Any]) -> bytes:
    """One DICOM JSON object as a UTF-8 `<NativeDicomModel>` document (PS3.19 §A.1).

    Attributes come in tag order; Group Length attributes are left out (PS3.19 §A.1.1). Private data
    elements whose Private Creator is in the same data set get the `gggg00ee` tag and the
    `privateCreator` XML attribute (PS3.19 Table A.1.5-2); those whose creator is unknown keep their tag.

    Args:
        dataset: a DICOM JSON object, keyed by 8-digit hexadecimal tags (PS3.18 §F.2).

    Raises:
        ValueError: a key is not an 8-digit hexadecimal tag.
    """
    root = ET.Element("NativeDicomModel")
    # Written as an attribute: ElementTree's default_namespace option refuses the unqualified XML
    # attributes (tag, vr...) of the model, and a plain xmlns attribute declares the same namespace.
    root.set("xmlns", NATIVE_DICOM_MODEL_NAMESPACE)
    root.set(_XML_SPACE, "preserve")  # PS3.19 Table A.1.5-1: shall be included
    _add_data_set(root, dataset)
    body: bytes = ET.tostring(root, encoding="utf-8")
    # ElementTree writes a CR in text as it is, which a parser turns into LF (XML 1.0 §2.11); as a
    # character reference it survives, so LT/ST/UT line breaks (CR LF in DICOM) come back unchanged.
    # The serialiser writes no CR of its own (attribute values already get &#13;).
    return _DECLARATION + body.replace(b"\r", b"&#13;")


def _add_data_set(parent: ET.Element, dataset: Mapping[str, Any]) -> None:
    tags = {_parse_tag(key): value for key, value in dataset.items()}
    for tag in sorted(tags):
        if tag & 0xFFFF == 0:  # Group Length, PS3.19 §A.1.1
            continue
        _add_attribute(parent, tag, tags[tag], tags)


def _add_attribute(parent: ET.Element, tag: int, element: Mapping[str, Any], siblings: Mapping[int, Any]) -> None:
    vr = _vr(tag, element)
    attribute = ET.SubElement(parent, "DicomAttribute")
    creator = _private_creator(tag, siblings)
    if creator is None:
        attribute.set("tag", f"{tag:08X}")
        attribute.set("vr", vr)
        if keyword := keyword_for_tag(tag):
            attribute.set("keyword", keyword)
    else:
        # PS3.19 Table A.1.5-2: the block byte is not sent, the Private Creator is.
        attribute.set("tag", f"{tag & 0xFFFF00FF:08X}")
        attribute.set("vr", vr)
        attribute.set("privateCreator", _text(creator))
    if "BulkDataURI" in element:
        ET.SubElement(attribute, "BulkData", uri=_text(str(element["BulkDataURI"])))
    elif "InlineBinary" in element:
        ET.SubElement(attribute, "InlineBinary").text = str(element["InlineBinary"])
    elif vr == "SQ":
        for number, item in enumerate(element.get("Value") or (), start=1):
            _add_data_set(ET.SubElement(attribute, "Item", number=str(number)), item or {})
    elif vr == "PN":
        for number, name in enumerate(element.get("Value") or (), start=1):
            _add_person_name(ET.SubElement(attribute, "PersonName", number=str(number)), name)
    else:
        for number, value in enumerate(element.get("Value") or (), start=1):
            ET.SubElement(attribute, "Value", number=str(number)).text = _value_text(vr, value)


def _add_person_name(person_name: ET.Element, name: Mapping[str, Any] | str | None) -> None:
    """The name groups of one PN value, each split into its components (PS3.19 Table 10.2-1)."""
    groups = {"Alphabetic": name} if isinstance(name, str) else (name or {})
    for group_name in _NAME_GROUPS:
        group = groups.get(group_name)
        if not group:
            continue
        group_element = ET.SubElement(person_name, group_name)
        # At most five components; extra carets (not valid PN) stay in the suffix rather than vanish.
        for component_name, component in zip(_NAME_COMPONENTS, str(group).split("^", 4), strict=False):
            if component:
                ET.SubElement(group_element, component_name).text = _text(component)


def _value_text(vr: str, value: Any) -> str:
    """One value as the character data of a `<Value>`; a null (empty) value as ''."""
    if value is None:
        return ""
    if vr == "AT":
        return str(value).upper()  # PS3.19 Table A.1.5-2: lowercase letters disallowed
    return _text(str(value))


def _private_creator(tag: int, siblings: Mapping[int, Any]) -> str | None:
    """The Private Creator of a private data element (gggg,xxee), when (gggg,00xx) is in the data set."""
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 0 or element < 0x1000:
        return None
    creator = siblings.get((group << 16) | (element >> 8))
    values = creator.get("Value") if isinstance(creator, Mapping) else None
    if not values or not isinstance(values[0], str) or not values[0].strip():
        return None
    return values[0].strip()


def _vr(tag: int, element: Mapping[str, Any]) -> str:
    """The element's VR as one of the two-letter codes the schema allows (PS3.19 §A.1.6)."""
    vr = str(element.get("vr") or "")
    if vr in _VRS:
        return vr
    if not vr:
        # PS3.18 §F.2.3 makes "vr" required; an object without it gets the dictionary's.
        try:
            vr = str(dictionary_VR(tag))
        except KeyError:
            return "UN"
    # pydicom leaves an ambiguous VR ("US or SS", "OB or OW") as it is when it cannot tell which applies.
    choices = [choice for choice in vr.split(" or ") if choice in _VRS]
    if not choices:
        return "UN"
    values = element.get("Value") or ()
    if "SS" in choices and any(isinstance(value, int | float) and value < 0 for value in values):
        return "SS"
    binary = "InlineBinary" in element or "BulkDataURI" in element
    return next((choice for choice in choices if (choice in _BINARY_VRS) == binary), choices[0])


def _parse_tag(key: str) -> int:
    if not _TAG.fullmatch(key):
        raise ValueError(f"DICOM JSON key {key!r} is not a tag: expected 8 hexadecimal digits, e.g. 00100010")
    return int(key, 16)


def _text(value: str) -> str:
    return _NOT_XML_CHAR.sub("\ufffd", value)
