"""Stand-in custom works, and what a workflowv2 ``Work`` needs to run on a real iDDS 2.6.21.

Read in idds-workflow/idds-server 2.6.21 and checked on the real server (tests/idds_server.py,
tests/integration/test_idds_smoke.py):

- Rebuilt by module path. The client stores ``type(work).__module__``/``__name__`` and every
  attribute in ``__dict__``; the agents ``__import__`` the module, construct the class with
  ``cls(loading=True)`` when ``__init__`` has a ``loading`` parameter (else ``cls()``), then set
  every stored attribute back (``idds.common.dict_class.DictClass.from_dict``). So: a module the
  server can import (not ``__main__``, not a test function), every constructor argument with a
  default, and all state in plain attributes (no open handles; ``logger`` is not stored).
- ``task_name``: ``Workflow.format_works``/``order_independent_works`` read it on every work;
  the base ``Work`` has none. Make it unique within the workflow.
- ``work_type``: not None (``TransformType.Processing`` as in ``DomaPanDAWork``); the clerk
  still files the transform as ``TransformType.Workflow``.
- ``get_new_input_output_maps`` returns ``{}``: the transformer and the carrier call it before
  every submit and poll, and the base version walks the primary input collection (None here).
- ``submit_processing(processing)`` (submitter agent, once): ``processing`` is the processing
  row as a dict; ``processing["processing_metadata"]["processing"]`` is the
  ``idds.workflowv2.work.Processing``. Set its ``workload_id`` (an int: the column is a 32-bit
  signed INTEGER) and ``submitted_at``, return ``(True, workload_id, None)``; ``(False, None,
  errors)`` is logged as "Failed to submit processing" (the retry path was not exercised).
- ``poll_processing_updates(processing, input_output_maps, contents_ext=None, log_prefix="")``
  (poller agent): with ``require_ext_contents()`` False (the default) it must return the
  5-tuple ``(ProcessingStatus, content_updates, new_input_output_maps, updated_contents_full,
  parameters)``; ``[], {}, []`` for the middle three when there are no collections. Each key
  of ``parameters`` is written onto the processing row: ``{"output_metadata": {...}}`` becomes
  the work's ``output_data``, which the client reads back as
  ``transform["transform_metadata"]["work"].output_data``. A non-terminal status (``Running``)
  is polled again at the poller's next database scan (every 10 s, hard-coded); state kept
  between polls goes in the Processing's metadata (``proc.add_metadata_item``), which is saved
  with the processing (seen: the counter below reaches 2). ``Finished`` goes processing
  Terminating → finisher → transform Finished → the clerk evaluates the conditions and creates
  the next work's transform. It runs in the poller's worker threads: keep it short, never wait.
- Each finished transform yields one broker message, ``{"msg_type": "work_processing",
  "request_id", "workload_id": <what submit_processing returned>, "transform_id",
  "relation_type": "input", "status": "Finished", "output": {}, "error": ""}`` (header
  ``msg_type: messagetype.processingwork``), sent 60 s or more after the change: the conductor
  only picks messages untouched for 60 s (``Conductor.get_new_messages``, hard-coded).
"""

from __future__ import annotations

import datetime
import zlib
from typing import Any

from idds.common.constants import ProcessingStatus, TransformType
from idds.workflowv2.work import Work

POLLS_KEY = "standin_polls"


def _workload_id(internal_id: str) -> int:
    # The processings/transforms tables store workload_id as a 32-bit signed INTEGER.
    return zlib.crc32(internal_id.encode()) & 0x7FFFFFFF


class StandinWork(Work):  # type: ignore[misc]  # idds-workflow ships no type hints
    """Submits at once; reports Finished on poll number ``finish_after_polls``."""

    finish_after_polls = 1
    output: dict[str, Any] | None = None

    def __init__(self, loading: bool = False, **kwargs: Any) -> None:
        super().__init__(work_type=TransformType.Processing, loading=loading, **kwargs)
        self.task_name = f"{type(self).__name__.lower()}-{self.internal_id}"

    def get_new_input_output_maps(self, mapped_input_output_maps: Any = None) -> dict[Any, Any]:
        return {}

    def submit_processing(self, processing: dict[str, Any]) -> tuple[bool, int, None]:
        proc = processing["processing_metadata"]["processing"]
        workload_id = _workload_id(self.internal_id)
        proc.workload_id = workload_id
        proc.submitted_at = datetime.datetime.utcnow()
        return True, workload_id, None

    def poll_processing_updates(
        self,
        processing: dict[str, Any],
        input_output_maps: Any,
        contents_ext: Any = None,
        log_prefix: str = "",
    ) -> tuple[ProcessingStatus, list[Any], dict[Any, Any], list[Any], dict[str, Any]]:
        proc = processing["processing_metadata"]["processing"]
        polls = int(proc.get_metadata_item(POLLS_KEY, 0)) + 1
        proc.add_metadata_item(POLLS_KEY, polls)
        self.logger.info(f"{log_prefix}standin poll {polls} of {self.task_name}")
        if polls < self.finish_after_polls:
            return ProcessingStatus.Running, [], {}, [], {}
        parameters = {"output_metadata": self.output} if self.output else {}
        return ProcessingStatus.Finished, [], {}, [], parameters


class StandinTrain(StandinWork):
    """Running on its first poll, Finished on the second, publishing ``train_output``."""

    finish_after_polls = 2

    def __init__(self, train_output: str = "", loading: bool = False, **kwargs: Any) -> None:
        super().__init__(loading=loading, **kwargs)
        self.output = {"train_output": train_output}


class StandinFollow(StandinWork):
    """Finished on its first poll; the test releases it with a condition on the train work."""


class ArtefactTrain(StandinWork):
    """A training stand-in that leaves a real MLflow artefact tarball, as a PanDA job would.

    On finishing it packs ``job_dir`` (a real MLflow training's output: an ``mlflow.db`` and its
    artefacts, made by the test) into ``<publish_dir>/train-<workload id>.tgz`` and publishes
    where it is as ``vis_source`` in its output_data: iDDS turns that into the workflow's
    ``user_vis_source`` global parameter, which the VisualizationWork reads.
    """

    finish_after_polls = 1

    def __init__(
        self,
        job_dir: str = "",
        publish_dir: str = "",
        publish_url: str = "",
        loading: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(loading=loading, **kwargs)
        self.job_dir = job_dir
        self.publish_dir = publish_dir
        self.publish_url = publish_url

    def poll_processing_updates(
        self,
        processing: dict[str, Any],
        input_output_maps: Any,
        contents_ext: Any = None,
        log_prefix: str = "",
    ) -> tuple[ProcessingStatus, list[Any], dict[Any, Any], list[Any], dict[str, Any]]:
        import tarfile
        from pathlib import Path

        proc = processing["processing_metadata"]["processing"]
        name = f"train-{proc.workload_id}.tgz"
        target = Path(self.publish_dir) / name
        partial = target.with_suffix(".part")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(self.job_dir, arcname=".")
        partial.rename(target)  # whole or absent: a reader never sees half a tarball
        output = {"vis_source": f"{self.publish_url.rstrip('/')}/{name}"}
        return ProcessingStatus.Finished, [], {}, [], {"output_metadata": output}
