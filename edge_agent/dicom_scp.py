"""The DICOM C-STORE SCP: the modality adds the agent as one more Storage destination.

Storage Service Class, SCP role (PS3.4 Annex B): every storage SOP class, every transfer syntax
pynetdicom knows, plus Verification (C-ECHO, PS3.4 Annex A) so the modality's "test
connection" works. The received dataset is written as a DICOM Part 10 file (PS3.10 7.1:
preamble, ``DICM``, File Meta Information) and is durably in the spool before the C-STORE
response says Success; if it cannot be (the spool is full, its disk nearly so, a write fails),
the response is "Refused: Out of Resources" (0xA700, PS3.4 Table B.2-1), the modality keeps the
image queued for a retry, and the SCP goes on serving.

Received data is streamed to a file by pynetdicom (``STORE_RECV_CHUNKED_DATASET``), never held
in memory whole, so a large multi-frame object cannot exhaust memory. That file is created in
the spool's own temporary folder, not the system one: it is on the spool's filesystem, so
queuing it is one atomic rename (no second copy), the spool's size cap counts it while it
arrives, a small or full ``/tmp`` cannot refuse images, and what an aborted association leaves
behind is swept by the spool.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import threading
from pathlib import Path
from typing import Any, ClassVar

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, dimse_messages, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from .config import DicomConfig
from .errors import IngestError
from .spool import Spool, SpoolFullError

__all__ = ["DicomReceiver", "STATUS_SUCCESS", "STATUS_OUT_OF_RESOURCES"]

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700  # PS3.4 Table B.2-1, "Refused: Out of Resources"


class _ReceiveFolder:
    """Where pynetdicom creates received datasets' files (a process-wide setting, like
    ``STORE_RECV_CHUNKED_DATASET``).

    pynetdicom (read in 3.0.4) creates each one with ``dimse_messages.NamedTemporaryFile(delete=False,
    mode="wb", suffix=".dcm")``; it offers no setting for the folder, so that name is pointed at
    ``tempfile.NamedTemporaryFile`` with ``dir`` set while a receiver runs, and restored after.
    With several receivers in one process the latest started wins; the others' files are then
    copied into their spool instead of renamed (still correct, one more write).
    """

    _original: ClassVar[Any] = getattr(dimse_messages, "NamedTemporaryFile", None)
    _lock: ClassVar[threading.Lock] = threading.Lock()
    _folders: ClassVar[list[Path]] = []

    @classmethod
    def push(cls, folder: Path) -> None:
        if cls._original is None:
            log.warning("this pynetdicom cannot be told where to write received data; "
                        "it goes to the system temp folder and is copied into the spool")
            return
        with cls._lock:
            cls._folders.append(folder)
            cls._apply()

    @classmethod
    def pop(cls, folder: Path) -> None:
        with cls._lock:
            if folder in cls._folders:
                cls._folders.remove(folder)
                cls._apply()

    @classmethod
    def _apply(cls) -> None:
        if cls._folders:
            maker = functools.partial(tempfile.NamedTemporaryFile, dir=str(cls._folders[-1]), prefix="cstore-")
            dimse_messages.NamedTemporaryFile = maker  # type: ignore[assignment]
        else:
            dimse_messages.NamedTemporaryFile = cls._original  # type: ignore[attr-defined]


class DicomReceiver:
    def __init__(self, config: DicomConfig, spool: Spool) -> None:
        self.config = config
        self.spool = spool
        self._server: Any = None
        self._chunked_before = _config.STORE_RECV_CHUNKED_DATASET

    def _application_entity(self) -> AE:
        ae = AE(ae_title=self.config.ae_title)
        for cx in AllStoragePresentationContexts:
            if cx.abstract_syntax is not None:
                ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        # A modality is configured with our AE title; a mismatch is a misrouted association
        # (A-ASSOCIATE-RJ, "called AE title not recognised", PS3.8 9.3.4).
        ae.require_called_aet = True
        if self.config.accepted_calling_aes:
            ae.require_calling_aet = [a.strip() for a in self.config.accepted_calling_aes]
        return ae

    def start(self) -> None:
        # Process-wide pynetdicom switches; restored by stop().
        self._chunked_before = _config.STORE_RECV_CHUNKED_DATASET
        _config.STORE_RECV_CHUNKED_DATASET = True
        _ReceiveFolder.push(self.spool.temp_dir)
        ae = self._application_entity()
        address = (self.config.host, self.config.port)
        try:
            self._server = ae.start_server(
                address, block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
            )
        except OSError as exc:
            _config.STORE_RECV_CHUNKED_DATASET = self._chunked_before
            _ReceiveFolder.pop(self.spool.temp_dir)
            raise IngestError(
                f"dicom.port: cannot listen on {self.config.host}:{self.config.port} ({exc.strerror}); "
                "choose a free port or stop the other listener"
            ) from None
        log.info("C-STORE SCP %s listening on %s:%d", self.config.ae_title, *address)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
            _config.STORE_RECV_CHUNKED_DATASET = self._chunked_before
            _ReceiveFolder.pop(self.spool.temp_dir)

    def _on_store(self, event: Any) -> int:
        calling = str(event.assoc.requestor.ae_title).strip() or "unknown"
        received = Path(event.dataset_path)
        try:
            if received.parent == self.spool.temp_dir:
                item = self.spool.adopt(received, source="dicom", name=f"dicom:{calling}", ext="dcm")
            else:
                item = self.spool.accept_file(received, source="dicom", name=f"dicom:{calling}", ext="dcm")
        except SpoolFullError as exc:
            log.debug("C-STORE from %s refused: %s", calling, exc)  # the spool logs the condition once
            return STATUS_OUT_OF_RESOURCES
        except IngestError as exc:
            log.error("C-STORE from %s refused: %s", calling, exc)
            return STATUS_OUT_OF_RESOURCES
        log.info("C-STORE from %s stored as %s", calling, item.path.name)
        return STATUS_SUCCESS
