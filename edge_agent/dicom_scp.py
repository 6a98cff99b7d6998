"""The DICOM C-STORE SCP: the modality adds the agent as one more Storage destination.

Storage Service Class, SCP role (PS3.4 Annex B): every storage SOP class, every transfer syntax
pynetdicom knows, plus Verification (C-ECHO, PS3.4 Annex A) so the modality's "test
connection" works. The received dataset is written as a DICOM Part 10 file (PS3.10 7.1:
preamble, ``DICM``, File Meta Information) and is durably in the spool before the C-STORE
response says Success; if it cannot be, the response is "Refused: Out of Resources" (0xA700,
PS3.4 Table B.2-1) and the modality keeps the image queued for a retry.

Received data is streamed to a temporary file by pynetdicom (``STORE_RECV_CHUNKED_DATASET``),
never held in memory whole, so a large multi-frame object cannot exhaust memory.
"""

from __future__ import annotations

import logging
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from .config import DicomConfig
from .errors import IngestError
from .spool import Spool

__all__ = ["DicomReceiver", "STATUS_SUCCESS", "STATUS_OUT_OF_RESOURCES"]

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700  # PS3.4 Table B.2-1, "Refused: Out of Resources"


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
        # Process-wide pynetdicom switch; restored by stop().
        self._chunked_before = _config.STORE_RECV_CHUNKED_DATASET
        _config.STORE_RECV_CHUNKED_DATASET = True
        ae = self._application_entity()
        address = (self.config.host, self.config.port)
        try:
            self._server = ae.start_server(
                address, block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
            )
        except OSError as exc:
            _config.STORE_RECV_CHUNKED_DATASET = self._chunked_before
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

    def _on_store(self, event: Any) -> int:
        calling = str(event.assoc.requestor.ae_title).strip() or "unknown"
        try:
            item = self.spool.accept_file(event.dataset_path, source="dicom", name=f"dicom:{calling}", ext="dcm")
        except IngestError as exc:
            log.error("C-STORE from %s refused: %s", calling, exc)
            return STATUS_OUT_OF_RESOURCES
        log.info("C-STORE from %s stored as %s", calling, item.path.name)
        return STATUS_SUCCESS
