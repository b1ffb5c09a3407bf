"""DICOM JSON -> Native DICOM Model XML (PS3.19 Annex A), checked with ElementTree, against the
normative RELAX NG schema, and read back into the DICOM JSON it came from."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from native_dicom import NS, comparable, read_native_dicom_model, schema_violations
from pydicom.dataset import Dataset

from storage.dicom.dicom_xml import NATIVE_DICOM_MODEL_NAMESPACE, native_dicom_model

BULK_URI = "https://pacs.example/dicomweb/studies/1.2/series/1.3/instances/1.4/bulk/7FE00010"


def to_xml(dataset: Dataset) -> bytes:
    return native_dicom_model(dataset.to_json_dict(bulk_data_threshold=1 << 30))


def attribute(document: bytes, tag: str, *, private_creator: str | None = None) -> ET.Element:
    root = ET.fromstring(document)
    found = [
        element
        for element in root.iter(f"{NS}DicomAttribute")
        if element.get("tag") == tag and element.get("privateCreator") == private_creator
    ]
    assert len(found) == 1, (tag, private_creator, document)
    return found[0]


def values(element: ET.Element) -> list[str]:
    return [child.text or "" for child in element.findall(f"{NS}Value")]


def every_vr() -> Dataset:
    """One attribute of every VR family, several multi-valued, one of each empty."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "", "AXIAL"]  # CS, an empty value in the middle
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # UI
    ds.StudyDate = "20240229"  # DA
    ds.StudyTime = "235959.123456"  # TM
    ds.AcquisitionDateTime = "20240229235959.123456+0100"  # DT
    ds.PatientAge = "042Y"  # AS
    ds.RetrieveAETitle = "WEBPACS"  # AE
    ds.StudyDescription = "Tom & Jerry <chest> \"quoted\" 'single'"  # LO with markup characters
    ds.StationName = "CT01"  # SH
    ds.ImageComments = "line one\r\nline two\ttabbed  double  spaced "  # LT: CR LF, tab, spaces
    ds.DerivationDescription = "short text"  # ST
    ds.TextValue = "unlimited text"  # UT
    ds.StrainAdditionalInformation = "unlimited characters"  # UC
    ds.RetrieveURL = "https://pacs.example/dicomweb/studies/1.2?a=1&b=2"  # UR
    ds.InstanceNumber = "7"  # IS
    ds.SliceThickness = "1.25"  # DS
    ds.WindowCenter = ["40", "-1.5e-3"]  # DS, two values
    ds.Rows = 512  # US
    ds.add_new(0x00280106, "SS", -32768)  # Smallest Image Pixel Value, US or SS: an SS here
    ds.add_new(0x00189219, "SS", [-3, 4])  # SS
    ds.add_new(0x00181083, "IS", "0")
    ds.SimpleFrameList = [1, 4294967295]  # UL
    ds.add_new(0x00720076, "SL", [-2147483648, 2147483647])  # Selector SL Value
    ds.add_new(0x00720082, "SV", [-(2**63)])  # Selector SV Value
    ds.add_new(0x00720083, "UV", [2**64 - 1])  # Selector UV Value
    ds.add_new(0x00720068, "FL", [0.5, -2.25])  # Selector FL Value
    ds.add_new(0x00720074, "FD", [3.141592653589793])  # Selector FD Value
    ds.FrameIncrementPointer = [0x00181063, 0x0018106A]  # AT
    ds.PatientID = ""  # empty: no value at all
    ds.AccessionNumber = None
    return ds


