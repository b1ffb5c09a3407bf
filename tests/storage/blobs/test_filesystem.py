"""What the filesystem adapter promises beyond the contract: links not copies, durability, crash safety."""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path

import pytest

from storage.blobs.filesystem import FilesystemBlobStore
from storage.errors import BlobError, BlobExists, InvalidBlobKey

DATA = b"\x00DICM" * 1000


@pytest.fixture
def store(tmp_path: Path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "blobs")


def staged(store: FilesystemBlobStore, data: bytes = DATA, name: str = "incoming") -> Path:
    path = store.staging_dir() / name
    path.write_bytes(data)
    return path


def files_on_disk(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())


class TestLayout:
    def test_the_root_folder_is_created(self, tmp_path: Path) -> None:
        FilesystemBlobStore(tmp_path / "new" / "blobs")
        assert (tmp_path / "new" / "blobs").is_dir()

    def test_a_blob_is_the_file_root_slash_key(self, store: FilesystemBlobStore) -> None:
        store.put_file("studies/1/a.dcm", staged(store))
        path = store.local_path("studies/1/a.dcm")
        assert path == store.root / "studies" / "1" / "a.dcm"
        assert path.read_bytes() == DATA

    def test_the_staging_folder_is_inside_the_root_so_puts_are_renames(self, store: FilesystemBlobStore) -> None:
        assert store.staging_dir().parent == store.root
        assert store.staging_dir().stat().st_dev == store.root.stat().st_dev

    def test_keys_that_could_name_the_staging_folder_are_refused(self, store: FilesystemBlobStore) -> None:
        with pytest.raises(InvalidBlobKey):
            store.put_file(".staging/incoming", staged(store))


class TestPutFromTheSameFilesystem:
    def test_the_source_is_linked_into_place_not_copied(self, store: FilesystemBlobStore) -> None:
        source = staged(store)
        inode = source.stat().st_ino
        store.put_file("a/b", source)
        assert store.local_path("a/b").stat().st_ino == inode
        assert not source.exists()

    def test_file_and_folder_are_fsynced_before_put_returns(
        self, store: FilesystemBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        synced: list[str] = []
        real_fsync = os.fsync

        def recording_fsync(fd: int) -> None:
            synced.append(str(Path(f"/proc/self/fd/{fd}").readlink()))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", recording_fsync)
        source = staged(store)
        store.put_file("new/folder/blob", source)
        assert str(source) in synced  # the bytes, before the link
        assert str(store.root / "new" / "folder") in synced  # the name
        assert str(store.root / "new") in synced  # the folder created for it
        assert str(store.root) in synced

    def test_a_failed_directory_fsync_leaves_nothing_under_the_key_and_keeps_the_source(
        self, store: FilesystemBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        source = staged(store)
        real_fsync = os.fsync

        def failing_on_folders(fd: int) -> None:
            if Path(f"/proc/self/fd/{fd}").readlink().is_dir():
                raise OSError(errno.EIO, "I/O error")
            real_fsync(fd)

        store.put_file("existing/x", staged(store, name="other"))  # the folder exists: only the final fsync fails
        monkeypatch.setattr(os, "fsync", failing_on_folders)
        with pytest.raises(BlobError, match="I/O error"):
            store.put_file("existing/y", source)
        assert source.read_bytes() == DATA
        assert files_on_disk(store.root) == [".staging/incoming", "existing/x"]


class TestPutAcrossFilesystems:
    @pytest.fixture
    def cross_device(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
        """A source outside the store whose first link attempt fails as between two filesystems."""
        source = tmp_path / "elsewhere" / "incoming"
        source.parent.mkdir()
        source.write_bytes(DATA)
        real_link = os.link

        def link(src: str | Path, dst: str | Path) -> None:
            if Path(src) == source:
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            real_link(src, dst)

        monkeypatch.setattr(os, "link", link)
        return source

    def test_the_source_is_copied_then_removed(self, store: FilesystemBlobStore, cross_device: Path) -> None:
        assert store.put_file("a/b", cross_device) == len(DATA)
        assert store.local_path("a/b").read_bytes() == DATA
        assert not cross_device.exists()
        assert files_on_disk(store.root) == ["a/b"]

    def test_a_failed_copy_leaves_no_blob_and_no_temporary_file(
        self, store: FilesystemBlobStore, cross_device: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def disk_full(_src: Path, dst: Path) -> None:
            Path(dst).write_bytes(DATA[:100])
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(shutil, "copyfile", disk_full)
        with pytest.raises(BlobError, match="No space left"):
            store.put_file("a/b", cross_device)
        assert cross_device.read_bytes() == DATA
        assert files_on_disk(store.root) == []
        assert list(store.keys()) == []

    def test_a_key_taken_during_the_copy_raises_blob_exists_and_leaves_no_temporary_file(
        self, store: FilesystemBlobStore, cross_device: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real_copyfile = shutil.copyfile

        def copy_while_another_writer_wins(src: Path, dst: Path) -> None:
            real_copyfile(src, dst)
            (store.root / "a" / "c").write_bytes(b"raced")

        monkeypatch.setattr(shutil, "copyfile", copy_while_another_writer_wins)
        with pytest.raises(BlobExists):
            store.put_file("a/c", cross_device)
        assert files_on_disk(store.root) == ["a/c"]
        assert (store.root / "a" / "c").read_bytes() == b"raced"
        assert cross_device.read_bytes() == DATA


class TestCrashLeftovers:
    def test_temporary_and_dot_files_left_by_a_crash_are_not_keys(self, store: FilesystemBlobStore) -> None:
        store.put_file("a/b", staged(store))
        (store.root / "a" / ".tmp-abc123").write_bytes(DATA[:10])
        (store.root / ".tmp-top").write_bytes(DATA[:10])
        staged(store, name="half-spooled")
        assert list(store.keys()) == ["a/b"]


class TestConcurrentPuts:
    def test_of_two_writers_of_one_key_exactly_one_wins(self, store: FilesystemBlobStore) -> None:
        sources = [staged(store, bytes([n]) * 1000, f"source-{n}") for n in range(2)]
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def write(source: Path) -> None:
            barrier.wait()
            try:
                store.put_file("race/k", source)
                outcomes.append("stored")
            except BlobExists:
                outcomes.append("exists")

        threads = [threading.Thread(target=write, args=(source,)) for source in sources]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["exists", "stored"]
        assert store.local_path("race/k").read_bytes() in (b"\x00" * 1000, b"\x01" * 1000)


class TestReadiness:
    def test_check_fails_with_a_blob_error_naming_the_folder_when_it_is_unusable(
        self, store: FilesystemBlobStore
    ) -> None:
        staging = store.staging_dir()
        shutil.rmtree(staging)
        staging.write_bytes(b"not a folder")
        with pytest.raises(BlobError, match="staging"):
            store.check()

    def test_an_uncreatable_root_is_a_blob_error(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_bytes(b"")
        with pytest.raises(BlobError, match="cannot create"):
            FilesystemBlobStore(tmp_path / "file" / "blobs")
