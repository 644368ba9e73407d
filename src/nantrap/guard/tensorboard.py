"""TensorBoard event files from guard records, written with tensorboard's record format
and protos alone (no TensorFlow, no torch): ``pip install 'nantrap[tensorboard]'``."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from nantrap.errors import ConfigError
from nantrap.guard.sinks import MetricSink

__all__ = ["TensorBoardSink"]


def _protos() -> Any:
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
        from tensorboard.plugins.text import metadata as text_metadata
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError as err:
        raise ConfigError(
            f"guard option tensorboard=...: the tensorboard package is not installed ({err}); "
            "pip install 'nantrap[tensorboard]'"
        ) from None
    return event_pb2, summary_pb2, tensor_pb2, types_pb2, text_metadata, RecordWriter


class TensorBoardSink(MetricSink):
    """Writes ``events.out.tfevents.*`` in ``log_dir`` (opened on the first record, flushed
    after each one so that a crashed run keeps what it logged)."""

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)
        self._pb = _protos()
        self._writer: Any = None
        self._file: IO[bytes] | None = None

    @property
    def path(self) -> Path | None:
        return None if self._file is None else Path(self._file.name)

    def _event(self, step: int, **fields: Any) -> None:
        event_pb2 = self._pb[0]
        if self._writer is None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            name = (
                f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}."
                f"{os.getpid()}.nantrap"
            )
            self._file = (self.log_dir / name).open("ab")
            self._writer = self._pb[5](self._file)
            first = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
            self._writer.write(first.SerializeToString())
        event = event_pb2.Event(wall_time=time.time(), step=step, **fields)
        self._writer.write(event.SerializeToString())
        self._writer.flush()

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        summary_pb2 = self._pb[1]
        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()]
        )
        self._event(step, summary=summary)

    def text(self, step: int, tag: str, text: str) -> None:
        _, summary_pb2, tensor_pb2, types_pb2, text_metadata, _ = self._pb
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[text.encode()])
        value = summary_pb2.Summary.Value(
            tag=tag,
            tensor=tensor,
            metadata=text_metadata.create_summary_metadata(display_name=None, description=None),
        )
        self._event(step, summary=summary_pb2.Summary(value=[value]))

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Close the file; a later record opens a new one in the same directory."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._file = None