class TestDocument:
    def test_starts_with_the_utf8_declaration_and_the_native_dicom_model_root(self) -> None:
        document = to_xml(every_vr())
        assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<NativeDicomModel ')
        root = ET.fromstring(document)
        assert root.tag == f"{{{NATIVE_DICOM_MODEL_NAMESPACE}}}NativeDicomModel"
        assert root.get("{http://www.w3.org/XML/1998/namespace}space") == "preserve"

    def test_an_empty_data_set_is_an_empty_root(self) -> None:
        root = ET.fromstring(native_dicom_model({}))
        assert list(root) == []

    def test_attributes_come_in_tag_order_and_group_lengths_are_left_out(self) -> None:
        document = native_dicom_model(
            {
                "00100020": {"vr": "LO", "Value": ["B"]},
                "00080000": {"vr": "UL", "Value": [8]},
                "00080020": {"vr": "DA", "Value": ["20240101"]},
                "00100000": {"vr": "UL", "Value": [4]},
            }
        )
        tags = [element.get("tag") for element in ET.fromstring(document)]
        assert tags == ["00080020", "00100020"]

    @pytest.mark.parametrize("key", ["0010002", "PatientName", "0010002G", ""])
    def test_a_key_that_is_not_a_tag_is_refused(self, key: str) -> None:
        with pytest.raises(ValueError, match="8 hexadecimal digits"):
            native_dicom_model({key: {"vr": "PN"}})


class TestValues:
    def test_every_vr_reads_back_as_the_json_it_came_from(self) -> None:
        source = every_vr().to_json_dict()
        assert comparable(read_native_dicom_model(native_dicom_model(source))) == comparable(source)

    def test_tag_vr_and_keyword_come_from_the_json_and_the_data_dictionary(self) -> None:
        element = attribute(to_xml(every_vr()), "00080008")
        assert element.attrib == {"tag": "00080008", "vr": "CS", "keyword": "ImageType"}

    def test_each_value_is_numbered_and_an_empty_one_stays_in_its_place(self) -> None:
        element = attribute(to_xml(every_vr()), "00080008")
        numbered = [(child.get("number"), child.text or "") for child in element]
        assert numbered == [("1", "ORIGINAL"), ("2", ""), ("3", "AXIAL")]

    def test_a_null_value_in_the_json_is_an_empty_value_element(self) -> None:
        document = native_dicom_model({"00080008": {"vr": "CS", "Value": ["MPG", None, "XR3"]}})
        assert values(attribute(document, "00080008")) == ["MPG", "", "XR3"]

    @pytest.mark.parametrize("tag", ["00100020", "00080050"])
    def test_an_attribute_without_value_has_no_children(self, tag: str) -> None:
        element = attribute(to_xml(every_vr()), tag)
        assert list(element) == []
        assert element.get("vr") in ("LO", "SH")

    @pytest.mark.parametrize(
        ("tag", "expected"),
        [
            ("00200013", [7]),  # IS
            ("00180050", [1.25]),  # DS
            ("00281050", [40.0, -0.0015]),  # DS
            ("00280010", [512]),  # US
            ("00189219", [-3, 4]),  # SS
            ("00081161", [1, 4294967295]),  # UL
            ("00720076", [-2147483648, 2147483647]),  # SL
            ("00720082", [-(2**63)]),  # SV
            ("00720083", [2**64 - 1]),  # UV
            ("00720068", [0.5, -2.25]),  # FL
            ("00720074", [3.141592653589793]),  # FD
        ],
    )
    def test_numbers_are_written_so_that_they_read_back_exactly(self, tag: str, expected: list[Any]) -> None:
        texts = values(attribute(to_xml(every_vr()), tag))
        kind = int if all(isinstance(value, int) for value in expected) else float
        assert [kind(text) for text in texts] == expected

    def test_attribute_tags_are_eight_upper_case_hex_digits(self) -> None:
        document = native_dicom_model({"00280009": {"vr": "AT", "Value": ["00181063", "0018106a"]}})
        assert values(attribute(document, "00280009")) == ["00181063", "0018106A"]

    def test_markup_characters_are_escaped_and_read_back_unchanged(self) -> None:
        document = to_xml(every_vr())
        assert b"Tom &amp; Jerry &lt;chest&gt;" in document
        assert values(attribute(document, "00081030")) == ["Tom & Jerry <chest> \"quoted\" 'single'"]
        assert values(attribute(document, "00081190")) == ["https://pacs.example/dicomweb/studies/1.2?a=1&b=2"]

    def test_line_breaks_tabs_and_spaces_survive_an_xml_parser(self) -> None:
        assert values(attribute(to_xml(every_vr()), "00204000")) == ["line one\r\nline two\ttabbed  double  spaced "]

    def test_unicode_is_written_as_utf8(self) -> None:
        document = native_dicom_model({"00081030": {"vr": "LO", "Value": ["Müller 山田 Люкс"]}})
        assert "Müller 山田 Люкс".encode() in document

    def test_a_character_xml_cannot_hold_becomes_the_replacement_character(self) -> None:
        document = native_dicom_model({"00081030": {"vr": "LO", "Value": ["bell\x07 nul\x00"]}})
        assert values(attribute(document, "00081030")) == ["bell\ufffd nul\ufffd"]

    @pytest.mark.parametrize(
        ("element", "vr"),
        [
            ({"vr": "US or SS", "Value": [-32768]}, "SS"),
            ({"vr": "US or SS", "Value": [32768]}, "US"),
            ({"vr": "US or OW", "Value": [1]}, "US"),
            ({"vr": "US or OW", "InlineBinary": "AAA="}, "OW"),
            ({"vr": "OB or OW", "BulkDataURI": BULK_URI}, "OB"),
            ({"vr": "XY", "Value": ["?"]}, "UN"),
        ],
    )
    def test_an_ambiguous_or_unknown_vr_becomes_one_the_schema_allows(self, element: dict[str, Any], vr: str) -> None:
        document = native_dicom_model({"00280106": element})
        assert attribute(document, "00280106").get("vr") == vr
        assert schema_violations(document) == []

    def test_a_missing_vr_is_taken_from_the_data_dictionary(self) -> None:
        document = native_dicom_model({"00100020": {"Value": ["ID"]}, "00091001": {"Value": ["x"]}})
        assert attribute(document, "00100020").get("vr") == "LO"
        assert attribute(document, "00091001").get("vr") == "UN"


