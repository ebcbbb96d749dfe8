"""A URL template read over HTTP through GDAL, from a server on 127.0.0.1 started by the test.

The server runs in a child process because rasterio keeps the GIL while GDAL
opens a URL, so a server thread in the test process could not respond.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import box

from eoaudit.worldcover import WorldCoverSource, read_class_areas

# A file server with single byte-range GET support, which GDAL's /vsicurl/ uses.
RANGE_SERVER = r"""
import functools, http.server, os, re, sys

class RangeHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return None
        size = os.path.getsize(path)
        match = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        handle = open(path, "rb")
        start, end = 0, size - 1
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2) or size - 1), size - 1)
            handle.seek(start)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Content-Type", "image/tiff")
        self.end_headers()
        self.remaining = end - start + 1
        return handle

    def copyfile(self, source, outputfile):
        outputfile.write(source.read(self.remaining))

handler = functools.partial(RangeHandler, directory=sys.argv[1])
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.fixture
def tile_server(test_data: Path) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", RANGE_SERVER, str(test_data / "worldcover")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_url_template_reads_over_http(tile_server: str, test_data: Path) -> None:
    template = f"{tile_server}/ESA_WorldCover_10m_{{year}}_{{version}}_{{tile}}_Map.tif"
    source = WorldCoverSource(template)
    footprint = box(-0.25, -0.25, 0.25, 0.25)  # a quarter on each of four one-class tiles
    remote = read_class_areas(source, footprint, 0, 0)
    local = read_class_areas(WorldCoverSource(str(test_data / "worldcover")), footprint, 0, 0)
    np.testing.assert_allclose(remote.footprint, local.footprint, rtol=1e-12)
    shares = remote.footprint / remote.footprint.sum()
    assert shares[[1, 5, 8, 4]].tolist() == pytest.approx([0.25] * 4)  # classes 10, 50, 80, 40
    # The server returns 404 for a tile the folder lacks, which reads as no tile.
    assert source.datasets(45.1, 45.1, 45.2, 45.2) == []
