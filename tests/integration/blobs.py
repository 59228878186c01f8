"""Docs carrying one large blob, and an executor that echoes them (importable by replicas)."""
from __future__ import annotations

from docarray import BaseDoc, DocList

from nborch import Executor, requests


class BlobDoc(BaseDoc):
    blob: bytes = b''


class BlobEcho(Executor):
    @requests(on='/grow')
    def grow(self, docs: DocList[BlobDoc], parameters: dict, **kwargs) -> DocList[BlobDoc]:
        """Each blob repeated `parameters['times']` times: a reply larger than its request."""
        for doc in docs:
            doc.blob = doc.blob * parameters.get('times', 1)
        return docs

    @requests
    def echo(self, docs: DocList[BlobDoc], **kwargs) -> DocList[BlobDoc]:
        return docs


def blob_docs(nbytes: int, fill: bytes = b'x') -> DocList[BlobDoc]:
    return DocList[BlobDoc]([BlobDoc(blob=fill * nbytes)])