def names_dataset() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = ["ISO 2022 IR 6", "ISO 2022 IR 87"]
    ds.PatientName = "Yamada^Tarou^Middle^Dr.^Jr.=山田^太郎=やまだ^たろう"
    ds.ReferringPhysicianName = "=山田^太郎"  # ideographic only
    ds.OtherPatientNames = ["SMITH^JOHN", "JONES"]
    ds.PerformingPhysicianName = "^^^Dr.^PhD"  # prefix and suffix only
    return ds


class TestPersonNames:
    def test_three_groups_are_split_into_their_components(self) -> None:
        name = attribute(to_xml(names_dataset()), "00100010").find(f"{NS}PersonName")
        assert name is not None
        assert name.get("number") == "1"
        groups = {group.tag.removeprefix(NS): {c.tag.removeprefix(NS): c.text for c in group} for group in name}
        assert groups == {
            "Alphabetic": {
                "FamilyName": "Yamada",
                "GivenName": "Tarou",
                "MiddleName": "Middle",
                "NamePrefix": "Dr.",
                "NameSuffix": "Jr.",
            },
            "Ideographic": {"FamilyName": "山田", "GivenName": "太郎"},
            "Phonetic": {"FamilyName": "やまだ", "GivenName": "たろう"},
        }

    def test_components_come_in_the_schema_order(self) -> None:
        name = attribute(to_xml(names_dataset()), "00100010").find(f"{NS}PersonName/{NS}Alphabetic")
        assert name is not None
        assert [child.tag.removeprefix(NS) for child in name] == [
            "FamilyName",
            "GivenName",
            "MiddleName",
            "NamePrefix",
            "NameSuffix",
        ]

    def test_absent_groups_and_empty_components_are_left_out(self) -> None:
        document = to_xml(names_dataset())
        ideographic_only = attribute(document, "00080090").find(f"{NS}PersonName")
        assert ideographic_only is not None
        assert [group.tag.removeprefix(NS) for group in ideographic_only] == ["Ideographic"]
        titles = attribute(document, "00081050").find(f"{NS}PersonName/{NS}Alphabetic")
        assert titles is not None
        assert {child.tag.removeprefix(NS): child.text for child in titles} == {
            "NamePrefix": "Dr.",
            "NameSuffix": "PhD",
        }

    def test_several_names_are_numbered_and_no_value_element_is_used(self) -> None:
        element = attribute(to_xml(names_dataset()), "00101001")
        assert [child.tag.removeprefix(NS) for child in element] == ["PersonName", "PersonName"]
        assert [child.get("number") for child in element] == ["1", "2"]

    def test_names_read_back_as_the_json_they_came_from(self) -> None:
        source = names_dataset().to_json_dict()
        assert comparable(read_native_dicom_model(native_dicom_model(source))) == comparable(source)

    def test_a_null_name_is_a_person_name_without_groups(self) -> None:
        document = native_dicom_model({"00101001": {"vr": "PN", "Value": [{"Alphabetic": "A"}, None, {}]}})
        names = attribute(document, "00101001").findall(f"{NS}PersonName")
        assert [len(list(name)) for name in names] == [1, 0, 0]


