"""Where the ops run on Kubernetes: the training assets' pod settings and the executor.

On the cluster (``deploy/helm/values.yaml``) the ``K8sRunLauncher`` starts each run in a CPU
pod and, with ``CELLSCAPE_EXECUTOR=k8s``, the run executes every step in a pod of its own
(``k8s_job_executor``).  A step's pod takes the op's ``dagster-k8s/config`` tag on top of the
run's settings, so the four training assets (``localization_model``,
``localization_model_ablation``, ``segmentation_model``, ``counting_model``; all in pool
``gpu``) land on a GPU node with one GPU each, and every other step stays on CPU nodes.
Locally (no variable, or ``default``) jobs keep Dagster's default executor and the tags are
inert.
"""

import os
from collections.abc import Mapping

from ..core.errors import CellscapeError

#: Kubernetes settings of a training step's pod, in the shape of dagster-k8s's
#: ``dagster-k8s/config`` tag: one NVIDIA GPU (the device plugin's resource), a node that has
#: one (the label NVIDIA's GPU feature discovery sets) and the taint GPU node pools commonly
#: carry tolerated.  CPU and memory requests size the data loading beside the GPU.
GPU_STEP_K8S_CONFIG: dict = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "4", "memory": "16Gi"},
            "limits": {"memory": "32Gi", "nvidia.com/gpu": "1"},
        },
    },
    "pod_spec_config": {
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}

#: ``op_tags`` of the training assets.  Dagster stores a non-string tag value as its JSON.
GPU_OP_TAGS: dict = {"dagster-k8s/config": GPU_STEP_K8S_CONFIG}

#: Names the executor of every job: ``default`` (Dagster's, one process per step) or ``k8s``.
EXECUTOR_ENV = "CELLSCAPE_EXECUTOR"


def executor_from_env(env: Mapping[str, str] | None = None):
    """The executor the code location's jobs use, chosen by ``$CELLSCAPE_EXECUTOR``.

    Returns ``None`` (Dagster's default executor) when the variable is unset, empty or
    ``default``, and ``dagster_k8s.k8s_job_executor`` (one Kubernetes job per step) for
    ``k8s``; anything else is refused, naming the variable.
    """
    env = os.environ if env is None else env
    name = (env.get(EXECUTOR_ENV) or "default").strip().lower()
    if name == "default":
        return None
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise CellscapeError(f"unknown executor {name!r}: expected 'default' or 'k8s'", field=EXECUTOR_ENV)

