"""Train on PanDA, then look at the results in a dedicated MLflow UI: train → visualize → teardown.

Copy this file, change the task parameters, and run it with your iDDS credentials:

    python panda_train_visualize.py --idds https://idds.example.org:443/idds

What happens: iDDS submits the training task to PanDA. When it finishes, the VisualizationWork
asks the idds-vis agent for a read-only MLflow UI on the task's artefacts and finishes once the
UI answers; its URL is then in the work's output_data and in the workflow's global parameter
``user_vis_url``. The TeardownWork runs right after and ends the UI at its expiry (24 h here),
or at once if the visualization failed. With ``with_visualization`` the task's page on the
BigPanDA monitor also carries a permanent link to the UI.

The iDDS server must have idds-vis installed and know where the agent is (environment of the
iDDS agents: IDDS_VIS_BROKERS, IDDS_VIS_DESTINATION, IDDS_VIS_API; see workflows/README.md).
"""

from __future__ import annotations

import argparse

from idds.atlas.workflowv2.atlaspandawork import ATLASPandaWork  # pip install idds-atlas
from idds.client.clientmanager import ClientManager
from idds.workflowv2.workflow import Workflow

from idds_vis.idds import add_visualization
from idds_vis.panda import with_visualization

# The training task, as prun would submit it. Only the parts that matter here are shown.
TASK_PARAMETERS = {
    "taskName": "user.jdoe.mnist_train.v1/",  # also the key of the BigPanDA permalink
    "userName": "jdoe",
    "vo": "atlas",
    "prodSourceLabel": "user",
    "taskType": "anal",
    "transPath": "https://pandaserver-doma.cern.ch/trf/user/runGen-00-00-02",
    "cloud": "WORLD",
    "site": "ANALY_EXAMPLE_GPU",
    "architecture": "",
    "nMaxFilesPerJob": 1,
    "noInput": True,
    "nEvents": 1,
    "jobParameters": [
        {"type": "constant", "value": "-j \"\" --sourceURL ${SURL}"},
        # The training writes its MLflow data (an mlruns/ tree or an mlflow.db with its
        # artefacts) into the output; any MLflow version works.
        {"type": "constant", "value": '-p "python train.py --mlflow-dir mlruns"'},
        {"type": "constant", "value": '-o "{\'mlruns.tgz\': \'mlruns.tgz\'}"'},
    ],
    "log": {"type": "template", "param_type": "log", "container": "user.jdoe.mnist_train.v1.log/",
            "value": "user.jdoe.mnist_train.v1.log.$JEDITASKID.${SN}.log.tgz", "dataset": "user.jdoe.mnist_train.v1.log/"},
}  # fmt: skip


def build_workflow(vis_base_url: str) -> Workflow:
    # with_visualization adds two task parameters:
    #   "visualization": a permanent link keyed by the task name, which BigPanDA shows on the
    #                    task page and which idds-vis serves (the live UI, its progress,
    #                    its expiry, or a relaunch button);
    #   "pushStatusChanges": true, so PanDA sends the task_status messages idds-vis listens to.
    #   tool: the visualization tool ("mlflow").   ttl: how long the UI lives once ready.
    params = with_visualization(TASK_PARAMETERS, tool="mlflow", ttl="24h", base_url=vis_base_url)
    train = ATLASPandaWork(task_parameters=params)

    workflow = Workflow(name="mnist-train-and-visualize")
    workflow.add_work(train, initial=True)
    # add_visualization adds VisualizationWork (runs when `train` finishes) and TeardownWork
    # (runs when the visualization ends, however it ends):
    #   tool="mlflow"  the UI to start.
    #   ttl="24h"      the UI's lifetime once ready; people extend it from the permalink page.
    #   source=None    where the artefacts are. None: the agent finds the task's outputs through
    #                  PanDA. Or a URL/URI, with {workload_id} for the training's PanDA task id:
    #                  "https://bigpanda.cern.ch/idds/downloadhpometrics/?workloadid={workload_id}",
    #                  "s3://bucket/prefix/{workload_id}/", "rucio://user.jdoe:user.jdoe.mnist_train.v1/".
    #   start_deadline="2h"  the VisualizationWork fails if no UI is ready by then.
    add_visualization(workflow, train, tool="mlflow", ttl="24h", source=None)
    return workflow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idds", required=True, help="iDDS REST URL")
    parser.add_argument("--vis", default="https://idds-vis.example.org", help="idds-vis base URL")
    args = parser.parse_args()
    client = ClientManager(host=args.idds)
    request_id = client.submit(build_workflow(args.vis), use_dataset_name=False)
    print(f"submitted iDDS request {request_id}")


if __name__ == "__main__":
    main()