def nested_sequences() -> Dataset:
    code = Dataset()
    code.CodeValue = "T-D3000"
    code.CodingSchemeDesignator = "SRT"
    code.CodeMeaning = "Chest"
    inner = Dataset()
    inner.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    inner.ReferencedSOPInstanceUID = "1.2.3.4"
    inner.PurposeOfReferenceCodeSequence = [code]
    outer = Dataset()
    outer.StudyInstanceUID = "1.2.3"
    outer.ReferencedSeriesSequence = [inner, Dataset()]
    ds = Dataset()
    ds.PatientID = "SEQ"
    ds.ReferencedStudySequence = [outer]
    ds.ReferencedImageSequence = []
    return ds


class TestSequences:
    def test_items_are_numbered_data_sets_nested_to_any_depth(self) -> None:
        document = to_xml(nested_sequences())
        path = (
            f"{NS}DicomAttribute[@keyword='ReferencedStudySequence']/{NS}Item[@number='1']/"
            f"{NS}DicomAttribute[@keyword='ReferencedSeriesSequence']/{NS}Item[@number='1']/"
            f"{NS}DicomAttribute[@keyword='PurposeOfReferenceCodeSequence']/{NS}Item[@number='1']/"
            f"{NS}DicomAttribute[@keyword='CodeMeaning']/{NS}Value[@number='1']"
        )
        meaning = ET.fromstring(document).find(path)
        assert meaning is not None
        assert meaning.text == "Chest"

    def test_an_empty_item_is_an_empty_item_element(self) -> None:
        series = attribute(to_xml(nested_sequences()), "00081115")
        items = series.findall(f"{NS}Item")
        assert [item.get("number") for item in items] == ["1", "2"]
        assert list(items[1]) == []

    def test_an_empty_sequence_has_no_items(self) -> None:
        element = attribute(to_xml(nested_sequences()), "00081140")
        assert element.get("vr") == "SQ"
        assert list(element) == []

    def test_sequences_read_back_as_the_json_they_came_from(self) -> None:
        source = nested_sequences().to_json_dict()
        assert comparable(read_native_dicom_model(native_dicom_model(source))) == comparable(source)


def binary_dataset() -> Dataset:
    ds = Dataset()
    ds.add_new(0x00282000, "OB", b"\x00\x01\x02\xff")  # ICC Profile
    ds.add_new(0x00281201, "OW", b"\x10\x00\x20\x00")  # Red Palette Color Lookup Table Data
    ds.add_new(0x7FE00008, "OF", b"\x00\x00\x80\x3f")  # Float Pixel Data
    ds.add_new(0x7FE00009, "OD", b"\x00" * 8)  # Double Float Pixel Data
    ds.add_new(0x00720075, "OL", b"\x01\x00\x00\x00")  # Selector OL Value
    ds.add_new(0x00720081, "OV", b"\x02" + b"\x00" * 7)  # Selector OV Value
    ds.add_new(0x00111010, "UN", b"\x03\x04")  # a private attribute of unknown VR
    return ds


