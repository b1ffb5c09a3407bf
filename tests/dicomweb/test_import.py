"""`webpacs import`: folders (recursively), zip files and stray non-DICOM files, sent by STOW-RS."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from dicomdata import bundled, sample_study, uids_of

if TYPE_CHECKING:
    from live_pacs import Pacs

REPO = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(r"(\d+) stored, (\d+) already present, (\d+) failed, (\d+) not DICOM")


def _import(pacs: Pacs, *paths: Path) -> tuple[int, str, tuple[int, int, int, int]]:
    """Run `webpacs import`; (exit code, its output, (stored, already present, failed, not DICOM))."""
    completed = subprocess.run(
        [sys.executable, "-m", "dicomweb.cli", "import", *map(str, paths), "--url", pacs.url, "--token", pacs.token],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=300,
    )
    output = completed.stdout + completed.stderr
    match = SUMMARY.search(output)
    assert match, f"no summary line in:\n{output}"
    stored, present, failed, not_dicom = map(int, match.groups())
    return completed.returncode, output, (stored, present, failed, not_dicom)


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """A folder with DICOM files at the top, in a nested folder, in a zip file, plus two non-DICOM files."""
    _, files = sample_study(instances=4)
    extra = bundled("MR_small_RLE.dcm")
    root = tmp_path / "incoming"
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "a.dcm").write_bytes(files[0])
    (root / "nested" / "IM0001").write_bytes(files[1])
    (root / "nested" / "deeper" / "b.dcm").write_bytes(extra)
    with zipfile.ZipFile(root / "batch.zip", "w") as archive:
        archive.writestr("x/c.dcm", files[2])
        archive.writestr("d.dcm", files[3])
        archive.writestr("README.txt", "not an image")
    (root / "notes.txt").write_text("a note, not DICOM")
    return root, [*files, extra]


class TestImportFolder:
    def test_stores_every_file_and_lists_the_rest(self, pacs: Pacs, folder: tuple[Path, list[bytes]]) -> None:
        root, files = folder
        code, output, summary = _import(pacs, root)
        assert code == 0, output
        assert summary == (5, 0, 0, 2), output
        assert "notes.txt" in output
        assert "README.txt" in output
        for data in files:
            assert pacs.stored_bytes(data) == data

    def test_a_second_run_finds_everything_already_present(self, pacs: Pacs, folder: tuple[Path, list[bytes]]) -> None:
        root, _ = folder
        assert _import(pacs, root)[2] == (5, 0, 0, 2)
        code, output, summary = _import(pacs, root)
        assert code == 0, output
        assert summary == (0, 5, 0, 2), output


class TestImportFailures:
    def test_a_truncated_instance_fails_with_its_reason_and_exit_code_1(self, pacs: Pacs, tmp_path: Path) -> None:
        _, (good, bad) = sample_study(instances=2, size=64)
        (tmp_path / "good.dcm").write_bytes(good)
        (tmp_path / "cut.dcm").write_bytes(bad[:-2000])
        code, output, summary = _import(pacs, tmp_path)
        assert code == 1, output
        assert summary == (1, 0, 1, 0), output
        assert "cut.dcm" in output
        assert "truncated" in output
        assert pacs.has_instance(uids_of(good)[2])
        assert not pacs.has_instance(uids_of(bad)[2])
