"""The C-STORE SCP with DCMTK's storescu as the real sending peer (no worker: the spool itself)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from agent_harness import STORESCU, free_port
from edge_agent.config import DicomConfig
from edge_agent.dicom_scp import DicomReceiver
from edge_agent.errors import IngestError
from edge_agent.spool import Spool

CT_SMALL = Path(str(get_testdata_file("CT_small.dcm")))


def _storescu(port: int, *files: Path, calling: str = "CT_SCANNER", called: str = "EDGE_AGENT") -> int:
    run = subprocess.run([STORESCU, "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files)],
                         capture_output=True, text=True, timeout=60)
    return run.returncode


@pytest.fixture
def receiver(tmp_path: Path):  # type: ignore[no-untyped-def]
    rx = DicomReceiver(DicomConfig(enabled=True, port=free_port(), accepted_calling_aes=("CT_SCANNER",)),
                       Spool(tmp_path / "spool"))
    rx.start()
    yield rx
    rx.stop()


def test_stored_image_is_an_intact_part10_file_in_the_spool_before_success(receiver: DicomReceiver) -> None:
    assert _storescu(receiver.config.port, CT_SMALL) == 0  # Success came back
    (item,) = receiver.spool.pending()
    raw = item.path.read_bytes()
    assert raw[128:132] == b"DICM"  # PS3.10 7.1 preamble and prefix
    stored, original = pydicom.dcmread(item.path), pydicom.dcmread(CT_SMALL)
    assert stored.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    assert stored.PixelData == original.PixelData
    # Every element arrived unchanged; (FFFC,FFFC) Data Set Trailing Padding is not sent (PS3.10 7.2).
    assert all(stored[e.tag].value == e.value for e in original if e.tag not in (0x7FE00010, 0xFFFCFFFC))
    assert item.source == "dicom" and item.name == "dicom:CT_SCANNER"


def test_unlisted_calling_ae_is_rejected_and_nothing_is_stored(receiver: DicomReceiver) -> None:
    assert _storescu(receiver.config.port, CT_SMALL, calling="INTRUDER") != 0
    assert _storescu(receiver.config.port, CT_SMALL, called="WRONG_AE") != 0
    assert receiver.spool.pending() == []


def test_port_in_use_is_a_clear_start_error_naming_dicom_port(receiver: DicomReceiver, tmp_path: Path) -> None:
    second = DicomReceiver(receiver.config, Spool(tmp_path / "other"))
    with pytest.raises(IngestError, match="dicom.port: cannot listen on 127.0.0.1"):
        second.start()