class TestBinary:
    @pytest.mark.parametrize(
        ("tag", "vr", "raw"),
        [
            ("00282000", "OB", b"\x00\x01\x02\xff"),
            ("00281201", "OW", b"\x10\x00\x20\x00"),
            ("7FE00008", "OF", b"\x00\x00\x80\x3f"),
            ("7FE00009", "OD", b"\x00" * 8),
            ("00720075", "OL", b"\x01\x00\x00\x00"),
            ("00720081", "OV", b"\x02" + b"\x00" * 7),
            ("00111010", "UN", b"\x03\x04"),
        ],
    )
    def test_inline_binary_is_one_base64_element(self, tag: str, vr: str, raw: bytes) -> None:
        element = attribute(to_xml(binary_dataset()), tag)
        assert element.get("vr") == vr
        (inline,) = list(element)
        assert inline.tag == f"{NS}InlineBinary"
        assert base64.b64decode(inline.text or "") == raw

    def test_a_bulk_data_uri_is_a_bulk_data_reference(self) -> None:
        document = native_dicom_model({"7FE00010": {"vr": "OW", "BulkDataURI": BULK_URI}})
        element = attribute(document, "7FE00010")
        assert element.attrib == {"tag": "7FE00010", "vr": "OW", "keyword": "PixelData"}
        (bulk,) = list(element)
        assert bulk.tag == f"{NS}BulkData"
        assert bulk.attrib == {"uri": BULK_URI}
        assert schema_violations(document) == []

    def test_binary_reads_back_as_the_json_it_came_from(self) -> None:
        source: dict[str, Any] = binary_dataset().to_json_dict()
        source["7FE00010"] = {"vr": "OB", "BulkDataURI": BULK_URI}
        assert comparable(read_native_dicom_model(native_dicom_model(source))) == comparable(source)


def private_dataset() -> Dataset:
    ds = Dataset()
    ds.PatientID = "PRIVATE"
    block = ds.private_block(0x0009, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "first")
    block.add_new(0x02, "US", 7)
    other = ds.private_block(0x0009, "OTHER VENDOR", create=True)
    other.add_new(0x01, "SH", "second")
    ds.add_new(0x00111001, "LO", "orphan")  # no (0011,0010): its creator is unknown
    item = Dataset()
    item_block = item.private_block(0x0029, "ACME 1.0", create=True)
    item_block.add_new(0x10, "OB", b"\x01\x02")
    ds.ReferencedImageSequence = [item]
    return ds


class TestPrivateAttributes:
    def test_a_private_data_element_names_its_creator_and_drops_the_block(self) -> None:
        document = to_xml(private_dataset())
        first = attribute(document, "00090001", private_creator="ACME 1.0")
        assert first.attrib == {"tag": "00090001", "vr": "LO", "privateCreator": "ACME 1.0"}
        assert values(first) == ["first"]
        assert values(attribute(document, "00090002", private_creator="ACME 1.0")) == ["7"]
        assert values(attribute(document, "00090001", private_creator="OTHER VENDOR")) == ["second"]

    def test_private_creator_elements_keep_their_tags(self) -> None:
        document = to_xml(private_dataset())
        assert values(attribute(document, "00090010")) == ["ACME 1.0"]
        assert values(attribute(document, "00090011")) == ["OTHER VENDOR"]
        assert attribute(document, "00090010").get("keyword") is None

    def test_a_private_element_whose_creator_is_unknown_keeps_its_tag(self) -> None:
        element = attribute(to_xml(private_dataset()), "00111001")
        assert element.attrib == {"tag": "00111001", "vr": "LO"}

    def test_creators_are_looked_up_in_the_item_that_holds_the_element(self) -> None:
        element = attribute(to_xml(private_dataset()), "00290010", private_creator="ACME 1.0")
        assert element.get("vr") == "OB"

    def test_private_attributes_read_back_as_the_json_they_came_from(self) -> None:
        source = private_dataset().to_json_dict()
        assert comparable(read_native_dicom_model(native_dicom_model(source))) == comparable(source)


class TestSchema:
    @pytest.mark.parametrize(
        "make", [every_vr, names_dataset, nested_sequences, binary_dataset, private_dataset], ids=lambda f: f.__name__
    )
    def test_documents_are_valid_against_the_ps3_19_relax_ng_schema(self, make: Any) -> None:
        assert schema_violations(to_xml(make())) == []

    def test_the_schema_catches_what_it_should(self) -> None:
        broken = to_xml(every_vr()).replace(b'vr="CS"', b'vr="XX"', 1)
        assert schema_violations(broken) != []
