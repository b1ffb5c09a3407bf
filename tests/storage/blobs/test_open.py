from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from storage.blobs import open_blob_store
from storage.blobs.filesystem import FilesystemBlobStore
from storage.blobs.s3 import S3BlobStore, S3Options
from storage.errors import BlobError

if TYPE_CHECKING:
    from pathlib import Path


class TestFilesystemUrls:
    def test_a_plain_relative_path_opens_a_folder_under_the_working_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        store = open_blob_store("var/blobs")
        assert isinstance(store, FilesystemBlobStore)
        assert store.root == tmp_path / "var" / "blobs"
        assert store.root.is_dir()

    def test_a_plain_absolute_path_opens_that_folder(self, tmp_path: Path) -> None:
        store = open_blob_store(str(tmp_path / "blobs"))
        assert isinstance(store, FilesystemBlobStore)
        assert store.root == tmp_path / "blobs"

    @pytest.mark.parametrize("authority", ["", "localhost"])
    def test_a_file_url_opens_its_absolute_path(self, tmp_path: Path, authority: str) -> None:
        store = open_blob_store(f"file://{authority}{tmp_path}/my%20blobs")
        assert isinstance(store, FilesystemBlobStore)
        assert store.root == tmp_path / "my blobs"


class TestS3Urls:
    def test_an_s3_url_opens_the_bucket_with_the_path_as_key_prefix(self) -> None:
        store = open_blob_store("s3://my-bucket/archive/blobs/", s3=S3Options(endpoint_url="http://127.0.0.1:1"))
        assert isinstance(store, S3BlobStore)
        assert (store.bucket, store.prefix) == ("my-bucket", "archive/blobs")

    def test_an_s3_url_without_a_path_uses_the_whole_bucket(self) -> None:
        store = open_blob_store("s3://my-bucket")
        assert isinstance(store, S3BlobStore)
        assert store.prefix == ""

    @pytest.mark.parametrize("url", ["s3:///prefix", "s3://bucket/p?versionId=1"])
    def test_an_s3_url_without_a_bucket_or_with_a_query_is_refused(self, url: str) -> None:
        with pytest.raises(BlobError, match="s3://bucket/prefix"):
            open_blob_store(url)


class TestUnsupportedUrls:
    @pytest.mark.parametrize("url", ["file://server/share/blobs", "file:relative/path"])
    def test_a_file_url_without_a_local_absolute_path_is_refused(self, url: str) -> None:
        with pytest.raises(BlobError, match="file:///absolute/path"):
            open_blob_store(url)

    def test_an_unknown_scheme_is_named(self) -> None:
        with pytest.raises(BlobError, match="unknown scheme 'ftp'"):
            open_blob_store("ftp://host/blobs")
